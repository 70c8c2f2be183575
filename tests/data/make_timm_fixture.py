"""Regenerates tests/data/timm_vit_fixture.pt: a small timm ViT's weights, inputs and timm's logits.

timm is not a fastvit dependency; this script runs once, in an environment with timm installed:

    python tests/data/make_timm_fixture.py

The fixture holds a custom-size timm VisionTransformer (32 px, patch 8, width 48, depth 2, 3 heads,
10 classes) with weights drawn large enough that attention is far from uniform, an input batch at
32 px with timm's logits, and, at 48 px, timm's logits for (a) the checkpoint with pos_embed
resampled by timm's own resample_abs_pos_embed and (b) a dynamic_img_size=True model.
"""
import pathlib

import timm
import torch
from timm.layers import resample_abs_pos_embed

KWARGS = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


def main():
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(**KWARGS).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name or name.startswith("norm."):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x32 = torch.randn(3, 3, 32, 32)
    x48 = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        logits32 = model(x32)
        big = timm.models.vision_transformer.VisionTransformer(**{**KWARGS, "img_size": 48}).eval()
        resampled = dict(state)
        resampled["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=(6, 6), num_prefix_tokens=1)
        big.load_state_dict(resampled)
        logits48_resampled = big(x48)
        dyn = timm.models.vision_transformer.VisionTransformer(**KWARGS, dynamic_img_size=True).eval()
        dyn.load_state_dict(state)
        logits48_dynamic = dyn(x48)
    out = pathlib.Path(__file__).with_name("timm_vit_fixture.pt")
    torch.save({
        "timm_version": timm.__version__, "torch_version": str(torch.__version__), "config": KWARGS,
        "state_dict": state, "x32": x32, "logits32": logits32, "x48": x48,
        "pos_embed48": resampled["pos_embed"], "logits48_resampled": logits48_resampled,
        "logits48_dynamic": logits48_dynamic,
    }, out)
    print(f"wrote {out} (timm {timm.__version__})")


if __name__ == "__main__":
    main()
