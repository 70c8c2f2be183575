"""Residual add + LayerNorm on (B, N, E) rows: ``s = x + residual; y = LN(s)``, as every block runs it.

Bytes (fastvit.benchmark.add_layer_norm_bytes): the minimum a fused kernel moves, forward read x and
residual, write y and s; a training step also reads dy, ds and s and writes dx. Unit: GB/s.
"""
import torch

from fastvit import benchmark as fb
from fastvit.backends import NORM

OP = "layernorm"


def make_case(settings, impl: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, fb.DTYPES[dtype_name]
    backend, compiled = fb.split_impl(impl)
    B, E = settings.batch, cfg.embed_dim
    N = fb.num_tokens(resolution, cfg.patch_size)
    train = pass_name == "train"
    fields = dict(norm_backend=backend, model=settings.model, resolution=resolution, tokens=N, batch=B,
                  embed_dim=E, patch_size=cfg.patch_size, dtype=dtype_name, **{"pass": pass_name})
    ok, reason = NORM.availability(backend, device, dtype, hidden=E)

    def build() -> fb.Workload:
        def make(*shape, scale=1.0, shift=0.0):
            t = torch.randn(*shape, device=device, dtype=torch.float32) * scale + shift
            return t.to(dtype).requires_grad_(train)
        x, residual = make(B, N, E), make(B, N, E)
        weight, bias = make(E, scale=0.1, shift=1.0), make(E, scale=0.1)
        dy, ds = (torch.randn(B, N, E, device=device, dtype=dtype) for _ in range(2))
        add_ln = fb.maybe_compile(NORM.get(backend).fn.add_layer_norm, compiled)

        if not train:
            def fn():
                with torch.no_grad():
                    return add_ln(x, residual, weight, bias, cfg.norm_eps)
            return fb.Workload(fn)

        def step():
            y, s = add_ln(x, residual, weight, bias, cfg.norm_eps)
            torch.autograd.backward((y, s), (dy, ds))

        def reset():
            for t in (x, residual, weight, bias):
                t.grad = None
        return fb.Workload(step, reset)

    nbytes = fb.add_layer_norm_bytes(B * N, E, dtype.itemsize, pass_name)
    return fb.Case(OP, impl, fields, build, bytes=nbytes, skip=None if ok else reason)


def test_layer_norm(measure, settings, impl, resolution, pass_name, dtype_name):
    measure(make_case(settings, impl, resolution, pass_name, dtype_name))
