"""timm checkpoints load unchanged and reproduce timm's logits, also at another resolution.

tests/data/timm_vit_fixture.pt (made by tests/data/make_timm_fixture.py with timm) holds a small
timm ViT's state dict, inputs at 32 and 48 px and timm's logits: at 32 px, at 48 px with pos_embed
resampled by timm, and at 48 px with timm's dynamic_img_size=True.
"""
import pytest
import torch

from fastvit import CheckpointError, create_model, load_checkpoint, resample_pos_embed
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
    assert info == {"missing": [], "unexpected": [], "resampled_pos_embed": None, "dropped": [], "converted": None,
                    "warnings": []}
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


# -- files that cannot be loaded, and the envelopes real checkpoints come in -----------------------------
class _RunsCode:
    """Unpickling this runs ``open(marker, 'w')``: weights_only must refuse it before anything runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _PlainObject:
    pass


def test_missing_file_names_the_path(fixture, tmp_path):
    path = tmp_path / "nowhere" / "vit.pt"
    with pytest.raises(CheckpointError, match=rf"checkpoint file '{path}' does not exist"):
        load_checkpoint(fixture_model(fixture), path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_file_cannot_be_read(fixture, tmp_path, damage):
    path = tmp_path / "vit.pt"
    torch.save(fixture["state_dict"], path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint at all", "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' cannot be read: .*(truncated|corrupt)"):
        load_checkpoint(fixture_model(fixture), path)


@pytest.mark.parametrize("payload", ["code", "object"])
def test_pickle_with_code_is_refused_and_never_run(fixture, tmp_path, payload):
    marker = tmp_path / "ran"
    path = tmp_path / "vit.pt"
    extra = _RunsCode(marker) if payload == "code" else _PlainObject()
    torch.save({"state_dict": fixture["state_dict"], "extra": extra}, path)
    with pytest.raises(CheckpointError, match=r"was refused for safety.*weights_only=True.*not executed.*"
                                              r"If you trust its source, convert it once"):
        load_checkpoint(fixture_model(fixture), path)
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("envelope", ["model", "state_dict", "nested", "module.", "_orig_mod.", "module._orig_mod."])
def test_training_script_envelopes_are_unwrapped(fixture, tmp_path, envelope):
    state = fixture["state_dict"]
    if envelope.endswith("."):
        saved = {envelope + k: v for k, v in state.items()}
    elif envelope == "nested":
        saved = {"model": {"state_dict": state}, "optimizer": {"lr": 0.1}, "epoch": 9}
    else:
        saved = {envelope: state, "epoch": 3}
    path = tmp_path / "vit.pt"
    torch.save(saved, path)
    model = fixture_model(fixture)
    assert load_checkpoint(model, path)["missing"] == []
    assert_close(logits(model, fixture["x32"]), fixture["logits32"], name=f"logits through {envelope!r}")


def test_state_dict_with_non_tensor_entries_is_refused(fixture):
    with pytest.raises(CheckpointError, match=r"entries \['lr'\] are not tensors"):
        load_checkpoint(fixture_model(fixture), {**fixture["state_dict"], "lr": 0.1})
