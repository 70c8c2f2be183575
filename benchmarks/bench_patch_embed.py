"""Patch embedding, the whole token stem: images (B, C, res, res) -> patchify -> GEMM with the (E, C, P, P)
weight + bias -> CLS row first -> + position embedding -> (B, 1 + N, E).

Bytes (fastvit.bench.patch_embed_bytes): images, parameters and tokens read or written once
(a training step adds the weight gradient pass); unit GB/s. FLOPs of the patch GEMM are kept too.
"""
import torch

from fastvit import bench as fb
from fastvit.devices import DTYPES

from _workloads import lookup, op_group

OP = "patch_embed"


def make_case(settings, impl: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, DTYPES[dtype_name]
    B, C, E, P = settings.batch, cfg.in_chans, cfg.embed_dim, cfg.patch_size
    N = fb.num_tokens(resolution, P)
    train = pass_name == "train"
    backend, compiled, reason = lookup("patch", impl, device, dtype_name, patch_size=P, prefix_tokens=1)
    fields = dict(patch_backend=backend.name, model=settings.model, resolution=resolution, tokens=N, batch=B,
                  embed_dim=E, patch_size=P, dtype=dtype_name, **{"pass": pass_name})
    if reason is None and resolution % P:
        reason = f"{resolution} px is not divisible by the patch size {P}"

    def build() -> fb.Workload:
        def param(*shape):
            return (torch.randn(*shape, device=device) * 0.02).to(dtype).requires_grad_(train)
        images = torch.randn(B, C, resolution, resolution, device=device, dtype=dtype)
        weight, bias, pos_embed, cls_token = param(E, C, P, P), param(E), param(1, N, E), param(1, 1, E)
        grad = torch.randn(B, N, E, device=device, dtype=dtype)
        embed = fb.maybe_compile(backend.fn, compiled)
        return fb.workload(lambda: embed(images, weight, bias, pos_embed, cls_token), train=train,
                           leaves=(weight, bias, pos_embed, cls_token), grads=grad)

    return fb.Case(OP, impl, fields, build, backends=(backend,),
                   flops=fb.patch_embed_flops(B, C, resolution, P, E, pass_name),
                   bytes=fb.patch_embed_bytes(B, C, resolution, P, E, dtype.itemsize, pass_name), skip=reason)


def test_patch_embed(measure_group, settings, resolution, pass_name, dtype_name):
    cases = [make_case(settings, impl, resolution, pass_name, dtype_name) for impl in settings.impls[OP]]
    measure_group(op_group(OP, "patch", settings, cases, resolution, pass_name, dtype_name))
