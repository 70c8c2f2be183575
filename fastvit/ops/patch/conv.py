"""``conv``: Conv2d -> flatten -> transpose -> cat prefix -> add pos_embed (timm's path)."""
import torch.nn.functional as F

from fastvit.ops.patch.registry import PATCH, prepend


@PATCH.register("conv", description="Conv2d + flatten + transpose + cat + add", reference=True)
def conv_patch_embed(images, weight, bias, pos_embed, prefix):
    patch = weight.shape[-1]
    x = F.conv2d(images, weight, bias, stride=patch)  # (B, E, H/P, W/P)
    return prepend(x.flatten(2).transpose(1, 2), pos_embed, prefix)
