"""The whole ViT: images (B, 3, res, res) -> logits, with a dynamic-size model built for each resolution.

Work (fastvit.benchmark.vit_flops): 2 * MACs of every GEMM (patch embedding, qkv, proj, MLP, head)
plus attention's 4 * B * H * N^2 * D per block; a training step (forward + backward of
``logits.sum()``) counts 3x the forward. Units: ms and MiB.
"""
import torch

import fastvit
from fastvit import benchmark as fb
from fastvit.attention.sdpa import PINNED, sdpa_kernel_choice
from fastvit.backends import ATTENTION, NORM, PATCH

OP = "vit"


def make_case(settings, impl: str, vit_norm: str, vit_patch: str, resolution: int, pass_name: str,
              dtype_name: str) -> fb.Case:
    cfg, device, dtype = settings.cfg, settings.device, fb.DTYPES[dtype_name]
    backend, compiled = fb.split_impl(impl)
    B, H, D = settings.batch, cfg.num_heads, cfg.embed_dim // cfg.num_heads
    N = fb.num_tokens(resolution, cfg.patch_size)
    train = pass_name == "train"
    fields = dict(norm_backend=vit_norm, patch_backend=vit_patch, model=settings.model, resolution=resolution,
                  tokens=N, batch=B, heads=H, head_dim=D, depth=cfg.depth, embed_dim=cfg.embed_dim,
                  patch_size=cfg.patch_size, dtype=dtype_name, **{"pass": pass_name})
    reasons = []
    for registry, name, shape in ((ATTENTION, backend, {"head_dim": D}), (NORM, vit_norm, {"hidden": cfg.embed_dim}),
                                  (PATCH, vit_patch, {"patch_size": cfg.patch_size})):
        ok, reason = registry.availability(name, device, dtype, **shape)
        if not ok:
            reasons.append(f"{registry.op} backend {name!r}: {reason}")
    if resolution % cfg.patch_size:
        reasons.append(f"{resolution} px is not divisible by the patch size {cfg.patch_size}")

    def build() -> fb.Workload:
        with torch.device(device):  # parameters created and initialized on the device itself
            model = fastvit.create_model(settings.model, attn_backend=backend, img_size=resolution,
                                         dynamic_img_size=True, norm_backend=vit_norm, patch_backend=vit_patch)
        model = model.to(dtype)
        model.train(train)
        images = torch.randn(B, cfg.in_chans, resolution, resolution, device=device, dtype=dtype)
        forward = fb.maybe_compile(model, compiled)
        info = {}
        if backend == "sdpa" or backend in PINNED:
            q = torch.empty(B, H, N, D, device=device, dtype=dtype, requires_grad=train)
            info["sdpa_kernel"] = sdpa_kernel_choice(q, q, q) if backend == "sdpa" else backend

        if not train:
            def fn():
                with torch.no_grad():
                    return forward(images)
            return fb.Workload(fn, info=info)

        def step():
            forward(images).sum().backward()

        def reset():
            model.zero_grad(set_to_none=True)
        return fb.Workload(step, reset, info)

    # naive / sdpa-math: one block's scores and probabilities at a time in inference; a training
    # step keeps every block's probabilities for the backward
    matrices = B * H * N * N * dtype.itemsize * ((cfg.depth + 3) if train else 2)
    return fb.Case(OP, impl, fields, build, flops=fb.vit_flops(cfg, B, resolution, pass_name),
                   skip="; ".join(reasons) or None, matrix_bytes=matrices)


def test_vit(measure, settings, impl, vit_norm, vit_patch, resolution, pass_name, dtype_name):
    measure(make_case(settings, impl, vit_norm, vit_patch, resolution, pass_name, dtype_name))
