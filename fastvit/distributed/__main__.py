"""``python -m fastvit.distributed``: the sharded model and the sweep by world size.

    torchrun --nproc-per-node=2 -m fastvit.distributed run --model vit_tiny_patch16_224 --img-size 448 --check
    torchrun --nproc-per-node=2 -m fastvit.distributed bench --results world.jsonl
    python -m fastvit.distributed sweep --world-sizes 1,2,4 --results world.jsonl    # torchrun per world size
    python -m fastvit.distributed report world.jsonl -o report/

``run`` builds the model with seeded weights on every rank, runs the sharded forward (and with
``--train`` a training step with the gradient sum) and prints, on rank 0, the time, each rank's peak
memory and, with ``--check``, the largest difference of logits and gradients from the
single-process model (which every rank then also builds and runs: for small models).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def _run(argv) -> int:
    import torch
    import torch.distributed as dist

    import fastvit
    from fastvit.bench.memory import peak_memory
    from fastvit.distributed.launch import default_device, init_process_group
    from fastvit.distributed.sharded import ShardedViT
    from fastvit.testing import compare

    parser = argparse.ArgumentParser(prog="python -m fastvit.distributed run")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--backend", default=None, help="ring attention's local backend (naive, sdpa-flash, triton)")
    parser.add_argument("--train", action="store_true", help="a training step: loss, backward, gradient sum")
    parser.add_argument("--check", action="store_true", help="compare with the single-process model")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    args = parser.parse_args(argv)
    rank, world = init_process_group()
    device = default_device()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)

    def build():
        torch.manual_seed(0)
        return fastvit.create_model(args.model, img_size=args.img_size).to(device).train(args.train)

    model = build()
    sharded = ShardedViT(model, backend=args.backend)
    torch.manual_seed(1)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        if not args.train:
            with torch.no_grad():
                return sharded(images)
        logits = sharded(images)
        logits.float().square().mean().backward()
        sharded.sync_grads()
        return logits.detach()

    step()
    start = time.perf_counter()
    logits = step()
    seconds = time.perf_counter() - start
    peak = torch.tensor([peak_memory(step, device)], device=device)
    peaks = [torch.empty_like(peak) for _ in range(world)]
    dist.all_gather(peaks, peak)
    if rank == 0:
        mib = ", ".join(f"{int(p.item()) / 2 ** 20:.1f}" for p in peaks)
        print(f"{args.model} at {args.img_size} px, {world} ranks ({'training step' if args.train else 'forward'}): "
              f"{seconds * 1e3:.1f} ms; peak memory per rank {mib} MiB", flush=True)
    if args.check:
        ref = build().double()
        logits_ref = ref(images.double())
        checks = {"logits": compare(logits, logits_ref)}
        if args.train:
            logits_ref.square().mean().backward()
            grads = [compare(p.grad, r.grad) for p, r in zip(model.parameters(), ref.parameters())]
            checks["worst parameter gradient"] = max(grads, key=lambda c: c.max_abs / c.bound)
        lines = [c.describe(name) for name, c in checks.items()]
        ok = all(c.ok for c in checks.values())
        if rank == 0:
            print("\n".join(lines), flush=True)
        if not ok:
            return 1
    dist.destroy_process_group()
    return 0


def _sweep(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastvit.distributed sweep",
                                     description="torchrun the bench once per world size (the rest of the "
                                                 "arguments go to bench)")
    parser.add_argument("--world-sizes", default="1,2,4")
    args, rest = parser.parse_known_args(argv)
    for world in map(int, args.world_sizes.split(",")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "fastvit.distributed", "bench", *rest]
        print("+", " ".join(cmd), flush=True)
        code = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}).returncode
        if code:
            return code
    return 0


def _report(argv) -> int:
    from fastvit.report.beyond import main

    return main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": _run, "sweep": _sweep, "report": _report}
    if not argv or argv[0] not in (*commands, "bench"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "bench":
        from fastvit.distributed.bench import run

        return run(argv[1:])
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
