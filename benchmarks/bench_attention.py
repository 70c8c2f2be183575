"""Attention alone: softmax(q k^T / sqrt(D)) v on (B, H, N, D) with the model's heads and head dim.

Work: 4 * B * H * N^2 * D FLOPs forward, 3.5x that for a training step (forward + backward);
unit TFLOP/s (GFLOP/s on CPU). Backends that materialize the (B, H, N, N) scores and probabilities
grow as N^2 in memory; flash-style kernels keep it linear in N.
"""
import torch

import fastvit
from fastvit import bench as fb
from fastvit.devices import DTYPES

from _workloads import kernel_info, lookup, op_group

OP = "attention"


def make_case(settings, impl: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, DTYPES[dtype_name]
    B, H, D = settings.batch, cfg.num_heads, cfg.embed_dim // cfg.num_heads
    N = fb.num_tokens(resolution, cfg.patch_size)
    train = pass_name == "train"
    fields = dict(model=settings.model, resolution=resolution, tokens=N, batch=B, heads=H, head_dim=D,
                  depth=cfg.depth, patch_size=cfg.patch_size, dtype=dtype_name, **{"pass": pass_name})
    backend, compiled, reason = lookup("attention", impl, device, dtype_name, head_dim=D, grad=train)

    def build() -> fb.Workload:
        q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, requires_grad=train) for _ in range(3))
        grad = torch.randn(B, H, N, D, device=device, dtype=dtype)
        attend = fb.maybe_compile(lambda q, k, v: fastvit.attention(q, k, v, backend=backend.name), compiled)
        return fb.workload(lambda: attend(q, k, v), train=train, leaves=(q, k, v), grads=grad,
                           info=kernel_info(backend, q, k, v))

    return fb.Case(OP, impl, fields, build, backends=(backend,), flops=fb.attention_flops(B, H, N, D, pass_name),
                   skip=reason, matrix_bytes=(4 if train else 2) * B * H * N * N * dtype.itemsize)


def test_attention(measure_group, settings, resolution, pass_name, dtype_name):
    cases = [make_case(settings, impl, resolution, pass_name, dtype_name) for impl in settings.impls[OP]]
    measure_group(op_group(OP, "attention", settings, cases, resolution, pass_name, dtype_name))
