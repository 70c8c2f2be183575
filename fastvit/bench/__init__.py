"""fastvit's measurement machinery, behind the resolution sweep in ``benchmarks/`` and reusable on its
own: work models (FLOPs, bytes), mixed-resolution workloads, measured peak memory, timing, the
environment of a run, rows and their writer, skip rules, paired comparisons, and the sweep that turns a
comparison group of configurations into rows.

Nothing here touches CUDA at import time.
"""
from fastvit.bench.budget import Budget
from fastvit.bench.defaults import DEFAULTS, defaults_for
from fastvit.bench.env import device_name, device_slug, environment, git_commit
from fastvit.bench.mixed import WAYS, MixedImages, MixedWork, mixed_work, token_counts
from fastvit.bench.memory import cpu_peak_memory, cuda_peak_memory, is_oom, peak_memory, rss_peak_memory
from fastvit.bench.rows import KEY, OPS, PASSES, RowWriter, row_summary, split_impl, status_kind
from fastvit.bench.paired import NO_DIFFERENCE, Ratio, paired_ratio, verdict
from fastvit.bench.sweep import TWIN, Case, Group, Outcome, Sweep
from fastvit.bench.timing import Stats, graph_replay_seconds, measure_copy_bandwidth, measure_matmul_peak
from fastvit.bench.work import (add_layer_norm_bytes, attention_flops, model_flops, num_tokens, patch_embed_bytes,
                                patch_embed_flops)
from fastvit.bench.workload import Workload, compile_stats, maybe_compile, workload

__all__ = [
    "Budget", "DEFAULTS", "defaults_for", "device_name", "device_slug", "environment", "git_commit",
    "WAYS", "MixedImages", "MixedWork", "mixed_work", "token_counts",
    "cpu_peak_memory", "cuda_peak_memory", "is_oom", "peak_memory", "rss_peak_memory",
    "KEY", "OPS", "PASSES", "RowWriter", "row_summary", "split_impl", "status_kind",
    "NO_DIFFERENCE", "Ratio", "paired_ratio", "verdict", "TWIN", "Case", "Group", "Outcome", "Sweep", "Stats",
    "graph_replay_seconds", "measure_copy_bandwidth", "measure_matmul_peak",
    "add_layer_norm_bytes", "attention_flops", "num_tokens", "patch_embed_bytes", "patch_embed_flops", "model_flops",
    "Workload", "compile_stats", "maybe_compile", "workload",
]
