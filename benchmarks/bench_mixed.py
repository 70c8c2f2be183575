"""Mixed-resolution batches: one seeded list of images of many sizes and aspect ratios through a ViT
or DeiT, three ways, on the same images and the same weights (fastvit.bench.mixed):

* ``padded``: ``model.forward_padded(images)``, one batch padded to the longest sequence with a -inf
  key mask; the baseline;
* ``bucketed``: the images sorted by token count and cut into ``buckets`` buckets (4 by default), one
  ``forward_padded`` per bucket, all buckets in one timed call;
* ``packed``: ``model.forward_packed(images)``, one sequence, attention within each image.

``test_mixed``: one comparison group per model preset, attention backend, pass and dtype, the three
ways (and the A/A twin of ``padded``) timed in interleaved rounds. A way the backend cannot run is a
skipped row with the registry's reason (padding needs an additive attention bias, packing a backend
that takes packed sequences). The images (their count, sides, aspect ratios, seed and buckets) and the
presets are per-device defaults (fastvit.bench.defaults: on CPU ViT-Ti/16 and 8 images of 224-512 px,
on CUDA ViT-B/16 and DeiT-B/16 and 16 images of 224-768 px); ``--model`` picks other ViT and DeiT
presets, ``--attn-backend`` the backends (on CPU ``sdpa`` by default, as for whole models); the
``--resolutions`` and ``--batch-size`` of the other groups do not apply.

Rows: latency rounds and measured peak memory, as every group's; the padded-token fraction; the
images' own tokens and the tokens processed; attention's FLOPs (4·H·D per query-key pair and block,
3.5x for a training step: the padded ways pay for every pair of their padded sequences); the images
(``image_sizes``) and the seed. A training step is the backward of the sum of the logits (of every
bucket) through the same images.
"""
import functools

import torch

import fastvit
from fastvit import bench as fb
from fastvit.devices import DTYPES
from fastvit.errors import FastViTError
from fastvit.models import get_preset
from fastvit.registry import registry

OP = "mixed"


def _availability(settings, meta, name: str, way: str, train: bool, dtype) -> str | None:
    """Why backend ``name`` cannot run ``way`` here (the registry's reason), or None."""
    reg = registry("attention")
    for shape in meta.op_shapes()["attention"]:
        ok, reason = reg.availability(name, settings.device, dtype, **shape, grad=train,
                                      **({"packed": True} if way == "packed" else {"bias": True}))
        if not ok:
            return f"attention backend {name!r}: {reason}"
    for op, backend in (("norm", settings.vit_norm[0]), ("patch", settings.vit_patch[0])):
        ok, reason = meta.backend_availability(op, backend, settings.device, dtype, train=train)
        if not ok:
            return f"{op} backend {backend!r}: {reason}"
    return None


def _matrices(work: fb.MixedWork, counts: list, way: str, heads: int, depth: int, train: bool,
              itemsize: int) -> float:
    """Bytes of the score and probability matrices a materializing backend holds: one bucket's in
    inference (buckets run one after another; one block at a time), every bucket's every block for a
    training step's backward; the packed way as one T x T matrix (naive's block-diagonal bias)."""
    if way == "packed":
        pairs = work.real_tokens ** 2
    else:
        per = [len(g) * max(counts[i] for i in g) ** 2 for g in work.groups]
        pairs = sum(per) if train else max(per)
    return float(pairs * heads * itemsize * ((depth + 3) if train else 2))


def make_case(settings, model_name: str, impl: str, way: str, pass_name: str, dtype_name: str, inputs) -> fb.Case:
    """One way of one group; ``inputs()`` gives the group's model and images (built once, shared)."""
    device, dtype, train = settings.device, DTYPES[dtype_name], pass_name == "train"
    spec = settings.mixed
    with torch.device("meta"):
        meta = fastvit.create_model(model_name)
    cfg = meta.cfg
    sizes = spec.sizes(cfg.patch_size)
    counts = fb.token_counts(sizes, cfg.patch_size, meta.num_prefix_tokens)
    work = fb.mixed_work(counts, way, spec.buckets)
    heads, head_dim = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    fields = dict(model=model_name, family=get_preset(model_name).family.name, library="fastvit", way=way,
                  resolution=None, tokens=None, batch=spec.count, images=spec.count, seed=spec.seed,
                  min_side=spec.min_side, max_side=spec.max_side, max_aspect=spec.max_aspect,
                  buckets=len(work.groups) if way == "bucketed" else None, sequences=len(work.groups),
                  image_sizes=[list(s) for s in sizes], real_tokens=work.real_tokens,
                  processed_tokens=work.processed_tokens, padded_fraction=work.padded_fraction,
                  attention_flops=work.attention_flops(heads, head_dim, cfg.depth, pass_name),
                  heads=heads, head_dim=head_dim, depth=cfg.depth, patch_size=cfg.patch_size,
                  params=sum(p.numel() for p in meta.parameters()), norm_backend=settings.vit_norm[0],
                  patch_backend=settings.vit_patch[0], dtype=dtype_name, **{"pass": pass_name})
    try:
        reason = _availability(settings, meta, impl, way, train, dtype)
    except FastViTError as err:
        reason = str(err)

    def build() -> fb.Workload:
        model, images = inputs()
        if way == "padded":
            call = functools.partial(model.forward_padded, images)
        elif way == "bucketed":
            parts = [[images[i] for i in g] for g in work.groups]
            call = lambda: [model.forward_padded(p) for p in parts]  # noqa: E731
        else:
            call = functools.partial(model.forward_packed, images)
        return fb.workload(call, train=train, leaves=list(model.parameters()))

    case = fb.Case(OP, impl, fields, build, backends=(registry("attention").get(impl),), skip=reason,
                   matrix_bytes=_matrices(work, counts, way, heads, cfg.depth, train, dtype.itemsize))
    case.member = way
    case.baseline = fb.WAYS[0]
    return case


def mixed_group(settings, model_name: str, impl: str, pass_name: str, dtype_name: str) -> fb.Group:
    """The three ways of running the sweep's mixed-resolution images through one model on one attention
    backend, each compared against ``padded``; the A/A twin of ``padded`` unless ``--no-aa``."""
    device, dtype, train = settings.device, DTYPES[dtype_name], pass_name == "train"

    @functools.cache
    def inputs():
        with torch.device(device):  # parameters created and initialized on the device itself
            model = fastvit.create_model(model_name, attn_backend=impl, norm_backend=settings.vit_norm[0],
                                         patch_backend=settings.vit_patch[0])
        model = model.to(dtype).train(train)
        return model, settings.mixed.images(model.cfg.patch_size, device, dtype)

    cases = [make_case(settings, model_name, impl, way, pass_name, dtype_name, inputs) for way in fb.WAYS]
    key = {"model": model_name, "backend": impl, "images": settings.mixed.count, "dtype": dtype_name,
           "pass": pass_name}
    return fb.Group(OP, key, cases, twin=fb.WAYS[0] if settings.twin else None, time_budget=settings.model_time_budget)


def test_mixed(measure_group, settings, mixed_model, mixed_backend, pass_name, dtype_name):
    measure_group(mixed_group(settings, mixed_model, mixed_backend, pass_name, dtype_name))
