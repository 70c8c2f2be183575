"""Model-level equivalence: every backend's ViT against a float64 reference of the same weights.

The reference is the model in float64 with the naive attention, torch LayerNorm and conv patch
embedding. Each candidate runs the same weights and input in the requested precision with one op's
backend swapped; its logits are held to fastvit's tolerance rule (fastvit.testing). In low precision
the baseline is the all-reference configuration run in that precision with PyTorch's math SDPA.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from fastvit.devices import DTYPES, default_device
from fastvit.models import create_model
from fastvit.registry import registries
from fastvit.testing import BASELINE_ATTENTION, compare


@dataclass
class CheckResult:
    op: str
    backend: str
    status: str          # "pass", "fail", "skipped: <why>", "error: <why>"
    max_abs: float | None = None
    max_rel: float | None = None
    bound: float | None = None
    top1_agreement: float | None = None
    grad_max_abs: float | None = None
    grad_bound: float | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail" or self.status.startswith("error")


def _configure(model, **chosen):
    """Every op on its reference backend, except those in ``chosen``."""
    for op, reg in registries().items():
        model.set_backend(op, chosen.get(op, reg.reference.name))
    return model


def _run(model, images, backward: bool):
    if not backward:
        with torch.no_grad():
            return model(images), None
    model.zero_grad(set_to_none=True)
    images = images.detach().requires_grad_(True)
    logits = model(images)
    logits.float().square().sum().backward()
    return logits.detach(), images.grad.detach()


def run_check(model_name: str = "vit_small_patch16_224", *, backends: dict[str, list[str]] | None = None,
              dtype: str = "fp32", device: str | None = None, batch: int = 4, img_size: int | None = None,
              backward: bool = False, seed: int = 0) -> list[CheckResult]:
    """Compare each backend's logits (and, with ``backward``, input gradients) with the reference.

    Args:
        model_name: preset name.
        backends: ``{op: [backend, ...]}`` (ops: attention, norm, patch); an op left out is checked
            with every registered backend; a backend named explicitly that cannot run is a failure,
            one picked by default that cannot run is reported as skipped.
        dtype: "fp32", "bf16" or "fp16".
        device: "cpu" or "cuda" (default: CUDA when present).
        backward: also compare the gradient of sum(logits^2) with respect to the images.
    """
    device = str(device or default_device())
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    torch.manual_seed(seed)
    base = create_model(model_name, img_size=img_size).eval()
    # Sharper attention than the default initialisation gives, so backends differ where it matters.
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.endswith("qkv.weight"):
                p.mul_(4.0)
    images = torch.randn(batch, base.cfg.in_chans, *base.cfg.img_size)

    ref_model = _configure(copy.deepcopy(base).double().to(device))
    ref_logits, ref_grad = _run(ref_model, images.double().to(device), backward)
    low = torch_dtype != torch.float32
    baseline_logits = baseline_grad = None
    if low:
        bmodel = _configure(copy.deepcopy(base).to(device, torch_dtype), attention=BASELINE_ATTENTION)
        baseline_logits, baseline_grad = _run(bmodel, images.to(device, torch_dtype), backward)
    naive = _configure(copy.deepcopy(base).to(device, torch_dtype))
    naive_top1 = _run(naive, images.to(device, torch_dtype), False)[0].argmax(-1)

    results = []
    for op, registry in registries().items():
        names = (backends or {}).get(op)
        explicit = names is not None
        for name in (names if explicit else registry.names()):
            if not base.op_shapes().get(op):
                results.append(CheckResult(op, name, f"skipped: {model_name} makes no {op} call"))
                continue
            try:
                ok, reason = base.backend_availability(op, name, device, torch_dtype, train=backward)
            except Exception as err:  # an unknown name is reported, not raised, in a sweep of checks
                results.append(CheckResult(op, name, f"error: {err}"))
                continue
            if not ok:
                results.append(CheckResult(op, name, f"error: {reason}" if explicit else f"skipped: {reason}"))
                continue
            model = _configure(copy.deepcopy(base).to(device, torch_dtype), **{op: name})
            try:
                logits, grad = _run(model, images.to(device, torch_dtype), backward)
            except Exception as err:  # reported per backend; the sweep goes on
                results.append(CheckResult(op, name, f"error: {type(err).__name__}: {err}"))
                continue
            cmp = compare(logits, ref_logits, baseline=baseline_logits, dtype=torch_dtype)
            res = CheckResult(op, name, "pass" if cmp.ok else "fail", cmp.max_abs, cmp.max_rel, cmp.bound,
                              (logits.argmax(-1) == naive_top1).float().mean().item())
            if not low and res.top1_agreement < 1.0:
                res.status = "fail"
            if backward:
                gcmp = compare(grad, ref_grad, baseline=baseline_grad, dtype=torch_dtype)
                res.grad_max_abs, res.grad_bound = gcmp.max_abs, gcmp.bound
                if not gcmp.ok:
                    res.status = "fail"
            results.append(res)
    return results


def results_as_dicts(results: list[CheckResult]) -> list[dict]:
    return [asdict(r) for r in results]
