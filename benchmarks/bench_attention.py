"""Attention alone: softmax(q k^T / sqrt(D)) v on (B, H, N, D) with the model's heads and head dim.

Work: 4 * B * H * N^2 * D FLOPs forward, 3.5x that for a training step (forward + backward);
unit TFLOP/s (GFLOP/s on CPU). The naive backend also holds the (B, H, N, N) scores and probabilities,
so its peak memory grows as N^2; flash-style kernels keep it linear in N.
"""
import torch

import fastvit
from fastvit import benchmark as fb
from fastvit.attention.sdpa import PINNED, sdpa_kernel_choice
from fastvit.backends import ATTENTION

OP = "attention"


def make_case(settings, impl: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, fb.DTYPES[dtype_name]
    backend, compiled = fb.split_impl(impl)
    B, H, D = settings.batch, cfg.num_heads, cfg.embed_dim // cfg.num_heads
    N = fb.num_tokens(resolution, cfg.patch_size)
    train = pass_name == "train"
    fields = dict(model=settings.model, resolution=resolution, tokens=N, batch=B, heads=H, head_dim=D,
                  depth=cfg.depth, patch_size=cfg.patch_size, dtype=dtype_name, **{"pass": pass_name})
    ok, reason = ATTENTION.availability(backend, device, dtype, head_dim=D)

    def build() -> fb.Workload:
        q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, requires_grad=train) for _ in range(3))
        grad = torch.randn(B, H, N, D, device=device, dtype=dtype)
        attend = fb.maybe_compile(lambda q, k, v: fastvit.attention(q, k, v, backend=backend), compiled)
        info = {}
        if backend == "sdpa":
            info["sdpa_kernel"] = sdpa_kernel_choice(q, k, v)
        elif backend in PINNED:
            info["sdpa_kernel"] = backend

        if not train:
            def fn():
                with torch.no_grad():
                    return attend(q, k, v)
            return fb.Workload(fn, info=info)

        def step():
            attend(q, k, v).backward(grad)

        def reset():
            for t in (q, k, v):
                t.grad = None
        return fb.Workload(step, reset, info)

    return fb.Case(OP, impl, fields, build, flops=fb.attention_flops(B, H, N, D, pass_name),
                   skip=None if ok else reason,
                   matrix_bytes=(4 if train else 2) * B * H * N * N * dtype.itemsize)


def test_attention(measure, settings, impl, resolution, pass_name, dtype_name):
    measure(make_case(settings, impl, resolution, pass_name, dtype_name))
