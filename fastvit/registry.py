"""Backend registries: the generic machinery every op (attention, LayerNorm, patch embedding) shares.

A :class:`Backend` is data plus a function: its name, an availability check
``(device, dtype, **shape) -> (ok, reason)`` and its traits (the reference implementation, holds the
N x N matrix, fastvit's own kernel, takes an additive bias, ...). An op creates one
:class:`Registry` and its backend modules join it with :meth:`Registry.register`; tests, the CLI,
the benchmarks and the report iterate the registries and read the traits, so a new backend is
covered by existing and nothing above the ops tests a backend's name. This module names no op.

Selection, highest priority first:

1. an explicit name (a constructor argument, ``model.set_backend(...)``, ``backend=`` of an op's
   function);
2. the innermost ``with use_backend(op=name)`` block;
3. the op's environment variable (e.g. ``FASTVIT_ATTN_BACKEND``);
4. the op's default.

The choice is resolved on every call, not frozen at construction: a module built without an
explicit backend follows the context manager and environment at the time it runs. An unknown name,
or a backend that cannot run on the inputs at hand, raises :class:`~fastvit.errors.BackendError` with
the reason and the backends that could run; nothing ever falls back silently. Availability is cached
per (backend, device, dtype, shape), so the hot path of a call is a few dictionary lookups.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Callable

import torch

from fastvit.errors import BackendError

Check = Callable[..., "tuple[bool, str]"]


def always(device, dtype, **shape) -> tuple[bool, str]:
    """The availability check of a backend that runs wherever torch does."""
    return True, ""


@dataclass(frozen=True)
class Backend:
    """One implementation of an op, with what it supports and how it behaves."""

    op: str
    name: str
    fn: Callable
    check: Check = always
    description: str = ""
    reference: bool = False     # the op's reference implementation (float64 oracle of the checks)
    materializes: bool = False  # holds the (B, H, N, N) attention matrix: memory grows as N^2
    own_kernel: bool = False    # fastvit's own Triton kernel; on CPU it runs only in Triton's interpreter
    peer: bool = False          # a fused library kernel that fastvit's own kernels are measured against
    takes_bias: bool = False    # accepts an additive attention bias
    kernel_choice: Callable | None = None  # (q, k, v) -> name of the kernel that actually runs


_REGISTRIES: dict[str, "Registry"] = {}


class Registry:
    """The backends of one op and its selection rules (see the module docstring)."""

    def __init__(self, op: str, env_var: str, default: str, probe_shape: dict | None = None):
        if op in _REGISTRIES:
            raise ValueError(f"a registry for op {op!r} exists already")
        self.op, self.env_var, self.default = op, env_var, default
        self.probe_shape = dict(probe_shape or {})  # shape keywords used when listing availability
        self._backends: dict[str, Backend] = {}
        self._context = contextvars.ContextVar(f"fastvit_{op}_backend", default=None)
        self._usable: dict[tuple, Backend] = {}  # (name, device, dtype, shape) -> backend that can run
        _REGISTRIES[op] = self

    # -- registration ------------------------------------------------------------------------------
    def register(self, name: str, *, check: Check = always, description: str = "", **traits):
        """Decorator adding ``fn`` to the registry under ``name`` with its traits (see Backend)."""
        def wrap(fn):
            if name in self._backends:
                raise ValueError(f"{self.op} backend {name!r} is registered twice")
            self._backends[name] = Backend(self.op, name, fn, check, description, **traits)
            return fn
        return wrap

    def names(self) -> list[str]:
        return list(self._backends)

    def backends(self) -> list[Backend]:
        return list(self._backends.values())

    def get(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BackendError(f"unknown {self.op} backend {name!r}{hint}; known: {', '.join(self.names())}")
        return backend

    def validate(self, name: str | None) -> str | None:
        """Return ``name`` unchanged after checking that it is registered (None passes through)."""
        if name is not None:
            self.get(name)
        return name

    @property
    def reference(self) -> Backend:
        """The backend marked ``reference=True``."""
        refs = [b for b in self._backends.values() if b.reference]
        if len(refs) != 1:
            raise RuntimeError(f"{self.op} has {len(refs)} reference backends; exactly one is required")
        return refs[0]

    # -- selection ---------------------------------------------------------------------------------
    def resolve(self, explicit: str | None = None) -> str:
        """The backend name in force: explicit > context manager > environment variable > default."""
        if explicit is not None:  # checked first and alone: a module with its backend set explicitly
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
        """The backend selected for these inputs, or BackendError saying why it cannot run.

        A backend found able to run is remembered for the same (device, dtype, shape), so repeated
        calls skip its availability check; a re-registered backend is checked afresh."""
        name = self.resolve(name)
        key = (name, device, dtype, *shape.items())
        backend = self._usable.get(key)
        if backend is not None and self._backends.get(name) is backend:
            return backend
        backend = self.get(name)
        ok, reason = self.availability(name, device, dtype, **shape)
        if not ok:
            usable = [n for n in self.names() if self.availability(n, device, dtype, **shape)[0]]
            where = ", ".join([str(torch.device(device)), str(dtype).replace("torch.", "")]
                              + [f"{k}={v}" for k, v in shape.items()])
            raise BackendError(f"{self.op} backend {name!r} cannot run on {where}: {reason}. "
                               f"Backends that can: {', '.join(usable) or 'none'}")
        self._usable[key] = backend
        return backend

    @contextlib.contextmanager
    def wrapped(self, wrap: Callable[[Backend], Callable]):
        """Inside the ``with`` block every backend's function is ``wrap(backend)`` (instrumentation such
        as timing each call); the backends are restored on exit."""
        saved = dict(self._backends)
        self._backends.update({n: dataclasses.replace(b, fn=wrap(b)) for n, b in saved.items()})
        try:
            yield
        finally:
            self._backends.clear()
            self._backends.update(saved)

    def rows(self, device=None, dtype=torch.float32, **shape) -> list[dict]:
        """One row per backend: op, name, available, reason, description (on ``device``, default
        CUDA if present)."""
        from fastvit.devices import default_device

        device = device or default_device()
        shape = {**self.probe_shape, **shape}
        out = []
        for backend in self._backends.values():
            ok, reason = self.availability(backend.name, device, dtype, **shape)
            out.append({"op": self.op, "name": backend.name, "available": ok, "reason": reason,
                        "description": backend.description})
        return out


def registries() -> dict[str, Registry]:
    """Every op's registry, by op name, in the order the ops were defined."""
    return dict(_REGISTRIES)


def registry(op: str) -> Registry:
    if op not in _REGISTRIES:
        raise BackendError(f"unknown op {op!r}; ops: {', '.join(_REGISTRIES)}")
    return _REGISTRIES[op]


@contextlib.contextmanager
def use_backend(**chosen: str | None):
    """Select backends, by op, for everything inside the ``with`` block that names none explicitly:
    ``with use_backend(attention="naive", norm="triton"):``. ``None`` leaves an op as it is. The
    previous selection is restored on exit."""
    with contextlib.ExitStack() as stack:
        for op, name in chosen.items():
            if name is not None:
                stack.enter_context(registry(op).use(name))
        yield


def list_backends(device=None, op: str | None = None, dtype=torch.float32) -> list[dict]:
    """Rows ``{op, name, available, reason, description}`` for every registered backend."""
    ops = [op] if op else list(_REGISTRIES)
    return [row for o in ops for row in registry(o).rows(device, dtype)]
