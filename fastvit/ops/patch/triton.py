"""``triton``: fastvit's fused patchify + GEMM + bias + prefix rows + pos_embed kernel
(kernels.patch_embed), for any number of prefix rows (ViT's CLS token, DeiT's CLS and distillation
tokens)."""
from fastvit.ops._triton import triton_check
from fastvit.ops.patch.registry import PATCH


@PATCH.register("triton", check=lambda device, dtype, **shape: triton_check(device, dtype), own_kernel=True,
                description="fastvit Triton fused patchify + GEMM + bias + prefix rows + pos_embed")
def triton_patch_embed(images, weight, bias, pos_embed, prefix):
    from kernels import patch_embed

    return patch_embed(images, weight, bias, pos_embed, prefix)
