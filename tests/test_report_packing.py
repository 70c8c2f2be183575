"""The report's "Packing against padding" on made-up rows of mixed-resolution groups (the three ways
timed in the same interleaved rounds with an A/A twin of padded, a backend whose packed way was
skipped): the table with padded-token fractions, paired ratios, verdicts and peak memory, the
Summary's line, the figure, the sections by size left alone, and the same bytes from the same rows."""
import hashlib
import json

import numpy as np
import pytest

from fastvit import bench as fb
from fastvit.report import load_results, write_report
from fastvit.report.summary import MAX_BULLETS, summary

SPEC = fb.MixedImages(8, 224, 512, seed=0, buckets=4)
ROUNDS = 30
# seconds of one call per way (packed fastest, bucketed between) and peak memory in MiB
WAYS = {"padded": (1.0, 80.0), "bucketed": (0.6, 20.0), "packed": (0.5, 40.0)}


def mixed_rows(backend: str, pass_: str, seed: int, skip_packed: str | None = None) -> list[dict]:
    counts = fb.token_counts(SPEC.sizes(16), 16)
    gid = f"mixed model=vit_tiny_patch16_224 backend={backend} images=8 dtype=fp32 pass={pass_}"
    rng = np.random.default_rng(seed)
    drift = np.exp(rng.normal(0, 0.05, ROUNDS))  # shared by every member of a round
    members = [*WAYS, "padded (A/A)"]
    rows = []
    for member in members:
        way = member.split()[0]
        work = fb.mixed_work(counts, way, SPEC.buckets)
        r = {"op": "mixed", "backend": backend + (" (A/A)" if member != way else ""), "library": "fastvit",
             "way": way, "model": "vit_tiny_patch16_224", "family": "vit", "resolution": None, "tokens": None,
             "batch": 8, "images": 8, "seed": 0, "min_side": 224, "max_side": 512, "max_aspect": 2.0,
             "buckets": SPEC.buckets if way == "bucketed" else None, "sequences": len(work.groups),
             "image_sizes": [list(s) for s in SPEC.sizes(16)], "real_tokens": work.real_tokens,
             "processed_tokens": work.processed_tokens, "padded_fraction": work.padded_fraction,
             "attention_flops": work.attention_flops(3, 64, 12, pass_), "dtype": "fp32", "pass": pass_,
             "device": "cpu", "device_name": "Synthetic CPU", "group": gid, "member": member, "baseline": "padded",
             "group_rounds": ROUNDS, "group_seed": seed, "group_stop": "converged", "group_members": len(members)}
        if member != way:
            r["twin_of"] = "padded"
        if way == "packed" and skip_packed:
            r["status"] = f"skipped: {skip_packed}"
            rows.append(r)
            continue
        seconds, mib = WAYS[way]
        t = seconds * drift * np.exp(rng.normal(0, 0.004, ROUNDS)) * (3 if pass_ == "train" else 1)
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        r.update(status="ok", round_times_s=[float(x) for x in t], median_s=float(med), q1_s=float(q1),
                 q3_s=float(q3), iqr_s=float(q3 - q1), rounds=ROUNDS,
                 peak_mem_bytes=None if member != way else mib * 2 ** 20)
        rows.append(r)
    return rows


def write(tmp_path, rows):
    path = tmp_path / "results.jsonl"
    env = {"device": "cpu", "device_name": "Synthetic CPU", "threads": 2, "torch": "2.x", "time_budget_s": 30}
    path.write_text("\n".join(json.dumps(r) for r in [{"environment": env}, *rows]) + "\n")
    return path


ROWS = (mixed_rows("sdpa", "fwd", 1) + mixed_rows("sdpa", "train", 2)
        + mixed_rows("sdpa-math", "fwd", 3, skip_packed="attention backend 'sdpa-math': no packing here"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packing")
    return write_report(write(tmp, ROWS), tmp / "out").parent


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_section_tables_every_way_against_padded(report):
    text = (report / "report.md").read_text()
    section = text.split("## Packing against padding", 1)[1].split("\n## ", 1)[0]
    assert "![packing against padding](packing.png)" in section and (report / "packing.png").is_file()
    assert "### vit_tiny_patch16_224, forward, fp32, 8 images" in section
    assert "### vit_tiny_patch16_224, training step, fp32, 8 images" in section
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in section.splitlines()
             if line.startswith("| `")}
    padded, packed = lines[("`sdpa`", "padded")], lines[("`sdpa`", "packed")]
    assert "37.7%" in padded and "1 (baseline)" in padded and "| 80 |" in padded
    assert "| 0.0% |" in packed and "| faster |" in packed and "| 0.5 |" in packed  # memory over padded's
    ratio = float(packed.split("|")[7].split()[0])
    assert 0.45 < ratio < 0.55
    assert "(4 buckets)" in lines[("`sdpa`", "bucketed (4 buckets)")]
    assert "noise ±" in lines[("`sdpa`", "padded (A/A)")]
    assert "skipped [1]" in lines[("`sdpa-math`", "packed")] and "no packing here" in section
    # the sections by size do not read mixed-resolution rows
    assert "Fastest backend" not in text and "### mixed" not in text and "Scaling exponents" not in text
    assert "mixed sizes" in text.split("## Noise floor", 1)[1]


def test_the_summary_line_and_the_same_bytes(tmp_path, report):
    res = load_results(write(tmp_path, ROWS))
    bullets = summary(res.rows)
    assert len(bullets) <= MAX_BULLETS
    line = next(b for b in bullets if b.startswith("- Packing against padding"))
    assert "vit_tiny_patch16_224 on `sdpa`" in line and "8 images of 224–512 px" in line
    assert "37.7% of the tokens padded" in line and "forward: packed 0." in line and "training step: packed" in line
    again = write_report(write(tmp_path, ROWS), tmp_path / "again").parent
    assert digest(again) == digest(report) and "packing.png" in digest(report)
