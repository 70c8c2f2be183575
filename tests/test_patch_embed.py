"""kernels.patch_embed (fused patchify + GEMM + bias + prefix rows + pos_embed) against a float64
reference, with one prefix row (ViT's CLS token) and two (DeiT's CLS and distillation tokens).

On CPU these run through Triton's interpreter (tests/conftest.py switches it on), in fp32 and fp16;
bf16 needs CUDA because the interpreter computes bf16 tl.dot wrongly.

Low-precision baseline: ``patch_embed_ref`` run in fp16, i.e. PyTorch's own conv2d + cat + add (and
their autograd) in fp16. On CPU its conv accumulates in fp32 but its outputs are rounded to fp16 (the
tokens twice: after the conv and after the pos_embed add), so its error against float64 is a real
fp16 rounding error of one or two half-ulps (the helper asserts it is nonzero) and not the much larger
error of an fp16 accumulation. The kernel, which accumulates in fp32 and rounds once, may be at most
twice as far off. The float64 reference gets the very fp16 values (inputs and incoming gradient) the
kernel gets, so input rounding is not counted as error.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import DEVICES, KERNEL_DEVICE, TRITON_INTERPRETER, skip_unless_kernels_run_on
from fastvit.testing import assert_close, compare, is_low_precision
from kernels._common import pinned_config
from kernels.audit.capture import record_launches
from kernels.patch_embed import patch_embed, patch_embed_ref

pytestmark = pytest.mark.usefixtures("kernel_device_runs")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CASES = [  # (B, C, H, W, P, E)
    (2, 3, 16, 12, 4, 48),    # RGB, non-square 4x3 grid, E not a multiple of the block
    (1, 1, 14, 21, 7, 40),    # grayscale, patch 7 (K = 49), 2x3 grid
    (2, 3, 28, 14, 7, 24),    # K = 147, 4x2 grid
    (1, 3, 32, 32, 16, 64),   # ViT's patch 16 (K = 768), 2x2 grid
    (1, 3, 28, 42, 14, 32),   # patch 14 (K = 588), 2x3 grid
    (2, 1, 6, 5, 1, 16),      # patch 1: K = 1, every pixel a token; B * N = 60 rows: d_weight in 2 splits
]
GRAD_NAMES = ("images", "weight", "bias", "pos_embed", "prefix")


def _skip_unsupported(device, dtype):
    if device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter computes bf16 tl.dot wrongly; bf16 is tested on CUDA")


def _inputs(B, C, H, W, P, E, device, with_bias=True, T=1):
    N = (H // P) * (W // P)
    images = torch.randn(B, C, H, W, device=device)
    weight = torch.randn(E, C, P, P, device=device) / (C * P * P) ** 0.5
    bias = torch.randn(E, device=device) if with_bias else None
    pos_embed = torch.randn(1, T + N, E, device=device)
    prefix = torch.randn(1, T, E, device=device)
    return [images, weight, bias, pos_embed, prefix]


def _run(fn, tensors, grad_out):
    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in tensors]
    out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return [out.detach()] + [t.grad if t is not None else None for t in leaves]


def _check(tensors, dtype, label="", kernel_tensors=None, kernel_grad=None):
    """Kernel in ``dtype`` vs the float64 reference, output and all five gradients.

    ``kernel_tensors`` (same values, e.g. strided views) are fed to the kernel instead when given, and
    ``kernel_grad(grad_out)`` (same values again) as the kernel's incoming gradient.
    """
    low = [t.to(dtype) if t is not None else None for t in tensors]
    B, N, E = low[0].shape[0], low[3].shape[1], low[1].shape[0]
    # In the kernel's dtype, so the float64 reference sees the same (rounded) incoming gradient.
    grad_out = torch.randn(B, N, E, device=low[0].device).to(dtype)
    feed = kernel_tensors if kernel_tensors is not None else low
    outs = _run(patch_embed, feed, kernel_grad(grad_out) if kernel_grad is not None else grad_out)
    refs = _run(patch_embed_ref, [t.double() if t is not None else None for t in low], grad_out)
    if is_low_precision(dtype):
        bases = _run(patch_embed_ref, low, grad_out)
        assert compare(bases[0], refs[0], baseline=bases[0]).max_abs > 0, "baseline carries no fp16 error"
    else:
        bases = [None] * len(outs)
    for name, out, r, b in zip(("tokens",) + GRAD_NAMES, outs, refs, bases):
        if r is None:
            assert out is None
            continue
        assert out.dtype == dtype, f"{label}{name} has dtype {out.dtype}"
        assert not torch.isnan(out).any(), f"{label}{name} has NaN"
        assert_close(out, r, baseline=b, dtype=dtype, name=f"{label}{name}")
    return outs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_float64_reference(device, dtype, case):
    _skip_unsupported(device, dtype)
    _check(_inputs(*case, device), dtype, label=f"{case} ")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_without_bias(device, dtype):
    _skip_unsupported(device, dtype)
    outs = _check(_inputs(2, 3, 12, 8, 4, 40, device, with_bias=False), dtype)
    assert outs[3] is None  # no bias, no bias gradient


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T", [1, 2, 3])
def test_prefix_rows_are_prefix_plus_pos(device, T):
    images, weight, bias, pos, prefix = _inputs(2, 3, 8, 8, 4, 32, device, T=T)
    out = patch_embed(images, weight, bias, pos, prefix)
    assert out.shape == (2, T + 4, 32)
    torch.testing.assert_close(out[:, :T], (prefix + pos[:, :T]).expand(2, T, 32), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", [(2, 3, 16, 12, 4, 48), (1, 3, 32, 32, 16, 64), (2, 1, 6, 5, 1, 16)],
                         ids=lambda c: "x".join(map(str, c)))
def test_two_prefix_rows_like_deit_distilled(device, dtype, case):
    """DeiT's distilled models: CLS and distillation token before the patches; the prefix gradient is
    dtokens[:, :2].sum(0). Row blocks straddle the prefix / patch boundary and the images."""
    _skip_unsupported(device, dtype)
    _check(_inputs(*case, device, T=2), dtype, label=f"T=2 {case} ")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_crop_views_never_read_out_of_bounds(device, dtype):
    """images is a crop of a NaN-bordered buffer and the parameters / incoming gradient are strided
    views with NaN gaps: any read outside a tensor's elements would surface as NaN."""
    B, C, H, W, P, E = 2, 3, 14, 21, 7, 40
    tensors = _inputs(B, C, H, W, P, E, device)
    images = tensors[0]
    buf = torch.full((B + 1, C + 1, H + 9, W + 11), float("nan"), device=device, dtype=dtype)
    buf[:B, 1:, 4:4 + H, 6:6 + W] = images.to(dtype)
    crop = buf[:B, 1:, 4:4 + H, 6:6 + W]
    assert not crop.is_contiguous()

    def nan_gapped(t):  # same values, every other element of a NaN-filled buffer along the last dim
        wide = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), device=device, dtype=dtype)
        wide[..., ::2] = t.to(dtype)
        return wide[..., ::2]

    feed = [crop] + [nan_gapped(t) for t in tensors[1:]]
    _check(tensors, dtype, kernel_tensors=feed, kernel_grad=nan_gapped)


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 2), C=st.integers(1, 3), nh=st.integers(1, 4), nw=st.integers(1, 4),
       P=st.sampled_from([1, 2, 3, 5, 8]), E=st.integers(1, 40))
def test_property_any_shape_fp32(B, C, nh, nw, P, E):
    skip_unless_kernels_run_on(KERNEL_DEVICE)
    _check(_inputs(B, C, nh * P, nw * P, P, E, KERNEL_DEVICE), torch.float32, label=f"{(B, C, nh, nw, P, E)} ")


def test_errors_name_the_problem():
    dev = KERNEL_DEVICE
    skip_unless_kernels_run_on(dev)
    images, weight, bias, pos, cls = _inputs(1, 3, 8, 12, 4, 16, dev)
    with pytest.raises(ValueError, match=r"image size 9x12 is not divisible by the patch size 4"):
        patch_embed(torch.randn(1, 3, 9, 12, device=dev), weight, bias, pos, cls)
    with pytest.raises(ValueError, match="images have 1 channels but weight expects 3"):
        patch_embed(torch.randn(1, 1, 8, 12, device=dev), weight, bias, pos, cls)
    with pytest.raises(ValueError, match=r"pos_embed has 5 tokens but 1 prefix rows and a 2x3 patch grid need "
                                         r"1 \+ 6 = 7"):
        patch_embed(images, weight, bias, pos[:, :5], cls)
    with pytest.raises(ValueError, match=r"images must be 4-D \(B, C, H, W\)"):
        patch_embed(images[0], weight, bias, pos, cls)
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        patch_embed(images, weight.flatten(1), bias, pos, cls)
    with pytest.raises(ValueError, match=r"square patches"):
        patch_embed(images, weight[..., :2], bias, pos, cls)
    with pytest.raises(ValueError, match=r"bias must have shape \(16,\)"):
        patch_embed(images, weight, bias[:3], pos, cls)
    with pytest.raises(ValueError, match=r"prefix must have shape \(1, T, 16\) with T >= 1 rows"):
        patch_embed(images, weight, bias, pos, cls[0])
    with pytest.raises(ValueError, match=r"prefix must have shape \(1, T, 16\)"):
        patch_embed(images, weight, bias, pos, cls[:, :0])
    with pytest.raises(ValueError, match=r"pos_embed must have shape \(1, T \+ N, 16\)"):
        patch_embed(images, weight, bias, pos[0], cls)
    with pytest.raises(TypeError, match="weight dtype torch.float16 differs from images dtype torch.float32"):
        patch_embed(images, weight.half(), bias, pos, cls)
    with pytest.raises(TypeError, match="dtype torch.float64"):
        patch_embed(*(t.double() for t in (images, weight, bias, pos, cls)))


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        patch_embed(*_inputs(1, 3, 8, 8, 4, 16, "cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: mixed CPU/CUDA inputs")
def test_mixed_devices_rejected():
    images, weight, bias, pos, cls = _inputs(1, 3, 8, 8, 4, 16, "cpu")
    with pytest.raises(ValueError, match="one device"):
        patch_embed(images, weight.cuda(), bias, pos, cls)


def test_inputs_on_a_second_gpu():
    """Tensors on cuda:1 while cuda:0 is current: the launches run on the tensors' device."""
    if torch.cuda.device_count() < 2 or TRITON_INTERPRETER:
        pytest.skip("needs two CUDA GPUs")
    with torch.cuda.device(0):
        _check(_inputs(2, 3, 16, 12, 4, 48, "cuda:1"), torch.float32, label="cuda:1 ")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_every_default_tile_under_the_interpreter(monkeypatch, dtype):
    """Each tile of the default space that a launch in this dtype can get, run by the interpreter in
    place of its 32 x 32 x 32 (warps and stages mean nothing there), on a patch-14 grid: K = 588 and
    B * (1 + N) = 10 rows, so every tile has tails."""
    if not TRITON_INTERPRETER:
        pytest.skip("runs the kernels through Triton's interpreter")
    import importlib

    pe = importlib.import_module("kernels.patch_embed")
    family = "fp32" if dtype == torch.float32 else "mma"
    tensors = _inputs(2, 3, 28, 28, 14, 40, "cpu")
    for tile_index in range(max(len(pe._TILES[k][family]) for k in pe._TILES)):
        meta = {kernel: dict(zip(pe._NAMES[kernel], tiles[family][min(tile_index, len(tiles[family]) - 1)][0]))
                for kernel, tiles in pe._TILES.items()}
        monkeypatch.setattr(pe, "_INTERPRETER_META", meta)
        _check(tensors, dtype, label=f"{meta} ")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("P", [16, 14])
def test_every_default_config_on_cuda(dtype, P):
    """Each configuration of the default autotuning space, pinned in turn for each of the three
    kernels, on ViT-B/16's and ViT-H/14's patch grids: tokens and gradients against float64. (The
    CUDA test job otherwise runs FASTVIT_AUTOTUNE=off, whose 32 x 32 tile compiles to mma.sync.) On
    Hopper every 16-bit kernel must have run wgmma configurations here."""
    if not torch.cuda.is_available() or TRITON_INTERPRETER:
        pytest.skip("needs a CUDA GPU without the interpreter: runs the GPU autotuning space's configs")
    from kernels.audit.compile import compile_job, specialize

    tensors = _inputs(2, 3, 4 * P, 4 * P, P, 192, "cuda")
    low = [t.to(dtype).requires_grad_(True) for t in tensors]
    launches = record_launches(lambda: patch_embed(*low).backward(torch.empty(2, 17, 192, device="cuda",
                                                                                     dtype=dtype)))
    assert [launch.name for launch in launches] == ["_patch_embed_fwd_kernel", "_patch_embed_bwd_dweight_kernel",
                                                    "_patch_embed_bwd_dimages_kernel"]
    major, minor = torch.cuda.get_device_capability()
    for launch in launches:
        kinds = set()
        for config in launch.configs:
            with pinned_config(launch.kernel, config):
                _check(tensors, dtype, label=f"{launch.name} {config} ")
            kinds.add(compile_job(specialize(launch, config, 10 * major + minor))["mma"])
        if major == 9 and dtype != torch.float32:
            assert "wgmma" in kinds, f"{launch.name}: no wgmma configuration among {launch.configs}"
