"""kernels.flash_attention against a float64 reference: output, log-sum-exp and dq, dk, dv (with an
additive bias, masks and very large scores: tests/test_flash_attention_bias.py, using the helpers here).

On CPU these run through Triton's interpreter (tests/conftest.py switches it on), in fp32 and fp16.
bf16 and CUDA cases are parametrized too and skipped with their reason when they cannot run here:
the interpreter computes bf16 ``tl.dot`` wrongly, so bf16 is tested on CUDA only.

Every comparison takes the float64 reference from the very inputs the kernel saw (already rounded
to the tested dtype), so the error measured is the kernel's own, not the rounding of the inputs.
"""
import importlib
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastvit.testing import assert_close, is_low_precision
from kernels._common import SPACES, interpreter_enabled, pinned_config, runnable_on
from kernels._flash_common import LOG2E
from kernels.audit.capture import record_launches
from kernels.flash_attention import _flash_attn_fwd, attention_ref, flash_attention, head_dim_tiles

FA = importlib.import_module("kernels._flash_common")  # the tiles, the prune and the interpreter's blocks

DEVICES = ["cpu", "cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CASES = [  # (B, H, N, D); the interpreter runs 32 x 32 blocks
    (2, 3, 1, 64),     # a single token
    (2, 3, 2, 128),    # two tokens, the largest common head dim
    (2, 3, 17, 16),    # prime N inside one block
    (1, 2, 33, 48),    # a one-token tail after a full block; D=48 as two pieces, 32 + 16
    (1, 2, 70, 32),    # more than two blocks plus a tail, in both queries and keys
    (1, 2, 197, 64),   # ViT-B/16 at 224 px
    (2, 1, 197, 80),   # ViT-H/14's head dim, as two pieces, 64 + 16 (no padding to 128)
    pytest.param((1, 1, 577, 64), marks=pytest.mark.slow),  # ViT-B/16 at 384 px: 18 blocks + 1
]


def _skip_unless_runnable(device, dtype=torch.float32):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ok, reason = runnable_on(device)
    if not ok:
        pytest.skip(reason)
    if dtype == torch.bfloat16 and interpreter_enabled():
        pytest.skip("Triton's interpreter does not support bf16 tl.dot (it multiplies raw bits); "
                    "bf16 is tested on CUDA")


def _randn(*shape, device, dtype=torch.float32, mult=1.0):
    return (torch.randn(*shape, device=device) * mult).to(dtype)


def _grads(fn, q, k, v, grad_out, bias=None, bias_view=None):
    """fn's output and the gradients of <fn(q, k, v, bias), grad_out> with respect to q, k, v (and
    bias). ``bias_view(bias)``, when given, is what fn gets (a stride-0 expand, a slice): the view
    reaches the kernel as it is, and the gradient flows back to ``bias`` through it."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    leaves = [q, k, v]
    if bias is not None:
        bias = bias.detach().clone().requires_grad_(True)
        leaves.append(bias)
        if bias_view is not None:
            bias = bias_view(bias)
    out = fn(q, k, v) if bias is None else fn(q, k, v, bias=bias)
    out.backward(grad_out.to(out.dtype))
    return (out.detach(), *(t.grad for t in leaves))


def _torch_math(q, k, v, bias=None):
    """The low-precision baseline of fastvit.testing: PyTorch's math SDPA on the fp16/bf16 tensors.

    In torch 2.13 the math backend upcasts fp16/bf16 to fp32 internally (on CPU its result is
    bit-identical to attention_ref(upcast=True)), so its error against float64 is the rounding of
    the results: nonzero (about 2.4e-4 on the output at N=197, D=64 in fp16) and the smaller of the
    two candidates -- attention_ref(upcast=False), everything in fp16, is about 3x worse. We keep the
    stricter baseline: the kernel meets it, and tests/test_attention.py uses the same one.
    """
    with sdpa_kernel(SDPBackend.MATH):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def _check(q, k, v, grad_out, label="", scale=None, bias=None, bias_view=None):
    """Kernel vs float64 reference on the same (already rounded) inputs: out, dq, dk, dv (, dbias)."""
    dtype = q.dtype
    outs = _grads(lambda *a, **kw: flash_attention(*a, scale=scale, **kw), q, k, v, grad_out, bias, bias_view)
    refs = _grads(lambda *a, **kw: attention_ref(*a, scale=scale, **kw), q.double(), k.double(), v.double(),
                  grad_out.double(), bias.double() if bias is not None else None, bias_view)
    bases = [None] * len(outs)
    if is_low_precision(dtype):
        assert scale is None, "the SDPA baseline uses the default scale"
        bases = _grads(_torch_math, q, k, v, grad_out, bias, bias_view)
    names = ("out", "dq", "dk", "dv", "dbias")
    for name, out, ref, base in zip(names, outs, refs, bases):
        expect = bias.dtype if name == "dbias" else dtype
        assert out.dtype == expect, f"{label}{name} came back as {out.dtype}, not {expect}"
        assert out.shape == ref.shape, f"{label}{name} has shape {tuple(out.shape)}, not {tuple(ref.shape)}"
        assert not out.isnan().any(), f"{label}{name} has NaN"
        assert_close(out, ref, baseline=base, dtype=dtype, name=f"{label}{name}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_float64_reference(device, dtype, case):
    _skip_unless_runnable(device, dtype)
    q, k, v, grad_out = (_randn(*case, device=device, dtype=dtype) for _ in range(4))
    _check(q, k, v, grad_out)


@pytest.mark.parametrize("device", DEVICES)
def test_lse_is_logsumexp_of_scaled_scores(device):
    """The saved statistic the backward recomputes from: the base-2 LSE per query row (the natural
    log-sum-exp times log2(e)), fp32."""
    _skip_unless_runnable(device)
    q, k, v = (_randn(2, 2, 45, 48, device=device) for _ in range(3))
    out, lse = _flash_attn_fwd(q, k, v, None, 0.2)
    assert lse.shape == (2, 2, 45) and lse.dtype == torch.float32
    scores = q.double() @ k.double().transpose(-2, -1) * 0.2
    assert_close(lse, torch.logsumexp(scores, dim=-1) * LOG2E, name="lse")
    assert_close(out, attention_ref(q.double(), k.double(), v.double(), scale=0.2), name="out")


@pytest.mark.parametrize("device", DEVICES)
def test_custom_scale(device):
    _skip_unless_runnable(device)
    q, k, v, grad_out = (_randn(1, 2, 40, 32, device=device) for _ in range(4))
    _check(q, k, v, grad_out, label="scale=0.3 ", scale=0.3)
    # The default is 1/sqrt(D), checked against an explicit reference, not the reference's default.
    explicit = attention_ref(q.double(), k.double(), v.double(), scale=1 / math.sqrt(32))
    assert_close(flash_attention(q, k, v), explicit, name="default scale")


@pytest.mark.parametrize("device", DEVICES)
def test_peaked_softmax_stays_finite_and_accurate(device):
    """Scores in the hundreds: exp() overflows fp32 unless the running max is subtracted, and the
    max moves between key blocks, exercising the rescaling of the accumulator."""
    _skip_unless_runnable(device)
    q, k, v, grad_out = (_randn(1, 2, 70, 32, device=device, mult=m) for m in (6.0, 6.0, 1.0, 1.0))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(32)
    assert scores.abs().max() > 100
    _check(q, k, v, grad_out, label="peaked ")


@pytest.mark.filterwarnings("error:overflow encountered:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.parametrize("device", DEVICES)
def test_all_scores_very_negative(device):
    """Every score near -100, so the log-sum-exp is too: exp(-lse) overflows fp32. Padded lanes of
    a tail block must not compute it (inf there times a zero-padded key is NaN)."""
    _skip_unless_runnable(device)
    q, k, v, grad_out = (_randn(2, 2, 17, 32, device=device) for _ in range(4))
    q[..., 0], k[..., 0] = 24.0, -24.0  # adds -24 * 24 / sqrt(32) ~ -102 to every score
    assert (q @ k.transpose(-2, -1) / math.sqrt(32)).max() < -80
    _check(q, k, v, grad_out, label="very negative ")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_views_into_fused_qkv(device, dtype):
    """q, k, v as a ViT makes them: slices of one (B, N, 3, H, D) projection, permuted to (B, H, N, D)."""
    _skip_unless_runnable(device, dtype)
    B, N, H, D = 2, 37, 3, 32
    qkv = _randn(B, N, 3, H, D, device=device, dtype=dtype).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
    q, k, v = qkv.unbind(0)
    assert not q.is_contiguous() and q.stride(-1) == 1
    grad_out = _randn(B, N, H, D, device=device, dtype=dtype).transpose(1, 2)  # strided gradient too
    _check(q, k, v, grad_out, label="strided ")


@pytest.mark.parametrize("shape", [(1, 2, 45, 80), (2, 1, 17, 16)], ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_tails_never_read_out_of_bounds(device, dtype, shape):
    """Inputs (and the output gradient) are views into NaN-filled buffers: NaN before and after
    every row and every (batch, head) slice. Any read past N or D would surface as NaN."""
    _skip_unless_runnable(device, dtype)
    B, H, N, D = shape

    def nan_framed(t):
        buf = torch.full((B, H, N + 19, D + 24), float("nan"), device=device, dtype=dtype)
        buf[:, :, 7:7 + N, 5:5 + D] = t
        return buf[:, :, 7:7 + N, 5:5 + D]

    q, k, v, grad_out = (nan_framed(_randn(*shape, device=device, dtype=dtype)) for _ in range(4))
    assert not q.isnan().any()
    assert q.as_strided((1,), (1,), q.storage_offset() + D).isnan().all(), "memory after a row must be NaN"
    _check(q, k, v, grad_out, label="NaN-framed ")


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_for_some_inputs_only(device):
    _skip_unless_runnable(device)
    q, k, v, grad_out = (_randn(1, 2, 20, 16, device=device) for _ in range(4))
    q.requires_grad_(True)
    flash_attention(q, k, v).backward(grad_out)
    assert k.grad is None and v.grad is None
    ref = _grads(attention_ref, q.double(), k.double(), v.double(), grad_out.double())[1]
    assert_close(q.grad, ref, name="dq")


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 2), H=st.integers(1, 3), N=st.integers(1, 80), D=st.sampled_from([4, 8, 16, 24, 40, 64, 80]))
def test_property_any_shape_fp32(B, H, N, D):
    if not runnable_on("cpu")[0]:
        pytest.skip(runnable_on("cpu")[1])
    q, k, v, grad_out = (torch.randn(B, H, N, D) for _ in range(4))
    _check(q, k, v, grad_out, label=f"{(B, H, N, D)} ")


def test_head_dim_tiles():
    """The head dim as one or two power-of-two pieces of at least 16 columns, never more MMA work than
    padding to one power of two: 80 = 64 + 16 (ViT-H/14), where padding to 128 wastes 37.5%."""
    expected = {1: (16, 0), 16: (16, 0), 24: (32, 0), 40: (32, 16), 48: (32, 16), 64: (64, 0), 72: (64, 16),
                80: (64, 16), 96: (64, 32), 112: (128, 0), 128: (128, 0), 160: (128, 32), 200: (256, 0), 256: (256, 0)}
    for D, tiles in expected.items():
        assert head_dim_tiles(D) == tiles, D
    for D in range(1, 257):
        first, second = head_dim_tiles(D)
        assert first + second >= D and first + second <= max(16, 1 << (D - 1).bit_length())


def test_gpu_autotune_prunes_to_the_launch_family():
    """The GPU autotuner's early prune (the configs themselves only run on CUDA): fp32 launches keep
    the small FMA tiles, fp16 / bf16 launches the tensor-core tiles, whatever the head dim."""
    for kernel, name in (("fwd", "_flash_attn_fwd_kernel"), ("dkdv", "_flash_attn_bwd_dkdv_kernel"),
                         ("dq", "_flash_attn_bwd_dq_kernel")):
        space, prune = SPACES[name]["on"], FA.prune(kernel)
        for block_d, block_d2 in ((64, 0), (64, 16), (128, 0)):
            fp32 = prune(space, {"N": 197}, IEEE=True, BLOCK_D=block_d, BLOCK_D2=block_d2, HAS_BIAS=False)
            lowp = prune(space, {"N": 197}, IEEE=False, BLOCK_D=block_d, BLOCK_D2=block_d2, HAS_BIAS=False)
            assert len(fp32) >= 2 and len(lowp) >= 2 and not set(map(str, fp32)) & set(map(str, lowp))
            assert all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 32 * 64 for c in fp32)
            assert all(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) >= 64 for c in lowp)
            for ieee, family in ((True, fp32), (False, lowp)):  # with a bias: the family less the spilling tiles
                biased = prune(space, {"N": 49}, IEEE=ieee, BLOCK_D=block_d, BLOCK_D2=block_d2, HAS_BIAS=True)
                spilling = {(bm, bn, w, st) for bm, bn, w, st in FA.BIAS_SPILLS[kernel]}
                assert biased and {str(c) for c in biased} <= {str(c) for c in family}
                assert not any((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in spilling
                               for c in biased)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_every_default_tile_under_the_interpreter(monkeypatch, dtype):
    """Each (BLOCK_M, BLOCK_N) of the default space that a launch in this dtype can get, run by the
    interpreter in place of its 32 x 32 (warps and stages mean nothing there): at D = 80 (64 + 16),
    and at D = 32 with a bias, with tails in queries and keys: N is the family's largest block plus 22,
    so every tile runs at least one full block and a tail of another (fp32: 86, mma: 150), the
    interpreter's time growing as N squared."""
    if not interpreter_enabled():
        pytest.skip("runs the kernels through Triton's interpreter")
    family = "fp32" if dtype == torch.float32 else "mma"
    tiles = sorted({(bm, bn) for kernel in FA.TILES.values() for bm, bn, _, _ in kernel[family]})
    N = max(max(tile) for tile in tiles) + 22
    assert all(N % b for tile in tiles for b in tile)
    q, k, v, grad_out = (_randn(1, 1, N, 80, device="cpu", dtype=dtype) for _ in range(4))
    bias = _randn(1, 1, N, N, device="cpu", dtype=dtype)
    for bm, bn in tiles:
        monkeypatch.setattr(FA, "_INTERPRETER_BLOCKS", {"BLOCK_M": bm, "BLOCK_N": bn})
        _check(q, k, v, grad_out, label=f"{bm} x {bn} ")
        _check(q[..., :32], k[..., :32], v[..., :32], grad_out[..., :32], label=f"{bm} x {bn} bias ", bias=bias)


@pytest.mark.parametrize("D", [64, 80])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_every_default_config_on_cuda(dtype, D):
    """Each configuration of the default autotuning space that the pruning keeps for this launch,
    pinned in turn for each of the three tuned kernels: outputs and gradients against float64. The
    CUDA test job otherwise runs FASTVIT_AUTOTUNE=off, whose single 32 x 32 tile compiles to mma.sync;
    on Hopper every 16-bit kernel must have run wgmma configurations here."""
    if not torch.cuda.is_available() or interpreter_enabled():
        pytest.skip("needs a CUDA GPU without the interpreter: runs the GPU autotuning space's configs")
    from kernels.audit.compile import compile_job, specialize

    q, k, v, grad_out = (_randn(2, 3, 197, D, device="cuda", dtype=dtype) for _ in range(4))
    launches = [launch for launch in record_launches(lambda: _grads(flash_attention, q, k, v, grad_out))
                if launch.configs != [None]]
    assert [launch.name for launch in launches] == ["_flash_attn_fwd_kernel", "_flash_attn_bwd_dkdv_kernel",
                                                    "_flash_attn_bwd_dq_kernel"]
    major, minor = torch.cuda.get_device_capability()
    for launch in launches:
        kinds = set()
        for config in launch.configs:
            with pinned_config(launch.kernel, config):
                _check(q, k, v, grad_out, label=f"{launch.name} {config} ")
            kinds.add(compile_job(specialize(launch, config, 10 * major + minor))["mma"])
        if major == 9 and dtype != torch.float32:
            assert "wgmma" in kinds, f"{launch.name}: no wgmma configuration among {launch.configs}"


def test_attention_ref_upcast():
    q, k, v = (torch.randn(1, 2, 9, 16).half() for _ in range(3))
    up = attention_ref(q, k, v)
    assert up.dtype == torch.float16
    assert torch.equal(up, attention_ref(q.float(), k.float(), v.float()).half())
    low = attention_ref(q, k, v, upcast=False)
    assert low.dtype == torch.float16 and not torch.equal(low, up)


_X = torch.randn(1, 2, 8, 16)
ERROR_CASES = {
    "not-4d": ((_X[0], _X[0], _X[0]), ValueError, r"q must be 4-D \(B, H, N, D\), got shape \(2, 8, 16\)"),
    "shape-mismatch": ((_X, _X[:, :, :4], _X), ValueError,
                       r"one shape .*q \(1, 2, 8, 16\), k \(1, 2, 4, 16\), v \(1, 2, 8, 16\)"),
    "dtype-mismatch": ((_X, _X.half(), _X), TypeError, "share one dtype; got q torch.float32, k torch.float16"),
    "float64": ((_X.double(),) * 3, TypeError, "q has dtype torch.float64; supported"),
    "not-a-tensor": ((_X, _X.numpy(), _X), TypeError, "k must be a torch.Tensor, got ndarray"),
    "head-dim-300": ((torch.randn(1, 1, 4, 300),) * 3, ValueError,
                     "head dim 300 is not supported; supported head dims are 1 to 256"),
    "bias-broadcast": ((_X, _X, _X, torch.zeros(2, 8, 7)), ValueError,
                       r"bias of shape \(2, 8, 7\) does not broadcast to \(B, H, N, N\) = \(1, 2, 8, 8\)"),
    "bias-dtype": ((_X, _X, _X, torch.zeros(8, 8, dtype=torch.float64)), TypeError, "bias has dtype torch.float64"),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_name_the_problem(name):
    if not runnable_on("cpu")[0]:
        pytest.skip(runnable_on("cpu")[1])
    args, exc, match = ERROR_CASES[name]
    with pytest.raises(exc, match=match):
        flash_attention(*args[:3], bias=args[3] if len(args) > 3 else None)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        flash_attention(_X, _X, _X)


def test_mixed_devices_rejected():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: mixes CPU and CUDA inputs")
    with pytest.raises(ValueError, match="k is on cuda:0 but q is on cpu"):
        flash_attention(_X, _X.cuda(), _X)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_backward_is_deterministic_on_cuda(dtype):
    """No atomics: two backward passes give bitwise equal gradients (on CUDA, where programs race;
    the interpreter runs programs one after another, so it could not catch a race)."""
    if not torch.cuda.is_available() or interpreter_enabled():
        pytest.skip("needs a CUDA GPU without the interpreter: determinism is about racing programs")
    q, k, v, grad_out = (_randn(2, 4, 577, 64, device="cuda", dtype=dtype) for _ in range(4))
    first, second = _grads(flash_attention, q, k, v, grad_out), _grads(flash_attention, q, k, v, grad_out)
    for name, a, b in zip(("out", "dq", "dk", "dv"), first, second):
        assert torch.equal(a, b), f"{name} differs between two identical runs"


def test_inputs_on_a_second_gpu():
    """Tensors on cuda:1 while cuda:0 is current: the launches run on the tensors' device."""
    if torch.cuda.device_count() < 2 or interpreter_enabled():
        pytest.skip("needs two CUDA GPUs")
    q, k, v, grad_out = (_randn(1, 2, 70, 80, device="cuda:1") for _ in range(4))
    with torch.cuda.device(0):
        _check(q, k, v, grad_out, label="cuda:1 ")


def test_slices_beyond_32_bit_offsets_are_made_contiguous():
    """The kernels address one (batch, head) slice with 32-bit offsets: a view whose slice spans 2**31
    elements is copied to the contiguous layout first, and a slice that cannot fit is refused by name."""
    within = importlib.import_module("kernels.flash_attention")._within_int32
    fits = torch.empty(2, 3, 197, 64, device="meta").transpose(1, 2).transpose(1, 2)
    assert within(fits, "q") is fits
    strided = torch.empty_strided((1, 2, 3, 8), (0, 8, 2 ** 30, 1), device="meta")  # sequence stride 2**30
    copied = within(strided, "k")
    assert copied.is_contiguous() and copied.shape == strided.shape
    largest = torch.empty(1, 1, 2 ** 16, 2 ** 15, device="meta")  # N * D = 2**31: last offset 2**31 - 1
    assert within(largest, "v") is largest
    with pytest.raises(ValueError, match=r"v has N \* D = 65536 \* 32769 = 2147549184 elements per \(batch, head\)"):
        within(torch.empty(1, 1, 2 ** 16, 2 ** 15 + 1, device="meta"), "v")
