"""What a benchmark times: a :class:`Workload` (the call, an untimed per-round reset) built by one
helper for every op and model, forward or training step, eager or under torch.compile."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from fastvit.bench.share import attention_share


@dataclass
class Workload:
    """What a case's ``build()`` returns: the call to time and an untimed per-round reset."""

    fn: Callable[[], Any]
    reset: Callable[[], None] | None = None
    info: dict = field(default_factory=dict)  # extra row fields known only once built (sdpa_kernel)
    share: Callable[[int], float | None] | None = None  # attention's share of fn's time: share(runs), runs of its own


def workload(call: Callable[[], Any], *, train: bool, leaves: Iterable[torch.Tensor] = (), grads=None,
             info: dict | None = None, share_on=None) -> Workload:
    """The forward (``call()`` under no_grad) or the training step (``call()`` then the backward of
    its outputs with ``grads``, or of their sum when None) of ``call``; a training step's reset
    clears the gradients of ``leaves`` (the tensors that receive them) before every round. With
    ``share_on`` (a device) the workload can also measure attention's share of its time."""
    info = dict(info or {})
    if not train:
        def forward():
            with torch.no_grad():
                return call()
        return _with_share(Workload(forward, info=info), share_on)

    leaves = list(leaves)

    def step():
        outputs = call()
        if grads is None:
            outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            loss = outs[0].sum()
            for o in outs[1:]:
                loss = loss + o.sum()
            loss.backward()
        else:
            torch.autograd.backward(outputs, grads)

    def reset():
        for t in leaves:
            t.grad = None
    return _with_share(Workload(step, reset, info), share_on)


def _with_share(work: Workload, device) -> Workload:
    if device is not None:
        work.share = lambda runs: attention_share(work.fn, device, work.reset, repeats=runs)
    return work


def maybe_compile(fn: Callable, compiled: bool) -> Callable:
    """``torch.compile(fn)`` for a ``+compile`` row, after clearing dynamo's caches and counters: each
    row compiles afresh (no recompile limit shared across rows silently running eager code) and
    :func:`compile_stats` then describes this row's compilation alone."""
    if not compiled:
        return fn
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    return torch.compile(fn)


def compile_stats() -> dict:
    """Graphs captured and graph breaks since the last :func:`maybe_compile`: a compiled row that broke
    its graph runs partly as eager PyTorch, and its row says so."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    return {"compile_graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "compile_graph_breaks": int(sum(breaks.values())),
            "compile_break_reasons": sorted({str(r).strip().splitlines()[0][:200] for r in breaks})}

