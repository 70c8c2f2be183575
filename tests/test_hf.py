"""HF transformers interop (fastvit.models.hf): HF ViT checkpoints into fastvit, against a committed
fixture made with transformers (no transformers needed), and HF models built with fastvit's weights,
against timm's logits stored in the variants fixture (needs transformers; skipped with the reason)."""
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import fastvit
from fastvit.errors import CheckpointError, ConfigError
from fastvit.models import hf
from fastvit.testing import assert_close, compare

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import canonical_weights as cw  # noqa: E402

HF_FX = torch.load(DATA / "hf_vit_fixture.pt", weights_only=True)
TINY = torch.load(DATA / "timm_variants_fixture.pt", weights_only=True)["tiny"]
TIMM = HF_FX["timm_state_dict"]


def images(record: dict) -> torch.Tensor:
    x = cw.image_batch(record["shape"][-1], record["seed"], batch=record["batch"])
    assert cw.sha256([x]) == record["sha256"]
    return x


def fastvit_vit(norm_eps: float):
    kw = {k: v for k, v in HF_FX["timm_kwargs"].items() if k != "norm_eps"}
    model = fastvit.create_model("vit_tiny_patch16_224", **kw, norm_eps=norm_eps).eval()
    model.load_state_dict(hf.hf_vit_to_timm(HF_FX["state_dict"])[0])
    return model


# -- HF -> fastvit (no transformers needed) ---------------------------------------------------------
@pytest.mark.parametrize("which", ["state_dict", "state_dict_module"])
def test_both_spellings_convert_exactly(which):
    state, notes = hf.hf_vit_to_timm(HF_FX[which])
    assert list(state) == list(TIMM)  # timm's key order too
    assert all(torch.equal(state[k], TIMM[k]) for k in TIMM)
    assert notes["converted_from"] == "transformers ViTForImageClassification"
    assert notes["key_spelling"] == ("save_pretrained / hub names" if which == "state_dict"
                                     else "transformers-5 state_dict() names")
    assert notes["layer_norm_eps"] == 1e-12 and "default" in notes["layer_norm_eps_source"]
    assert notes["dropped"] == [] and notes["sizes"]["embed_dim"] == 48 and notes["sizes"]["img_size"] == 32


@pytest.mark.parametrize("spelling", ["saved", "module"])
@pytest.mark.parametrize("pooler", [True, False])
def test_bare_vit_model_converts(spelling, pooler):
    """A ViTModel's keys have no 'vit.' prefix and no classifier; its pooler has no fastvit counterpart."""
    keys = HF_FX[f"vit_model_keys_{spelling}" + ("" if pooler else "_no_pooler")]
    full = HF_FX["state_dict" if spelling == "saved" else "state_dict_module"]
    shapes = {k: v.shape for k, v in full.items()} | {"vit." + k: s for k, s in HF_FX["vit_model_pooler_shapes"].items()}
    state = {k: torch.zeros(shapes["vit." + k]) for k in keys}
    assert hf.is_hf_vit(state)
    out, notes = hf.hf_vit_to_timm(state)
    assert list(out) == [k for k in TIMM if not k.startswith("head.")]
    assert all(out[k].shape == TIMM[k].shape for k in out)
    assert notes["converted_from"] == "transformers ViTModel" and "num_classes=0" in notes["no_classifier"]
    assert sorted(notes["dropped"]) == (["pooler.dense.bias", "pooler.dense.weight"] if pooler else [])


def test_logits_match_hf_with_its_eps():
    x = images(HF_FX["inputs"][32])
    with torch.no_grad():
        assert_close(fastvit_vit(1e-12)(x), HF_FX["logits32"], name="fastvit (eps 1e-12) vs HF logits")
        diff = (fastvit_vit(1e-6)(x) - HF_FX["logits32"]).abs().max().item()
    assert 1e-7 < diff < 1e-4  # the fixture measured 9.4e-6 with timm
    note = hf.eps_note(1e-6)
    assert "1e-12" in note and "1e-06" in note and "norm_eps=1e-12" in note
    assert hf.eps_note(1e-12) is None


def _bare_model(norm_eps: float):
    kw = {k: v for k, v in HF_FX["timm_kwargs"].items() if k != "norm_eps"}
    return fastvit.create_model("vit_tiny_patch16_224", **kw, norm_eps=norm_eps).eval()


@pytest.mark.parametrize("which", ["state_dict", "state_dict_module"])
def test_load_checkpoint_takes_an_hf_file(tmp_path, which):
    """fastvit.load_checkpoint recognises the HF state dict, converts it and reports what it did;
    with HF's eps the logits are HF's."""
    path = tmp_path / "hf_vit.pt"
    torch.save(HF_FX[which], path)
    model = _bare_model(1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the eps matches
        info = fastvit.load_checkpoint(model, path)
    assert info["converted"]["converted_from"] == "transformers ViTForImageClassification"
    assert info["warnings"] == [] and info["missing"] == info["unexpected"] == []
    with torch.no_grad():
        assert_close(model(images(HF_FX["inputs"][32])), HF_FX["logits32"], name="load_checkpoint(HF) vs HF logits")


def test_load_checkpoint_reports_an_eps_that_differs():
    model = _bare_model(1e-6)
    with pytest.warns(UserWarning, match=r"layer_norm_eps=1e-12; this model uses 1e-06"):
        info = fastvit.load_checkpoint(model, HF_FX["state_dict"])
    assert len(info["warnings"]) == 1 and "norm_eps=1e-12" in info["warnings"][0]
    assert "default 1e-12 assumed" in info["converted"]["layer_norm_eps_source"]
    with warnings.catch_warnings():  # the checkpoint's config says 1e-6: nothing differs
        warnings.simplefilter("error")
        info = fastvit.load_checkpoint(model, HF_FX["state_dict"], hf_config={"layer_norm_eps": 1e-6})
    assert info["warnings"] == [] and info["converted"]["layer_norm_eps_source"] == "config"


def test_load_checkpoint_of_a_bare_hf_vit_model_names_the_missing_head():
    state = {k[len("vit."):]: v for k, v in HF_FX["state_dict"].items() if k.startswith("vit.")}
    with pytest.raises(CheckpointError, match=r"missing keys \['head.bias', 'head.weight'\]"):
        fastvit.load_checkpoint(_bare_model(1e-12), state)
    info = fastvit.load_checkpoint(_bare_model(1e-12), state, strict=False)
    assert "num_classes=0" in info["converted"]["no_classifier"]


def test_detection():
    assert hf.is_hf_vit(HF_FX["state_dict"]) and hf.is_hf_vit(HF_FX["state_dict_module"])
    assert not hf.is_hf_vit(TIMM) and hf.detect_hf(TIMM) is None
    deit = hf.timm_to_hf("deit", TINY["deit_distilled"]["state_dict"])
    swin = hf.timm_to_hf("swin", TINY["swin"]["state_dict"], "module")
    assert (hf.detect_hf(deit), hf.detect_hf(swin)) == ("deit", "swin")
    assert not hf.is_hf_vit(deit) and not hf.is_hf_vit(swin)


@pytest.mark.parametrize("spelling", ["hub", "module"])
def test_timm_to_hf_reproduces_hf_names(spelling):
    ref = HF_FX["state_dict" if spelling == "hub" else "state_dict_module"]
    out = hf.timm_to_hf("vit", TIMM, spelling)
    assert set(out) == set(ref) and all(torch.equal(out[k], ref[k]) for k in ref)


@pytest.mark.parametrize("family,entry", [("deit", "deit_distilled"), ("swin", "swin")])
@pytest.mark.parametrize("spelling", ["hub", "module"])
def test_round_trip(family, entry, spelling):
    state = TINY[entry]["state_dict"]
    back, notes = hf.hf_to_timm(hf.timm_to_hf(family, state, spelling), family)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
    hub = hf.timm_to_hf(family, state, "hub")
    if family == "swin":  # timm's layers.{i+1}.downsample is HF's encoder.layers.{i}.downsample
        assert torch.equal(hub["swin.encoder.layers.0.downsample.reduction.weight"],
                           state["layers.1.downsample.reduction.weight"])
        assert "swin.encoder.layers.2.downsample.norm.weight" not in hub
    else:
        assert torch.equal(hub["distillation_classifier.weight"], state["head_dist.weight"])
        assert torch.equal(hub["deit.embeddings.distillation_token"], state["dist_token"])


def test_stale_swin_index_is_dropped():
    state = hf.timm_to_hf("swin", TINY["swin"]["state_dict"], "hub")
    state["swin.encoder.layers.0.blocks.0.attention.self.relative_position_index"] = torch.zeros(16, 16).long()
    back, notes = hf.hf_to_timm(state, "swin")
    assert notes["dropped"] == ["swin.encoder.layers.0.blocks.0.attention.self.relative_position_index"]
    assert list(back) == list(TINY["swin"]["state_dict"])


def test_errors_name_the_key():
    sd = dict(HF_FX["state_dict"])
    sd["vit.encoder.layer.0.attention.attention.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"attention\.attention\.extra\.weight"):
        hf.hf_vit_to_timm(sd)
    sd = {k: v for k, v in HF_FX["state_dict"].items() if k != "vit.encoder.layer.1.attention.attention.value.weight"}
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv\.weight: HF's value part is missing"):
        hf.hf_vit_to_timm(sd)
    sd = dict(HF_FX["state_dict"])
    sd["vit.encoder.layer.0.attention.attention.key.bias"] = torch.zeros(47)
    with pytest.raises(CheckpointError, match=r"q, k and v shapes differ.*key\.bias \(47,\)"):
        hf.hf_vit_to_timm(sd)
    sd = dict(HF_FX["state_dict"])
    sd["vit.layers.0.layernorm_before.weight"] = sd["vit.encoder.layer.0.layernorm_before.weight"]
    with pytest.raises(CheckpointError, match="both give 'blocks.0.norm1.weight'"):
        hf.hf_vit_to_timm(sd)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight: shape \(10, 4\) does not split"):
        hf.timm_to_hf("vit", {"blocks.0.attn.qkv.weight": torch.zeros(10, 4)})
    with pytest.raises(CheckpointError, match="'head_dist.weight' has no counterpart"):
        hf.timm_to_hf("vit", {"head_dist.weight": torch.zeros(10, 4)})
    with pytest.raises(ConfigError, match="pit"):
        hf.timm_to_hf("pit", {})


@pytest.mark.parametrize("r,stages", [(64, []), (96, []), (80, [2])])
def test_swin_padding_notes(r, stages):
    """96 px: the last map 6 is padded to 8 with shift 2, yet both orders give every token the same
    partners; 80 px: 10 -> 12 likewise, but 5 -> 8 does not."""
    assert [int(n.split(":")[0].split()[-1]) for n in hf.swin_padding_notes(swin_cfg(r))] == stages


def test_swin_padding_notes_swin_tiny_384():
    cfg = types.SimpleNamespace(img_size=384, patch_size=4, depths=(2, 2, 6, 2), window_size=7)
    assert len(hf.swin_padding_notes(cfg)) == 4  # 96 -> 98, 48 -> 49, 24 -> 28, 12 -> 14
    assert hf.swin_padding_notes(types.SimpleNamespace(**{**vars(cfg), "img_size": 224})) == []


# -- fastvit -> HF (needs transformers) -------------------------------------------------------------
def swin_cfg(r: int):
    c = dict(TINY["swin"]["config"])
    return types.SimpleNamespace(img_size=(r, r), patch_size=c["patch_size"], in_chans=3, num_classes=c["num_classes"],
                                 embed_dim=c["embed_dim"], depths=c["depths"], num_heads=c["num_heads"],
                                 window_size=c["window_size"], mlp_ratio=c["mlp_ratio"], qkv_bias=True, norm_eps=1e-5)


def deit_cfg(r: int):
    c = TINY["deit_distilled"]["config"]
    return types.SimpleNamespace(img_size=(r, r), patch_size=c["patch_size"], in_chans=3, num_classes=c["num_classes"],
                                 embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                                 mlp_ratio=c["mlp_ratio"], qkv_bias=True, norm_eps=1e-6, distilled=True)


@pytest.fixture(scope="module")
def transformers_ok():
    ok, why = hf.hf_available()
    if not ok:
        pytest.skip(why)


def hf_logits(model, x):
    with torch.no_grad():
        return model(pixel_values=x)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_vit_to_hf(transformers_ok, impl):
    model = fastvit_vit(1e-12)
    peer, used = hf.to_hf("vit", model.cfg, model.state_dict(), attn_implementation=impl)
    assert used == impl and not peer.training and peer.fastvit_notes == []
    x = images(HF_FX["inputs"][32])
    assert_close(hf_logits(peer, x).logits, HF_FX["logits32"], name=f"HF ViT ({impl}) vs fixture")
    with torch.no_grad():
        assert_close(hf_logits(peer, x).logits, model(x), name="HF ViT vs fastvit")


@pytest.mark.parametrize("r", [32, 48])
def test_deit_distilled_to_hf(transformers_ok, r):
    entry = TINY["deit_distilled"]
    state = dict(entry["state_dict"])
    if r == 48:
        state["pos_embed"] = entry["pos_embed48"]  # timm's resampled table, 2 prefix tokens
    peer, used = hf.to_hf("deit", deit_cfg(r), state)
    assert type(peer).__name__ == "DeiTForImageClassificationWithTeacher" and used == "sdpa"
    out = hf_logits(peer, images(entry["inputs"][r]))
    assert_close(out.logits, entry["logits"][r], name=f"HF DeiT vs timm at {r}")
    assert torch.equal(out.logits, (out.cls_logits + out.distillation_logits) / 2)
    if r == 32:
        assert_close(out.cls_logits, entry["logits32_head"], name="cls head")
        assert_close(out.distillation_logits, entry["logits32_head_dist"], name="distillation head")


def test_plain_deit_is_built_as_vit(transformers_ok):
    model = fastvit_vit(1e-12)
    peer, _ = hf.to_hf("deit", model.cfg, model.state_dict())
    assert type(peer).__name__ == "ViTForImageClassification"


def shift_before_pad(model):
    """Make each HF Swin layer shift before padding and crop before un-shifting, as timm does."""
    for layer in (m for m in model.modules() if type(m).__name__ == "SwinLayer"):
        def maybe_pad(x, h, w, layer=layer, pad=layer.maybe_pad):
            layer.unpadded = (h, w)
            s = layer.shift_size
            return pad(torch.roll(x, (-s, -s), dims=(1, 2)) if s > 0 else x, h, w)

        def cyclic_shift(x, reverse=False, layer=layer):
            if not reverse or layer.shift_size <= 0:
                return x
            (h, w), s = layer.unpadded, layer.shift_size
            y = torch.roll(x[:, :h, :w], (s, s), dims=(1, 2))
            return torch.nn.functional.pad(y, (0, 0, 0, x.shape[2] - w, 0, x.shape[1] - h))
        layer.maybe_pad, layer.cyclic_shift = maybe_pad, cyclic_shift
    return model


@pytest.mark.parametrize("r", [64, 96, 80])
def test_swin_to_hf(transformers_ok, r):
    """HF equals timm where its padding order does not matter (64: none; 96: equivalent); at 80 px it
    does and they differ; HF made to shift before padding equals timm there too (fresh models: HF
    keeps the window clamp of its first forward)."""
    entry = TINY["swin"]
    x, ref = images(entry["inputs"][r]), entry["logits"][r]
    peer, used = hf.to_hf("swin", swin_cfg(r), entry["state_dict"])
    assert type(peer).__name__ == "SwinForImageClassification" and used == "sdpa"
    got = hf_logits(peer, x).logits
    assert peer.fastvit_notes == hf.swin_padding_notes(swin_cfg(r))
    if not peer.fastvit_notes:
        assert_close(got, ref, name=f"HF Swin vs timm at {r}")
        return
    assert not compare(got, ref).ok, "the notes say HF differs here"
    fixed, _ = hf.to_hf("swin", swin_cfg(r), entry["state_dict"], attn_implementation="eager")
    assert_close(hf_logits(shift_before_pad(fixed), x).logits, ref, name=f"HF Swin, shift first, vs timm at {r}")


def test_to_hf_rejects_what_hf_cannot_build(transformers_ok):
    entry = TINY["swin"]
    state = dict(entry["state_dict"])
    state["layers.0.blocks.0.attn.relative_position_bias_table"] = torch.zeros(9, 1)  # a clamped 2x2 window
    with pytest.raises(CheckpointError, match=r"relative_position_bias_table: fastvit \(9, 1\) vs HF \(49, 1\)"):
        hf.to_hf("swin", swin_cfg(64), state)
    with pytest.raises(CheckpointError, match="missing"):
        hf.to_hf("swin", swin_cfg(64), {k: v for k, v in state.items() if not k.startswith("norm.")})
    with pytest.raises(ConfigError, match="pre-norm"):
        hf.to_hf("vit", types.SimpleNamespace(norm_position="post"), TIMM)
