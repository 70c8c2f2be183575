"""What the report knows about the benchmark rows and the backends.

This module is the one place in ``fastvit.report`` that knows backends or lists row columns; every
other module takes them from here. The identifying columns come from the sweep's row schema
(fastvit.bench.rows) and the parts backends play (reference, default, fastvit's own kernel, the
library kernels it is measured against) from the backend registries' traits; what is written out
here is the report's own vocabulary: titles, grouping, plot colours. A single column is still read by
its name where it is used (``row["median_s"]``).
"""
from __future__ import annotations

from fastvit.bench.peers import LIBRARIES as _PEER_LIBRARIES
from fastvit.bench.mixed import WAYS
from fastvit.bench.rows import COMPILE_SUFFIX, KEY as _ROW_KEY, LEGACY_OPS, MIXED, OP_REGISTRY, PASSES
from fastvit.registry import registries

_REGISTRIES = registries()

# -- row columns ------------------------------------------------------------------------------------
KEY = list(_ROW_KEY)
"""The columns that identify one configuration (a later row with the same key replaces an earlier one)."""
GROUP = ["op", "pass", "model", "dtype", "batch"]
"""One table and one figure per distinct value of these columns."""
SETTING = ["model", "dtype", "batch"]
"""A run with one value of these columns names its figures without a suffix."""
SHARE_KEY = ["model", "batch", "dtype", "pass", "impl", "resolution"]
"""One measured attention share per distinct value of these columns."""
SHARE_GROUP = ["model", "batch", "dtype", "pass"]
"""One attention-share table per distinct value of these columns."""
SHARE = "attention_share"
"""The whole-model rows' column holding attention's share of the model's time, measured inside the model."""
ARCH_GROUP = ["pass", "dtype", "batch"]
"""One architectures figure and table per distinct value of these columns."""
PEER_GROUP = ["model", "pass", "dtype", "batch"]
"""One table of peer-library ratios per distinct value of these columns."""
COMPONENT_COLUMNS = {"norm": "norm_backend", "patch": "patch_backend"}
"""The whole-model rows' columns naming the LayerNorm and patch-embedding backends."""
COMPARE_KEY = [k for k in KEY if k not in COMPONENT_COLUMNS.values()] + ["impl"]
"""Two runs' rows are matched on these columns (``impl`` already names non-default components)."""
SDPA_KERNEL = "sdpa_kernel"
"""The column naming the kernel PyTorch picked for a row of the automatic SDPA backend."""
ATTENTION_IMPL = "attention_impl"
"""The whole-model peer rows' column naming the attention their library ran ("sdpa", "eager", ...)."""
GROUP_ID, MEMBER, BASELINE, TWIN_OF = "group", "member", "baseline", "twin_of"
"""Comparison groups: the id shared by the rows timed together in interleaved rounds, each row's label in
its group, the member it is compared against, and (only on the A/A twin) the member it duplicates."""
ROUND_TIMES = ("kernel_round_times_s", "round_times_s")
"""Per-round seconds of a group member, in order of preference: CUDA-event times where both rows of a pair
have them, else wall-clock times. Round i of every member of a group is the same round."""
BASELINE_ROUND_TIMES = ("kernel_baseline_round_times_s", "baseline_round_times_s")
"""Per-round seconds of a member's baseline measured beside it, in its own pairs (in the order of
ROUND_TIMES): a member's ratio to its baseline pairs these with its own round times."""
ROUND_LISTS = ROUND_TIMES + BASELINE_ROUND_TIMES
"""Every column holding per-round seconds."""
GROUP_INFO = ["group_rounds", "group_seed", "group_members", "group_budget_s"]
"""Numeric columns describing a comparison group (its rounds, the seed of their orders, its members, the
seconds its rounds could take)."""
GROUP_STOP = "group_stop"
"""Why a group's rounds stopped: "converged", "time budget" or "max rounds"."""
TEXT_COLUMNS = ["status", SDPA_KERNEL, "family", "library", ATTENTION_IMPL, GROUP_ID, MEMBER, BASELINE, TWIN_OF,
                GROUP_STOP, "verdict", "graph_status"]
"""Text columns every frame has (None where a row lacks them)."""
MIXED_NUMERIC = ["images", "seed", "min_side", "max_side", "max_aspect", "buckets", "sequences", "real_tokens",
                 "processed_tokens", "padded_fraction", "attention_flops"]
"""The numeric columns of mixed-resolution rows (fastvit.bench.mixed): the images, how a way groups them, its work."""
NUMERIC = ["resolution", "tokens", "batch", "flops", "bytes", "peak_mem_bytes", "median_s", "iqr_s", "q1_s",
           "q3_s", "rounds", "depth", "heads", "head_dim", "patch_size", "mean_s", "stddev_s", "flops_per_s",
           "bytes_per_s", "kernel_median_s", "params", SHARE, *GROUP_INFO, "ratio", "ratio_low", "ratio_high",
           "graph_median_s", *MIXED_NUMERIC]
"""Columns read as numbers (NaN where a row lacks them or holds something else)."""
PER_STAGE = ["depth", "heads"]
"""Numeric columns that hold one value per stage (a list) in hierarchical models (Swin, PiT); a list
reads as NaN."""
TIMES = ["median_s", "iqr_s", "q1_s", "q3_s"]
"""Timing columns; blanked on rows that were not timed."""
STATS = ("median", "iqr", "q1", "q3", "mean", "stddev", "min", "max")
"""pytest-benchmark ``stats`` entries kept, as columns ``<name>_s``."""
EVENT_QUANTILES = ("median", "q1", "q3")
"""CUDA-event columns ``kernel_<name>_s`` that replace the wall-clock ``<name>_s`` where present."""

# -- ops and passes ---------------------------------------------------------------------------------
MODEL = "model"
"""The op of whole-model rows (older results files call it by a name of LEGACY_OPS)."""
OP_ORDER = ["attention", MODEL, "layernorm", "patch_embed"]
OP_TITLES = {"attention": "Attention, op level: softmax(q k^T) v on (B, H, N, D)",
             MODEL: "Whole model: images (B, 3, res, res) to logits",
             "layernorm": "Residual add + LayerNorm on (B, N, E)",
             "patch_embed": "Patch embedding (patchify, GEMM, CLS, position embedding)"}
OP_SHORT = {"attention": "attention", MODEL: "whole model", "layernorm": "add + LayerNorm",
            "patch_embed": "patch embedding", MIXED: "mixed-resolution batch"}
MIXED_WAYS = WAYS
"""How a mixed-resolution batch is run (``way``), in the report's order; the first is the baseline. Rows of
op MIXED have no one resolution: they have a section of their own and stay out of the sections by size."""
MIXED_GROUP = ["model", "pass", "dtype", "images"]
"""One table of mixed-resolution rows per distinct value of these columns."""
PASS_TITLES = {"fwd": "forward (inference, no_grad)", "train": "training step (forward + backward)"}
PASS_SHORT = {"fwd": "forward", "train": "training step"}

# -- backends ---------------------------------------------------------------------------------------
def _registry(op: str):
    return _REGISTRIES[OP_REGISTRY[op]]


def _own_kernel() -> str:
    names = {b.name for reg in _REGISTRIES.values() for b in reg.backends() if b.own_kernel}
    if len(names) != 1:
        raise RuntimeError(f"the report expects fastvit's own kernels under one backend name, found {sorted(names)}")
    return names.pop()


SDPA = _REGISTRIES["attention"].default
"""The default attention backend, with which PyTorch picks the kernel itself (its rows name it in
``sdpa_kernel``)."""
REFERENCES = {op: tuple(dict.fromkeys([_registry(op).reference.name, _registry(op).default])) for op in OP_REGISTRY}
"""Per op, the backends each speedup table is computed against: the op's reference and its default."""
ATTENTION_REFERENCES = REFERENCES["attention"]
"""Attention backends the other attention and whole-model rows are compared with; the summary quotes them."""
NORM_REFERENCE = _REGISTRIES["norm"].reference.name
PATCH_REFERENCE = _REGISTRIES["patch"].reference.name
DEFAULT_NORM, DEFAULT_PATCH = _REGISTRIES["norm"].default, _REGISTRIES["patch"].default
"""The whole model's default LayerNorm and patch-embedding backends (others are named in its label)."""
COMPONENTS = (("norm", COMPONENT_COLUMNS["norm"], DEFAULT_NORM), ("patch", COMPONENT_COLUMNS["patch"], DEFAULT_PATCH))
"""(label, column, default) of the whole model's components, in the order its label names them."""
KERNEL_BACKEND = _own_kernel()
"""fastvit's own kernels: the backend judged against the performance targets."""
ATTENTION_PEERS = tuple(b.name for b in _REGISTRIES["attention"].backends() if b.peer)
"""The attention kernels fastvit's own attention kernel is measured against."""
ATTENTION_PEERS_NAME = "SDPA kernels, xformers and flex"
DEFAULT_MODEL_IMPL = SDPA
DEFAULT_BACKENDS = {op: _registry(op).default for op in OP_REGISTRY}
"""Per op, its default backend: what the other backends of an op-level group are compared against."""
TWIN_SUFFIX = " (A/A)"
"""The A/A twin's backend is its baseline's followed by this."""
"""The label of a fastvit whole-model row with the default attention, LayerNorm and patch embedding."""

# -- libraries and architectures --------------------------------------------------------------------
OWN_LIBRARY = "fastvit"
"""The ``library`` of fastvit's own rows (and of rows of older files, which lack the column)."""
PEER_LIBRARIES = tuple(_PEER_LIBRARIES)
"""The libraries whose builds of the same presets (same weights) fastvit's whole models are measured against."""
LIBRARY_TITLES = {OWN_LIBRARY: "fastvit", "timm": "timm", "transformers": "HF transformers",
                  "torchvision": "torchvision"}
NO_ATTENTION = "none"
"""``attention_impl`` of a model without attention (a CNN)."""
FAMILY_TITLES = {"vit": "ViT", "deit": "DeiT", "swin": "Swin", "pit": "PiT", "cnn": "CNN"}
GLOBAL_ATTENTION = ("vit", "deit")
"""Families whose every block attends over all N tokens."""
RIVALS = ("swin", "cnn")
"""Families each global-attention model's latency is compared with, size by size."""
CNN = "cnn"

# -- environment ------------------------------------------------------------------------------------
TORCH_ENV = "torch"
"""The environment's key of the torch version."""
ENV_VERSIONS = (("torch", TORCH_ENV, None), ("CUDA", "cuda", None), ("cuDNN", "cudnn", None),
                ("triton", "triton", None),
                ("Triton kernels' autotuning (FASTVIT_AUTOTUNE)", "triton_autotune", "–"),
                ("xformers", "xformers", None), ("python", "python", None), ("platform", "platform", None))
"""(label, environment key, shown when absent: None prints as "None") of the environment table's versions."""

# -- plots ------------------------------------------------------------------------------------------
COLORS = {"naive": "#d62728", SDPA: "#1f77b4", "sdpa-math": "#ff7f0e", "sdpa-flash": "#2ca02c",
          "sdpa-efficient": "#9467bd", "sdpa-cudnn": "#8c564b", "xformers": "#e377c2", KERNEL_BACKEND: "#17becf",
          NORM_REFERENCE: "#1f77b4", PATCH_REFERENCE: "#1f77b4", "einops": "#ff7f0e",
          "timm": "#bcbd22", "transformers": "#7f7f7f", "torchvision": "#393b79"}
"""Line colours per backend or peer library (others take the tab10 colours in order)."""
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
