"""``triton``: fastvit's fused residual-add + LayerNorm kernel (kernels.layer_norm)."""
from fastvit.ops._triton import triton_check
from fastvit.ops.norm.registry import NORM


@NORM.register("triton", check=triton_check, description="fastvit Triton fused residual-add + LayerNorm",
               own_kernel=True)
def triton_add_layer_norm(x, residual, weight, bias, eps):
    from kernels import add_layer_norm, layer_norm

    if residual is None:
        return layer_norm(x, weight, bias, eps), x
    return add_layer_norm(x, residual, weight, bias, eps)
