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
the reason and the backends that could run; nothing ever falls back silently.

The hot path is :meth:`Registry.route`: a backend found able to run is remembered per (name,
device, dtype, shape key), so a call after the first is one dictionary lookup (plus, for a call that
names no backend, the innermost ``use_backend`` selection and the environment variable). Any change to the table of
backends (registration, :meth:`Registry.wrapped`, a test's monkeypatch) clears what was remembered.
Under ``torch.compile`` the route is traced like any Python code: remembered routes are dictionary
reads that dynamo guards on, and the availability check of a route not yet remembered runs at trace
time as a constant (``torch.compiler.assume_constant_result``), so no check ever breaks the graph.
The selection of a module that names no backend (``use_backend``'s list, the environment variable)
is read the same way and guarded on: a compiled model follows a later change by recompiling.

``use_backend`` is per thread: each registry keeps its selections in a ``threading.local`` list, so a
thread sees only the blocks it entered itself (a thread started inside a block does not inherit it;
the environment variable and explicit names are process-wide). Dynamo (torch 2.13) reads a
``threading.local`` attribute as a plain attribute, with no graph break, and guards on the list's
length and items through an attribute read made by the calling thread, so compiled code reused by
another thread checks that thread's selection (a ``ContextVar``, the other per-thread store, broke
the graph at every op). Leaving a block truncates the list to its length on entry, which restores the
selection exactly when blocks nest and never leaves one behind when they do not.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import os
import threading
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
    takes_packing: bool = False  # accepts packed sequences (attention's ``packing``)
    compiles: bool = False      # compiles a kernel at the first call of each new shape (seconds on CPU)
    kernel_choice: Callable | None = None  # (q, k, v) -> name of the kernel that actually runs


class _Table(dict):
    """A registry's backends by name; any change calls ``changed`` (which forgets the routes)."""

    def __init__(self, changed: Callable[[], None]):
        super().__init__()
        self._changed = changed


def _notifying(method):
    def wrapper(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        self._changed()
        return result
    return functools.wraps(method)(wrapper)


for _method in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault", "update"):
    setattr(_Table, _method, _notifying(getattr(dict, _method)))


def _environ_key(var: str):
    """``var`` as CPython's ``os.environ`` stores it internally (None where it does not)."""
    try:
        return os.environ.encodekey(var)
    except AttributeError:
        return None


_REGISTRIES: dict[str, "Registry"] = {}


@torch.compiler.assume_constant_result
def _traced_availability(op: str, name: str, device, dtype, shape: tuple) -> str | None:
    """None if backend ``name`` of ``op`` can run on these inputs, else the BackendError message.
    Under torch.compile it runs at trace time and its result is a constant of the graph, so the
    checks (imports, probes of PyTorch, lru caches) need not be traceable. Outside compile it is a
    plain call."""
    return _availability_now(op, name, device, dtype, shape)


@torch.compiler.disable  # eager always: dynamo may also meet it as a frame of its own (after an error)
def _availability_now(op: str, name: str, device, dtype, shape: tuple) -> str | None:
    reg = _REGISTRIES[op]
    kwargs = dict(zip(reg.keys, shape))
    ok, reason = reg.availability(name, device, dtype, **kwargs)
    if ok:
        return None
    usable = [n for n in reg.names() if reg.availability(n, device, dtype, **kwargs)[0]]
    where = ", ".join([str(torch.device(device)), str(dtype).replace("torch.", "")]
                      + [f"{k}={v}" for k, v in kwargs.items()])
    return f"{op} backend {name!r} cannot run on {where}: {reason}. Backends that can: {', '.join(usable) or 'none'}"


class _Selection(threading.local):
    """One registry's ``use_backend`` selections in the current thread, innermost last: a plain list,
    which torch.compile traces and guards on (a compiled model recompiles when it changes)."""

    def __init__(self):  # runs in each thread on its first read
        self.names: list[str] = []


class Registry:
    """The backends of one op and its selection rules (see the module docstring)."""

    def __init__(self, op: str, env_var: str, default: str, keys: tuple[str, ...] = (),
                 probe_shape: dict | None = None):
        """``keys``: the shape keywords of the availability checks, in the order :meth:`route` takes
        their values; ``probe_shape``: their values used when listing availability."""
        if op in _REGISTRIES:
            raise ValueError(f"a registry for op {op!r} exists already")
        self.op, self.env_var, self.default, self.keys = op, env_var, default, tuple(keys)
        self.probe_shape = dict(probe_shape or {})
        self.routes: dict[tuple, Callable] = {}  # (name, device, dtype, *shape values) -> backend function
        self._backends: dict[str, Backend] = _Table(self.routes.clear)
        self._selection = _Selection()  # use_backend's, per thread (the module docstring)
        # [True] while a use_backend block of this op is open in any thread, else []: a plain list read
        # first, so that a call outside every block skips the thread-local read (60-80 ns on CPython 3.11)
        self._open: list[bool] = []
        self._open_blocks, self._open_lock = 0, threading.Lock()
        self._env_key = _environ_key(env_var)
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
        return self.get(self.selected()).name

    def _environ(self) -> str | None:
        """``os.environ.get(env_var)``, read live on every call, without the key encoding and value
        decoding that make it cost ~0.7 us (read from CPython's ``os.environ._data``; the plain
        ``os.environ.get`` where that does not exist)."""
        try:
            raw = os.environ._data.get(self._env_key)
        except AttributeError:
            return os.environ.get(self.env_var)
        return None if raw is None else os.environ.decodevalue(raw)

    @contextlib.contextmanager
    def use(self, name: str):
        """Select ``name`` for calls that name no backend, inside the ``with`` block."""
        name = self.get(name).name
        names = self._selection.names  # this thread's, also if the block is left from another
        depth = len(names)
        with self._open_lock:
            self._open_blocks += 1
            self._open[:] = [True]
        names.append(name)
        try:
            yield
        finally:
            del names[depth:]  # as on entry; blocks left out of order drop the inner ones too
            with self._open_lock:
                self._open_blocks -= 1
                if not self._open_blocks:
                    self._open.clear()

    def availability(self, name: str, device, dtype, **shape) -> tuple[bool, str]:
        ok, reason = self.get(name).check(torch.device(device), dtype, **shape)
        return bool(ok), ("" if ok else reason)

    def route(self, name: str | None, device: torch.device, dtype: torch.dtype, *shape) -> Callable:
        """The function of the backend selected for these inputs, or BackendError saying why it
        cannot run. ``shape``: the values of the registry's ``keys``, in order (hashable).

        The first call for a (name, device, dtype, shape) checks availability; the function of a
        backend that can run is remembered in :attr:`routes` under the key ``(name, device, dtype,
        *shape)``, so later calls are one dictionary lookup. The ops' entry points read
        :attr:`routes` themselves and call :meth:`admit` on a miss: the same, without a call."""
        key = (self.selected() if name is None else name, device, dtype, *shape)
        return self.routes.get(key) or self.admit(key)

    def selected(self) -> str:
        """The name selected for calls that name none (``use_backend``, the environment variable, the
        default); not checked against the table here (an unknown name fails in :meth:`admit`)."""
        names = self._selection.names if self._open else None
        name = names[-1] if names else None
        if name is None:
            name = self._environ() or self.default
        return name

    def admit(self, key: tuple) -> Callable:
        """Check the availability of route ``key`` = (name, device, dtype, *shape); remember and
        return the backend's function, or raise BackendError with the reason and the backends that
        can run."""
        name, device, dtype, *shape = key
        backend = self.get(name)
        refusal = _traced_availability(self.op, name, device, dtype, tuple(shape))
        if refusal is not None:
            raise BackendError(refusal)
        self.routes[key] = backend.fn
        return backend.fn

    def require(self, name: str | None, device, dtype, **shape) -> Backend:
        """The backend selected for these inputs (shape by keyword; a key left out takes its
        ``probe_shape`` value), or BackendError saying why it cannot run; remembered as :meth:`route`
        does."""
        name = self.resolve(name)
        self.route(name, torch.device(device), dtype, *(shape.get(k, self.probe_shape.get(k)) for k in self.keys))
        return self.get(name)

    @contextlib.contextmanager
    def wrapped(self, wrap: Callable[[Backend], Callable]):
        """Inside the ``with`` block every backend's function is ``wrap(backend)`` (instrumentation such
        as timing each call); the backends are restored on exit."""
        saved = dict(self._backends)
        self._backends.update({n: dataclasses.replace(b, fn=wrap(b)) for n, b in saved.items()})  # routes forgotten
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
    selection holds in the calling thread only, and its previous state is restored on exit."""
    with contextlib.ExitStack() as stack:
        for op, name in chosen.items():
            if name is not None:
                stack.enter_context(registry(op).use(name))
        yield


def list_backends(device=None, op: str | None = None, dtype=torch.float32) -> list[dict]:
    """Rows ``{op, name, available, reason, description}`` for every registered backend."""
    ops = [op] if op else list(_REGISTRIES)
    return [row for o in ops for row in registry(o).rows(device, dtype)]
