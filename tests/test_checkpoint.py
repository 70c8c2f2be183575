"""timm checkpoints load unchanged and reproduce timm's logits, also at another resolution.

tests/data/timm_vit_fixture.pt (made by tests/data/make_timm_fixture.py with timm) holds a small
timm ViT's state dict, inputs at 32 and 48 px and timm's logits: at 32 px, at 48 px with pos_embed
resampled by timm, and at 48 px with timm's dynamic_img_size=True.
"""
import pytest
import torch

from fastvit import create_model, load_checkpoint, resample_pos_embed
from fastvit.testing import assert_close

FIXTURE = "tests/data/timm_vit_fixture.pt"


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def fixture_model(fixture, **overrides):
    return create_model("vit_tiny_patch16_224", **{**fixture["config"], **overrides}).eval()


def logits(model, images):
    with torch.no_grad():
        return model(images)


def test_state_dict_loads_as_is_and_reproduces_timm(fixture):
    model = fixture_model(fixture)
    model.load_state_dict(fixture["state_dict"])  # strict: timm's keys unchanged
    assert_close(logits(model, fixture["x32"]), fixture["logits32"], name="logits at 32 px")


def test_load_checkpoint_same_resolution(fixture):
    model = fixture_model(fixture)
    info = load_checkpoint(model, fixture["state_dict"])
    assert info == {"missing": [], "unexpected": [], "resampled_pos_embed": None}
    assert_close(logits(model, fixture["x32"]), fixture["logits32"], name="logits at 32 px")


@pytest.mark.parametrize("source", ["state_dict", "file", "wrapped-file"])
def test_load_checkpoint_at_48px_resamples_like_timm(fixture, source, tmp_path):
    checkpoint = fixture["state_dict"]
    if source != "state_dict":
        checkpoint = tmp_path / "vit.pt"
        torch.save({"state_dict": fixture["state_dict"]} if source == "wrapped-file" else fixture["state_dict"],
                   checkpoint)
    model = fixture_model(fixture, img_size=48)
    info = load_checkpoint(model, checkpoint)
    assert info["resampled_pos_embed"] == (17, 37)
    assert_close(model.pos_embed.detach(), fixture["pos_embed48"], name="pos_embed resampled to 6x6")
    assert_close(logits(model, fixture["x48"]), fixture["logits48_resampled"], name="logits at 48 px")


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "state_dict_ema"])
def test_wrapped_checkpoint_loads(fixture, wrapper):
    model = fixture_model(fixture)
    load_checkpoint(model, {wrapper: fixture["state_dict"], "epoch": 3})
    assert_close(logits(model, fixture["x32"]), fixture["logits32"], name=f"logits from {wrapper!r} wrapper")


def test_dynamic_img_size_reproduces_timm(fixture):
    model = fixture_model(fixture, dynamic_img_size=True)
    load_checkpoint(model, fixture["state_dict"])
    assert_close(logits(model, fixture["x48"]), fixture["logits48_dynamic"], name="dynamic logits at 48 px")
    assert_close(logits(model, fixture["x32"]), fixture["logits32"], name="dynamic logits at 32 px")


def test_resample_pos_embed_matches_timm(fixture):
    out = resample_pos_embed(fixture["state_dict"]["pos_embed"], (6, 6))
    assert out.shape == (1, 37, 48)
    assert_close(out, fixture["pos_embed48"], name="resampled pos_embed")
    torch.testing.assert_close(out[:, :1], fixture["state_dict"]["pos_embed"][:, :1], rtol=0, atol=0)


def test_non_strict_load_reports_keys(fixture):
    state = dict(fixture["state_dict"])
    del state["head.bias"]
    state["extra"] = torch.zeros(1)
    info = load_checkpoint(fixture_model(fixture), state, strict=False)
    assert info["missing"] == ["head.bias"] and info["unexpected"] == ["extra"]
