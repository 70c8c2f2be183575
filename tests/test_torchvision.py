"""torchvision interop (fastvit.models.tv): torchvision ViT and Swin checkpoints into fastvit, against
torchvision's own logits in a committed fixture (tests/data/make_torchvision_fixture.py, torchvision
0.29.1; no torchvision needed here), and torchvision's models with fastvit's weights for the peers
(needs torchvision; skipped with the reason).

Full sizes: ViT-B/16 and Swin-T with seeded canonical weights in torchvision's layout (rebuilt bit for
bit from the fixture's layout and seed), at 224 px and at one other size (ViT-B/16 at 112 px, its
position embedding resampled; Swin-T at 448 px); the other torchvision builders' layouts map onto
fastvit's presets key for key. Small models of the same classes carry full state dicts and the
cases a size changes (Swin's padding order)."""
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch

import fastvit
from fastvit.errors import CheckpointError, ConfigError
from fastvit.models import tv
from fastvit.models.hf import swin_padding_notes
from fastvit.testing import assert_close, compare

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import canonical_weights as cw  # noqa: E402

FX = torch.load(DATA / "torchvision_fixture.pt", weights_only=True)
PRESETS, TINY = FX["presets"], FX["tiny"]
# torchvision builder -> fastvit preset and overrides with the same architecture
SAME_AS = {"vit_b_16": ("vit_base_patch16_224", {}), "vit_b_32": ("vit_base_patch32_224", {}),
           "vit_l_16": ("vit_large_patch16_224", {}), "vit_l_32": ("vit_large_patch16_224", {"patch_size": 32}),
           "vit_h_14": ("vit_huge_patch14_224", {}), "swin_t": ("swin_tiny_patch4_window7_224", {}),
           "swin_s": ("swin_small_patch4_window7_224", {}), "swin_b": ("swin_base_patch4_window7_224", {})}
TINY_VIT = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
TINY_SWIN = dict(patch_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, mlp_ratio=2.0,
                 num_classes=10)


def images(record: dict) -> torch.Tensor:
    x = cw.image_batch(record["shape"][-1], record["seed"], batch=record["batch"])
    assert cw.sha256([x]) == record["sha256"], "the seeded input differs from the one torchvision ran"
    return x


def logits(model, x):
    with torch.no_grad():
        return model(x)


def quiet_load(model, state):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning here would mean torchvision computes something else
        return fastvit.load_checkpoint(model, state)


def tiny_vit(img_size, **kw):
    return fastvit.create_model("vit_tiny_patch16_224", **{**TINY_VIT, "img_size": img_size, **kw}).eval()


def tiny_swin(img_size, **kw):
    return fastvit.create_model("swin_tiny_patch4_window7_224", **{**TINY_SWIN, "img_size": img_size, **kw}).eval()


def uninitialised(name, **kw):
    """A preset built without its random initialisation (seconds for the full sizes), for a test that
    loads every parameter strictly; buffers computed from the config (Swin's index, masks) are real."""
    def keep(t, *args, **kwargs):
        return t
    with mock.patch.multiple(torch.nn.init, trunc_normal_=keep, normal_=keep, kaiming_uniform_=keep, uniform_=keep):
        return fastvit.create_model(name, **kw).eval()


def meta_state(layout):
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in layout}


# -- full sizes: ViT-B/16, Swin-T -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_size_logits_equal_torchvision(name):
    entry = PRESETS[name]
    state = cw.canonical_state_dict(entry["layout"], entry["seed"])
    assert cw.sha256(state.values()) == entry["weights_sha256"]
    preset = SAME_AS[name][0]
    for res, ref in entry["logits"].items():
        model = uninitialised(preset, img_size=res)
        info = quiet_load(model, state)
        assert info["converted"]["converted_from"] == tv.CLASSES["vit" if name.startswith("vit") else "swin"]
        native = res == 224
        if name == "vit_b_16":
            assert info["resampled_pos_embed"] == (None if native else (197, 50))
            assert ("pos_embedding" in info["converted"]) == (not native)
        assert_close(logits(model, images(entry["inputs"][res])), ref, name=f"fastvit {preset}@{res} vs torchvision")


@pytest.mark.parametrize("builder", sorted(SAME_AS))
def test_layouts_map_onto_presets(builder):
    """Every torchvision ViT / Swin V1 builder's keys and shapes are a fastvit preset's, and back."""
    layout = PRESETS[builder]["layout"] if builder in PRESETS else FX["layouts"][builder]
    preset, overrides = SAME_AS[builder]
    with torch.device("meta"):
        model = fastvit.create_model(preset, **overrides)
    family = "vit" if builder.startswith("vit") else "swin"
    state = meta_state(layout)
    assert tv.detect_torchvision(state) == family
    converted, notes = tv.tv_to_timm(state, family)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert notes["dropped"] == [k for k, _, dtype in layout if dtype == "int64"]  # Swin's relative_position_index
    back = tv.timm_to_tv(converted, family)
    assert list(back) == [k for k, _, dtype in layout if dtype != "int64"]  # torchvision's order too
    assert tv.builder_name(family, model.cfg) == builder


# -- small models: full state dicts ---------------------------------------------------------------------
@pytest.mark.parametrize("res", [32, 48])
def test_tiny_vit(res):
    entry = TINY["vit"]
    model = tiny_vit(res)
    info = quiet_load(model, entry["state_dict"])
    assert info["missing"] == info["unexpected"] == [] and info["converted"]["dropped"] == []
    assert info["converted"]["key_spelling"] == "torchvision 0.13 and later (mlp.0 / mlp.3)"
    assert info["resampled_pos_embed"] == (None if res == 32 else (17, 37))
    assert_close(logits(model, images(entry["inputs"][res])), entry["logits"][res], name=f"tiny ViT@{res}")


def test_tiny_vit_older_spelling_and_file(tmp_path):
    """Checkpoints of torchvision before 0.13 (mlp.linear_1 / linear_2), read from a file."""
    entry = TINY["vit"]
    old = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
           for k, v in entry["state_dict"].items()}
    torch.save({"model": old, "epoch": 3}, tmp_path / "ckpt.pth")  # as torchvision's training scripts save
    model = tiny_vit(32)
    info = quiet_load(model, tmp_path / "ckpt.pth")
    assert info["converted"]["key_spelling"] == "torchvision before 0.13 (mlp.linear_1 / mlp.linear_2)"
    assert_close(logits(model, images(entry["inputs"][32])), entry["logits"][32], name="tiny ViT, older names")


@pytest.mark.parametrize("res", [64, 96, 128, 80])
def test_tiny_swin(res):
    """Equal to torchvision where its padding before the shift does not matter (64, 128: no padding; 96:
    the last map 6 padded to 8 gives the same windows); at 80 px it does: warned, and the logits differ."""
    entry = TINY["swin"]
    model = tiny_swin(res)
    x, ref = images(entry["inputs"][res]), entry["logits"][res]
    if res != 80:
        info = quiet_load(model, entry["state_dict"])
        assert info["warnings"] == [] and len(info["converted"]["dropped"]) == sum(TINY_SWIN["depths"])
        assert all(k.endswith("relative_position_index") for k in info["converted"]["dropped"])
        assert_close(logits(model, x), ref, name=f"tiny Swin@{res} vs torchvision")
        return
    with pytest.warns(UserWarning, match=r"Swin stage 2: map 5x5 is padded to 8x8 .* torchvision pads before"):
        info = fastvit.load_checkpoint(model, entry["state_dict"])
    assert len(info["warnings"]) == 1
    assert not compare(logits(model, x), ref).ok, "the warning says torchvision computes other logits here"


# -- refused and warned ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant, model, match", [
    ("vit_pre_logits", lambda: tiny_vit(32, embed_dim=16, depth=1), r"representation layer \(heads.pre_logits: "
                                                                     r"Linear 16 -> 24, then tanh"),
    ("vit_conv_stem", lambda: tiny_vit(32, embed_dim=16, depth=1), r"convolutional stem \(conv_stem_configs: "
                                                                    r"conv_proj.conv_bn_relu_0"),
    ("swin_v2_t", lambda: fastvit.create_model("swin_tiny_patch4_window7_224", img_size=256),
     r"Swin V2 .*cpb_mlp and logit_scale.*fastvit's Swin is V1"),
])
def test_variants_fastvit_does_not_compute_are_refused(variant, model, match):
    state = cw.canonical_state_dict(FX["refused"][variant], 0)
    with torch.device("meta"):
        target = model()
    with pytest.raises(CheckpointError, match=match):
        fastvit.load_checkpoint(target, state)


def test_a_cnn_is_not_taken_for_a_swin():
    state = meta_state(FX["refused"]["convnext_tiny"])
    assert tv.detect_torchvision(state) is None
    with torch.device("meta"):
        model = fastvit.create_model("swin_tiny_patch4_window7_224")
    with pytest.raises(CheckpointError, match="checkpoint does not match the model: missing keys"):
        fastvit.load_checkpoint(model, state)


def test_model_that_computes_something_else_is_refused():
    vit_state, swin_state = TINY["vit"]["state_dict"], TINY["swin"]["state_dict"]
    with pytest.raises(CheckpointError, match=r"torchvision vit checkpoint .* cannot load into fastvit's "
                                              r"SwinTransformer"):
        fastvit.load_checkpoint(tiny_swin(64), vit_state)
    with pytest.raises(CheckpointError, match="torchvision swin checkpoint"):
        fastvit.load_checkpoint(tiny_vit(32), swin_state)
    with pytest.raises(CheckpointError, match="pre-norm with exact GELU; this model has norm_position='post'"):
        fastvit.load_checkpoint(tiny_vit(32, norm_position="post"), vit_state)
    with pytest.raises(CheckpointError, match="mlp_act='relu'"):
        fastvit.load_checkpoint(tiny_vit(32, mlp_act="relu"), vit_state)
    with pytest.raises(CheckpointError, match="qkv_bias=False"):
        fastvit.load_checkpoint(tiny_vit(32, qkv_bias=False), vit_state)


@pytest.mark.parametrize("family, eps", [("vit", 1e-5), ("swin", 1e-6)])
def test_another_eps_is_a_warning(family, eps):
    model = tiny_vit(32, norm_eps=eps) if family == "vit" else tiny_swin(64, norm_eps=eps)
    with pytest.warns(UserWarning, match=f"torchvision's {'ViT' if family == 'vit' else 'Swin'} uses LayerNorm eps"):
        info = fastvit.load_checkpoint(model, TINY[family]["state_dict"])
    assert f"norm_eps={1e-6 if family == 'vit' else 1e-5:g}" in info["warnings"][0]


def test_bad_torchvision_state_dicts_name_the_problem():
    state = dict(TINY["vit"]["state_dict"])
    with pytest.raises(CheckpointError, match=r"'encoder.layers.encoder_layer_0.extra.weight' fits no key of "
                                              r"torchvision.models.VisionTransformer"):
        fastvit.load_checkpoint(tiny_vit(32), {**state, "encoder.layers.encoder_layer_0.extra.weight": torch.zeros(1)})
    twice = {**state, "encoder.layers.encoder_layer_0.mlp.linear_1.weight": state[
        "encoder.layers.encoder_layer_0.mlp.0.weight"]}
    with pytest.raises(CheckpointError, match="both give 'blocks.0.mlp.fc1.weight'"):
        fastvit.load_checkpoint(tiny_vit(32), twice)
    odd = {**state, "encoder.pos_embedding": torch.zeros(1, 1 + 12, 32)}
    with pytest.raises(CheckpointError, match=r"encoder.pos_embedding shape \(1, 13, 32\) is not \(1, 1 \+ n \* n, "
                                              r"C\)"):
        fastvit.load_checkpoint(tiny_vit(48), odd)
    with pytest.raises(CheckpointError, match="no counterpart in torchvision.models.SwinTransformer"):
        tv.timm_to_tv({"layers.0.blocks.0.attn.extra": torch.zeros(1)}, "swin")


# -- torchvision's models with fastvit's weights (the peers) ------------------------------------------------
@pytest.fixture(scope="module")
def torchvision_ok():
    ok, why = tv.torchvision_available()
    if not ok:
        pytest.skip(why)


def test_vit_to_torchvision(torchvision_ok):
    entry = TINY["vit"]
    for res in (32, 48):
        model = tiny_vit(res)
        quiet_load(model, entry["state_dict"])
        peer, attention = tv.to_torchvision("vit", model.cfg, model.state_dict())
        assert attention == "nn.MultiheadAttention" and not peer.training and peer.fastvit_notes == []
        x = images(entry["inputs"][res])
        assert_close(logits(peer, x), entry["logits"][res], name=f"torchvision ViT@{res} built by fastvit")


@pytest.mark.parametrize("res", [64, 80])
def test_swin_to_torchvision(torchvision_ok, res):
    entry = TINY["swin"]
    model = tiny_swin(res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastvit.load_checkpoint(model, entry["state_dict"])
    peer, attention = tv.to_torchvision("swin", model.cfg, model.state_dict())
    assert attention == "shifted_window_attention"
    assert peer.fastvit_notes == swin_padding_notes(model.cfg, library="torchvision")
    assert bool(peer.fastvit_notes) == (res == 80)
    assert_close(logits(peer, images(entry["inputs"][res])), entry["logits"][res], name=f"torchvision Swin@{res}")


def test_to_torchvision_refuses_what_it_cannot_build(torchvision_ok):
    with pytest.raises(ConfigError, match="smaller than the 4x4 window"):
        tv.to_torchvision("swin", tiny_swin(32).cfg, tiny_swin(32).state_dict())
    with pytest.raises(ConfigError, match="no distilled DeiT"):
        model = fastvit.create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=1)
        tv.to_torchvision("deit", model.cfg, model.state_dict())
    with pytest.raises(ConfigError, match="no 'pit' transformer"):
        tv.to_torchvision("pit", None, {})
    with pytest.raises(CheckpointError, match=r"missing \['heads.head.bias'"):
        model = tiny_vit(32)
        tv.to_torchvision("vit", model.cfg, {k: v for k, v in model.state_dict().items() if k != "head.bias"})


def test_sweep_peer(torchvision_ok):
    from fastvit.bench import peers

    assert "torchvision" in peers.LIBRARIES and peers.unavailable("torchvision", "vit") is None
    assert peers.unavailable("torchvision", "pit") == "torchvision has no pit architecture"
    model = tiny_swin(64)
    peer = peers.build("torchvision", "swin_tiny_patch4_window7_224", model)
    assert peer.attention == "shifted_window_attention"
    x = torch.randn(1, 3, 64, 64)
    assert_close(logits(peer.module, x), logits(model, x), name="the torchvision peer vs fastvit")
