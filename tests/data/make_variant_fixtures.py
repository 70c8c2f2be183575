"""Regenerates tests/data/timm_variants_fixture.pt and tests/data/hf_vit_fixture.pt.

timm and transformers are not fastvit dependencies; this script runs once, in an environment that has
them (made with torch 2.13.0+cpu, torchvision 0.28.0, timm 1.0.31, transformers 5.24.0, safetensors 0.8.0):

    python tests/data/make_variant_fixtures.py            # both files
    python tests/data/make_variant_fixtures.py timm       # only timm_variants_fixture.pt
    python tests/data/make_variant_fixtures.py hf         # only hf_vit_fixture.pt

Everything is deterministic: rerunning it with the same versions rewrites the same tensors. The HF half
(make_hf) lives in make_hf_fixture.py beside this file.

timm_variants_fixture.pt
    "presets": for each DeiT / Swin / PiT preset, timm's state-dict layout (ordered [key, shape, dtype]),
    a seed for tests/data/canonical_weights.py's canonical_state_dict(layout, seed), fingerprints of those
    weights, and timm's eval-mode logits for them at the preset's resolution and at a second one (and a
    third for swin_tiny), on the shared seeded input of that resolution (canonical_weights.image_batch,
    batch 1, seed = resolution; fingerprints under "inputs"). "how" says, per resolution, exactly how
    timm produced the logits (model arguments, the position-embedding resampling). Distilled DeiT presets
    also hold both heads' logits. Full weights are not stored.
    "tiny": small custom-size models (distilled DeiT, Swin, PiT) with full state dicts and logits,
    including the distilled model's train-mode outputs and per-stage features.
hf_vit_fixture.pt
    a small transformers ViTForImageClassification (32 px, patch 8, width 48, 2 layers, 3 heads,
    10 labels): its state dict as save_pretrained writes it (the hub's key names) and as the module's
    state_dict() names it in transformers 5, HF's logits (also at 48 px with
    interpolate_pos_encoding=True), the same weights under timm VisionTransformer key names (checked to
    give HF's logits), and the key lists of a bare ViTModel with and without its pooler.

Inputs are never stored: each is canonical_weights.image_batch(resolution, seed, batch), recorded as its
seed, batch, shape and SHA-256 (canonical_weights.sha256), which a test can check before comparing logits.
"""
import math
import pathlib
import sys
import time
import zlib

import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import canonical_weights as cw  # noqa: E402

TIMM_OUT = HERE / "timm_variants_fixture.pt"

# name -> (family, native resolution, further resolutions)
PRESETS = {
    "deit_tiny_patch16_224": ("deit", 224, [384]),
    "deit_small_patch16_224": ("deit", 224, [384]),
    "deit_base_patch16_224": ("deit", 224, [384]),
    "deit_base_patch16_384": ("deit", 384, [224]),
    "deit_tiny_distilled_patch16_224": ("deit", 224, [384]),
    "deit_small_distilled_patch16_224": ("deit", 224, [384]),
    "deit_base_distilled_patch16_224": ("deit", 224, [384]),
    "deit_base_distilled_patch16_384": ("deit", 384, [224]),
    "swin_tiny_patch4_window7_224": ("swin", 224, [448, 384]),
    "swin_small_patch4_window7_224": ("swin", 224, [448]),
    "swin_base_patch4_window7_224": ("swin", 224, [448]),
    "swin_base_patch4_window12_384": ("swin", 384, [448]),
    "pit_ti_224": ("pit", 224, [384]),
    "pit_xs_224": ("pit", 224, [384]),
    "pit_s_224": ("pit", 224, [384]),
    "pit_b_224": ("pit", 224, [384]),
}


def preset_seed(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def no_grad_eval(model, x):
    with torch.no_grad():
        return model(x)


def attention_max_prob(model, x):
    """Mean over rows of the largest attention probability, per attention layer (recomputed from inputs)."""
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    found = []

    def hook(module, args, kwargs, _out):
        inp = args[0]
        b, n, _ = inp.shape
        qkv = module.qkv(inp).reshape(b, n, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
        logits = (qkv[0] * module.scale) @ qkv[1].transpose(-2, -1)
        if isinstance(module, WindowAttention):
            logits = logits + module._get_rel_pos_bias()
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            if mask is not None:
                nw = mask.shape[0]
                logits = logits.view(-1, nw, module.num_heads, n, n) + mask[None, :, None]
                logits = logits.view(-1, module.num_heads, n, n)
        found.append(round(float(logits.softmax(-1).max(-1).values.mean()), 4))

    handles = [m.register_forward_hook(hook, with_kwargs=True)
               for m in model.modules() if isinstance(m, (Attention, WindowAttention))]
    try:
        no_grad_eval(model, x)
    finally:
        for h in handles:
            h.remove()
    return found


def swin_windows(model):
    """Per stage: [input res h, w (after the stage's downsample), window h, w, shift of the odd blocks h, w]."""
    rows = []
    for stage in model.layers:
        blk = stage.blocks[0]
        shift = stage.blocks[1].shift_size if len(stage.blocks) > 1 else (0, 0)
        rows.append([*blk.input_resolution, *blk.window_size, *shift])
    return rows


def resample_pit_pos_embed(pos_embed, new_hw):
    """PiT's (1, C, H, W) pos_embed resampled with timm's resample_abs_pos_embed math (bicubic, antialias)."""
    from timm.layers import resample_abs_pos_embed

    _, c, h, w = pos_embed.shape
    tokens = pos_embed.flatten(2).transpose(1, 2)
    out = resample_abs_pos_embed(tokens, new_size=list(new_hw), old_size=[h, w], num_prefix_tokens=0)
    out = out.transpose(1, 2).reshape(1, c, *new_hw)
    direct = F.interpolate(pos_embed.float(), size=tuple(new_hw), mode="bicubic", antialias=True, align_corners=False)
    assert torch.equal(out, direct)
    return out


def pit_grid(img, patch, stride):
    return math.floor((img - patch) / stride + 1)


def make_preset(name, family, native, extra, inputs, log):
    import timm
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import checkpoint_filter_fn

    t0 = time.time()
    model = timm.create_model(name, pretrained=False).eval()
    layout = cw.layout(model.state_dict())
    seed = preset_seed(name)
    state = cw.canonical_state_dict(layout, seed)
    assert list(state) == [k for k, _, _ in layout], "canonical fill left out a state-dict entry"
    model.load_state_dict(state, strict=True)
    entry = {
        "family": family, "seed": seed, "layout": layout, "img_size": native,
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_classes": model.num_classes,
        "weights_checksum": cw.checksum(state.values()), "weights_sha256": cw.sha256(state.values()),
        "logits": {}, "how": {}, "attn_max_prob": {},
    }
    distilled = hasattr(model, "head_dist") and model.head_dist is not None
    x = inputs[native]
    entry["logits"][native] = no_grad_eval(model, x)
    entry["how"][native] = f"timm.create_model({name!r}, pretrained=False).eval(), canonical weights loaded strictly"
    entry["attn_max_prob"][native] = attention_max_prob(model, x)
    if family == "swin":
        entry["windows"] = {native: swin_windows(model)}
    if distilled:
        with torch.no_grad():
            feats = model.forward_features(x)
            head, dist = model.head(feats[:, 0]), model.head_dist(feats[:, 1])
        torch.testing.assert_close((head + dist) / 2, entry["logits"][native], rtol=0, atol=1e-6)
        entry["logits_head"] = {native: head}
        entry["logits_head_dist"] = {native: dist}
        model.train()
        model.set_distilled_training(True)
        with torch.no_grad():
            out = model(x)
        assert isinstance(out, tuple) and len(out) == 2
        torch.testing.assert_close(out[0], head, rtol=0, atol=1e-6)
        model.set_distilled_training(False)
        with torch.no_grad():
            out = model(x)
        assert torch.is_tensor(out)
        model.eval()
        entry["train_output"] = ("model.train(): the mean (head + head_dist) / 2 unless set_distilled_training(True), "
                                 "then the tuple (head logits, head_dist logits); eval: always the mean")

    for res in extra:
        x2 = inputs[res]
        if family == "deit":
            patch = 16
            big = timm.create_model(name, pretrained=False, img_size=res).eval()
            prefix = 2 if distilled else 1
            state2 = dict(state)
            state2["pos_embed"] = resample_abs_pos_embed(
                state["pos_embed"], new_size=[res // patch] * 2, old_size=[native // patch] * 2,
                num_prefix_tokens=prefix, interpolation="bicubic", antialias=True)
            filtered = checkpoint_filter_fn(state, big)
            assert torch.equal(filtered["pos_embed"], state2["pos_embed"])
            big.load_state_dict(state2, strict=True)
            entry["logits"][res] = no_grad_eval(big, x2)
            entry["how"][res] = (
                f"timm.create_model({name!r}, img_size={res}); state dict = the canonical one with pos_embed = "
                f"timm.layers.resample_abs_pos_embed(pos_embed, new_size=[{res // patch}, {res // patch}], "
                f"old_size=[{native // patch}, {native // patch}], num_prefix_tokens={prefix}, "
                "interpolation='bicubic', antialias=True) (bit-identical to timm's checkpoint_filter_fn); "
                "all other tensors unchanged")
            entry.setdefault("pos_embed_checksum", {})[res] = cw.checksum([state2["pos_embed"]])
            dyn = timm.create_model(name, pretrained=False, dynamic_img_size=True).eval()
            dyn.load_state_dict(state, strict=True)
            diff = (no_grad_eval(dyn, x2) - entry["logits"][res]).abs().max().item()
            entry.setdefault("dynamic_max_abs_diff", {})[res] = diff
            attn_model = big
        elif family == "pit":
            big = timm.create_model(name, pretrained=False, img_size=res).eval()
            patch, stride = model.patch_embed.patch_size[0], model.patch_embed.conv.stride[0]
            old = tuple(state["pos_embed"].shape[-2:])
            new = (pit_grid(res, patch, stride),) * 2
            assert tuple(big.pos_embed.shape[-2:]) == new
            state2 = dict(state)
            state2["pos_embed"] = resample_pit_pos_embed(state["pos_embed"], new)
            big.load_state_dict(state2, strict=True)
            entry["logits"][res] = no_grad_eval(big, x2)
            entry["how"][res] = (
                f"timm.create_model({name!r}, img_size={res}) (pos_embed grid {old[0]}x{old[1]} -> {new[0]}x{new[1]}: "
                f"floor((img - {patch}) / {stride} + 1)); timm has no PiT pos_embed resampling, so pos_embed = "
                "F.interpolate(pos_embed, size=new grid, mode='bicubic', antialias=True, align_corners=False), "
                "which equals timm.layers.resample_abs_pos_embed on pos_embed.flatten(2).transpose(1, 2) with "
                "num_prefix_tokens=0 reshaped back; all other tensors unchanged")
            entry.setdefault("pos_embed_checksum", {})[res] = cw.checksum([state2["pos_embed"]])
            attn_model = big
        else:
            big = timm.create_model(name, pretrained=False, img_size=res).eval()
            assert cw.layout(big.state_dict()) == layout, "Swin weights depend on the resolution"
            big.load_state_dict(state, strict=True)
            entry["logits"][res] = no_grad_eval(big, x2)
            entry["windows"][res] = swin_windows(big)
            entry["how"][res] = (
                f"timm.create_model({name!r}, img_size={res}) (strict_img_size=True, always_partition=False: the "
                "constructor's window size, clamped per stage to the feature map when the map is not larger, "
                "shift 0 then; maps not a multiple of the window are zero-padded bottom/right after the cyclic "
                "shift); the canonical state dict loaded unchanged (no tensor depends on the resolution)")
            dyn = timm.create_model(name, pretrained=False, strict_img_size=False).eval()
            dyn.load_state_dict(state, strict=True)
            with torch.no_grad():
                try:
                    diff = (dyn(x2) - entry["logits"][res]).abs().max().item()
                except Exception as exc:  # noqa: BLE001
                    diff = f"{type(exc).__name__}: {exc}"
            entry.setdefault("dynamic_max_abs_diff", {})[res] = diff
            attn_model = big
        entry["attn_max_prob"][res] = attention_max_prob(attn_model, x2)
        if distilled:
            with torch.no_grad():
                feats = big.forward_features(x2)
                entry["logits_head"][res] = big.head(feats[:, 0])
                entry["logits_head_dist"][res] = big.head_dist(feats[:, 1])
    for res, logits in entry["logits"].items():
        assert torch.isfinite(logits).all()
        log(f"  {name} @{res}: logits std {logits.std():.2f} absmax {logits.abs().max():.2f}, "
            f"attn max-prob {min(entry['attn_max_prob'][res]):.2f}..{max(entry['attn_max_prob'][res]):.2f}")
    log(f"{name}: {time.time() - t0:.1f} s")
    return entry


def tiny_inputs(spec):
    """{resolution: (batch, seed)} -> the inputs, and their fixture record (seed, batch, shape, sha256)."""
    xs = {r: cw.image_batch(r, seed, batch=b) for r, (b, seed) in spec.items()}
    record = {r: {"seed": spec[r][1], "batch": spec[r][0], "shape": list(x.shape), "sha256": cw.sha256([x])}
              for r, x in xs.items()}
    return xs, record


def tiny_models():
    from timm.layers import resample_abs_pos_embed
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.pit import PoolingVisionTransformer
    from timm.models.swin_transformer import SwinTransformer

    out = {}
    zero_drop = dict(drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)

    # distilled DeiT, 32 px (grid 4x4, 2 prefix tokens)
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10,
               pos_drop_rate=0.0, **zero_drop)
    model = VisionTransformerDistilled(**cfg).eval()
    seed = preset_seed("tiny_deit_distilled")
    state = cw.canonical_state_dict(cw.layout(model.state_dict()), seed)
    model.load_state_dict(state)
    xs, record = tiny_inputs({32: (3, 32), 48: (3, 48)})
    with torch.no_grad():
        logits32 = model(xs[32])
        feats = model.forward_features(xs[32])
        head, dist = model.head(feats[:, 0]), model.head_dist(feats[:, 1])
        pre_logits = model.forward_head(feats, pre_logits=True)
        model.train()
        train_mean = model(xs[32])
        model.set_distilled_training(True)
        train_head, train_dist = model(xs[32])
        model.set_distilled_training(False)
        model.eval()
        big = VisionTransformerDistilled(**{**cfg, "img_size": 48}).eval()
        state48 = dict(state)
        state48["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=[6, 6], old_size=[4, 4],
                                                      num_prefix_tokens=2)
        big.load_state_dict(state48)
        logits48 = big(xs[48])
        dyn = VisionTransformerDistilled(**cfg, dynamic_img_size=True).eval()
        dyn.load_state_dict(state)
        logits48_dynamic = dyn(xs[48])
    out["deit_distilled"] = {
        "timm_class": "timm.models.deit.VisionTransformerDistilled", "config": cfg, "seed": seed,
        "state_dict": state, "inputs": record,
        "logits": {32: logits32, 48: logits48}, "logits48_dynamic": logits48_dynamic,
        "logits32_head": head, "logits32_head_dist": dist, "pre_logits32": pre_logits,
        "train_logits32_mean": train_mean, "train_logits32_distilled": [train_head, train_dist],
        "pos_embed48": state48["pos_embed"],
        "notes": ("inputs[r]: canonical_weights.image_batch(r, seed, batch); logits[48] from "
                  "VisionTransformerDistilled(img_size=48) with pos_embed48 = resample_abs_pos_embed(pos_embed, "
                  "[6, 6], old_size=[4, 4], num_prefix_tokens=2) (bicubic, antialias); logits48_dynamic: the 32 px "
                  "model built with dynamic_img_size=True; pre_logits32 = forward_head(features, pre_logits=True) = "
                  "(cls + dist token features) / 2; train_logits32_distilled = model.train(); "
                  "set_distilled_training(True); model(x) -> (head, head_dist); train_logits32_mean: model.train() "
                  "without distilled training -> the mean of the heads"),
    }

    # Swin: 3 stages, window 4, at 64 px (maps 16, 8, 4: the last stage's window equals its map, so no shift)
    cfg = dict(img_size=64, patch_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4,
               mlp_ratio=2.0, num_classes=10, **zero_drop)
    model = SwinTransformer(**cfg).eval()
    seed = preset_seed("tiny_swin")
    state = cw.canonical_state_dict(cw.layout(model.state_dict()), seed)
    model.load_state_dict(state)
    xs, record = tiny_inputs({64: (2, 64), 96: (2, 96), 80: (2, 80)})
    entry = {"timm_class": "timm.models.swin_transformer.SwinTransformer", "config": cfg, "seed": seed,
             "state_dict": state, "inputs": record, "logits": {}, "windows": {}, "dynamic_max_abs_diff": {}}
    with torch.no_grad():
        for r, x in xs.items():
            m = model if r == 64 else SwinTransformer(**{**cfg, "img_size": r}).eval()
            m.load_state_dict(state)
            entry["logits"][r] = m(x)
            entry["windows"][r] = swin_windows(m)
            if r == 64:
                _, inter = m.forward_intermediates(x)
                entry["features64"] = inter
                entry["attn_mask64_stage0"] = m.layers[0].blocks[1].attn_mask
            else:
                dyn = SwinTransformer(**cfg, strict_img_size=False).eval()
                dyn.load_state_dict(state)
                entry["dynamic_max_abs_diff"][r] = (dyn(x) - entry["logits"][r]).abs().max().item()
    entry["notes"] = ("inputs[r]: canonical_weights.image_batch(r, seed, batch); logits[r] from "
                      "SwinTransformer(**config, img_size=r) with the same state dict; windows[r]: per stage "
                      "[map h, w, window h, w, shift h, w]; 96 px: maps 24, 12, 6, the last zero-padded to 8 after "
                      "the shift; 80 px: maps 20, 10, 5, stages 1 and 2 padded (10 -> 12, 5 -> 8); features64: per "
                      "stage output (B, C, H, W) from forward_intermediates, before the final norm; "
                      "attn_mask64_stage0: layers.0.blocks.1.attn_mask (num windows, 16, 16), 0 / -100; "
                      "dynamic_max_abs_diff[r]: the 64 px model built with strict_img_size=False, run at r px")
    out["swin"] = entry

    # PiT: 32 px, patch 4 stride 2 (maps 15 -> 8 -> 4)
    cfg = dict(img_size=32, patch_size=4, stride=2, base_dims=(8, 8, 8), depth=(1, 2, 1), heads=(1, 2, 4),
               mlp_ratio=4, num_classes=10, pos_drop_rate=0.0, **zero_drop)
    model = PoolingVisionTransformer(**cfg).eval()
    seed = preset_seed("tiny_pit")
    state = cw.canonical_state_dict(cw.layout(model.state_dict()), seed)
    model.load_state_dict(state)
    xs, record = tiny_inputs({32: (2, 32), 48: (2, 48)})
    with torch.no_grad():
        logits32 = model(xs[32])
        _, inter = model.forward_intermediates(xs[32])
        cls_final = model.forward_features(xs[32])
        big = PoolingVisionTransformer(**{**cfg, "img_size": 48}).eval()
        state48 = dict(state)
        state48["pos_embed"] = resample_pit_pos_embed(state["pos_embed"], tuple(big.pos_embed.shape[-2:]))
        big.load_state_dict(state48)
        logits48 = big(xs[48])
    out["pit"] = {
        "timm_class": "timm.models.pit.PoolingVisionTransformer", "config": cfg, "seed": seed,
        "state_dict": state, "inputs": record, "logits": {32: logits32, 48: logits48},
        "features32": inter, "cls_tokens32": cls_final, "pos_embed48": state48["pos_embed"],
        "notes": ("inputs[r]: canonical_weights.image_batch(r, seed, batch); features32: per stage spatial maps "
                  "(B, C, H, W) 15x15, 8x8, 4x4; cls_tokens32 = forward_features(x) (the final norm applied to the "
                  "cls token only, (B, 1, C)); logits[48] from PoolingVisionTransformer(img_size=48) (maps 23, 12, "
                  "6) with pos_embed48 = F.interpolate(pos_embed, (23, 23), mode='bicubic', antialias=True, "
                  "align_corners=False)"),
    }
    return out


def make_timm(log):
    import timm

    t0 = time.time()
    resolutions = sorted({r for _, native, extra in PRESETS.values() for r in [native, *extra]})
    inputs = {r: cw.image_batch(r, r) for r in resolutions}
    for r, x in inputs.items():
        assert torch.equal(x, cw.image_batch(r, r))
    fixture = {
        "timm_version": timm.__version__, "torch_version": str(torch.__version__),
        "canonical_rule": {"NORM_STD": cw.NORM_STD, "BIAS_STD": cw.BIAS_STD, "POS_STD": cw.POS_STD,
                           "TOKEN_STD": cw.TOKEN_STD, "RPB_STD": cw.RPB_STD, "QK_GAIN": cw.QK_GAIN},
        "inputs": {r: {"seed": r, "shape": list(x.shape), "checksum": cw.checksum([x]), "sha256": cw.sha256([x]),
                       "first": x.flatten()[:8].clone()} for r, x in inputs.items()},
        "presets": {},
        "fields": (
            "inputs[r]: canonical_weights.image_batch(r, seed) (batch 1), with its shape, checksum, sha256 and first "
            "8 values. presets[name]: family; seed and layout for canonical_state_dict(layout, seed); weights_sha256 / "
            "weights_checksum of those weights; img_size (native); num_params (timm); logits[r] (1, 1000), eval; "
            "how[r]: how timm produced logits[r]; attn_max_prob[r]: per attention layer, the mean over rows of the "
            "largest attention probability; pos_embed_checksum[r]: of the resampled pos_embed (DeiT, PiT); "
            "windows[r] (Swin): per stage [map h, w, window h, w, shift h, w]; dynamic_max_abs_diff[r]: largest "
            "logit difference of timm's dynamic model (DeiT: dynamic_img_size=True; Swin: strict_img_size=False, "
            "built at the native size) run at r against logits[r]; logits_head / logits_head_dist[r] (distilled "
            "DeiT): the two heads, logits = their mean; train_output: the distilled model's train-mode output. "
            "tiny[...]: small models with full state dicts, see each entry's notes."),
    }
    for name, (family, native, extra) in PRESETS.items():
        fixture["presets"][name] = make_preset(name, family, native, extra, inputs, log)
    fixture["tiny"] = tiny_models()
    torch.save(fixture, TIMM_OUT)
    log(f"wrote {TIMM_OUT} ({TIMM_OUT.stat().st_size} bytes, {time.time() - t0:.0f} s)")


def main(argv):
    which = argv[1:] or ["timm", "hf"]
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    if "timm" in which:
        make_timm(log)
    if "hf" in which:
        from make_hf_fixture import make_hf  # the HF half lives in its own module

        make_hf(log)


if __name__ == "__main__":
    main(sys.argv)
