"""What fastvit's dispatch costs per call: each op's entry point (validation, backend selection,
availability) against the same backend's function called directly, on inputs small enough that the
difference is the dispatch itself.

    python benchmarks/dispatch_overhead.py [--calls 2000] [--repeats 5] [--threads 1] [--json PATH]

For each op and each backend that runs here (fastvit's own kernels are left out on a CPU: Triton's
interpreter takes milliseconds per call, burying a microsecond), it prints the median over
``repeats`` of the per-call time of ``calls`` back-to-back calls, both ways, and their difference.
The attention input is (1, 3, 17, 64) fp32: ViT-Ti/16's heads at 64 px.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import fastvit
from fastvit.ops import add_layer_norm, attention, patch_embed


def per_call(fn, calls: int, repeats: int) -> float:
    for _ in range(min(calls, 200)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def cases():
    q, k, v = (torch.randn(1, 3, 17, 64) for _ in range(3))
    x, r = torch.randn(17, 192), torch.randn(17, 192)
    w, b = torch.ones(192), torch.zeros(192)
    images, pw, pb = torch.randn(1, 3, 32, 32), torch.randn(192, 3, 16, 16), torch.zeros(192)
    pos, cls = torch.randn(1, 5, 192), torch.randn(1, 1, 192)
    for backend in fastvit.ATTENTION.backends():
        yield ("attention", backend, lambda: attention(q, k, v, backend=backend.name),
               lambda: backend.fn(q, k, v, scale=None, dropout_p=0.0, bias=None), (q.device, q.dtype, {"head_dim": 64}))
    for backend in fastvit.NORM.backends():
        yield ("norm", backend, lambda: add_layer_norm(x, r, w, b, 1e-6, backend=backend.name),
               lambda: backend.fn(x, r, w, b, 1e-6), (x.device, x.dtype, {"hidden": 192}))
    for backend in fastvit.PATCH.backends():
        yield ("patch", backend, lambda: patch_embed(images, pw, pb, pos, cls, backend=backend.name),
               lambda: backend.fn(images, pw, pb, pos, cls), (images.device, images.dtype, {"patch_size": 16}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for op, backend, dispatched, direct, (device, dtype, shape) in cases():
        ok, reason = fastvit.registries()[op].availability(backend.name, device, dtype, **shape)
        if not ok or (backend.own_kernel and device.type == "cpu"):
            rows.append({"op": op, "backend": backend.name, "skipped": reason or "own kernel on CPU (interpreter)"})
            continue
        t_direct = per_call(direct, args.calls, args.repeats)
        t_dispatch = per_call(dispatched, args.calls, args.repeats)
        rows.append({"op": op, "backend": backend.name, "direct_us": 1e6 * t_direct, "dispatch_us": 1e6 * t_dispatch,
                     "overhead_us": 1e6 * (t_dispatch - t_direct)})
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} x {args.calls} calls")
    print(f"{'op':<10} {'backend':<15} {'direct us':>10} {'fastvit us':>11} {'overhead us':>12}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['op']:<10} {r['backend']:<15} skipped: {r['skipped'][:70]}")
        else:
            print(f"{r['op']:<10} {r['backend']:<15} {r['direct_us']:>10.2f} {r['dispatch_us']:>11.2f} "
                  f"{r['overhead_us']:>12.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
