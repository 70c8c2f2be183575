"""One registry per op (attention, LayerNorm, patch embedding) with the same selection rules.

A backend is a name, a function and an availability check ``(device, dtype, **shape) -> (ok, reason)``.
Backends join a registry with the :meth:`Registry.register` decorator; tests, the CLI and the
benchmarks iterate the registry, so a new backend is covered by existing.

Selection, highest priority first:

1. an explicit name (``create_model(attn_backend=...)``, ``model.set_attn_backend(...)``,
   ``fastvit.attention(..., backend=...)``);
2. the innermost ``with fastvit.use_backend(...)`` block;
3. the op's environment variable (``FASTVIT_ATTN_BACKEND``, ``FASTVIT_NORM_BACKEND``,
   ``FASTVIT_PATCH_BACKEND``);
4. the op's default.

The choice is resolved on every call, not frozen at construction: a model built without an explicit
backend follows the context manager and environment at the time it runs. An unknown name, or a
backend that cannot run on the inputs at hand, raises :class:`~fastvit.errors.BackendError` with the
reason and the backends that could run; nothing ever falls back silently.
"""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from fastvit.errors import BackendError


@dataclass(frozen=True)
class Backend:
    op: str
    name: str
    fn: Callable
    check: Callable[..., tuple[bool, str]]
    description: str = ""


@dataclass
class Registry:
    op: str
    env_var: str
    default: str
    probe_shape: dict = field(default_factory=dict)  # shape keywords used when listing availability
    _backends: dict = field(default_factory=dict)

    def __post_init__(self):
        self._context = contextvars.ContextVar(f"fastvit_{self.op}_backend", default=None)

    def register(self, name: str, *, check: Callable[..., tuple[bool, str]], description: str = ""):
        """Decorator adding ``fn`` to the registry under ``name``."""
        def wrap(fn):
            if name in self._backends:
                raise ValueError(f"{self.op} backend {name!r} is registered twice")
            self._backends[name] = Backend(self.op, name, fn, check, description)
            return fn
        return wrap

    def names(self) -> list[str]:
        return list(self._backends)

    def get(self, name: str) -> Backend:
        if name not in self._backends:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BackendError(f"unknown {self.op} backend {name!r}{hint}; known: {', '.join(self.names())}")
        return self._backends[name]

    def validate(self, name: str | None) -> str | None:
        """Return ``name`` unchanged after checking that it is registered (None passes through)."""
        if name is not None:
            self.get(name)
        return name

    def resolve(self, explicit: str | None = None) -> str:
        """The backend name in force: explicit > context manager > environment variable > default."""
        if explicit is not None:  # checked first and alone: a model with its backends set explicitly
            return self.get(explicit).name  # then never reads the context, which torch.compile cannot trace
        for name in (self._context.get(), os.environ.get(self.env_var) or None):
            if name is not None:
                return self.get(name).name
        return self.default

    @contextlib.contextmanager
    def use(self, name: str):
        """Select ``name`` for calls that name no backend, inside the ``with`` block."""
        token = self._context.set(self.get(name).name)
        try:
            yield
        finally:
            self._context.reset(token)

    def availability(self, name: str, device, dtype, **shape) -> tuple[bool, str]:
        ok, reason = self.get(name).check(torch.device(device), dtype, **shape)
        return bool(ok), ("" if ok else reason)

    def require(self, name: str | None, device, dtype, **shape) -> Backend:
        """The backend selected for these inputs, or BackendError saying why it cannot run."""
        backend = self.get(self.resolve(name))
        ok, reason = self.availability(backend.name, device, dtype, **shape)
        if not ok:
            usable = [n for n in self.names() if self.availability(n, device, dtype, **shape)[0]]
            where = ", ".join([str(torch.device(device)), str(dtype).replace("torch.", "")]
                              + [f"{k}={v}" for k, v in shape.items()])
            raise BackendError(
                f"{self.op} backend {backend.name!r} cannot run on {where}: {reason}. "
                f"Backends that can: {', '.join(usable) or 'none'}"
            )
        return backend

    def rows(self, device=None, dtype=torch.float32, **shape) -> list[dict]:
        """One row per backend: name, available, reason (on ``device``, default CUDA if present)."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        shape = {**self.probe_shape, **shape}
        out = []
        for name in self.names():
            ok, reason = self.availability(name, device, dtype, **shape)
            out.append({"op": self.op, "name": name, "available": ok, "reason": reason,
                        "description": self.get(name).description})
        return out


ATTENTION = Registry("attention", "FASTVIT_ATTN_BACKEND", "sdpa", probe_shape={"head_dim": 64})
NORM = Registry("norm", "FASTVIT_NORM_BACKEND", "torch", probe_shape={"hidden": 768})
PATCH = Registry("patch", "FASTVIT_PATCH_BACKEND", "conv", probe_shape={"patch_size": 16})
REGISTRIES = {"attention": ATTENTION, "norm": NORM, "patch": PATCH}


@contextlib.contextmanager
def use_backend(attn: str | None = None, *, norm: str | None = None, patch: str | None = None):
    """Select backends for everything inside the ``with`` block that names none explicitly.

    ``with fastvit.use_backend("naive"):`` selects an attention backend;
    ``use_backend(norm="triton", patch="triton")`` the LayerNorm and patch-embedding backends.
    The previous selection is restored on exit.
    """
    with contextlib.ExitStack() as stack:
        for registry, name in ((ATTENTION, attn), (NORM, norm), (PATCH, patch)):
            if name is not None:
                stack.enter_context(registry.use(name))
        yield


def list_backends(device=None, op: str | None = None) -> list[dict]:
    """Rows ``{op, name, available, reason, description}`` for every registered backend."""
    _load_all()
    ops = [op] if op else list(REGISTRIES)
    return [row for o in ops for row in REGISTRIES[o].rows(device)]


def _load_all():
    """Import the modules whose decorators fill the registries."""
    import fastvit.attention  # noqa: F401
    import fastvit.layer_norm  # noqa: F401
    import fastvit.patch_embed  # noqa: F401
