"""Whole models: images (B, 3, res, res) -> logits, a model built for each resolution.

``test_models``: one comparison group per size and pass holding every model of the sweep, timed in
interleaved rounds: every preset of ``--model`` (any family: ViT, DeiT, Swin, PiT) with each attention
backend (and ``+compile`` builds), with ``--peers`` timm's, HF transformers' and (ViT, Swin)
torchvision's builds of the same preset with the same weights, running their own attention, and CNN
baselines from torchvision. Each member is compared against its preset's fastvit build on the default
backend (a compiled build against its eager self); those, and the CNNs, against the first preset's:
the architecture ratio.
Rows carry the model, its family, the library and the parameter count, and attention's share of the
time measured inside the model (fastvit.bench.share).

Work (fastvit.bench.model_flops): FLOPs counted over the model's forward (and backward, for a
training step of ``logits.sum()``) on the meta device; the same count for every library's build of
one architecture. Units: ms and MiB.
"""
import torch

import fastvit
from fastvit import bench as fb
from fastvit.bench import peers
from fastvit.bench.peers import CNNS, LIBRARIES
from fastvit.devices import DTYPES
from fastvit.errors import FastViTError
from fastvit.models import get_preset
from fastvit.registry import registry

from _workloads import kernel_info

OP = "model"


def _fields(settings, model, family, library, resolution, pass_name, dtype_name, params, **extra):
    return dict(model=model, family=family, library=library, resolution=resolution, batch=settings.batch,
                params=params, dtype=dtype_name, **extra, **{"pass": pass_name})


def _matrices(cfg, batch, tokens, train, itemsize) -> float | None:
    """Bytes of the N x N matrices a materializing attention backend holds in a global-attention model:
    one block's scores and probabilities at a time in inference, every block's probabilities for a
    training step's backward. None for windowed or pooled attention (Swin, PiT), whose matrices are small."""
    if not hasattr(cfg, "depth") or not isinstance(cfg.depth, int) or not hasattr(cfg, "grid_size"):
        return None
    return batch * cfg.num_heads * tokens * tokens * itemsize * ((cfg.depth + 3) if train else 2)


def make_case(settings, model_name: str, source: tuple, vit_norm: str, vit_patch: str, resolution: int,
              pass_name: str, dtype_name: str) -> fb.Case:
    library, impl = source
    device, dtype, train = settings.device, DTYPES[dtype_name], pass_name == "train"
    family = get_preset(model_name).family.name
    name, compiled = fb.split_impl(impl) if library == "fastvit" else (None, False)
    backends = {"attention": name, "norm": vit_norm, "patch": vit_patch} if library == "fastvit" else {}
    reasons = []
    try:  # on the meta device: the model's shapes, without allocating it
        with torch.device("meta"):
            meta = fastvit.create_model(model_name, img_size=resolution)
        shapes, cfg, params = meta.op_shapes(), meta.cfg, sum(p.numel() for p in meta.parameters())
    except FastViTError as err:
        shapes, cfg, params = {}, None, None
        reasons.append(f"{model_name} at {resolution} px: {err}")
    for op, backend in backends.items():
        if op in shapes:
            ok, reason = meta.backend_availability(op, backend, device, dtype, train=train)
            if not ok:
                reasons.append(f"{op} backend {backend!r}: {reason}")
    if library != "fastvit" and cfg is not None:
        reasons.append(peers.unavailable(library, family) or "")
    reasons = [r for r in reasons if r]
    tokens = cfg.num_tokens if cfg is not None and hasattr(cfg, "num_tokens") else None
    extra = dict(tokens=tokens, norm_backend=vit_norm if library == "fastvit" else None,
                 patch_backend=vit_patch if library == "fastvit" else None)
    if cfg is not None:
        extra.update(patch_size=cfg.patch_size)
        for field, value in (("heads", getattr(cfg, "num_heads", None)), ("depth", getattr(cfg, "depth", None))):
            if isinstance(value, int):  # one value for the whole model (hierarchical models have one per stage)
                extra[field] = value
    fields = _fields(settings, model_name, family, library, resolution, pass_name, dtype_name, params, **extra)
    label = impl if library == "fastvit" else library

    def build() -> fb.Workload:
        with torch.device(device):  # parameters created and initialized on the device itself
            model = fastvit.create_model(model_name, img_size=resolution, attn_backend=name,
                                         norm_backend=vit_norm, patch_backend=vit_patch)
        if library == "fastvit":
            net, info = model, {}
            if "attention" in shapes:  # the kernel SDPA picks for the model's (first) attention shape
                D = shapes["attention"][0]["head_dim"]
                H, N = (cfg.num_heads, tokens) if tokens else (1, 64)
                q = torch.empty(settings.batch, H, N, D, device=device, dtype=dtype, requires_grad=train)
                info = kernel_info(registry("attention").get(name), q, q, q)
        else:
            peer = peers.build(library, model_name, model)
            net, info = peer.module.to(device), {"attention_impl": peer.attention}
        net = net.to(dtype).train(train)
        images = torch.randn(settings.batch, 3, resolution, resolution, device=device, dtype=dtype)
        forward = fb.maybe_compile(net, compiled)
        return fb.workload(lambda: forward(images), train=train, leaves=list(net.parameters()), info=info,
                           share_on=None if compiled else device)

    flops = None
    if cfg is not None and not reasons:
        flops = fb.model_flops(lambda: fastvit.create_model(model_name, img_size=resolution),
                               (settings.batch, 3, resolution, resolution), pass_name)
    used = tuple(registry(op).get(b) for op, b in backends.items())
    return fb.Case(OP, label, fields, build, backends=used, flops=flops, skip="; ".join(reasons) or None,
                   matrix_bytes=_matrices(cfg, settings.batch, tokens, train, dtype.itemsize) if tokens else None)


def make_cnn_case(settings, cnn: str, resolution: int, pass_name: str, dtype_name: str) -> fb.Case:
    device, dtype, train = settings.device, DTYPES[dtype_name], pass_name == "train"
    ok, reason = peers.available("torchvision")
    params = None
    if ok:
        with torch.device("meta"):
            params = sum(p.numel() for p in peers.build_cnn(cnn).module.parameters())
    fields = _fields(settings, cnn, "cnn", "torchvision", resolution, pass_name, dtype_name, params)

    def build() -> fb.Workload:
        with torch.device(device):
            net = peers.build_cnn(cnn).module
        net = net.to(dtype).train(train)
        images = torch.randn(settings.batch, 3, resolution, resolution, device=device, dtype=dtype)
        return fb.workload(lambda: net(images), train=train, leaves=list(net.parameters()),
                           info={"attention_impl": "none"})

    flops = fb.model_flops(lambda: peers.build_cnn(cnn).module, (settings.batch, 3, resolution, resolution),
                           pass_name) if ok else None
    return fb.Case(OP, "torchvision", fields, build, flops=flops, skip=None if ok else reason)


def member_label(model: str, library: str, impl: str | None = None, norm: str | None = None,
                 patch: str | None = None) -> str:
    """A model's label in its group: ``"<model> fastvit <impl>[ norm=..][ patch=..]"`` or ``"<model> <library>"``."""
    if library != "fastvit":
        return f"{model} {library}"
    extra = "".join(f" {k}={v}" for k, v in (("norm", norm), ("patch", patch)) if v is not None)
    return f"{model} fastvit {impl}{extra}"


def model_group(settings, resolution: int, pass_name: str, dtype_name: str) -> fb.Group:
    """Every whole model of the sweep at one size and pass, with the baseline each is compared against;
    the peers' builds of the presets in ``settings.peer_models``, the CNNs with ``--peers``."""
    eager = [i for i in settings.impls[OP] if not fb.split_impl(i)[1]]
    default = registry("attention").default if registry("attention").default in eager else eager[0]
    norm0, patch0 = settings.vit_norm[0], settings.vit_patch[0]

    def label(model, impl, norm, patch):  # the default norm and patch backends go unnamed
        return member_label(model, "fastvit", impl, None if norm == norm0 else norm, None if patch == patch0 else patch)

    anchor = label(settings.models[0], default, norm0, patch0)
    cases = []
    for model in settings.models:
        own = label(model, default, norm0, patch0)
        impls = list(settings.impls[OP])
        if model == settings.model and resolution in settings.compile_at:  # the default compiled builds
            impls += [f"{i}+compile" for i in eager]
        for impl in impls:
            name, compiled = fb.split_impl(impl)
            for norm in settings.vit_norm:
                for patch in settings.vit_patch:
                    case = make_case(settings, model, ("fastvit", impl), norm, patch, resolution, pass_name, dtype_name)
                    case.member = label(model, impl, norm, patch)
                    case.baseline = (label(model, name, norm, patch) if compiled
                                     else anchor if case.member == own else own)
                    cases.append(case)
        for library in (LIBRARIES if settings.peers and model in (settings.peer_models or settings.models) else ()):
            case = make_case(settings, model, (library, library), norm0, patch0, resolution, pass_name, dtype_name)
            case.member, case.baseline = member_label(model, library), own
            cases.append(case)
    for cnn in (CNNS if settings.peers else ()):
        case = make_cnn_case(settings, cnn, resolution, pass_name, dtype_name)
        case.member, case.baseline = member_label(cnn, "torchvision"), anchor
        cases.append(case)
    key = {"resolution": resolution, "batch": settings.batch, "dtype": dtype_name, "pass": pass_name}
    return fb.Group(OP, key, cases, twin=anchor if settings.twin else None, time_budget=settings.model_time_budget)


def test_models(measure_group, settings, resolution, pass_name, dtype_name):
    measure_group(model_group(settings, resolution, pass_name, dtype_name))
