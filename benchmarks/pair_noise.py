"""How noisy a paired comparison of whole models is on this machine, and how much it gains from timing
the two members of a pair back to back: the noise an A/A twin measures, taken apart.

    PYTHONPATH=. python benchmarks/pair_noise.py [--model vit_tiny_patch16_224] [--between swin_tiny_patch4_window7_224]
        [--resolution 448] [--pass fwd|train] [--seconds 60] [--threads N] [--json PATH]

One model is built once and timed as its own twin (same module, same images). Each repeat times it
twice back to back (which of the two calls counts as ``a`` is drawn at random), then ``--between``
once, then the model again: ``adjacent`` is log(a / b) of the back-to-back pair, ``apart`` the log-ratio
of the last call against ``a``, with the ``--between`` call (and, when ``a`` came first, ``b``) between
them, as members of a shuffled comparison group stand apart in a round. For both it prints the standard deviation, the
interquartile range and the rounds a group would need for the median of its A/A ratios to lie within
±2% of 1 at 95% (the median of n ratios has a standard error of about 1.25 sigma / sqrt(n), sigma
taken robustly as IQR / 1.349).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import time

import torch

import fastvit
from fastvit import bench as fb

TARGET = 0.02  # the A/A median's distance from 1 a group is to stay within


def build(name: str, resolution: int, train: bool) -> fb.Workload:
    net = fastvit.create_model(name, img_size=resolution).train(train)
    images = torch.randn(1, 3, resolution, resolution)
    return fb.workload(lambda: net(images), train=train, leaves=list(net.parameters()))


def seconds(work: fb.Workload) -> float:
    if work.reset is not None:
        work.reset()
    start = time.perf_counter()
    work.fn()
    return time.perf_counter() - start


def spread(logs: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(logs, n=4)
    sigma = (q3 - q1) / 1.349
    rounds = math.ceil((1.96 * 1.2533 * sigma / TARGET) ** 2) if sigma > 0 else 1
    return {"pairs": len(logs), "sd": statistics.stdev(logs), "iqr": q3 - q1, "median": statistics.median(logs),
            "rounds_for_2pct": rounds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--between", default="swin_tiny_patch4_window7_224")
    p.add_argument("--resolution", type=int, default=448)
    p.add_argument("--pass", dest="pass_name", choices=("fwd", "train"), default="fwd")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of repeats after the warm-up")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = args.pass_name == "train"
    model, between = build(args.model, args.resolution, train), build(args.between, args.resolution, train)
    for _ in range(2):  # warm-up
        seconds(model), seconds(between)
    rng = random.Random(args.seed)
    adjacent, apart, calls = [], [], []
    gc.collect()
    gc.disable()
    try:
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end or len(adjacent) < 3:
            x, y = seconds(model), seconds(model)
            a, b = (x, y) if rng.random() < 0.5 else (y, x)
            seconds(between)
            c = seconds(model)
            adjacent.append(math.log(a / b))
            apart.append(math.log(c / a))
            calls.append(a)
    finally:
        gc.enable()
    out = {"model": args.model, "between": args.between, "resolution": args.resolution, "pass": args.pass_name,
           "threads": torch.get_num_threads(), "median_call_s": statistics.median(calls),
           "adjacent": spread(adjacent), "apart": spread(apart)}
    print(f"{args.model} at {args.resolution} px, {args.pass_name}, {out['threads']} threads, "
          f"{out['median_call_s'] * 1e3:.1f} ms a call (A/A log-ratios):")
    for key in ("adjacent", "apart"):
        s = out[key]
        print(f"  {key:8s} {s['pairs']} pairs: sd {s['sd']:.4f}, IQR {s['iqr']:.4f}, median {s['median']:+.4f}; "
              f"about {s['rounds_for_2pct']} rounds for an A/A median within ±2% of 1")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
