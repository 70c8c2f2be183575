"""Capture the launches the real launchers make, without running anything.

``record_launches(fn)`` calls ``fn`` with every Triton kernel's ``run`` (JITFunction.run, and
Autotuner.run for the autotuned ones) replaced by a recorder. A launcher then validates, allocates
and computes its arguments exactly as it would for a real launch, and the recorder keeps the
arguments, the keyword arguments, the grid and, for an autotuned kernel, the configurations its
autotuner would consider: the requested space (kernels._common.SPACES) after the kernel's own early
prune, run on the real arguments. Nothing is compiled or executed, so CPU tensors stand in for CUDA
ones (``cpu_launches_recorded`` lets them past the launchers' device check).

``model_launches`` drives the three ops with the shapes of fastvit's presets (listed in MODELS, SWIN
and DEIT: this package never imports fastvit): attention on q, k, v views of the fused qkv projection
with the gradient as the model's backward delivers it, add + LayerNorm and LayerNorm as every block
runs them (plus the mixed-precision case of fp32 residual stream and parameters), the patch embedding
with image gradients, forward and backward, in each dtype; Swin's window attention with its additive
bias (the relative position bias as the model views it, (1, H, N, N), and with the shift mask,
(B * windows, H, N, N), both trained) and its LayerNorm widths; DeiT's two prefix rows; attention
over packed sequences of mixed-resolution images (PACKED: ViT-B/16, DeiT-B, ViT-H/14, 224-768 px),
forward and backward.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib

import torch
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import KernelInterface

from kernels._common import SPACES, cpu_launches_recorded

KERNEL_MODULES = ("kernels.flash_attention", "kernels.flash_attention_bwd", "kernels.layer_norm", "kernels.patch_embed")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# (name, patch size, embed dim, heads, resolutions): fastvit's presets (fastvit/presets.py).
MODELS = [
    ("vit_tiny_patch16", 16, 192, 3, (224, 384)),
    ("vit_small_patch16", 16, 384, 6, (224, 384)),
    ("vit_base_patch16", 16, 768, 12, (224, 384)),
    ("vit_base_patch32", 32, 768, 12, (224, 384)),
    ("vit_large_patch16", 16, 1024, 16, (224, 384)),
    ("vit_huge_patch14", 14, 1280, 16, (224,)),
]
# (name, embed dim, heads per stage, window, resolution): Swin's stages at patch 4 (head dim 32); a
# stage's map is (res / 4) / 2^i, cut into (map / window)^2 windows, shifted unless map == window.
SWIN = [
    ("swin_tiny_patch4_window7", 96, (3, 6, 12, 24), 7, 224),
    ("swin_base_patch4_window12", 128, (4, 8, 16, 32), 12, 384),
]
# (name, patch size, embed dim, resolution): DeiT's distilled models, CLS and distillation token.
DEIT = [("deit_tiny_distilled_patch16", 16, 192, 224), ("deit_base_distilled_patch16", 16, 768, 384)]
# (name, patch size, embed dim, heads, prefix tokens, images as (height, width) px): mixed-resolution
# packings as the models' forward_packed makes them, every image's tokens end to end in one sequence
# (the lengths set T and the longest, whose divisibility by 16 makes separate kernels: ViT-B/16's T
# is a multiple of 16, DeiT's and ViT-H/14's are not).
PACKED = [
    ("vit_base_patch16", 16, 768, 12, 1, ((224, 224), (384, 384), (768, 768), (224, 448))),
    ("deit_base_distilled_patch16", 16, 768, 12, 2, ((224, 224), (512, 512), (768, 768))),
    ("vit_huge_patch14", 14, 1280, 16, 1, ((224, 224), (448, 448), (756, 756), (336, 224))),
]
BATCH = 2


@dataclasses.dataclass
class Launch:
    """One recorded kernel launch, and the configurations it would be compiled with."""

    kernel: object        # the launched object: an Autotuner, a JITFunction (an InterpretedFunction
    fn: object            # under the interpreter), and the @triton.jit function underneath
    args: tuple
    kwargs: dict          # keyword arguments as the launcher passed them
    grid: object          # a tuple, or a callable of the meta-parameters
    configs: list         # triton.Config per candidate; [None]: launched as is (not autotuned)
    label: dict           # what the driver was running: op, dtype, variant, shape

    @property
    def name(self) -> str:
        return self.fn.__name__

    def meta(self, config) -> dict:
        """The keyword arguments of the launch compiled with ``config``."""
        return {**self.kwargs, **(config.all_kwargs() if config is not None else {})}

    def grid_for(self, config) -> tuple:
        if not callable(self.grid):
            return tuple(self.grid)
        return tuple(self.grid({**dict(zip(self.fn.arg_names, self.args)), **self.meta(config)}))


def base_fn(kernel):
    """The @triton.jit function under an autotuner (the kernel itself otherwise)."""
    while isinstance(getattr(kernel, "fn", None), KernelInterface):
        kernel = kernel.fn
    return kernel


def launchable_kernels() -> list:
    """Every launchable Triton object at module level in the kernel modules."""
    found = []
    for module in KERNEL_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, KernelInterface) and all(value is not f for f in found):
                found.append(value)
    return found


def _candidates(kernel, space: str, args: tuple, kwargs: dict) -> list:
    if not isinstance(kernel, Autotuner):
        return [None]
    name = base_fn(kernel).__name__
    configs = SPACES[name][space] if name in SPACES else kernel.configs
    if kernel.early_config_prune:
        configs = kernel.early_config_prune(configs, dict(zip(kernel.arg_names, args)), **kwargs)
    return list(configs)


@contextlib.contextmanager
def _recorders(space: str, sink: list, label: dict):
    kernels = launchable_kernels()

    def recorder(kernel):
        def run(*args, grid, warmup=False, **kwargs):
            cands = _candidates(kernel, space, args, {**kwargs, "grid": grid, "warmup": warmup})
            sink.append(Launch(kernel, base_fn(kernel), args, kwargs, grid, cands, dict(label)))
        return run

    for kernel in kernels:
        kernel.run = recorder(kernel)  # an instance attribute: shadows the class's run
    try:
        with cpu_launches_recorded():
            yield
    finally:
        for kernel in kernels:
            del kernel.run


def record_launches(fn, *, space: str = "on", label: dict | None = None) -> list[Launch]:
    """Call ``fn()`` with every kernel launch recorded instead of run; returns the launches in order.

    Tensors may live on the CPU (or on a GPU: nothing runs either way); outputs are left
    uninitialised, so ``fn`` may run a backward but must not depend on values."""
    launches: list[Launch] = []
    with _recorders(space, launches, label or {}):
        fn()
    return launches


# ------------------------------------------------------------------------------------------------
# The model's launches
# ------------------------------------------------------------------------------------------------
def _attention(E: int, H: int, N: int, dtype):
    from kernels.flash_attention import flash_attention

    D = E // H
    qkv = torch.empty(BATCH, N, 3 * E, dtype=dtype, requires_grad=True)  # the fused qkv Linear's output
    q, k, v = qkv.view(BATCH, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, D) views
    out = flash_attention(q, k, v)
    # The gradient the output projection sends back through out.transpose(1, 2).reshape(B, N, E).
    out.backward(torch.empty(BATCH, N, E, dtype=dtype).view(BATCH, N, H, D).transpose(1, 2))


def _window_attention(E: int, H: int, window: int, windows: int, shifted: bool, dtype):
    """Swin's window attention: q, k, v views of the windows' qkv projection, the bias the model
    hands the backend -- its (1, H, N, N) relative position bias, a permuted view of the gathered
    table, or with the shift mask a contiguous (B * windows, H, N, N) -- and its gradient."""
    from kernels.flash_attention import flash_attention

    N, D, Bw = window * window, E // H, BATCH * windows
    qkv = torch.empty(Bw, N, 3 * E, dtype=dtype, requires_grad=True)
    q, k, v = qkv.view(Bw, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
    table = torch.empty(N * N, H, dtype=dtype, requires_grad=True)  # table[index]: (N * N, heads)
    bias = table.view(N, N, H).permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N), strided
    if shifted:
        bias = (bias + torch.empty(windows, 1, N, N, dtype=dtype)).expand(BATCH, windows, H, N, N).reshape(Bw, H, N, N)
    out = flash_attention(q, k, v, bias=bias)
    out.backward(torch.empty(Bw, N, E, dtype=dtype).view(Bw, N, H, D).transpose(1, 2))


def _packed_attention(E: int, H: int, lengths: tuple, dtype):
    """Attention over packed sequences of ``lengths`` tokens: q, k, v views of the (1, T, 3E) qkv
    projection of the packed tokens, cu_seqlens on the device, the gradient as the model's backward
    delivers it."""
    from kernels.flash_attention import flash_attention_varlen

    T, D = sum(lengths), E // H
    qkv = torch.empty(1, T, 3 * E, dtype=dtype, requires_grad=True)
    q, k, v = qkv.view(1, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (1, H, T, D) views
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    out = flash_attention_varlen(q, k, v, torch.tensor(offsets, dtype=torch.int32), max(lengths))
    out.backward(torch.empty(1, T, E, dtype=dtype).view(1, T, H, D).transpose(1, 2))


def _tensor(*shape, dtype):
    return torch.empty(*shape, dtype=dtype, requires_grad=True)


def _add_norm(E: int, N: int, dtype, residual_dtype, param_dtype):
    """A pre-norm block's residual add + LayerNorm: y feeds the MLP, s the residual stream."""
    from kernels.layer_norm import add_layer_norm

    x, residual = _tensor(BATCH, N, E, dtype=dtype), _tensor(BATCH, N, E, dtype=residual_dtype)
    y, s = add_layer_norm(x, residual, _tensor(E, dtype=param_dtype), _tensor(E, dtype=param_dtype))
    torch.autograd.backward([y, s], [torch.empty_like(y), torch.empty_like(s)])


def _norm(E: int, N: int, dtype):
    """The first block's norm and the final norm."""
    from kernels.layer_norm import layer_norm

    y = layer_norm(_tensor(BATCH, N, E, dtype=dtype), _tensor(E, dtype=dtype), _tensor(E, dtype=dtype))
    y.backward(torch.empty_like(y))


def _patch_embed(P: int, E: int, res: int, dtype, T: int = 1):
    from kernels.patch_embed import patch_embed

    N = (res // P) ** 2
    images = torch.empty(BATCH, 3, res, res, dtype=dtype, requires_grad=True)
    params = [torch.empty(*shape, dtype=dtype, requires_grad=True)
              for shape in ((E, 3, P, P), (E,), (1, T + N, E), (1, T, E))]
    out = patch_embed(images, *params)
    out.backward(torch.empty_like(out))


def model_launches(space: str = "on", dtypes=("fp16", "bf16", "fp32")) -> tuple[list[Launch], list[dict]]:
    """Every launch the three ops make for every preset, resolution and dtype (duplicates included:
    the compile step merges launches that compile to the same kernel), and the drivers whose launcher
    raised instead of launching: ``{op, dtype, variant, shape, error}``."""
    launches, refused = [], []

    def record(fn, label):
        try:
            launches.extend(record_launches(fn, space=space, label=label))
        except (TypeError, ValueError) as e:
            refused.append(dict(label, error=f"{type(e).__name__}: {e}"))

    for name, P, E, H, resolutions in MODELS:
        for res in resolutions:
            N = (res // P) ** 2 + 1
            shape = f"{name}_{res}"
            for dt in dtypes:
                dtype = DTYPES[dt]
                label = dict(dtype=dt, shape=shape)
                record(lambda: _attention(E, H, N, dtype), dict(label, op="attention", variant=f"D={E // H}"))
                record(lambda: _norm(E, N, dtype), dict(label, op="layernorm", variant=f"E={E}"))
                record(lambda: _add_norm(E, N, dtype, dtype, dtype), dict(label, op="layernorm", variant=f"add E={E}"))
                if dtype != torch.float32:  # autocast: low-precision branch outputs, fp32 stream and parameters
                    record(lambda: _add_norm(E, N, dtype, torch.float32, torch.float32),
                           dict(label, op="layernorm", variant=f"add E={E} fp32 residual+params"))
                record(lambda: _patch_embed(P, E, res, dtype), dict(label, op="patch_embed", variant=f"P={P}"))
    for name, P, E, res in DEIT:
        for dt in dtypes:
            record(lambda: _patch_embed(P, E, res, DTYPES[dt], T=2),
                   dict(dtype=dt, shape=f"{name}_{res}", op="patch_embed", variant=f"P={P} T=2"))
    for name, P, E, H, prefix, images in PACKED:
        lengths = tuple(prefix + (h // P) * (w // P) for h, w in images)
        shape = f"{name}_packed_" + "+".join(f"{h}x{w}" if h != w else str(h) for h, w in images)
        for dt in dtypes:
            record(lambda: _packed_attention(E, H, lengths, DTYPES[dt]),
                   dict(dtype=dt, shape=shape, op="attention", variant=f"D={E // H} packed"))
    for name, E, heads, window, res in SWIN:
        for dt in dtypes:
            dtype, label = DTYPES[dt], dict(dtype=dt, shape=f"{name}_{res}")
            for i, H in enumerate(heads):
                side, dim = res // 4 // 2 ** i, E * 2 ** i
                windows, shifted = (side // window) ** 2, side > window
                variant = f"D={dim // H} N={window * window} bias"
                record(lambda: _window_attention(dim, H, window, windows, False, dtype),
                       dict(label, op="attention", variant=f"{variant} (1,H,N,N)"))
                if shifted:
                    record(lambda: _window_attention(dim, H, window, windows, True, dtype),
                           dict(label, op="attention", variant=f"{variant} (B',H,N,N)"))
                record(lambda: _add_norm(dim, side * side, dtype, dtype, dtype),
                       dict(label, op="layernorm", variant=f"add E={dim}"))
                if i + 1 < len(heads):  # the next stage's patch merging normalises 4 * dim channels
                    record(lambda: _norm(4 * dim, (side // 2) ** 2, dtype),
                           dict(label, op="layernorm", variant=f"E={4 * dim} merging"))
    return launches, refused


def config_label(launch: Launch, config) -> str:
    """``BLOCK_M=128 BLOCK_N=64 w8 s3``: the block sizes, warps and pipeline stages of one compile."""
    meta = launch.meta(config)
    blocks = " ".join(f"{k}={v}" for k, v in meta.items()
                      if k.startswith("BLOCK") and (config is None or k in config.kwargs))
    stages = meta.get("num_stages", 3)  # Triton's default for CUDA
    return f"{blocks} w{meta.get('num_warps', 4)} s{stages}".strip()


