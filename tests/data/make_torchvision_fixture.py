"""Regenerates tests/data/torchvision_fixture.pt: torchvision's own ViT and Swin logits for seeded weights.

torchvision is not a fastvit dependency and this script imports nothing of fastvit; it runs once, in an
environment whose torchvision matches its torch (made with torch 2.14.1, torchvision 0.29.1):

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tv/bin/python tests/data/make_torchvision_fixture.py

Everything is deterministic: rerunning it with the same versions rewrites the same tensors.

"presets": torchvision's vit_b_16 and swin_t (and the layouts of its other ViT and Swin V1 builders).
    For each: torchvision's state-dict layout (ordered [key, shape, dtype], torchvision's names), a seed for
    tests/data/canonical_weights.py's canonical_state_dict(layout, seed) (its integer buffers, Swin's
    relative_position_index, are not drawn: torchvision's own are kept), the weights' SHA-256, and
    torchvision's eval-mode logits at the native 224 px and at one other size, on
    canonical_weights.image_batch(r, r) (batch 1): ViT-B/16 at 112 px with the position embedding
    resampled by torchvision's interpolate_embeddings, Swin-T at 448 px with the same weights. "how" says
    exactly how. "layouts" (other builders): keys and shapes only.
"tiny": small models of the same classes with full state dicts (torchvision's keys) and logits at two
    sizes or more: a ViT (32 px, patch 8; 48 px through interpolate_embeddings) and a Swin V1 (window 4;
    64, 96 and 128 px, where it computes as fastvit does, and 80 px, where its padding before the shift
    gives other logits).
"refused": layouts of what fastvit refuses: a ViT with representation_size (heads.pre_logits), a ViT
    with a convolutional stem (conv_stem_configs), swin_v2_t, and convnext_tiny's key list (a CNN with
    features.0.0 that must not be taken for a Swin).
"""
import pathlib
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import canonical_weights as cw  # noqa: E402

OUT = HERE / "torchvision_fixture.pt"
SEEDS = {"vit_b_16": 1601, "swin_t": 7224, "tiny_vit": 3208, "tiny_swin": 6404}
OTHER = {"vit_b_16": 112, "swin_t": 448}
LAYOUTS_ONLY = ("vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14", "swin_s", "swin_b")


def load_canonical(model, layout, seed):
    """The canonical weights in ``model``, its integer buffers kept; returns the weights drawn."""
    state = cw.canonical_state_dict(layout, seed)
    buffers = {k: v for k, v in model.state_dict().items() if not v.is_floating_point()}
    model.load_state_dict({**state, **buffers}, strict=True)
    return state


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def record(x, seed):
    return {"seed": seed, "batch": x.shape[0], "shape": list(x.shape), "sha256": cw.sha256([x])}


def make_vit_b_16(tvm, log):
    from torchvision.models.vision_transformer import interpolate_embeddings

    model = tvm.vit_b_16().eval()
    layout = cw.layout(model.state_dict())
    state = load_canonical(model, layout, SEEDS["vit_b_16"])
    x224, x112 = cw.image_batch(224, 224), cw.image_batch(112, 112)
    small = tvm.vit_b_16(image_size=112).eval()
    small.load_state_dict(interpolate_embeddings(112, 16, dict(state)), strict=True)
    return {"builder": "torchvision.models.vit_b_16", "fastvit": "vit_base_patch16_224", "layout": layout,
            "seed": SEEDS["vit_b_16"], "weights_sha256": cw.sha256(state.values()),
            "inputs": {224: record(x224, 224), 112: record(x112, 112)},
            "logits": {224: logits(model, x224), 112: logits(small, x112)},
            "how": {224: "torchvision.models.vit_b_16(), canonical weights loaded strictly, eval",
                    112: "torchvision.models.vit_b_16(image_size=112) loaded with interpolate_embeddings(112, 16, "
                         "canonical state) (encoder.pos_embedding 14x14 -> 7x7: bicubic, align_corners=True)"}}


def make_swin_t(tvm, log):
    model = tvm.swin_t().eval()
    layout = cw.layout(model.state_dict())
    state = load_canonical(model, layout, SEEDS["swin_t"])
    x224, x448 = cw.image_batch(224, 224), cw.image_batch(448, 448)
    return {"builder": "torchvision.models.swin_t", "fastvit": "swin_tiny_patch4_window7_224", "layout": layout,
            "seed": SEEDS["swin_t"], "weights_sha256": cw.sha256(state.values()),
            "inputs": {224: record(x224, 224), 448: record(x448, 448)},
            "logits": {224: logits(model, x224), 448: logits(model, x448)},
            "how": {224: "torchvision.models.swin_t(), canonical weights loaded strictly (its own "
                         "relative_position_index kept), eval",
                    448: "the same model at 448 px (maps 112, 56, 28, 14: multiples of the 7x7 window, so the "
                         "padding order does not arise)"}}


def make_tiny(log):
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    vit_cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    vit = VisionTransformer(**vit_cfg).eval()
    state = load_canonical(vit, cw.layout(vit.state_dict()), SEEDS["tiny_vit"])
    xs = {32: cw.image_batch(32, 32, batch=2), 48: cw.image_batch(48, 48, batch=2)}
    big = VisionTransformer(**{**vit_cfg, "image_size": 48}).eval()
    big.load_state_dict(interpolate_embeddings(48, 8, dict(state)), strict=True)
    out32 = logits(vit, xs[32])
    legacy = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v for k, v in state.items()}
    old = VisionTransformer(**vit_cfg).eval()
    old.load_state_dict(legacy, strict=True)  # torchvision upgrades the pre-0.13 names of an unversioned dict
    assert torch.equal(logits(old, xs[32]), out32)
    tiny = {"vit": {"class": "torchvision.models.vision_transformer.VisionTransformer", "config": vit_cfg,
                    "state_dict": state, "inputs": {r: record(x, r) for r, x in xs.items()},
                    "logits": {32: out32, 48: logits(big, xs[48])},
                    "how": "48 px: VisionTransformer(image_size=48) loaded with interpolate_embeddings(48, 8, state); "
                           "torchvision also loads the state with mlp.linear_1 / mlp.linear_2 names (checked)"}}

    swin_cfg = dict(patch_size=[4, 4], embed_dim=8, depths=[2, 2, 2], num_heads=[1, 2, 4], window_size=[4, 4],
                    mlp_ratio=2.0, stochastic_depth_prob=0.0, num_classes=10)
    swin = SwinTransformer(**swin_cfg).eval()
    state = load_canonical(swin, cw.layout(swin.state_dict()), SEEDS["tiny_swin"])
    xs = {r: cw.image_batch(r, r, batch=2) for r in (64, 96, 128, 80)}
    tiny["swin"] = {"class": "torchvision.models.swin_transformer.SwinTransformer", "config": swin_cfg,
                    "state_dict": {k: v for k, v in swin.state_dict().items()},
                    "inputs": {r: record(x, r) for r, x in xs.items()},
                    "logits": {r: logits(swin, x) for r, x in xs.items()},
                    "how": "one model at every size (torchvision's Swin takes any size); 80 px: maps 20, 10, 5, "
                           "the last padded to 8 before its shift"}
    return tiny


def make_refused(tvm):
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

    base = dict(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
    stem = [ConvStemConfig(out_channels=8, kernel_size=3, stride=2)] * 3
    with torch.device("meta"):
        layouts = {"vit_pre_logits": VisionTransformer(**base, representation_size=24),
                   "vit_conv_stem": VisionTransformer(**base, conv_stem_configs=stem),
                   "swin_v2_t": tvm.swin_v2_t(), "convnext_tiny": tvm.convnext_tiny()}
    return {name: cw.layout(m.state_dict()) for name, m in layouts.items()}


def main():
    import torchvision

    log = lambda msg: print(msg, flush=True)  # noqa: E731
    t0 = time.time()
    tvm = torchvision.models
    presets = {"vit_b_16": make_vit_b_16(tvm, log), "swin_t": make_swin_t(tvm, log)}
    with torch.device("meta"):
        layouts = {name: cw.layout(getattr(tvm, name)().state_dict()) for name in LAYOUTS_ONLY}
    fixture = {"torch_version": str(torch.__version__), "torchvision_version": torchvision.__version__,
               "presets": presets, "layouts": layouts, "tiny": make_tiny(log), "refused": make_refused(tvm)}
    for name, entry in [*presets.items(), *fixture["tiny"].items()]:
        for r, out in entry["logits"].items():
            assert torch.isfinite(out).all()
            log(f"{name} @{r}: logits std {out.std():.2f}, absmax {out.abs().max():.2f}")
    torch.save(fixture, OUT)
    log(f"wrote {OUT} ({OUT.stat().st_size} bytes, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
