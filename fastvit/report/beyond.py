"""The "Beyond one device" section: memory per rank against resolution for each world size, from the
rows of the sweep by world size (fastvit/distributed/bench.py), and the largest resolution that fits
a given memory per rank.

    python -m fastvit.distributed report world.jsonl -o report/ [--memory-per-rank-gib 80]

A pure function of the rows (the same rows give the same bytes). The largest resolution that fits is
read two ways: the largest *measured* resolution whose peak per rank is within the budget, and the
resolution where a power law fitted to the measured peaks (log memory against log resolution, per
world size, over the ok rows) reaches the budget -- an extrapolation, labelled as one, and only where
at least two resolutions were measured.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from fastvit.bench.results import read_rows

OP, SHARDED = "ring_attention", "sharded_model"
_MIB = 2 ** 20


def _series(rows: list[dict]) -> dict[tuple, dict[int, dict[int, dict]]]:
    """(op, backend, pass) -> world size -> resolution -> row, ok rows only (the last of duplicates)."""
    out: dict = {}
    for row in rows:
        if row.get("status") != "ok" or row.get("op") not in (OP, SHARDED):
            continue
        key = (row["op"], row["backend"], row["pass"])
        out.setdefault(key, {}).setdefault(int(row["world_size"]), {})[int(row["resolution"])] = row
    return out


def fit(points: dict[int, dict]) -> tuple[float, float] | None:
    """(log memory intercept, exponent) of memory per rank against resolution, least squares in logs."""
    pts = [(math.log(r), math.log(row["peak_mem_bytes"])) for r, row in points.items() if row["peak_mem_bytes"] > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return my - slope * mx, slope


def largest_fitting(points: dict[int, dict], budget: float, patch: int = 16) -> tuple[int | None, int | None]:
    """(largest measured resolution within ``budget`` bytes per rank, the fitted law's resolution at the
    budget rounded down to the patch size)."""
    measured = [r for r, row in points.items() if row["peak_mem_bytes"] <= budget]
    law = fit(points)
    extrapolated = None
    if law is not None and law[1] > 0:
        extrapolated = int(math.exp((math.log(budget) - law[0]) / law[1]) * (1 + 1e-9)) // patch * patch
    return (max(measured) if measured else None), extrapolated


def _label(key: tuple) -> str:
    op, backend, pass_ = key
    what = "sharded ViT-Ti/16" if op == SHARDED else "ring attention (ViT-Ti/16's heads)"
    return f"{what}, {backend}, {'training step' if pass_ == 'train' else 'forward'}"


def section(rows: list[dict], env: dict, budget_gib: float = 80.0) -> str:
    """The section's markdown."""
    series = _series(rows)
    if not series:
        return "## Beyond one device\n\nNo rows of the sweep by world size.\n"
    worlds = sorted({p for s in series.values() for p in s})
    budget = budget_gib * 2 ** 30
    threads = sorted({r.get("threads_per_rank") for r in rows if r.get("threads_per_rank")})
    lines = ["## Beyond one device", "",
             f"- {env.get('device_name', env.get('device', '?'))}; world sizes {', '.join(map(str, worlds))} "
             f"(one process per rank, torch.distributed "
             f"{'NCCL' if env.get('device') == 'cuda' else 'gloo'}"
             f"{', ' + '/'.join(map(str, threads)) + ' thread(s) per rank' if threads else ''}); fp32, batch 1.",
             "- Peak memory: the largest rank's, measured (torch's allocator) during one call; latency: median over "
             "calls of the slowest rank; sent: bytes one rank passes round the ring per call (analytic).",
             "- Ranks beyond the cores time contention, not scaling: read the memory columns.",
             "- The fitted law is of the whole peak, the fixed part (a training step's gradients and their summed "
             "copy) included: where that part dominates the measured sizes its exponent reads low and the "
             "extrapolation is loose; the measured column is the firm one.", ""]
    for key in sorted(series):
        by_world = series[key]
        resolutions = sorted({r for s in by_world.values() for r in s})
        lines += [f"### {_label(key)}", "",
                  "| resolution | tokens | " + " | ".join(f"P={p} MiB/rank | P={p} ms | P={p} sent MiB"
                                                          for p in worlds) + " |",
                  "|---" * (2 + 3 * len(worlds)) + "|"]
        for res in resolutions:
            tokens = next(s[res]["tokens"] for s in by_world.values() if res in s)
            cells = []
            for p in worlds:
                row = by_world.get(p, {}).get(res)
                cells += (["", "", ""] if row is None else
                          [f"{row['peak_mem_bytes'] / _MIB:.1f}", f"{row['median_s'] * 1e3:.1f}",
                           f"{row.get('comm_bytes', 0) / _MIB:.1f}"])
            lines.append(f"| {res} | {tokens} | " + " | ".join(cells) + " |")
        fits = []
        for p in worlds:
            law = fit(by_world.get(p, {}))
            measured, extrapolated = largest_fitting(by_world.get(p, {}), budget)
            exp_text = f"memory per rank ~ resolution^{law[1]:.2f}" if law else "one resolution measured"
            fits.append(f"P={p}: {exp_text}; largest measured within {budget_gib:g} GiB per rank: "
                        f"{measured or 'none'} px; fitted law reaches it at "
                        f"{f'{extrapolated} px (extrapolated)' if extrapolated else 'n/a'}")
        lines += [""] + [f"- {f}" for f in fits] + [""]
    lines += [_closing(series, worlds), ""]
    return "\n".join(lines)


def _closing(series, worlds) -> str:
    """Memory per rank and latency for each P at the largest resolution every P measured."""
    notes = []
    for key in sorted(series):
        by_world = series[key]
        common = set.intersection(*(set(by_world.get(p, {})) for p in worlds))
        if not common:
            continue
        res = max(common)
        cells = ", ".join(f"P={p} {by_world[p][res]['peak_mem_bytes'] / _MIB:.1f} MiB / "
                          f"{by_world[p][res]['median_s'] * 1e3:.0f} ms" for p in worlds)
        notes.append(f"{_label(key)} at {res} px ({by_world[worlds[0]][res]['tokens']} tokens): {cells}")
    return "At the largest resolution measured at every world size (peak memory per rank / latency): " + \
        "; ".join(notes) + "."


def figure(rows: list[dict], path: Path) -> Path | None:
    """Memory per rank against resolution, one line per world size and workload (log-log); None
    without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = _series(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in sorted(series):
        for p, points in sorted(series[key].items()):
            res = sorted(points)
            ax.plot(res, [points[r]["peak_mem_bytes"] / _MIB for r in res], marker="o",
                    label=f"{_label(key)}, P={p}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("peak memory per rank (MiB)")
    ax.legend(fontsize=6)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastvit.distributed report")
    parser.add_argument("results", help="the sweep by world size's JSONL results")
    parser.add_argument("-o", "--out", default="report-world", help="folder for beyond.md and beyond.png")
    parser.add_argument("--memory-per-rank-gib", type=float, default=80.0)
    args = parser.parse_args(argv)
    env, numbered, _ = read_rows(Path(args.results))
    rows = [row for _, row in numbered]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = section(rows, env, args.memory_per_rank_gib)
    if figure(rows, out / "beyond.png") is not None:
        text += "\n![peak memory per rank against resolution](beyond.png)\n"
    (out / "beyond.md").write_text(text)
    print(out / "beyond.md")
    return 0
