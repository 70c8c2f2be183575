"""Patch embedding, the whole token stem: images (B, C, res, res) -> patchify -> GEMM with the (E, C, P, P)
weight + bias -> CLS row first -> + position embedding -> (B, 1 + N, E).

Bytes (fastvit.benchmark.patch_embed_bytes): images, parameters and tokens read or written once
(a training step adds the weight gradient pass); unit GB/s. FLOPs of the patch GEMM are kept too.
"""
import torch

from fastvit import benchmark as fb
from fastvit.backends import PATCH

OP = "patch_embed"


def make_case(settings, impl: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, fb.DTYPES[dtype_name]
    backend, compiled = fb.split_impl(impl)
    B, C, E, P = settings.batch, cfg.in_chans, cfg.embed_dim, cfg.patch_size
    N = fb.num_tokens(resolution, P)
    train = pass_name == "train"
    fields = dict(patch_backend=backend, model=settings.model, resolution=resolution, tokens=N, batch=B,
                  embed_dim=E, patch_size=P, dtype=dtype_name, **{"pass": pass_name})
    ok, reason = PATCH.availability(backend, device, dtype, patch_size=P)
    if ok and resolution % P:
        ok, reason = False, f"{resolution} px is not divisible by the patch size {P}"

    def build() -> fb.Workload:
        def param(*shape):
            return (torch.randn(*shape, device=device) * 0.02).to(dtype).requires_grad_(train)
        images = torch.randn(B, C, resolution, resolution, device=device, dtype=dtype)
        weight, bias, pos_embed, cls_token = param(E, C, P, P), param(E), param(1, N, E), param(1, 1, E)
        grad = torch.randn(B, N, E, device=device, dtype=dtype)
        embed = fb.maybe_compile(PATCH.get(backend).fn, compiled)

        if not train:
            def fn():
                with torch.no_grad():
                    return embed(images, weight, bias, pos_embed, cls_token)
            return fb.Workload(fn)

        def step():
            embed(images, weight, bias, pos_embed, cls_token).backward(grad)

        def reset():
            for t in (weight, bias, pos_embed, cls_token):
                t.grad = None
        return fb.Workload(step, reset)

    return fb.Case(OP, impl, fields, build, flops=fb.patch_embed_flops(B, C, resolution, P, E, pass_name),
                   bytes=fb.patch_embed_bytes(B, C, resolution, P, E, dtype.itemsize, pass_name),
                   skip=None if ok else reason)


def test_patch_embed(measure, settings, impl, resolution, pass_name, dtype_name):
    measure(make_case(settings, impl, resolution, pass_name, dtype_name))
