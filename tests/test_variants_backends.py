"""DeiT, Swin and PiT on every backend: whole-model equivalence against the float64 model, the
``fastvit check`` command, attention maps.

Each family runs as a small model (Swin at 80 px: padded, shifted and clamped windows), built through
the registry. Every registered backend of every op the model calls (``model.op_shapes()``) runs the
same canonical weights (sharp attention) in float32, forward and backward, held to the fp32 rule against the model in
float64 on the reference backends; a backend that cannot run here (e.g. an attention backend that
takes no bias, for Swin) is skipped with its reason (pytest -rs).
"""
import copy
import dataclasses
import functools
import sys
from pathlib import Path

import pytest
import torch

import fastvit
from fastvit import create_model, registries
from fastvit.check import run_check
from fastvit.testing import assert_close

sys.path.insert(0, str(Path(__file__).parent / "data"))
import canonical_weights as cw  # noqa: E402

REGISTRIES = registries()
# the Triton kernels run as parts of models here: the interpreter without its overflow sanitizer (conftest)
pytestmark = pytest.mark.usefixtures("interpreter_without_overflow_checks")
FAMILIES = {  # family: (preset, small config)
    "deit": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=80, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4),
                                                  window_size=4)),
    "pit": ("pit_ti_224", dict(img_size=32, patch_size=4, stride=2, base_dims=(8, 8, 8), depths=(1, 2, 1),
                               num_heads=(1, 2, 4))),
}


def reference_backends(model, **chosen):
    for op, registry in REGISTRIES.items():
        model.set_backend(op, chosen.get(op, registry.reference.name))
    return model


def canonical(model, seed=0):
    """The fixtures' canonical weights (tests/data/canonical_weights.py) with the qkv projections
    scaled by 0.7: attention logits of standard deviation about 2, so the largest probability of a
    row is 5-25 times the uniform one, while float32 gradients stay well inside the fp32 rule (at the
    full gain of 2 the float32 reference's own gradient error reaches the bound in these models)."""
    model.load_state_dict(cw.canonical_state_dict(cw.layout(model.state_dict()), seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                p.mul_(0.7)
    return model


def run_with_grads(model, images, grad_out):
    model.train().zero_grad(set_to_none=True)
    logits = model(images.to(next(model.parameters()).dtype))
    (logits * grad_out.to(logits.dtype)).sum().backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@functools.lru_cache(maxsize=None)
def setup(family):
    torch.manual_seed(0)
    preset, config = FAMILIES[family]
    base = canonical(create_model(preset, num_classes=10, **config))
    images = torch.randn(2, 3, *base.cfg.img_size, generator=torch.Generator().manual_seed(1))
    grad_out = torch.randn(2, 10, generator=torch.Generator().manual_seed(2))
    ref_logits, ref_grads = run_with_grads(reference_backends(copy.deepcopy(base).double()), images.double(), grad_out)
    with torch.no_grad():
        top1 = reference_backends(copy.deepcopy(base)).eval()(images).argmax(-1)
    return base, images, grad_out, ref_logits, ref_grads, top1


def _params():
    for family in FAMILIES:
        for op, registry in REGISTRIES.items():
            for name in registry.names():
                yield pytest.param(family, op, name, id=f"{family}-{op}-{name}")


@pytest.mark.parametrize("family,op,backend", list(_params()))
def test_backend_matches_float64_model(family, op, backend):
    base, images, grad_out, ref_logits, ref_grads, top1 = setup(family)
    if op not in base.op_shapes():
        pytest.skip(f"{family} makes no {op} call (its stem is its own convolution)")
    ok, reason = base.backend_availability(op, backend, "cpu", torch.float32)
    if not ok:
        pytest.skip(f"{op} backend {backend} on cpu/float32 for {family}: {reason}")
    if REGISTRIES[op].get(backend).compiles and not any(s.get("bias") for s in base.op_shapes()[op]):
        pytest.skip(f"{op} backend {backend} compiles a kernel per shape (seconds each on CPU): its model-level "
                    f"case is the family whose calls take a bias (Swin); {family}'s plain calls are the op's own tests'")
    model = reference_backends(copy.deepcopy(base), **{op: backend})
    with torch.no_grad():
        logits = model.eval()(images)
    assert logits.dtype == torch.float32
    assert_close(logits, ref_logits, name=f"{family} {backend} logits")
    assert torch.equal(logits.argmax(-1), top1)
    try:
        logits, grads = run_with_grads(model, images, grad_out)
    except fastvit.BackendError as err:  # refused for the training pass only (see the report in -rs)
        pytest.skip(f"backward of {family} with {op} backend {backend}: {err}")
    assert_close(logits, ref_logits, name=f"{family} {backend} logits in training mode")
    for pname, grad in grads.items():
        assert_close(grad, ref_grads[pname], name=f"{family} {backend} d{pname}")


def test_bias_taking_backends_serve_swin():
    """Swin asks the registry for attention with a bias: the backends that take none are refused."""
    base = setup("swin")[0]
    assert {s["bias"] for s in base.op_shapes()["attention"]} == {True}
    for backend in fastvit.ATTENTION.backends():
        ok, reason = base.backend_availability("attention", backend.name, "cpu", torch.float32)
        if not backend.takes_bias:
            assert not ok and "bias" in reason
    assert base.backend_availability("attention", "naive", "cpu", torch.float32) == (True, "")


def test_deit_asks_for_two_prefix_rows():
    base = setup("deit")[0]
    assert base.op_shapes()["patch"] == [{"patch_size": 8, "prefix_tokens": 2}]


# -- fastvit check -------------------------------------------------------------------------------------
def _compiles_per_shape(device, dtype, **shape):
    return False, ("compiles a kernel per shape (seconds each on CPU): left out of this test, its Swin case is "
                   "test_backend_matches_float64_model's")


@pytest.mark.parametrize("preset,img_size", [("deit_small_distilled_patch16_224", 64),
                                             ("swin_tiny_patch4_window7_224", 64), ("pit_s_224", 64)])
def test_fastvit_check_passes(preset, img_size, monkeypatch):
    for reg in REGISTRIES.values():  # reported as skipped: seconds of compiling per shape on CPU
        for b in reg.backends():
            if b.compiles:
                monkeypatch.setitem(reg._backends, b.name, dataclasses.replace(b, check=_compiles_per_shape))
    results = run_check(preset, batch=2, img_size=img_size, device="cpu")
    failed = [r for r in results if r.failed]
    assert not failed, failed
    passed = {(r.op, r.backend) for r in results if r.status == "pass"}
    assert {("attention", "naive"), ("attention", "sdpa"), ("norm", "torch")} <= passed
    if preset.startswith("deit"):
        assert ("patch", "conv") in passed
    else:
        assert all(r.status.startswith("skipped") for r in results if r.op == "patch")


# -- attention maps ------------------------------------------------------------------------------------
def test_deit_attention_maps_cover_both_prefix_tokens():
    model = reference_backends(copy.deepcopy(setup("deit")[0])).eval()
    images = setup("deit")[1]
    with torch.no_grad():
        before = model(images)
        maps = fastvit.attention_maps(model, images)
        torch.testing.assert_close(model(images), before, rtol=0, atol=0)
    assert len(maps) == 2 and all(m.shape == (2, 2, 2 + 16, 2 + 16) for m in maps)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 2, 18), rtol=0, atol=1e-5)


def test_swin_attention_maps_are_the_window_probabilities():
    base, images = setup("swin")[:2]
    model = reference_backends(copy.deepcopy(base)).eval()
    with torch.no_grad():
        maps = fastvit.attention_maps(model, images)
        model.set_backend("attention", "sdpa")
        sdpa_maps = fastvit.attention_maps(model, images)
    blocks = [blk for stage in model.layers for blk in stage.blocks]
    assert len(maps) == len(blocks) == 6
    # 80 px: maps 20, 10, 5 -> windows 4 (padded to 20, 12, 8): 25, 9, 4 windows per image
    assert [m.shape for m in maps] == [(2 * nw, h, 16, 16) for nw, h in
                                       [(25, 1), (25, 1), (9, 2), (9, 2), (4, 4), (4, 4)]]
    for i, (m, blk) in enumerate(zip(maps, blocks)):
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]), rtol=0, atol=1e-5)
        assert_close(sdpa_maps[i], m.double(), name=f"block {i} map, sdpa vs naive")
        if blk.attn_mask is not None:  # masked pairs get no attention, in every image's windows
            masked = (blk.attn_mask != 0).repeat(2, 1, 1).unsqueeze(1).expand_as(m)
            assert masked.any() and m[masked].max() < 1e-30
    # block 1 by hand in float64: softmax(q k^T / sqrt(d) + relative position bias + shift mask)
    blk = copy.deepcopy(blocks[1]).double()
    with torch.no_grad():
        x = model.patch_embed(images)  # (B, 20, 20, C)
        y, pending = blocks[0](x)
        h = blk.norm1((y + pending).double())  # block 0's output, its MLP branch added
        h = torch.roll(h, (-2, -2), dims=(1, 2))
        windows = h.reshape(2, 5, 4, 5, 4, 16).permute(0, 1, 3, 2, 4, 5).reshape(50, 16, 16)
        q, k, _ = blk.attn.split_heads(windows)
        bias = blk.attn.relative_position_bias() + blk.attn_mask.repeat(2, 1, 1).unsqueeze(1)
        expected = ((q @ k.transpose(-2, -1)) * 16 ** -0.5 + bias).softmax(-1)
    assert_close(maps[1], expected, name="block 1 window probabilities")
