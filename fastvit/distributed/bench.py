"""The sweep by world size: ring attention and the sharded ViT at growing resolution, one process
per rank (started by torchrun), rows appended to a results file in the sweep's JSONL format.

    torchrun --nproc-per-node=P -m fastvit.distributed bench --results world.jsonl [--resolutions 224,448]
    python -m fastvit.distributed sweep --world-sizes 1,2,4 --results world.jsonl   # torchrun per P

Each configuration is measured on every rank at once: ``--rounds`` timed calls, each started together
after a barrier, a call's time the slowest rank's (what the step costs the group), the row's median
and quartiles over the calls; then one call of its own for the peak memory, measured on each rank
(fastvit.bench.memory: the torch allocator's peak on CPU, the caching allocator's on CUDA) and
recorded per rank (``peak_mem_bytes_per_rank``) and as the largest (``peak_mem_bytes``).
``comm_bytes`` is what one rank sends through the ring per call (analytic: ring.comm_bytes; the
model's is its blocks' ring traffic, ``grad_sync_bytes`` the gradient all-reduce's buffer). Rows
carry ``way = "ring/P=<P>"`` and ``world_size`` so that the same configuration at another world size
is another row. Timings from more ranks than cores (P = 4 on a 2-core machine) measure contention,
not scaling; the memory per rank is what the sweep is for.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

from fastvit.bench.env import device_name, environment
from fastvit.bench.memory import is_oom, peak_memory
from fastvit.bench.rows import RowWriter, row_summary
from fastvit.bench.work import num_tokens
from fastvit.distributed.launch import default_device, init_process_group
from fastvit.distributed.ring import comm_bytes, ring_attention
from fastvit.distributed.sharded import ShardedViT
from fastvit.distributed.shards import Shards

MODEL = "vit_tiny_patch16_224"  # heads 3, head dim 64, patch 16
OP = "ring_attention"
SHARDED = "sharded_model"


def _slowest(seconds: float, device) -> float:
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _per_rank(value: int, device) -> list[int]:
    t = torch.tensor([value], dtype=torch.int64, device=device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, rounds: int) -> dict:
    """Timing (slowest rank per call) and peak memory per rank of ``fn``, run on every rank."""
    fn()  # warm-up (and the kernels' first compile)
    times = []
    for _ in range(rounds):
        dist.barrier()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(_slowest(time.perf_counter() - start, device))
    dist.barrier()
    peaks = _per_rank(peak_memory(fn, device), device)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "iqr_s": q[2] - q[0],
            "min_s": min(times), "max_s": max(times), "mean_s": statistics.fmean(times), "rounds": len(times),
            "times_s": times, "peak_mem_bytes": max(peaks), "peak_mem_bytes_per_rank": peaks}


def op_workload(resolution: int, backend: str, pass_: str, device, batch: int = 1, heads: int = 3,
                head_dim: int = 64, patch: int = 16):
    """ViT-Ti/16's attention at ``resolution``: (the call, its row fields)."""
    N = num_tokens(resolution, patch)
    shards = Shards.even(N)
    shape = (batch, heads, shards.local, head_dim)
    q, k, v = (torch.randn(shape, device=device, requires_grad=pass_ == "train") for _ in range(3))
    dout = torch.randn(shape, device=device)

    def call():
        if pass_ == "train":
            ring_attention(q, k, v, shards=shards, backend=backend).backward(dout)
            return None
        with torch.no_grad():
            return ring_attention(q, k, v, shards=shards, backend=backend)

    fields = {"op": OP, "model": None, "tokens": N, "tokens_per_rank": shards.longest, "heads": heads,
              "head_dim": head_dim, "comm_bytes": comm_bytes(batch, heads, shards, head_dim, torch.float32, pass_)}
    return call, fields


def model_workload(resolution: int, backend: str, pass_: str, device, batch: int = 1):
    """The sharded ViT-Ti/16 at ``resolution``, forward or training step (with the gradient sum)."""
    import fastvit

    torch.manual_seed(0)  # the same weights on every rank
    model = fastvit.create_model(MODEL, img_size=resolution).to(device).train(pass_ == "train")
    sharded = ShardedViT(model, backend=backend)
    images = torch.randn(batch, 3, resolution, resolution, device=device)
    cfg = model.cfg
    _, shards = sharded.layout(cfg.grid_size)

    def call():
        if pass_ == "train":
            model.zero_grad(set_to_none=True)
            sharded(images).sum().backward()
            sharded.sync_grads()
            return None
        with torch.no_grad():
            return sharded(images)

    head_dim = cfg.embed_dim // cfg.num_heads
    per_layer = comm_bytes(batch, cfg.num_heads, shards, head_dim, torch.float32, pass_)
    params = sum(p.numel() for p in model.parameters())
    fields = {"op": SHARDED, "model": MODEL, "tokens": cfg.num_tokens, "tokens_per_rank": shards.longest,
              "comm_bytes": cfg.depth * per_layer, "grad_sync_bytes": 4 * params if pass_ == "train" else 0}
    return call, fields


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastvit.distributed bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="JSONL file the rows are appended to (rank 0 writes)")
    parser.add_argument("--resolutions", default="224,448,672", help="comma-separated image sizes (px)")
    parser.add_argument("--what", default="op,model", help="op (ring attention), model (sharded ViT-Ti/16), or both")
    parser.add_argument("--backends", default=None, help="local attention backends of the op rows (default: the "
                        "device's ring default; naive shows the materialized block's memory)")
    parser.add_argument("--passes", default="fwd,train")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    args = parser.parse_args(argv)
    rank, world = init_process_group()
    device = default_device()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    from fastvit.distributed.local import DEFAULTS

    default = DEFAULTS.get(device.type, "naive")
    backends = args.backends.split(",") if args.backends else [default]
    writer = None
    if rank == 0:
        path = Path(args.results)
        fresh = not path.exists() or path.stat().st_size == 0
        writer = RowWriter(path, truncate=False)
        if fresh:
            writer.write({"environment": environment(device)})
    base = {"library": "fastvit", "norm_backend": None, "patch_backend": None, "batch": 1, "dtype": "fp32",
            "way": f"ring/P={world}", "world_size": world, "device": device.type, "device_name": device_name(device),
            "threads_per_rank": torch.get_num_threads() if device.type == "cpu" else None}
    plan = [(what, r, b, p) for what in args.what.split(",") for r in map(int, args.resolutions.split(","))
            for b in (backends if what == "op" else [default]) for p in args.passes.split(",")]
    for what, resolution, backend, pass_ in plan:
        build = op_workload if what == "op" else model_workload
        row = {**base, "backend": backend, "resolution": resolution, "pass": pass_}
        try:
            call, fields = build(resolution, backend, pass_, device)
            row.update(fields)
            row.update(measure(call, device, args.rounds), status="ok")
        except Exception as err:  # noqa: BLE001  (a row records it; every rank fails alike or times out)
            row["status"] = "oom" if is_oom(err) else f"error: {type(err).__name__}: {err}"
        del build
        if writer is not None:
            writer.write(row)
            print(f"P={world} {what} {resolution}px {backend} {pass_}: {row_summary(row)}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0

