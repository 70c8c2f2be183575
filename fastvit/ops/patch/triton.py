"""``triton``: fastvit's fused patchify + GEMM + bias + CLS + pos_embed kernel (kernels.patch_embed)."""
from fastvit.ops._triton import triton_check
from fastvit.ops.patch.registry import PATCH


def _check(device, dtype, prefix_tokens=1, **shape):
    if prefix_tokens != 1:
        return False, (f"fastvit's Triton patch-embedding kernel writes one prefix (CLS) row, "
                       f"not {prefix_tokens}")
    return triton_check(device, dtype)


@PATCH.register("triton", check=_check, own_kernel=True,
                description="fastvit Triton fused patchify + GEMM + bias + CLS + pos_embed")
def triton_patch_embed(images, weight, bias, pos_embed, prefix):
    from kernels import patch_embed

    return patch_embed(images, weight, bias, pos_embed, prefix)
