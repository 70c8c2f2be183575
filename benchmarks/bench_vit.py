"""The whole ViT: images (B, 3, res, res) -> logits, with a dynamic-size model built for each resolution.

Work (fastvit.bench.vit_flops): 2 * MACs of every GEMM (patch embedding, qkv, proj, MLP, head)
plus attention's 4 * B * H * N^2 * D per block; a training step (forward + backward of
``logits.sum()``) counts 3x the forward. Units: ms and MiB.
"""
import torch

import fastvit
from fastvit import bench as fb
from fastvit.devices import DTYPES
from fastvit.registry import registry

from _workloads import kernel_info

OP = "vit"


def make_case(settings, impl: str, vit_norm: str, vit_patch: str, resolution: int, pass_name: str,
              dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, DTYPES[dtype_name]
    name, compiled = fb.split_impl(impl)
    B, H, D = settings.batch, cfg.num_heads, cfg.embed_dim // cfg.num_heads
    N = fb.num_tokens(resolution, cfg.patch_size)
    train = pass_name == "train"
    fields = dict(norm_backend=vit_norm, patch_backend=vit_patch, model=settings.model, resolution=resolution,
                  tokens=N, batch=B, heads=H, head_dim=D, depth=cfg.depth, embed_dim=cfg.embed_dim,
                  patch_size=cfg.patch_size, dtype=dtype_name, **{"pass": pass_name})
    chosen = {"attention": name, "norm": vit_norm, "patch": vit_patch}
    with torch.device("meta"):  # the op shapes of the model, without allocating it
        shapes = fastvit.create_model(settings.model, img_size=resolution, dynamic_img_size=True).op_shapes()
    reasons = []
    for op, backend in chosen.items():
        for shape in shapes.get(op, []):
            ok, reason = registry(op).availability(backend, device, dtype, **shape)
            if not ok:
                reasons.append(f"{op} backend {backend!r}: {reason}")
                break
    if resolution % cfg.patch_size:
        reasons.append(f"{resolution} px is not divisible by the patch size {cfg.patch_size}")
    backends = tuple(registry(op).get(b) for op, b in chosen.items())

    def build() -> fb.Workload:
        with torch.device(device):  # parameters created and initialized on the device itself
            model = fastvit.create_model(settings.model, attn_backend=name, img_size=resolution,
                                         dynamic_img_size=True, norm_backend=vit_norm, patch_backend=vit_patch)
        model = model.to(dtype).train(train)
        images = torch.randn(B, cfg.in_chans, resolution, resolution, device=device, dtype=dtype)
        forward = fb.maybe_compile(model, compiled)
        q = torch.empty(B, H, N, D, device=device, dtype=dtype, requires_grad=train)
        return fb.workload(lambda: forward(images), train=train, leaves=list(model.parameters()),
                           info=kernel_info(backends[0], q, q, q))

    # backends holding N x N matrices: one block's scores and probabilities at a time in inference; a
    # training step keeps every block's probabilities for the backward
    matrices = B * H * N * N * dtype.itemsize * ((cfg.depth + 3) if train else 2)
    return fb.Case(OP, impl, fields, build, backends=backends, flops=fb.vit_flops(cfg, B, resolution, pass_name),
                   skip="; ".join(reasons) or None, matrix_bytes=matrices)


def test_vit(measure, settings, impl, vit_norm, vit_patch, resolution, pass_name, dtype_name):
    measure(make_case(settings, impl, vit_norm, vit_patch, resolution, pass_name, dtype_name))
