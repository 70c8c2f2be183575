"""Mixed-resolution workloads (fastvit.bench.mixed) and benchmarks/bench_mixed.py's comparison groups:
seeded sizes within their bounds, each way's tokens and attention work, the group's members, baselines,
twin and skip reasons, and a tiny group run through the sweep into rows the report reads. No timing is
asserted."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fastvit import bench as fb
from fastvit.registry import registry
from fastvit.report.load import frame
from fastvit.report.packing import packing_section

ROOT = Path(__file__).resolve().parents[1]


def _bench_mixed():
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_mixed", ROOT / "benchmarks" / "bench_mixed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _settings(images: fb.MixedImages, **kw):
    base = dict(device=torch.device("cpu"), vit_norm=["torch"], vit_patch=["conv"], twin=True, mixed=images,
                model_time_budget=None)
    return SimpleNamespace(**(base | kw))


def test_sizes_are_seeded_multiples_of_the_patch_within_bounds():
    spec = fb.MixedImages(64, 224, 768, max_aspect=2.0, seed=3)
    sizes = spec.sizes(16)
    assert sizes == spec.sizes(16) and sizes != fb.MixedImages(64, 224, 768, seed=4).sizes(16)
    for h, w in sizes:
        assert h % 16 == 0 and w % 16 == 0 and 224 <= min(h, w) and max(h, w) <= 768
        assert 0.5 <= h / w <= 2.0
    assert len({s for s in sizes}) > 32  # many sizes, not a few
    images = spec.images(16)
    assert [tuple(x.shape[1:]) for x in images] == sizes and torch.equal(images[0], spec.images(16)[0])
    with pytest.raises(ValueError):
        fb.MixedImages(2, 100, 110).sizes(16)


def test_each_way_counts_its_tokens_and_attention_pairs():
    counts = [10, 50, 20, 40, 30]
    padded, bucketed, packed = (fb.mixed_work(counts, way, 2) for way in fb.WAYS)
    assert padded.real_tokens == bucketed.real_tokens == packed.real_tokens == 150
    assert (padded.processed_tokens, padded.attention_pairs) == (5 * 50, 5 * 50 ** 2)
    assert bucketed.groups == [[0, 2], [4, 3, 1]]  # by token count, near-equal sizes
    assert (bucketed.processed_tokens, bucketed.attention_pairs) == (2 * 20 + 3 * 50, 2 * 20 ** 2 + 3 * 50 ** 2)
    assert (packed.processed_tokens, packed.padded_fraction) == (150, 0)
    assert packed.attention_pairs == sum(n * n for n in counts)
    assert padded.padded_fraction == pytest.approx(1 - 150 / 250)
    assert packed.attention_flops(3, 64, 12) == 4 * 3 * 64 * packed.attention_pairs * 12
    assert packed.attention_flops(3, 64, 12, "train") == 3.5 * packed.attention_flops(3, 64, 12)
    assert fb.token_counts([(32, 64)], 16, prefix=2) == [2 * 4 + 2]


def test_the_group_holds_the_three_ways_against_padded_with_the_registry_reasons():
    bench = _bench_mixed()
    spec = fb.MixedImages(6, 32, 96, seed=1, buckets=3)
    group = bench.mixed_group(_settings(spec), "deit_tiny_distilled_patch16_224", "sdpa", "train", "fp32")
    assert [c.label for c in group.cases] == list(fb.WAYS) and {c.baseline for c in group.cases} == {"padded"}
    assert group.twin == "padded" and group.key["images"] == 6 and group.key["backend"] == "sdpa"
    fields = {c.label: c.fields for c in group.cases}
    counts = fb.token_counts(spec.sizes(16), 16, prefix=2)  # CLS and distillation tokens
    assert all(f["real_tokens"] == sum(counts) and f["images"] == 6 and f["seed"] == 1 for f in fields.values())
    assert fields["packed"]["padded_fraction"] == 0 < fields["bucketed"]["padded_fraction"] \
        < fields["padded"]["padded_fraction"]
    assert fields["bucketed"]["buckets"] == 3 and fields["padded"]["buckets"] is None
    assert fields["padded"]["image_sizes"] == [list(s) for s in spec.sizes(16)]
    assert all(c.skip is None for c in group.cases)
    assert bench.mixed_group(_settings(spec, twin=False), "vit_tiny_patch16_224", "sdpa", "fwd", "fp32").twin is None
    # a backend that takes no packed sequences is a skipped packed row with the registry's reason
    unpacked = [b.name for b in registry("attention").backends() if not b.takes_packing]
    for name in unpacked:
        cases = bench.mixed_group(_settings(spec), "vit_tiny_patch16_224", name, "fwd", "fp32").cases
        assert "takes no packed sequences" in cases[-1].skip


def test_a_tiny_group_gives_rows_the_report_reads():
    bench = _bench_mixed()
    group = bench.mixed_group(_settings(fb.MixedImages(3, 32, 64, buckets=2)), "vit_tiny_patch16_224", "sdpa",
                              "fwd", "fp32")
    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(30.0, min_rounds=3, max_rounds=3))
    rows = [o.row for o in sweep.run_group(group)]
    assert [r["member"] for r in rows] == [*fb.WAYS, "padded (A/A)"], [(r["member"], r["status"]) for r in rows]
    assert {r["op"] for r in rows} == {"mixed"} and len({tuple(r.get(k) for k in fb.KEY) for r in rows}) == 4
    for r in rows:
        assert r["status"] == "ok" and r["resolution"] is None and len(r["round_times_s"]) == r["group_rounds"] >= 3
        assert r["baseline"] == "padded" and r["processed_tokens"] >= r["real_tokens"]
    assert all(r["peak_mem_bytes"] > 0 for r in rows[:3]) and "ratio" in rows[2]
    text = "\n".join(packing_section(frame(rows)).lines)
    assert "### vit_tiny_patch16_224, forward, fp32, 3 images" in text and "| `sdpa` | padded (A/A) |" in text
