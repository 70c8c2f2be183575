"""``einops``: Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)') + Linear, the tutorial form, with the
same Conv2d weight viewed as an (E, P*P*C) matrix; numerically the same map as ``conv``."""
import torch.nn.functional as F
from einops import rearrange

from fastvit.ops.patch.registry import PATCH, prepend


@PATCH.register("einops", description="einops Rearrange + Linear")
def einops_patch_embed(images, weight, bias, pos_embed, prefix):
    patch = weight.shape[-1]
    patches = rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch, p2=patch)
    matrix = rearrange(weight, "e c p1 p2 -> e (p1 p2 c)")
    return prepend(F.linear(patches, matrix, bias), pos_embed, prefix)
