"""``flex``: PyTorch's FlexAttention (``torch.nn.attention.flex_attention``), whose kernels inductor
generates for each shape: Triton on CUDA, C++ on CPU. The peer of fastvit's own Triton kernel.

What reaches flex_attention:

* No bias: ``flex_attention(q, k, v, scale=scale)``.
* An additive bias of any rank 0 to 4 (Swin's relative position bias with its shift mask, a
  key-padding vector): a ``score_mod`` adding ``table[b, h, q_idx, kv_idx]`` to the scaled score,
  where ``table`` is a 4-D view of the bias's distinct elements (leading dims of size 1 added, stride-0
  dims cut to size 1, index 0 read along every dim of size 1) captured as a tensor: nothing of size
  (B, H, N, N) is made, and on CUDA its gradient comes back in the bias's own shape.
* Packed sequences (a Packing): a document mask, a BlockMask whose ``mask_mod`` keeps the pairs of
  one sequence (``seq_ids[q_idx] == seq_ids[kv_idx]``), so key blocks of other sequences are skipped,
  not computed. ``create_block_mask`` builds it on the packing's device from ``packing.seq_ids``
  (it evaluates the mask on the T x T pairs once; nothing is read back to the host); it is
  remembered per (lengths, device), so a model's blocks and later calls on packings of the same
  lengths reuse it. Under an outer torch.compile it is built inside the caller's graph instead.

A fully masked row (a query whose every score is -inf) gives 0 and no NaN: measured on CPU (forward),
and by construction on CUDA (flex's backward template turns a row's log-sum-exp of -inf into 0, so
the row's probabilities and every gradient it adds are 0; read from torch 2.13's template, not run
here).

Compilation. flex_attention is fused only when compiled (called eagerly it warns and runs an unfused
reference). Outside torch.compile the backend calls a ``torch.compile``'d function (fullgraph,
static shapes), one per call signature: shapes, strides, dtype and device of q, k, v, the bias
table's layout, the packed length, the scale and whether gradients are recorded. Each is a copy of
one function with a code object of its own, so dynamo's limit of 8 compilations per code object
never sends a ninth signature to the eager path (tests/test_attention.py checks that a second call
at a signature compiles nothing). The first call at a new signature compiles: about 5 s on 2 CPU
cores (the C++ compiler), less on CUDA; the ``compiles`` trait tells the sweep to warm each member
up before its timed rounds. Inside an outer torch.compile, flex_attention is traced into the
caller's graph and compiled with it (no graph break).

Limits:

* CPU: forward only. torch 2.13 has no CPU backward for flex_attention (NotImplementedError). A bias
  that needs its gradient (``bias=TRAINED``) is refused at admission; q, k or v that require grad in
  grad mode are not in the registry's route key, so that call raises BackendError when it is made,
  before anything runs (the availability check's ``grad=True`` keyword predicts it). On CPU flex
  runs float32, bfloat16 and float16 (not float64), needs AVX2 and a C++ compiler (``$CXX`` or g++).
* No attention dropout (BackendError).
* The kernel audit (kernels/audit) compiles fastvit's own Triton kernels ahead of time; flex's
  kernels do not exist until inductor generates them for a shape at run time, so the audit has
  nothing of flex's to compile (see kernels/audit's docstring).
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import types

import torch

from fastvit.errors import BackendError
from fastvit.ops.attention.registry import TRAINED, register

_CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_NO_CPU_BACKWARD = (f"flex_attention has no CPU backward in torch {torch.__version__.split('+')[0]} "
                    "(inference only): call it under torch.no_grad() or train with another backend")
_MAX_COMPILED = 256  # compiled signatures kept; a full table starts afresh (a recompile hits inductor's cache)
_MAX_MASKS = 64      # block masks kept, by (lengths, device)


@functools.lru_cache(maxsize=None)
def _import_error() -> str:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except Exception as err:  # an import failure of any kind makes the backend unavailable
        return f"torch.nn.attention.flex_attention is not importable ({type(err).__name__}: {err})"
    return ""


@functools.lru_cache(maxsize=None)
def _cpu_refusal() -> str:
    """Why inductor cannot generate flex's CPU kernels here, or "" (its own conditions, and a compiler)."""
    if sys.platform == "darwin":
        return "flex_attention's compiled CPU kernels are not supported on macOS"
    avx2 = getattr(torch.cpu, "_is_avx2_supported", lambda: True)()
    if not avx2 or os.environ.get("ATEN_CPU_CAPABILITY") == "default":
        return "flex_attention's compiled CPU kernels need AVX2 (and ATEN_CPU_CAPABILITY other than 'default')"
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        return f"torch.compile on CPU needs a C++ compiler: {cxx!r} is not on PATH (set CXX)"
    return ""


def _check(device, dtype, bias=False, grad=False, **shape):
    """Availability; ``grad``: q, k or v need gradients (a training call), refused on CPU."""
    err = _import_error()
    if err:
        return False, err
    if device.type == "cuda":
        return (True, "") if torch.cuda.is_available() else (False, "CUDA is not available")
    if device.type != "cpu":
        return False, f"flex_attention runs on CPU and CUDA tensors here, not {device.type}"
    why = _cpu_refusal()
    if why:
        return False, why
    if dtype not in _CPU_DTYPES:
        return False, f"flex_attention's CPU kernels take float32, bfloat16 and float16, not {dtype}"
    if bias == TRAINED:
        return False, f"a bias that needs its gradient: {_NO_CPU_BACKWARD}"
    if grad:
        return False, f"q, k and v need gradients: {_NO_CPU_BACKWARD}"
    return True, ""


def _flex(q, k, v, table, block_mask, scale):
    """flex_attention with ``table`` (4-D, size 1 where it broadcasts) added to the scaled scores and
    ``block_mask`` (None: no mask): the function each compiled signature holds."""
    from torch.nn.attention.flex_attention import flex_attention as torch_flex_attention

    score_mod = None
    if table is not None:
        keep = tuple(n != 1 for n in table.shape)  # static: read at trace time

        def score_mod(score, b, h, q_idx, kv_idx):
            i = [x if kept else 0 for x, kept in zip((b, h, q_idx, kv_idx), keep)]
            return score + table[i[0], i[1], i[2], i[3]]

    return torch_flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


_COMPILED: dict[tuple, object] = {}  # call signature -> its compiled copy of _flex


def _compiled(key: tuple):
    """A torch.compile'd copy of :func:`_flex` for signature ``key``, with a code object of its own
    (dynamo keeps its compilations, and counts them against its limit, per code object)."""
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    fn = types.FunctionType(_flex.__code__.replace(), _flex.__globals__, _flex.__name__)
    _COMPILED[key] = compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    return compiled


def _table(bias: torch.Tensor) -> torch.Tensor:
    """The bias's distinct elements as a 4-D view: leading dims of size 1, stride-0 dims cut to one."""
    if bias.dim() == 4 and 0 not in bias.stride():  # the common case, without making views (4 us)
        return bias
    z = bias[(None,) * (4 - bias.dim())]
    return z[tuple(slice(0, 1) if z.stride(i) == 0 else slice(None) for i in range(4))]


def _document_mask(seq_ids: torch.Tensor, total: int):
    """The packing's BlockMask: (q, kv) kept where both tokens are of one sequence."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_sequence(b, h, q_idx, kv_idx):
        return seq_ids[q_idx] == seq_ids[kv_idx]

    return create_block_mask(same_sequence, None, None, total, total, device=seq_ids.device)


_MASKS: dict[tuple, object] = {}  # (lengths, device) -> BlockMask


def _block_mask(packing):
    key = (packing.lengths, packing.device)
    mask = _MASKS.get(key)
    if mask is None:
        if len(_MASKS) >= _MAX_MASKS:
            _MASKS.clear()
        mask = _MASKS[key] = _document_mask(packing.seq_ids, packing.total)
    return mask


@register("flex", check=_check, description="torch flex_attention, compiled per shape (bias as score_mod, "
          "packing as a block mask)", peer=True, takes_bias=True, takes_packing=True, compiles=True)
def flex_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None, packing=None):
    if dropout_p > 0.0:
        raise BackendError("attention backend 'flex' has no attention dropout; "
                           f"got dropout_p={dropout_p} (use attn_drop_rate=0 or another backend)")
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if grad and q.device.type == "cpu":
        raise BackendError(f"attention backend 'flex' cannot run on q of shape {tuple(q.shape)}, {q.dtype}, cpu: "
                           f"q, k and v need gradients: {_NO_CPU_BACKWARD}")
    table = None if bias is None else _table(bias)
    if torch.compiler.is_compiling():  # traced into the caller's graph, compiled with it
        mask = None if packing is None else _document_mask(packing.seq_ids, packing.total)
        return _flex(q, k, v, table, mask, scale)
    mask = None if packing is None else _block_mask(packing)
    key = (q.shape, q.stride(), k.stride(), v.stride(), q.dtype, q.device,
           None if table is None else (table.shape, table.stride(), table.requires_grad),
           None if packing is None else packing.total, scale, grad)
    fn = _COMPILED.get(key) or _compiled(key)
    try:
        return fn(q, k, v, table, mask, scale)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, NotImplementedError, ValueError) as err:  # inductor refusing this signature
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
        raise BackendError(f"attention backend 'flex' cannot run on q of shape {tuple(q.shape)}, {q.dtype}, "
                           f"{q.device}: {first}") from None
