"""The ``fastvit`` command: backends, check, report."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from fastvit.devices import DTYPES


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def cmd_backends(args) -> int:
    from fastvit import list_backends
    from fastvit.devices import DTYPES, default_device

    device = args.device or default_device().type
    rows = [[r["op"], r["name"], "yes" if r["available"] else "no", r["reason"] or r["description"]]
            for r in list_backends(device, dtype=DTYPES[args.dtype])]
    print(f"device: {device}, dtype: {args.dtype}")
    print(_table(rows, ["op", "backend", "available", "reason / description"]))
    return 0


def cmd_check(args) -> int:
    from fastvit.check import results_as_dicts, run_check
    from fastvit.devices import default_device
    from fastvit.registry import registries

    backends = {}
    for op, value in (("attention", args.backends), ("norm", args.norm_backends), ("patch", args.patch_backends)):
        if value is not None:
            backends[op] = [b for b in value.split(",") if b]
    results = run_check(args.model, backends=backends, dtype=args.dtype, device=args.device, batch=args.batch_size,
                        img_size=args.img_size, backward=args.backward)
    rows = []
    for r in results:
        fmt = lambda x: "" if x is None else f"{x:.2e}"  # noqa: E731
        rows.append([r.op, r.backend, fmt(r.max_abs), fmt(r.max_rel), fmt(r.bound),
                     "" if r.top1_agreement is None else f"{100 * r.top1_agreement:.0f}%",
                     fmt(r.grad_max_abs), r.status])
    device = args.device or default_device().type
    refs = "/".join(reg.reference.name for reg in registries().values())
    print(f"model {args.model}, {args.dtype}, {device}, batch {args.batch_size}; reference: float64 {refs}")
    print(_table(rows, ["op", "backend", "max abs err", "max rel err", "bound", "top-1 agree", "grad err", "result"]))
    failed = [r for r in results if r.failed]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "device": device, "batch": args.batch_size,
                       "torch": torch.__version__, "results": results_as_dicts(results)}, f, indent=2)
    print(f"{len(results) - len(failed)} ok (passed or skipped), {len(failed)} failed")
    return 1 if failed else 0


def cmd_report(args) -> int:
    from fastvit.report import write_report

    path = write_report(args.results, args.output, compare=args.compare)
    print(f"report written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastvit", description="ViT kernels: backends, equivalence checks, reports")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("backends", help="list backends and whether they run on this machine")
    b.add_argument("--device", choices=["cpu", "cuda"])
    b.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    b.set_defaults(func=cmd_backends)

    c = sub.add_parser("check", help="model-level equivalence of every backend against a float64 reference")
    c.add_argument("--model", default="vit_small_patch16_224")
    c.add_argument("--backends", help="attention backends, comma-separated (default: all)")
    c.add_argument("--norm-backends", help="LayerNorm backends (default: all)")
    c.add_argument("--patch-backends", help="patch-embedding backends (default: all)")
    c.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    c.add_argument("--device", choices=["cpu", "cuda"])
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--img-size", type=int)
    c.add_argument("--backward", action="store_true", help="also compare input gradients")
    c.add_argument("--json", metavar="PATH", help="write the results as JSON")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("report", help="turn benchmark results into a report with tables and plots")
    r.add_argument("results", help="the sweep's results.jsonl (an older run's pytest-benchmark JSON is read too)")
    r.add_argument("-o", "--output", default="report", help="output directory")
    r.add_argument("--compare", metavar="OTHER", help="a second results file to put side by side")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fastvit.errors import FastViTError

    try:
        return args.func(args)
    except FastViTError as err:
        print(f"fastvit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
