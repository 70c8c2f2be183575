"""Residual add + LayerNorm on (B, N, E) rows: ``s = x + residual; y = LN(s)``, as every block runs it.

Bytes (fastvit.bench.add_layer_norm_bytes): the minimum a fused kernel moves, forward read x and
residual, write y and s; a training step also reads dy, ds and s and writes dx. Unit: GB/s.
"""
import torch

from fastvit import bench as fb
from fastvit.devices import DTYPES

from _workloads import lookup, op_group

OP = "layernorm"


def make_case(settings, impl: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, DTYPES[dtype_name]
    B, E = settings.batch, cfg.embed_dim
    N = fb.num_tokens(resolution, cfg.patch_size)
    train = pass_name == "train"
    backend, compiled, reason = lookup("norm", impl, device, dtype_name, hidden=E)
    fields = dict(norm_backend=backend.name, model=settings.model, resolution=resolution, tokens=N, batch=B,
                  embed_dim=E, patch_size=cfg.patch_size, dtype=dtype_name, **{"pass": pass_name})

    def build() -> fb.Workload:
        def make(*shape, scale=1.0, shift=0.0):
            t = torch.randn(*shape, device=device, dtype=torch.float32) * scale + shift
            return t.to(dtype).requires_grad_(train)
        x, residual = make(B, N, E), make(B, N, E)
        weight, bias = make(E, scale=0.1, shift=1.0), make(E, scale=0.1)
        dy, ds = (torch.randn(B, N, E, device=device, dtype=dtype) for _ in range(2))
        add_ln = fb.maybe_compile(backend.fn, compiled)
        return fb.workload(lambda: add_ln(x, residual, weight, bias, cfg.norm_eps), train=train,
                           leaves=(x, residual, weight, bias), grads=(dy, ds))

    nbytes = fb.add_layer_norm_bytes(B * N, E, dtype.itemsize, pass_name)
    return fb.Case(OP, impl, fields, build, backends=(backend,), bytes=nbytes, skip=reason)


def test_layer_norm(measure_group, settings, resolution, pass_name, dtype_name):
    cases = [make_case(settings, impl, resolution, pass_name, dtype_name) for impl in settings.impls[OP]]
    measure_group(op_group(OP, "norm", settings, cases, resolution, pass_name, dtype_name))
