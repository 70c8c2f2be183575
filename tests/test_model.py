"""The Vision Transformer as a whole: timm-compatible parameters, every backend against a float64
reference of the same weights, the block structure written out by hand, options, batch isolation,
dynamic image size, attention maps and dropout.

Whole-model equivalence (STYLE.md point 10): one set of weights, sharpened so attention is far from
uniform, is run by every registered attention / LayerNorm / patch-embedding backend in float32 and
held to fastvit's tolerance rule against the float64 model with the reference backends
(naive attention, torch LayerNorm, conv patch embedding). Backends that cannot run here are skipped
with their reason (pytest -rs).
"""
import copy
import functools

import pytest
import torch
import torch.nn.functional as F

import fastvit
from fastvit import create_model, registries
from fastvit.testing import assert_close

TINY, SMALL = "vit_tiny_patch16_224", "vit_small_patch16_224"
REGISTRIES = registries()
# the Triton kernels run as parts of models here: the interpreter without its overflow sanitizer (conftest)
pytestmark = pytest.mark.usefixtures("interpreter_without_overflow_checks")


# -- helpers ------------------------------------------------------------------------------------
def reference_backends(model, **chosen):
    """Pin every op to its reference backend, except those named in ``chosen``."""
    for op, registry in REGISTRIES.items():
        model.set_backend(op, chosen.get(op, registry.reference.name))
    return model


def skip_unless_available(op: str, name: str, model, dtype=torch.float32, train: bool = False):
    ok, reason = model.backend_availability(op, name, "cpu", dtype, train=train)
    if not ok:
        pytest.skip(f"{op} backend {name} on cpu/{str(dtype)[6:]}: {reason}")


def sharpen(model):
    """Scale the qkv weights x4 so attention is far from uniform (backends differ where it matters)."""
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(4.0)
    return model


def images_for(model, batch=4, generator_seed=1):
    gen = torch.Generator().manual_seed(generator_seed)
    return torch.randn(batch, model.cfg.in_chans, *model.cfg.img_size, generator=gen)


def run_with_grads(model, images, grad_out):
    """Logits and every parameter's gradient of sum(logits * grad_out), in train mode."""
    model.train().zero_grad(set_to_none=True)
    logits = model(images.to(next(model.parameters()).dtype))
    (logits * grad_out.to(logits.dtype)).sum().backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@functools.lru_cache(maxsize=None)
def _equivalence_setup(name: str):
    """Shared per preset: sharpened weights, images, the float64 reference's logits and gradients."""
    torch.manual_seed(0)
    base = sharpen(create_model(name, img_size=32, num_classes=100))
    # two images: a batch (the kernels' grids span it), at half the interpreter's time of four for
    # the Triton backends; batch isolation is test_images_do_not_see_each_other's
    images = images_for(base, batch=2)
    grad_out = torch.randn(images.shape[0], 100, generator=torch.Generator().manual_seed(2))
    ref = reference_backends(copy.deepcopy(base).double())
    ref_logits, ref_grads = run_with_grads(ref, images.double(), grad_out)
    naive = reference_backends(copy.deepcopy(base)).eval()
    with torch.no_grad():
        naive_top1 = naive(images).argmax(-1)
    return base, images, grad_out, ref_logits, ref_grads, naive_top1


def timm_state_shapes(*, patch, embed_dim, depth, img_size, num_classes, in_chans=3, mlp_ratio=4):
    """Key -> shape of timm's VisionTransformer state dict, in timm's order."""
    E, hidden = embed_dim, int(embed_dim * mlp_ratio)
    shapes = {"cls_token": (1, 1, E), "pos_embed": (1, (img_size // patch) ** 2 + 1, E),
              "patch_embed.proj.weight": (E, in_chans, patch, patch), "patch_embed.proj.bias": (E,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (E,), b + "norm1.bias": (E,),
            b + "attn.qkv.weight": (3 * E, E), b + "attn.qkv.bias": (3 * E,),
            b + "attn.proj.weight": (E, E), b + "attn.proj.bias": (E,),
            b + "norm2.weight": (E,), b + "norm2.bias": (E,),
            b + "mlp.fc1.weight": (hidden, E), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (E, hidden), b + "mlp.fc2.bias": (E,),
        })
    shapes.update({"norm.weight": (E,), "norm.bias": (E,), "head.weight": (num_classes, E),
                   "head.bias": (num_classes,)})
    return shapes


def state_shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def tiny(**kw):
    kw.setdefault("img_size", 32)
    kw.setdefault("num_classes", 10)
    return create_model(TINY, **kw)


def copy_weights(model_a, model_b):
    """Copy model_a's weights into model_b (same keys) and return model_b."""
    model_b.load_state_dict(model_a.state_dict())
    return model_b


# -- parameters: timm's names and the paper's sizes -----------------------------------------------
def test_state_dict_matches_timm_fixture_keys_and_order():
    fixture = torch.load("tests/data/timm_vit_fixture.pt", weights_only=True)
    cfg = fixture["config"]
    model = create_model(TINY, img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
                         depth=cfg["depth"], num_heads=cfg["num_heads"], num_classes=cfg["num_classes"])
    timm_shapes = {k: tuple(v.shape) for k, v in fixture["state_dict"].items()}
    assert list(state_shapes(model).items()) == list(timm_shapes.items())
    # the helper used for the presets below agrees with timm itself
    expected = timm_state_shapes(patch=cfg["patch_size"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                                 img_size=cfg["img_size"], num_classes=cfg["num_classes"])
    assert list(expected.items()) == list(timm_shapes.items())


def test_model_builds_on_meta_device():
    model = meta_model(TINY)
    assert model.pos_embed.is_meta and model.blocks[0].attn.qkv.weight.is_meta


@pytest.mark.parametrize("name,patch,embed_dim,depth,num_heads", [
    ("vit_base_patch16_224", 16, 768, 12, 12),
    ("vit_base_patch32_384", 32, 768, 12, 12),
    ("vit_large_patch16_384", 16, 1024, 24, 16),
    ("vit_huge_patch14_224", 14, 1280, 32, 16),
])
def test_preset_state_dict_shapes(name, patch, embed_dim, depth, num_heads):
    img_size = int(name.rsplit("_", 1)[1])
    model = meta_model(name)
    assert model.cfg.num_heads == num_heads
    assert state_shapes(model) == timm_state_shapes(patch=patch, embed_dim=embed_dim, depth=depth,
                                                    img_size=img_size, num_classes=1000)


def test_paper_sizes_spelled_out():
    base, huge = meta_model("vit_base_patch16_224"), meta_model("vit_huge_patch14_224")
    assert len(base.blocks) == 12 and base.pos_embed.shape == (1, 197, 768)
    assert base.blocks[0].attn.qkv.weight.shape == (2304, 768)
    assert len(huge.blocks) == 32 and huge.cfg.num_heads == 16 and huge.pos_embed.shape == (1, 257, 1280)


@pytest.mark.parametrize("name,count", [("vit_base_patch16_224", 86_567_656), ("vit_small_patch16_224", 22_050_664),
                                        ("vit_tiny_patch16_224", 5_717_416)])
def test_parameter_counts(name, count):
    assert sum(p.numel() for p in meta_model(name).parameters()) == count


def test_preset_list_has_224_and_384_names():
    names = set(fastvit.list_models())
    for size in ("tiny", "small", "base", "large"):
        assert f"vit_{size}_patch16_224" in names
    assert {"vit_tiny_patch16_384", "vit_small_patch16_384", "vit_base_patch16_384", "vit_base_patch32_384",
            "vit_large_patch16_384", "vit_huge_patch14_224"} <= names


# -- whole-model equivalence over every backend ----------------------------------------------------
def _backend_params():
    for op, registry in REGISTRIES.items():
        for name in registry.names():
            for preset in (TINY, SMALL):
                yield pytest.param(op, name, preset, id=f"{op}-{name}-{preset.split('_')[1]}")


@pytest.mark.parametrize("op,backend,preset", list(_backend_params()))
def test_backend_matches_float64_model(op, backend, preset):
    base, images, grad_out, ref_logits, ref_grads, naive_top1 = _equivalence_setup(preset)
    skip_unless_available(op, backend, base, train=True)
    model = reference_backends(copy.deepcopy(base), **{op: backend})
    logits, grads = run_with_grads(model, images, grad_out)
    assert logits.dtype == torch.float32
    assert_close(logits, ref_logits, name=f"{backend} logits")
    for pname, grad in grads.items():
        assert_close(grad, ref_grads[pname], name=f"{backend} d{pname}")
    model.eval()
    with torch.no_grad():
        top1 = model(images).argmax(-1)
    assert torch.equal(top1, naive_top1), f"{backend} top-1 {top1.tolist()} vs naive {naive_top1.tolist()}"


@pytest.mark.parametrize("preset", [TINY, SMALL], ids=["tiny", "small"])
def test_all_triton_paths_together_match_float64_model(preset):
    """Triton attention, fused add + LayerNorm and fused patch embedding in one model at once."""
    base, images, grad_out, ref_logits, ref_grads, naive_top1 = _equivalence_setup(preset)
    chosen = {"attention": "triton", "norm": "triton", "patch": "triton"}
    for op, name in chosen.items():
        skip_unless_available(op, name, base)
    model = reference_backends(copy.deepcopy(base), **chosen)
    logits, grads = run_with_grads(model, images, grad_out)
    assert_close(logits, ref_logits, name="all-triton logits")
    for pname, grad in grads.items():
        assert_close(grad, ref_grads[pname], name=f"all-triton d{pname}")
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images).argmax(-1), naive_top1)


def test_einops_patch_embed_equals_conv_non_square():
    model = tiny(img_size=(32, 48))
    images = torch.randn(2, 3, 32, 48)
    outs = {}
    for backend in ("conv", "einops"):
        m = copy.deepcopy(model)
        m.set_backend("patch", backend)
        x = images.clone().requires_grad_(True)
        tokens = m.embed(x)
        assert tokens.shape == (2, 1 + 2 * 3, 192)
        tokens.square().sum().backward()
        outs[backend] = (tokens.detach(), x.grad, m.patch_embed.proj.weight.grad, m.patch_embed.proj.bias.grad,
                         m.pos_embed.grad, m.cls_token.grad)
    names = ("tokens", "dimages", "dweight", "dbias", "dpos_embed", "dcls")
    for name, out, ref in zip(names, outs["einops"], outs["conv"]):
        assert_close(out, ref, name=f"einops {name}")


# -- block structure written out by hand -----------------------------------------------------------
def _ln(norm, x):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def _attn(attn, x):
    B, N, C = x.shape
    H = attn.num_heads
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D)
    return F.linear(out.transpose(1, 2).reshape(B, N, C), attn.proj.weight, attn.proj.bias)


def _mlp(mlp, x, act):
    h = F.linear(x, mlp.fc1.weight, mlp.fc1.bias)
    h = F.gelu(h) if act == "gelu" else F.relu(h)
    return F.linear(h, mlp.fc2.weight, mlp.fc2.bias)


def _tokens(model, images):
    w = model.patch_embed.proj
    x = F.conv2d(images, w.weight, w.bias, stride=w.stride).flatten(2).transpose(1, 2)  # (B, N, E)
    return torch.cat([model.cls_token.expand(len(images), -1, -1), x], dim=1) + model.pos_embed


def textbook_forward(model, images):
    """ViT written out with plain torch ops from the model's own submodules."""
    act = model.cfg.mlp_act
    x = _tokens(model, images)
    for blk in model.blocks:
        if model.cfg.norm_position == "pre":
            x = x + _attn(blk.attn, _ln(blk.norm1, x))
            x = x + _mlp(blk.mlp, _ln(blk.norm2, x), act)
        else:
            x = _ln(blk.norm1, x + _attn(blk.attn, x))
            x = _ln(blk.norm2, x + _mlp(blk.mlp, x, act))
    x = _ln(model.norm, x)
    return F.linear(x[:, 0], model.head.weight, model.head.bias)


@pytest.mark.parametrize("options", [{}, {"norm_position": "post"}, {"mlp_act": "relu"},
                                     {"norm_position": "post", "mlp_act": "relu"}],
                         ids=["pre-gelu", "post-gelu", "pre-relu", "post-relu"])
def test_model_equals_textbook_forward(options):
    model = reference_backends(sharpen(tiny(**options)).double().eval())
    images = images_for(model, batch=2).double()
    with torch.no_grad():
        out, ref = model(images), textbook_forward(model, images)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("options", [{"norm_position": "post"}, {"mlp_act": "relu"}])
def test_options_change_the_output(options):
    default = sharpen(tiny()).eval()
    other = copy_weights(default, tiny(**options)).eval()
    images = images_for(default, batch=2)
    with torch.no_grad():
        a, b = default(images), other(images)
    assert b.shape == a.shape and torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-3, f"{options} gave the default model's logits"


# -- batch isolation (the nn.MultiheadAttention batch_first pitfall) --------------------------------
@pytest.mark.parametrize("backend", fastvit.ATTENTION.names())
def test_images_do_not_see_each_other(backend):
    model = sharpen(tiny(attn_backend=backend)).eval()
    skip_unless_available("attention", backend, model)
    if fastvit.ATTENTION.get(backend).compiles:
        pytest.skip(f"{backend} compiles a kernel per shape (seconds each on CPU; three batch sizes here): its "
                    "batches are its kernel's own programs, held to the reference by the op's tests")
    images = images_for(model, batch=4)
    others = images.clone()
    others[1:] = torch.randn(3, *images.shape[1:])
    with torch.no_grad():
        out, out_others, alone = model(images), model(others), model(images[:1])
    assert_close(out_others[0], out[0].double(), name=f"{backend} image 0 with other images changed")
    assert_close(alone[0], out[0].double(), name=f"{backend} image 0 alone")
    assert (out_others[1:] - out[1:]).abs().max() > 1e-3  # the other images' logits did change


# -- dynamic image size ----------------------------------------------------------------------------
def test_dynamic_img_size():
    static = sharpen(tiny()).eval()
    dynamic = copy_weights(static, tiny(dynamic_img_size=True)).eval()
    with torch.no_grad():
        for side in (32, 48, 64):
            assert dynamic(torch.randn(2, 3, side, side)).shape == (2, 10)
        assert dynamic(torch.randn(2, 3, 32, 64)).shape == (2, 10)
        images = images_for(static, batch=2)
        torch.testing.assert_close(dynamic(images), static(images), rtol=0, atol=0)


# -- attention maps --------------------------------------------------------------------------------
def test_attention_maps():
    model = reference_backends(sharpen(tiny())).eval()
    images = images_for(model, batch=2)
    with torch.no_grad():
        before = model(images)
        maps = fastvit.attention_maps(model, images)
        after = model(images)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    N, H = model.cfg.num_tokens, model.cfg.num_heads
    assert len(maps) == model.cfg.depth
    for m in maps:
        assert m.shape == (2, H, N, N)
        torch.testing.assert_close(m.sum(-1), torch.ones(2, H, N), rtol=0, atol=1e-5)
    # layer 0 by hand, in float64
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        x = _ln(m64.blocks[0].norm1, _tokens(m64, images.double()))
        attn = m64.blocks[0].attn
        q, k, _ = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(2, N, 3, H, -1).permute(2, 0, 3, 1, 4)
        expected = (q @ k.transpose(-2, -1) * attn.head_dim ** -0.5).softmax(-1)
    assert_close(maps[0], expected, name="layer-0 attention map")
    assert maps[0].max() > 0.5, "attention should be sharp enough for the comparison to mean something"
    with torch.no_grad():
        sdpa_model = copy.deepcopy(model)
        sdpa_model.set_backend("attention", "sdpa")
        sdpa_maps = fastvit.attention_maps(sdpa_model, images)
    for i, (a, b) in enumerate(zip(sdpa_maps, maps)):
        assert_close(a, b.double(), name=f"layer {i} map, sdpa vs naive")


# -- dropout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["drop_rate", "attn_drop_rate", "drop_path_rate", "pos_drop_rate"])
def test_dropout_only_in_train_mode(option):
    model = tiny(**{option: 0.3})
    images = images_for(model, batch=4)
    with torch.no_grad():
        model.train()
        a, b = model(images), model(images)
        assert (a - b).abs().max() > 1e-4, f"{option}=0.3 did not vary in train mode"
        model.eval()
        c, d = model(images), model(images)
    torch.testing.assert_close(c, d, rtol=0, atol=0)
    plain = copy_weights(model, tiny()).eval()
    with torch.no_grad():
        torch.testing.assert_close(c, plain(images), rtol=0, atol=0)


# -- other timm options ----------------------------------------------------------------------------
def test_qkv_bias_false_has_no_qkv_bias():
    model = tiny(qkv_bias=False)
    keys = set(model.state_dict())
    assert "blocks.0.attn.qkv.weight" in keys and "blocks.0.attn.qkv.bias" not in keys
    assert "blocks.0.attn.proj.bias" in keys  # timm keeps the projection's bias
    assert model(images_for(model, batch=1)).shape == (1, 10)


def test_num_classes_zero_returns_cls_features():
    model = tiny(num_classes=0).eval()
    assert not any(k.startswith("head.") for k in model.state_dict())
    images = images_for(model, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(model(images), model.forward_features(images)[:, 0], rtol=0, atol=0)
    assert model(images).shape == (2, 192)
