"""Ring attention: self-attention over a token sequence sharded across the ranks of a process group.

Rank r holds a contiguous shard of the tokens, q, k, v of (B, H, n_r, D) (fastvit.distributed.Shards
says which). The keys and values travel around the ring: in step s rank r holds the block of rank
(r - s) mod P, starts passing it to rank r + 1 (and receiving the next from rank r - 1) with
``torch.distributed.batch_isend_irecv``, and while the transfer runs computes its queries' attention
against the block with that block's log-sum-exp (fastvit/distributed/local.py). Partial results are
merged exactly, in fp32 (fp64 for fp64 inputs):

    lse = logaddexp(lse_a, lse_b),  out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b,

and a row whose every score is -inf keeps lse = -inf and out 0 (its weights are taken against 0,
never -inf - -inf). After P steps every rank holds its queries' exact attention over all N tokens:
what single-device attention gives, up to the order of the floating-point sums (Liu et al. 2023,
"Ring Attention with Blockwise Transformers"; the merge is FlashAttention's online softmax with
whole blocks).

Backward (the ring backward): every rank keeps only its own q, k, v, out and lse (O(n_r) memory,
never an N x N matrix or another rank's activations). The keys and values go round once more; each
step computes the block's dq, dk, dv from the *global* out and lse (the local backend's backward
recomputes the probabilities exp(s - lse) exactly), adds dq to the rank's own, and adds dk, dv to an
fp32 accumulator that travels with the block: it starts at the block's owner, collects every rank's
contribution on its way round and arrives back at the owner after P hops. Per rank and pass this
moves (P - 1) blocks of k and v forward; backward (P - 1) blocks of k and v and P blocks of the fp32
dk, dv accumulator (:func:`comm_bytes`).

Tails: shards may differ in length (N not divisible by P, or the prefix tokens on rank 0). Blocks
travel in buffers of the longest shard; backends that need q and k of one length (``triton``) get
the shorter shards padded with keys masked by -inf (and query rows whose outputs are dropped);
the others take each block at its own length.

Every rank must call the op, and its backward, with the same B, H, D, dtype, backend and bias
layout: the first thing the op does (unless ``shards`` is given) is one all-gather of those numbers,
and a disagreement raises ShapeError on every rank instead of a hang.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fastvit.distributed.local import LOCAL, bias_4d, default_scale, local_backend
from fastvit.distributed.shards import Shards, agree, check_device, dtype_code, group_info
from fastvit.errors import ArgumentError, BackendError, DTypeError, ShapeError
from fastvit.ops.attention.functional import validate_qkv

_TAG_KV, _TAG_DKV = 7, 8
_NEG_INF = float("-inf")


class _Ring:
    """Point-to-point exchange with the ring neighbours of one group."""

    def __init__(self, group, shards: Shards):
        self.group, self.world, self.rank = group, shards.world_size, shards.rank
        peer = (lambda r: r) if group is None else (lambda r: dist.get_global_rank(group, r))
        self.next, self.prev = peer((self.rank + 1) % self.world), peer((self.rank - 1) % self.world)

    def start(self, send: torch.Tensor, recv: torch.Tensor, tag: int):
        """Send ``send`` to the next rank and receive into ``recv`` from the previous one; returns the
        requests to wait on."""
        ops = [dist.P2POp(dist.isend, send, self.next, self.group, tag),
               dist.P2POp(dist.irecv, recv, self.prev, self.group, tag)]
        return dist.batch_isend_irecv(ops)

    @staticmethod
    def wait(requests) -> None:
        for req in requests:
            req.wait()


class _Plan:
    """What one call needs besides its tensors: shards, local backend, scale, the exchange."""

    def __init__(self, shards: Shards, local, scale: float, group, bias_cols: int):
        self.shards, self.local, self.scale, self.bias_cols = shards, local, scale, bias_cols
        self.ring = _Ring(group, shards) if shards.world_size > 1 else None
        # pad every shard to the longest when the backend needs q and k of one length and they differ
        self.pad = local.equal_lengths and len(set(shards.sizes)) > 1
        self.rows = shards.longest if self.pad else shards.local

    def pad_rows(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, n_r, D) -> (B, H, rows, D), zero rows appended where the plan pads."""
        return F.pad(t, (0, 0, 0, self.rows - t.shape[2])) if self.rows != t.shape[2] else t

    def block(self, kv: torch.Tensor, j: int, bias4: torch.Tensor | None):
        """(k, v, bias) of block ``j`` as the local backend takes them, from the travelling buffer kv
        (2, B, H, longest, D)."""
        size, longest = self.shards.sizes[j], self.shards.longest
        cols = longest if self.pad else size
        k, v = kv[0, :, :, :cols], kv[1, :, :, :cols]
        b = bias4
        if b is not None and self.bias_cols > 1:
            b = b[..., self.shards.offsets[j]:self.shards.offsets[j] + size]
        if not self.pad:
            return k, v, b
        if b is not None and b.shape[-2] > 1 and b.shape[-2] < self.rows:
            b = F.pad(b, (0, 0, 0, self.rows - b.shape[-2]))  # rows of padded queries: 0
        if size < longest:
            if b is None or b.shape[-1] == 1:
                mask = kv.new_zeros(longest)
                mask[size:] = _NEG_INF
                b = mask if b is None else b + mask
            else:
                b = F.pad(b, (0, longest - size), value=_NEG_INF)
        return k, v, b

    def add_bias_grad(self, dbias4: torch.Tensor, ds: torch.Tensor, j: int) -> None:
        """Add block ``j``'s score gradient ``ds`` to this rank's bias gradient (4-D, the bias's shape)."""
        size, n = self.shards.sizes[j], self.shards.local
        if ds.dim() < 4:
            ds = bias_4d(ds)
        if ds.shape[-2] > n:
            ds = ds[..., :n, :]
        if self.bias_cols > 1:
            ds = ds[..., :size]
            target = dbias4[..., self.shards.offsets[j]:self.shards.offsets[j] + size]
        else:
            target = dbias4
        dims = [d for d in range(4) if target.shape[d] == 1 and ds.shape[d] != 1]
        target += (ds.sum(dims, keepdim=True) if dims else ds).to(target.dtype)


def _merge(out, lse, o, l, log2: bool):
    """Exact merge of two partial attentions through their log-sum-exps (-inf rows stay 0)."""
    if out is None:
        return o.to(torch.promote_types(o.dtype, torch.float32)), l
    new = torch.logaddexp2(lse, l) if log2 else torch.logaddexp(lse, l)
    ref = new.masked_fill(new == _NEG_INF, 0.0)[..., None]
    exp = torch.exp2 if log2 else torch.exp
    return out * exp(lse[..., None] - ref) + o * exp(l[..., None] - ref), new


def _kv_buffer(k: torch.Tensor, v: torch.Tensor, longest: int) -> torch.Tensor:
    """k and v in one contiguous (2, B, H, longest, D) buffer, zeros past the shard."""
    B, H, n, D = k.shape
    kv = k.new_zeros((2, B, H, longest, D)) if n < longest else k.new_empty((2, B, H, longest, D))
    kv[0, :, :, :n] = k
    kv[1, :, :, :n] = v
    return kv


def _forward(q, k, v, bias4, plan: _Plan):
    shards, local, ring = plan.shards, plan.local, plan.ring
    P, r = shards.world_size, shards.rank
    kv = _kv_buffer(k, v, shards.longest)
    spare = torch.empty_like(kv) if P > 1 else None
    qr = plan.pad_rows(q)
    out = lse = None
    for s in range(P):
        j = (r - s) % P
        pending = ring.start(kv, spare, _TAG_KV) if s < P - 1 else None
        kj, vj, bj = plan.block(kv, j, bias4)
        o, l = local.fwd(qr, kj, vj, bj, plan.scale)
        out, lse = _merge(out, lse, o, l, local.log2)
        if pending is not None:
            ring.wait(pending)
            kv, spare = spare, kv
    return out.to(q.dtype), lse  # (B, H, rows, D), (B, H, rows)


def _backward(do, q, k, v, bias4, out, lse, plan: _Plan, bias_grad: bool):
    shards, local, ring = plan.shards, plan.local, plan.ring
    P, r, n, longest = shards.world_size, shards.rank, shards.local, shards.longest
    acc_dtype = torch.promote_types(q.dtype, torch.float32)
    kv = _kv_buffer(k, v, longest)
    spare = torch.empty_like(kv) if P > 1 else None
    qr, dor = plan.pad_rows(q), plan.pad_rows(do)
    dq = torch.zeros(qr.shape, dtype=acc_dtype, device=q.device)
    dbias4 = torch.zeros(bias4.shape, dtype=acc_dtype, device=q.device) if bias_grad else None
    acc = torch.zeros((2,) + tuple(kv.shape[1:]), dtype=acc_dtype, device=q.device)  # dk, dv of the held block
    acc_spare = torch.empty_like(acc) if P > 1 else None
    travelling = None  # requests of the dk, dv accumulator in flight
    for s in range(P):
        j = (r - s) % P
        pending = ring.start(kv, spare, _TAG_KV) if s < P - 1 else None
        kj, vj, bj = plan.block(kv, j, bias4)
        dqj, dkj, dvj, dsj = local.bwd(dor, qr, kj, vj, bj, out, lse, plan.scale, bias_grad)
        dq += dqj
        if travelling is not None:  # the accumulator of block j, from the previous rank
            ring.wait(travelling)
            acc, acc_spare = acc_spare, acc
        cols = dkj.shape[2]
        acc[0, :, :, :cols] += dkj
        acc[1, :, :, :cols] += dvj
        if bias_grad:
            plan.add_bias_grad(dbias4, dsj, j)
        if P > 1:
            travelling = ring.start(acc, acc_spare, _TAG_DKV)  # on to the next rank; the last hop: to its owner
        if pending is not None:
            ring.wait(pending)
            kv, spare = spare, kv
    if travelling is not None:
        ring.wait(travelling)
        acc = acc_spare  # this rank's own block, every rank's contribution added
    dk, dv = acc[0, :, :, :n], acc[1, :, :, :n]
    return dq[:, :, :n], dk, dv, dbias4


class RingAttentionFn(torch.autograd.Function):
    """The ring forward and backward (module docstring); ``plan`` carries the shards and backend."""

    @staticmethod
    def forward(ctx, q, k, v, bias, plan):
        bias4 = bias_4d(bias)
        out, lse = _forward(q, k, v, bias4, plan)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.plan = plan
        n = plan.shards.local
        return out[:, :, :n].clone() if out.shape[2] != n else out  # padded rows dropped

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, bias, out, lse = ctx.saved_tensors
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dbias4 = _backward(do, q, k, v, bias_4d(bias), out, lse, ctx.plan, bias_grad)
        dbias = dbias4.reshape(bias.shape).to(bias.dtype) if bias_grad else None
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias, None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, group=None, shards: Shards | None = None,
                   backend: str | None = None, scale: float | None = None, bias: torch.Tensor | None = None,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v over a sequence sharded across ``group``: this rank's rows.

    Args:
        q, k, v: this rank's shard, (B, H, n_r, D) each, one dtype and device; tokens
            ``shards.offsets[r] : + n_r`` of the whole sequence.
        group: the process group (None: the default one); gloo passes CPU tensors, NCCL CUDA ones.
        shards: the shard sizes of every rank (:class:`Shards`); None gathers them (and checks that
            the ranks agree on B, H, D, dtype, backend and bias layout) with one all-gather per call.
            Given, nothing is gathered: the caller vouches for the agreement (the sharded ViT checks
            it once per forward).
        backend: the local attention: ``naive``, ``sdpa-flash`` (PyTorch's CPU flash kernel) or
            ``triton``; None: ``sdpa-flash`` on CPU, ``triton`` on CUDA. The explicit argument is
            the only selection (the attention op's ``use_backend`` and environment variable choose
            among backends this op mostly cannot use). Others raise BackendError with the reason.
        scale: softmax scale; default D ** -0.5.
        bias: None, or an additive bias broadcastable to (B, H, n_r, N): this rank's query rows
            against every key (N = the whole sequence). Its gradient, when it requires one, is this
            rank's part: rows of its own queries; summed over the ranks by the caller where the
            bias is shared (broadcast along the query rows), as for any replicated parameter.
        dropout_p: must be 0 (no attention dropout across a ring).

    Returns:
        (B, H, n_r, D): this rank's queries' attention over the whole sequence, in q's dtype.

    Raises:
        ShapeError, DTypeError, DeviceError: malformed inputs, a bias that does not broadcast,
            shards that do not match the input, ranks that disagree (on every rank).
        BackendError: a backend that cannot run ring attention here, with the reason.
        ArgumentError: no process group, dropout_p other than 0, a bad scale.
    """
    validate_qkv(q, k, v, None, scale, dropout_p)
    if dropout_p:
        raise BackendError(f"ring attention has no attention dropout; got dropout_p={dropout_p} (use attn_drop_rate=0)")
    world, rank = group_info(group)
    check_device(q, group)
    B, H, n, D = q.shape
    bias_grad = bias is not None and bias.requires_grad and torch.is_grad_enabled()
    local = local_backend(backend, q, bias, bias_grad)
    if shards is None:
        rows = agree("ring attention", {
            "n_local": n, "batch": B, "heads": H, "head dim": D, "dtype_code": dtype_code(q.dtype),
            "backend_code": list(LOCAL).index(local.name), "bias": bias is not None,
            "bias key dim": 0 if bias is None else bias_4d(bias).shape[-1],
            "bias_grad": bias_grad}, q.device, group)
        shards = Shards(tuple(row["n_local"] for row in rows), rank)
    if shards.world_size != world or shards.rank != rank or shards.local != n:
        raise ShapeError(f"ring attention: shards {shards.sizes} (rank {shards.rank}) do not match this rank's input: "
                         f"rank {rank} of world size {world} holds q of {n} tokens")
    bias_cols = _check_bias(bias, q, shards)
    plan = _Plan(shards, local, default_scale(D, scale), group, bias_cols)
    return RingAttentionFn.apply(q, k, v, bias, plan)


def _check_bias(bias, q, shards: Shards) -> int:
    """The bias's key-dim size (1 or N); the typed error unless it broadcasts to (B, H, n_r, N)."""
    if bias is None:
        return 1
    if not isinstance(bias, torch.Tensor):
        raise DTypeError(f"ring attention: bias must be a torch.Tensor or None, got {type(bias).__name__}")
    B, H, n, _ = q.shape
    want = (B, H, n, shards.total)
    if bias.dim() > 4 or any(s not in (1, t) for s, t in zip(bias.shape[::-1], want[::-1])):
        raise ShapeError(f"ring attention: bias of shape {tuple(bias.shape)} does not broadcast to (B, H, n_r, N) = "
                         f"{want} (this rank's query rows against every key)")
    if bias.dtype != q.dtype:
        raise DTypeError(f"ring attention: bias dtype {bias.dtype} differs from q's {q.dtype}")
    if bias.device != q.device:
        from fastvit.errors import DeviceError

        raise DeviceError(f"ring attention: bias is on {bias.device}, q on {q.device}")
    return bias_4d(bias).shape[-1]


def comm_bytes(batch: int, heads: int, shards: Shards, head_dim: int, dtype: torch.dtype, pass_: str = "fwd") -> int:
    """Bytes one rank sends in one call (``fwd``) or a forward and backward (``train``): (P - 1)
    blocks of k and v per ring pass, and in the backward P blocks of the fp32 dk, dv accumulator.
    Blocks travel at the longest shard's length."""
    P = shards.world_size
    if P == 1:
        return 0
    elems = 2 * batch * heads * shards.longest * head_dim
    item = torch.empty((), dtype=dtype).element_size()
    acc = torch.empty((), dtype=torch.promote_types(dtype, torch.float32)).element_size()
    fwd = (P - 1) * elems * item
    if pass_ == "fwd":
        return fwd
    if pass_ != "train":
        raise ArgumentError(f"pass must be 'fwd' or 'train', got {pass_!r}")
    return 2 * fwd + P * elems * acc
