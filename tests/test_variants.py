"""DeiT, Swin and PiT against timm: every preset's layout and logits, and small models' outputs,
features, masks and checkpoints across resolutions.

tests/data/timm_variants_fixture.pt (made by tests/data/make_variant_fixtures.py with timm 1.0.31)
stores, per preset, timm's state-dict layout, a seed for the canonical weights
(tests/data/canonical_weights.py rebuilds them bit for bit) and timm's logits at two resolutions
(three for Swin-T); ``tiny`` holds small models with full state dicts and more outputs.

timm's models run their own attention path: SDPA for DeiT and PiT (``sdpa`` reproduces them bit for
bit), the explicit math path for Swin's window attention (``naive`` does). Both backends are held to
the fp32 rule against timm's logits.
"""
import contextlib
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from fastvit import CheckpointError, create_model, load_checkpoint
from fastvit.models import get_preset
from fastvit.testing import assert_close

sys.path.insert(0, str(Path(__file__).parent / "data"))
import canonical_weights as cw  # noqa: E402

FIXTURE = torch.load(Path(__file__).parent / "data" / "timm_variants_fixture.pt", weights_only=True)
PRESETS, TINY = FIXTURE["presets"], FIXTURE["tiny"]
TIMM_PATH = {"deit": "sdpa", "pit": "sdpa", "swin": "naive"}  # the attention timm's model computes
HEAVY = {"deit_base_patch16_384", "deit_base_distilled_patch16_384", "swin_small_patch4_window7_224",
         "swin_base_patch4_window7_224", "swin_base_patch4_window12_384", "pit_b_224"}


def inputs(resolution, record=None):
    """The fixture's seeded input of ``resolution``, checked against its stored fingerprint."""
    record = record or FIXTURE["inputs"][resolution]
    x = cw.image_batch(resolution, record["seed"], batch=record.get("batch", 1))
    assert cw.sha256([x]) == record["sha256"], "the seeded input differs from the one timm ran"
    return x


@contextlib.contextmanager
def weights_left_uninitialised():
    """torch.nn.init's fills as no-ops while a model is built whose every parameter a strict checkpoint
    load then overwrites (about 1 s of random fills for a Base model; a parameter left unloaded
    fails the load's missing-keys check, and its uninitialised values the logits)."""
    with contextlib.ExitStack() as stack:
        for name in dir(torch.nn.init):
            if name.endswith("_") and not name.startswith("_") and callable(getattr(torch.nn.init, name)):
                stack.enter_context(mock.patch.object(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor))
        yield


def logits(model, x):
    with torch.no_grad():
        return model(x)


def swin_windows(model):
    """Per stage [map h, w, window h, w, shift of the odd blocks h, w], as the fixture records them."""
    return [[*stage.blocks[0].map_size, *stage.blocks[0].window, *stage.blocks[1].shift] for stage in model.layers]


def check_against_timm(model, x, timm_logits, family, name):
    """Each of naive and sdpa against timm's logits under the fp32 rule; returns the errors."""
    errors = {}
    for backend in ("naive", "sdpa"):
        model.set_attn_backend(backend)
        errors[backend] = assert_close(logits(model, x), timm_logits, name=f"{name} {backend} vs timm").max_abs
    return errors


# -- every preset: timm's layout and logits ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_layout_equals_timm(name):
    entry = PRESETS[name]
    with torch.device("meta"):
        model = create_model(name)
    assert type(model).__name__ in {"DeiT", "SwinTransformer", "PoolingVisionTransformer"}
    assert get_preset(name).family.name == entry["family"]
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: shape for k, shape, _ in entry["layout"]}  # keys and shapes, order aside
    assert all(dtype == "float32" for _, _, dtype in entry["layout"])
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]
    assert model.cfg.img_size == (entry["img_size"],) * 2 and model.cfg.num_classes == entry["num_classes"]


def _preset_params():
    for name in sorted(PRESETS):
        yield pytest.param(name, marks=[pytest.mark.slow] if name in HEAVY else [])


@pytest.mark.parametrize("name", list(_preset_params()))
def test_logits_equal_timm(name):
    """The canonical weights loaded strictly give timm's logits at the native resolution and at the
    other stored ones (DeiT / PiT: the native checkpoint loaded into a model built there, pos_embed
    resampled; Swin: the same weights in a model built there)."""
    entry = PRESETS[name]
    family, native = entry["family"], entry["img_size"]
    state = cw.canonical_state_dict(entry["layout"], entry["seed"])
    assert cw.sha256(state.values()) == entry["weights_sha256"]
    for res, timm_logits in entry["logits"].items():
        with weights_left_uninitialised():
            model = create_model(name, img_size=res).eval()
        info = load_checkpoint(model, state)  # strict
        assert info["missing"] == info["unexpected"] == info["dropped"] == []
        if res == native or family == "swin":
            assert info["resampled_pos_embed"] is None
        else:
            assert info["resampled_pos_embed"] is not None
            got = cw.checksum([model.pos_embed.detach()])
            torch.testing.assert_close(torch.tensor(got), torch.tensor(entry["pos_embed_checksum"][res]),
                                       rtol=1e-5, atol=1e-3)
        if family == "swin":
            assert swin_windows(model) == entry["windows"][res]
        check_against_timm(model, inputs(res), timm_logits, family, f"{name}@{res}")
        if "logits_head" in entry:  # distilled DeiT: both heads
            with torch.no_grad():
                feats = model.forward_features(inputs(res))
                assert_close(model.head(feats[:, 0]), entry["logits_head"][res], name=f"{name}@{res} head")
                assert_close(model.head_dist(feats[:, 1]), entry["logits_head_dist"][res],
                             name=f"{name}@{res} head_dist")


# -- tiny models: full state dicts and more outputs ------------------------------------------------------
DEIT_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
SWIN_TINY = dict(patch_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, mlp_ratio=2.0,
                 num_classes=10)
PIT_TINY = dict(patch_size=4, stride=2, base_dims=(8, 8, 8), depths=(1, 2, 1), num_heads=(1, 2, 4), mlp_ratio=4.0,
                num_classes=10)


def tiny_model(family, img_size, **kw):
    preset, cfg = {"deit": ("deit_tiny_distilled_patch16_224", DEIT_TINY), "swin": ("swin_tiny_patch4_window7_224",
                                                                                    SWIN_TINY),
                   "pit": ("pit_ti_224", PIT_TINY)}[family]
    return create_model(preset, **{**cfg, "img_size": img_size, **kw}).eval()


def tiny_inputs(entry, res):
    return inputs(res, entry["inputs"][res])


def test_tiny_deit_distilled():
    entry = TINY["deit_distilled"]
    model = tiny_model("deit", 32)
    assert list(model.state_dict()) == list(entry["state_dict"])  # timm's order: cls_token, pos_embed, dist_token, ...
    model.load_state_dict(entry["state_dict"])
    x = tiny_inputs(entry, 32)
    assert_close(logits(model, x), entry["logits"][32], name="eval logits (mean of the heads)")
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, 2 + 16, E)
        assert feats.shape == (3, 18, 32)
        assert_close(model.head(feats[:, 0]), entry["logits32_head"], name="head")
        assert_close(model.head_dist(feats[:, 1]), entry["logits32_head_dist"], name="head_dist")
        assert_close(model.forward_head(feats, pre_logits=True), entry["pre_logits32"], name="pre_logits")
        model.train()
        out = model(x)
        assert torch.is_tensor(out)
        assert_close(out, entry["train_logits32_mean"], name="train mode without distilled training: the mean")
        model.set_distilled_training(True)
        out = model(x)
        assert isinstance(out, tuple) and len(out) == 2
        for got, want, head in zip(out, entry["train_logits32_distilled"], ("head", "head_dist")):
            assert_close(got, want, name=f"distilled training: {head}")
        model.eval()
        assert_close(model(x), entry["logits"][32], name="eval with distilled training set: still the mean")


def test_tiny_deit_distilled_at_48px():
    """load_checkpoint keeps both prefix rows when resampling; dynamic_img_size does the same per forward."""
    entry = TINY["deit_distilled"]
    model = tiny_model("deit", 48)
    info = load_checkpoint(model, entry["state_dict"])
    assert info["resampled_pos_embed"] == (2 + 16, 2 + 36)
    assert_close(model.pos_embed.detach(), entry["pos_embed48"], name="pos_embed 4x4 -> 6x6, 2 prefix rows")
    torch.testing.assert_close(model.pos_embed[:, :2].detach(), entry["state_dict"]["pos_embed"][:, :2], rtol=0, atol=0)
    x48 = tiny_inputs(entry, 48)
    assert_close(logits(model, x48), entry["logits"][48], name="logits at 48 px")
    dynamic = tiny_model("deit", 32, dynamic_img_size=True)
    dynamic.load_state_dict(entry["state_dict"])
    assert_close(logits(dynamic, x48), entry["logits48_dynamic"], name="dynamic_img_size at 48 px")
    assert_close(logits(dynamic, tiny_inputs(entry, 32)), entry["logits"][32], name="dynamic_img_size at 32 px")


@pytest.mark.parametrize("res", [64, 96, 80], ids=["64px", "96px-pad-last", "80px-pad-two-stages"])
def test_tiny_swin(res):
    entry = TINY["swin"]
    model = tiny_model("swin", res)
    assert list(model.state_dict()) == list(entry["state_dict"])  # downsample before blocks, as timm
    model.load_state_dict(entry["state_dict"])
    assert swin_windows(model) == entry["windows"][res]
    x = tiny_inputs(entry, res)
    for backend in ("naive", "sdpa"):
        model.set_attn_backend(backend)
        assert_close(logits(model, x), entry["logits"][res], name=f"{backend} logits at {res} px")
    if res == 64:
        with torch.no_grad():
            features = model.stage_outputs(x)
        assert len(features) == 3
        for i, (got, want) in enumerate(zip(features, entry["features64"])):
            assert got.shape == want.shape  # (B, C_i, h_i, w_i)
            assert_close(got, want, name=f"stage {i} output")
        mask = model.layers[0].blocks[1].attn_mask
        assert mask.shape == (16, 16, 16) and set(mask.unique().tolist()) == {-100.0, 0.0}
        torch.testing.assert_close(mask, entry["attn_mask64_stage0"], rtol=0, atol=0)
        assert model.layers[0].blocks[0].attn_mask is None and model.layers[2].blocks[1].attn_mask is None  # 4x4 map


@pytest.mark.parametrize("res", [32, 48])
def test_tiny_pit(res):
    entry = TINY["pit"]
    model = tiny_model("pit", res)
    assert list(model.state_dict()) == list(entry["state_dict"])  # pool before blocks, as timm
    info = load_checkpoint(model, entry["state_dict"])
    x = tiny_inputs(entry, res)
    assert_close(logits(model, x), entry["logits"][res], name=f"logits at {res} px")
    if res == 48:
        assert info["resampled_pos_embed"] == (15 * 15, 23 * 23)
        assert_close(model.pos_embed.detach(), entry["pos_embed48"], name="pos_embed map 15x15 -> 23x23")
        return
    with torch.no_grad():
        features, cls = model.stage_outputs(x), model.forward_features(x)
    assert [f.shape[-1] for f in features] == [15, 8, 4]
    for i, (got, want) in enumerate(zip(features, entry["features32"])):
        assert_close(got, want, name=f"stage {i} map")
    assert cls.shape == (2, 1, 32)
    assert_close(cls, entry["cls_tokens32"], name="CLS token after the final norm")


# -- checkpoints: Swin's derived buffers, original layout, tables ----------------------------------------
def swin_tiny_state():
    return dict(TINY["swin"]["state_dict"])


def test_swin_checkpoint_drops_derived_buffers():
    model = tiny_model("swin", 64)
    state = swin_tiny_state()
    state["layers.0.blocks.1.attn.relative_position_index"] = model.layers[0].blocks[1].attn.relative_position_index
    state["layers.0.blocks.1.attn_mask"] = model.layers[0].blocks[1].attn_mask
    info = load_checkpoint(model, state)
    assert info["dropped"] == ["layers.0.blocks.1.attn.relative_position_index", "layers.0.blocks.1.attn_mask"]
    assert info["missing"] == info["unexpected"] == [] and info["resampled_pos_embed"] is None
    assert_close(logits(model, tiny_inputs(TINY["swin"], 64)), TINY["swin"]["logits"][64], name="after dropping")


def test_swin_original_microsoft_layout_loads():
    """Microsoft's checkpoints merge at the end of stage i and name the head head.*."""
    state = {}
    for key, value in swin_tiny_state().items():
        stage = key.split(".")[1] if key.startswith("layers.") and ".downsample." in key else None
        if stage is not None:
            key = key.replace(f"layers.{stage}.", f"layers.{int(stage) - 1}.", 1)
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc."):]
        state[key] = value
    state["layers.1.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    assert "layers.0.downsample.reduction.weight" in state and "head.weight" in state
    model = tiny_model("swin", 64)
    info = load_checkpoint(model, state)
    assert info["dropped"] == ["layers.1.blocks.0.attn.relative_position_index"]
    assert_close(logits(model, tiny_inputs(TINY["swin"], 64)), TINY["swin"]["logits"][64], name="from Microsoft layout")


def test_swin_table_of_another_window_is_refused():
    """At 32 px the last stage's map (2x2) is below the window 4: the window clamps to 2 and its
    relative-position table has 3 x 3 rows, not 7 x 7."""
    model = tiny_model("swin", 32)
    assert model.layers[2].blocks[0].window == (2, 2)
    with pytest.raises(CheckpointError, match=r"layers\.2\.blocks\.0\.attn\.relative_position_bias_table: "
                                              r"checkpoint \(49, 4\) vs model \(9, 4\).*window"):
        load_checkpoint(model, swin_tiny_state())


def test_pit_checkpoint_file_at_another_resolution(tmp_path):
    entry = TINY["pit"]
    path = tmp_path / "pit.pt"
    torch.save({"model": entry["state_dict"], "epoch": 3}, path)
    model = tiny_model("pit", 48)
    assert load_checkpoint(model, path)["resampled_pos_embed"] == (225, 529)
    assert_close(logits(model, tiny_inputs(entry, 48)), entry["logits"][48], name="PiT 32 px checkpoint at 48 px")
