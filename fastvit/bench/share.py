"""Attention's share of a model's time, measured inside the model.

During one extra, untimed run of a workload every attention call (softmax(q k^T) v, whichever
backend or library computes it) is timed, forward and, in a training step, backward, and the sum is
divided by the time of the whole run. fastvit's models are instrumented through the attention
registry; timm's and HF's models through ``torch.nn.functional.scaled_dot_product_attention``, which
both call. On a CPU the calls are timed with ``time.perf_counter`` (the work is synchronous); on CUDA
with CUDA events on the current stream. The projections around attention count as the rest of the
model, as in the op-level rows.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from fastvit.registry import registry


class Clock:
    """Sums the time of code run inside :meth:`span`; a span inside another (a fastvit backend
    calling torch's SDPA) is part of the outer one and not counted again."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._spans: list = []
        self._seconds = 0.0
        self._depth = 0

    @contextlib.contextmanager
    def span(self):
        self._depth += 1
        try:
            if self._depth > 1:
                yield
            else:
                with self._timed():
                    yield
        finally:
            self._depth -= 1

    @contextlib.contextmanager
    def _timed(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._spans.append((start, end))
        else:
            start = time.perf_counter()
            yield
            self._seconds += time.perf_counter() - start

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            self._seconds += sum(s.elapsed_time(e) / 1e3 for s, e in self._spans)
            self._spans.clear()
        return self._seconds


class _TimedCall(torch.autograd.Function):
    """Runs ``fn`` on ``tensors`` (the first ``n_args`` positional, the rest the keyword arguments
    ``tensor_kwargs`` names) in a span of the clock, and its backward in another."""

    @staticmethod
    def forward(ctx, clock: Clock, fn: Callable, n_args: int, tensor_kwargs: tuple, kwargs: dict, *tensors):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
        with clock.span(), torch.enable_grad():
            out = fn(*inputs[:n_args], **kwargs, **dict(zip(tensor_kwargs, inputs[n_args:])))
        ctx.clock, ctx.inputs, ctx.out = clock, inputs, out
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        wanted = [t for t in ctx.inputs if t.requires_grad]
        with ctx.clock.span():
            grads = iter(torch.autograd.grad(ctx.out, wanted, grad, allow_unused=True))
        return (None,) * 5 + tuple(next(grads) if t.requires_grad else None for t in ctx.inputs)


def timed(fn: Callable, clock: Clock) -> Callable:
    """``fn`` with every call (and, where gradients flow, its backward) timed by ``clock``. Tensors go
    through autograd, positional or keyword (an attention bias), so every gradient still reaches them."""
    def call(*args, **kwargs):
        tensor_kwargs = tuple(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        tensors = list(args) + [kwargs[k] for k in tensor_kwargs]
        if (torch.is_grad_enabled() and all(isinstance(a, torch.Tensor) for a in args)
                and any(t.requires_grad for t in tensors)):
            rest = {k: v for k, v in kwargs.items() if k not in tensor_kwargs}
            return _TimedCall.apply(clock, fn, len(args), tensor_kwargs, rest, *tensors)
        with clock.span():
            return fn(*args, **kwargs)
    return call


@contextlib.contextmanager
def attention_timed(clock: Clock):
    """Every attention call, of fastvit's backends and of torch's SDPA (timm, HF), timed by ``clock``."""
    sdpa = F.scaled_dot_product_attention
    with registry("attention").wrapped(lambda backend: timed(backend.fn, clock)):
        F.scaled_dot_product_attention = timed(sdpa, clock)
        try:
            yield
        finally:
            F.scaled_dot_product_attention = sdpa


def attention_share(step: Callable[[], Any], device, reset: Callable[[], None] | None = None,
                    repeats: int = 3) -> float | None:
    """Median over ``repeats`` runs of ``step`` of (time in attention) / (time of the run); None when no
    attention call was seen (a CNN)."""
    shares = []
    for _ in range(repeats):
        if reset is not None:
            reset()
        inner, whole = Clock(device), Clock(device)
        with attention_timed(inner), whole.span():
            step()
        total, attn = whole.seconds(), inner.seconds()
        if attn == 0.0:
            return None
        shares.append(attn / total)
    return statistics.median(shares)
