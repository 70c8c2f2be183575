"""``add_layer_norm`` and ``layer_norm``: the LayerNorm op's validated entry points."""
from __future__ import annotations

import torch

from fastvit.errors import DeviceError, DTypeError, ShapeError
from fastvit.ops.norm.registry import NORM

_ROUTES = NORM.routes  # (name, device, dtype, *shape) -> backend function: the hot path's table


def validate_norm(x, residual, weight, bias) -> None:
    """Raise the typed error for the first problem: x (and residual, of x's shape) floating tensors,
    weight and bias (or None) of shape (D,), all on one device. Dtypes may differ, as under
    ``torch.autocast``."""
    tensors = {"x": x, "residual": residual, "weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t is None and name in ("residual", "bias"):
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"layer norm: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise DTypeError(f"layer norm: {name} must be floating point, got dtype {t.dtype}")
        if t.device != x.device:
            raise DeviceError(f"layer norm: {name} is on {t.device}, x on {x.device}")
    if x.dim() < 1:
        raise ShapeError("layer norm: x must have at least one dim (..., D), got a 0-d tensor")
    if residual is not None and residual.shape != x.shape:
        raise ShapeError(f"layer norm: residual shape {tuple(residual.shape)} differs from x's {tuple(x.shape)}")
    D = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (D,):
            raise ShapeError(f"layer norm: {name} must have shape ({D},) to match x's hidden size, got {tuple(p.shape)}")


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                   bias: torch.Tensor | None, eps: float = 1e-6, *, backend: str | None = None):
    """``s = x + residual; y = LayerNorm(s)`` over the last dim with the selected norm backend.

    Args:
        x: (..., D) floating tensor.
        residual: None, or a tensor of x's shape (the residual stream); without it ``s`` is x.
        weight, bias: (D,) affine parameters (bias may be None).
        eps: added to the variance.
        backend: a registered norm backend; None follows ``use_backend(norm=...)``, then
            ``FASTVIT_NORM_BACKEND``, then ``torch``. Resolved on every call.

    Returns:
        (y, s).
    """
    # The hot path checks what a backend would not reject by itself: a residual that broadcasts, or
    # an integer one that promotes. The rest -- weight and bias shapes and dtypes, an integer x, the
    # operands' devices -- every backend refuses (F.layer_norm and the kernel check them), and the
    # full validation names it if the backend fails. Anything unusual gets the full validation first.
    try:
        shape = x.shape
        hidden = shape[-1]
        ok = residual is None or (residual.shape == shape and residual.dtype.is_floating_point)
    except (AttributeError, IndexError, TypeError):
        ok = False
    if not ok:
        validate_norm(x, residual, weight, bias)
        hidden = x.shape[-1]
    key = (NORM.selected() if backend is None else backend, x.device, x.dtype, hidden)
    fn = _ROUTES.get(key) or NORM.admit(key)  # NORM.route, inlined
    try:
        return fn(x, residual, weight, bias, eps)
    except Exception:
        validate_norm(x, residual, weight, bias)  # the typed error, if the inputs are at fault
        raise


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-6, *,
               backend: str | None = None) -> torch.Tensor:
    """LayerNorm over the last dim with the selected norm backend (``add_layer_norm`` without a residual)."""
    return add_layer_norm(x, None, weight, bias, eps, backend=backend)[0]
