"""What fastvit's dispatch costs per call: each op's entry point (validation, backend selection,
availability) against doing the same work directly, on inputs small enough that the difference is
the dispatch itself.

    PYTHONPATH=. python benchmarks/dispatch_overhead.py [--calls 2000] [--repeats 21] [--threads 1]
        [--json PATH]

Two measurements per op and backend that runs here (fastvit's own kernels are left out on a CPU:
Triton's interpreter takes milliseconds per call, burying a microsecond):

* ``dispatch``: the backend's function replaced by a no-op (``Registry.wrapped``), so the entry point
  costs only its dispatch; against the no-op called directly with the same arguments. Free of the
  backend's own run-to-run noise: this is the figure the 1 us target is read from.
* ``vs direct``: the real entry point against the same computation written directly with PyTorch
  (``F.scaled_dot_product_attention``, inside ``sdpa_kernel`` for a pinned kernel; the backend's own
  function where fastvit's code is the computation: naive, LayerNorm, patch embedding).

Both time ``calls`` back-to-back calls per block, the two sides in alternating blocks (A B, then B A,
...) so that a shared machine's load drifts over both alike; each figure is the median over
``repeats`` pairs, and the overhead the median of the per-pair differences (with its interquartile
range). The attention input is (1, 3, 17, 64) fp32: ViT-Ti/16's heads at 64 px.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

import fastvit
from fastvit.ops import add_layer_norm, attention, patch_embed
from fastvit.ops.attention.sdpa import PINNED


def _block(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def paired(direct, dispatched, calls: int = 2000, repeats: int = 21) -> dict:
    """Per-call seconds of ``direct`` and ``dispatched`` timed in alternating blocks of ``calls``
    calls: medians of each side and of the per-pair difference, and the difference's quartiles."""
    for fn in (direct, dispatched):
        _block(fn, min(calls, 200))
    a, b = [], []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            if r % 2 == 0:
                a.append(_block(direct, calls))
                b.append(_block(dispatched, calls))
            else:
                b.append(_block(dispatched, calls))
                a.append(_block(direct, calls))
    finally:
        if gc_was_enabled:
            gc.enable()
    diffs = sorted(y - x for x, y in zip(a, b))
    q1, _, q3 = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else (diffs[0],) * 3
    return {"direct_us": 1e6 * statistics.median(a), "dispatch_us": 1e6 * statistics.median(b),
            "overhead_us": 1e6 * statistics.median(diffs), "overhead_q1_us": 1e6 * q1, "overhead_q3_us": 1e6 * q3}


def _noop(*args, **kwargs):
    return None


def _pinned(kernel, q, k, v):
    with sdpa_kernel(kernel):
        return F.scaled_dot_product_attention(q, k, v)


def cases():
    """(op, backend, entry point, direct equivalent, direct no-op call, availability arguments)."""
    q, k, v = (torch.randn(1, 3, 17, 64) for _ in range(3))
    x, r = torch.randn(17, 192), torch.randn(17, 192)
    w, b = torch.ones(192), torch.zeros(192)
    images, pw, pb = torch.randn(1, 3, 32, 32), torch.randn(192, 3, 16, 16), torch.zeros(192)
    pos, cls = torch.randn(1, 5, 192), torch.randn(1, 1, 192)
    for backend in fastvit.ATTENTION.backends():
        name = backend.name
        if name == "sdpa":
            direct = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        elif name in PINNED:
            direct = lambda kernel=PINNED[name]: _pinned(kernel, q, k, v)  # noqa: E731
        else:
            direct = lambda fn=backend.fn: fn(q, k, v, scale=None, dropout_p=0.0, bias=None)  # noqa: E731
        yield ("attention", backend, lambda name=name: attention(q, k, v, backend=name), direct,
               lambda: _noop(q, k, v, scale=None, dropout_p=0.0, bias=None), (q.device, q.dtype, {"head_dim": 64}))
    for backend in fastvit.NORM.backends():
        yield ("norm", backend, lambda name=backend.name: add_layer_norm(x, r, w, b, 1e-6, backend=name),
               lambda fn=backend.fn: fn(x, r, w, b, 1e-6), lambda: _noop(x, r, w, b, 1e-6),
               (x.device, x.dtype, {"hidden": 192}))
    for backend in fastvit.PATCH.backends():
        yield ("patch", backend, lambda name=backend.name: patch_embed(images, pw, pb, pos, cls, backend=name),
               lambda fn=backend.fn: fn(images, pw, pb, pos, cls), lambda: _noop(images, pw, pb, pos, cls),
               (images.device, images.dtype, {"patch_size": 16}))


@contextlib.contextmanager
def _backends_as_noops():
    with contextlib.ExitStack() as stack:
        for reg in fastvit.registries().values():
            stack.enter_context(reg.wrapped(lambda backend: _noop))
        yield


def measure(calls: int, repeats: int) -> list[dict]:
    rows = []
    for op, backend, dispatched, direct, noop, (device, dtype, shape) in cases():
        ok, reason = fastvit.registries()[op].availability(backend.name, device, dtype, **shape)
        if not ok or (backend.own_kernel and device.type == "cpu"):
            rows.append({"op": op, "backend": backend.name, "skipped": reason or "own kernel on CPU (interpreter)"})
            continue
        dispatched()  # availability checked and remembered before anything is timed
        row = {"op": op, "backend": backend.name}
        with _backends_as_noops():
            row["dispatch"] = paired(noop, dispatched, calls, repeats)
        row["vs_direct"] = paired(direct, dispatched, calls, repeats)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args.calls, args.repeats)
    print(f"torch {torch.__version__}, {args.threads} thread(s); medians of {args.repeats} alternating pairs of "
          f"{args.calls}-call blocks; us per call")
    print(f"{'op':<10} {'backend':<15} {'dispatch only':>14} {'direct':>9} {'fastvit':>9} {'overhead':>9} "
          f"{'(IQR)':>14}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['op']:<10} {r['backend']:<15} skipped: {r['skipped'][:70]}")
            continue
        d, v = r["dispatch"], r["vs_direct"]
        print(f"{r['op']:<10} {r['backend']:<15} {d['overhead_us']:>14.2f} {v['direct_us']:>9.2f} "
              f"{v['dispatch_us']:>9.2f} {v['overhead_us']:>9.2f} {v['overhead_q1_us']:>6.2f}..{v['overhead_q3_us']:<6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "calls": args.calls,
                       "repeats": args.repeats, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
