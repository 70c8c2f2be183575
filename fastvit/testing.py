"""The one tolerance rule fastvit holds every implementation to.

An implementation's output ``out`` is compared with a float64 reference ``ref``:

* float32 (and float64): ``max|out - ref| <= FP32_ATOL * max(1, max|ref|)`` -- a tight absolute
  bound, scaled only when the reference itself is large (gradients summed over many tokens).
* float16 / bfloat16: ``max|out - ref| <= 2 * max|baseline - ref| + LOWP_ATOL[dtype]``, where
  ``baseline`` is PyTorch's own math implementation run in that same low precision. An
  implementation may be at most twice as wrong as PyTorch itself, plus a small slack of one
  machine epsilon of the dtype for when the baseline happens to be exact.

Tests, the ``fastvit check`` command and the benchmarks' sanity checks all call :func:`compare`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FP32_ATOL = 2e-5
BASELINE_ATTENTION = "sdpa-math"  # PyTorch's own math attention: the low-precision baseline of the rule
LOWP_FACTOR = 2.0
LOWP_ATOL = {
    torch.float16: torch.finfo(torch.float16).eps,   # 9.8e-4
    torch.bfloat16: torch.finfo(torch.bfloat16).eps,  # 7.8e-3
}


@dataclass
class Comparison:
    """Outcome of one comparison against a float64 reference."""

    ok: bool
    max_abs: float
    max_rel: float
    bound: float
    worst_index: tuple
    worst_out: float
    worst_ref: float
    rule: str
    # max_rel is normwise: max|out - ref| / max|ref|. Element-wise ratios blow up at reference
    # values near zero (logits, gradients) and say nothing about the implementation.

    def describe(self, name: str = "output") -> str:
        verdict = "within" if self.ok else "EXCEEDS"
        return (
            f"{name}: max abs error {self.max_abs:.3e} {verdict} bound {self.bound:.3e} ({self.rule}); "
            f"max rel error {self.max_rel:.3e}; worst at index {self.worst_index}: "
            f"got {self.worst_out:.6g}, reference {self.worst_ref:.6g}"
        )


def is_low_precision(dtype: torch.dtype) -> bool:
    return dtype in LOWP_ATOL


def compare(out: torch.Tensor, ref: torch.Tensor, *, baseline: torch.Tensor | None = None,
            dtype: torch.dtype | None = None) -> Comparison:
    """Compare ``out`` with the float64 reference ``ref`` under fastvit's tolerance rule.

    Args:
        out: the implementation's result, in the precision it ran in.
        ref: the reference result computed in float64 from the same inputs.
        baseline: PyTorch's math implementation in the same low precision; required when the
            precision (``dtype`` or ``out.dtype``) is float16 or bfloat16.
        dtype: the precision the implementation ran in; defaults to ``out.dtype``.
    """
    dtype = dtype or out.dtype
    if out.shape != ref.shape:
        raise ValueError(f"shape mismatch: output {tuple(out.shape)} vs reference {tuple(ref.shape)}")
    ref64 = ref.detach().to(torch.float64)
    diff = (out.detach().to(torch.float64) - ref64).abs()
    # NaN anywhere must fail: treat it as an infinite error.
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    if is_low_precision(dtype):
        if baseline is None:
            raise ValueError(f"a {dtype} comparison needs the math baseline run in {dtype}")
        base_err = (baseline.detach().to(torch.float64) - ref64).abs().max().item() if ref.numel() else 0.0
        bound = LOWP_FACTOR * base_err + LOWP_ATOL[dtype]
        rule = f"{LOWP_FACTOR:g} x torch math error {base_err:.3e} + atol {LOWP_ATOL[dtype]:.1e}"
    else:
        scale = max(1.0, ref64.abs().max().item()) if ref.numel() else 1.0
        bound = FP32_ATOL * scale
        rule = f"fp32 atol {FP32_ATOL:g} x scale {scale:.3g}"
    if diff.numel() == 0:
        return Comparison(True, 0.0, 0.0, bound, (), 0.0, 0.0, rule)
    flat = int(diff.argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    max_abs = diff.reshape(-1)[flat].item()
    ref_scale = ref64.abs().max().item()
    return Comparison(
        ok=max_abs <= bound,
        max_abs=max_abs,
        max_rel=(max_abs / ref_scale) if ref_scale > 0 else (0.0 if max_abs == 0 else float("inf")),
        bound=bound,
        worst_index=idx,
        worst_out=out.detach().reshape(-1)[flat].item(),
        worst_ref=ref64.reshape(-1)[flat].item(),
        rule=rule,
    )


def assert_close(out: torch.Tensor, ref: torch.Tensor, *, baseline: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None, name: str = "output") -> Comparison:
    """:func:`compare`, raising AssertionError with the worst element when the rule is broken."""
    result = compare(out, ref, baseline=baseline, dtype=dtype)
    if not result.ok:
        raise AssertionError(result.describe(name))
    return result
