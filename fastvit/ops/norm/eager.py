"""``torch``: eager PyTorch, the residual add as its own op followed by ``F.layer_norm``."""
import torch.nn.functional as F

from fastvit.ops.norm.registry import NORM


@NORM.register("torch", description="torch.nn.functional.layer_norm; the residual add as its own op",
               reference=True)
def torch_add_layer_norm(x, residual, weight, bias, eps):
    s = x if residual is None else x + residual
    return F.layer_norm(s, s.shape[-1:], weight, bias, eps), s
