"""Ulysses attention: the all-to-all variant of sequence parallelism, beside the ring.

Rank r holds q, k, v of its n_r tokens and all H heads. One all-to-all (``all_to_all_single`` with
the shards' split sizes, so tails are fine) turns that into all N tokens of H / P heads: rank r gets
head group r of every rank's tokens. Each rank then runs ordinary single-device attention -- any
backend of the attention op, since nothing is merged -- and a second all-to-all returns every
token's output to the rank that holds it (Jacobs et al. 2023, "DeepSpeed Ulysses"). The backward is
the same two exchanges in reverse (each all-to-all's gradient is the all-to-all with the splits
swapped). Per call and pass a rank sends about 3 n_r H D elements out and n_r H D back, whatever P;
the ring sends (P - 1) shards of k and v. The heads must divide by the world size (ShapeError
otherwise). No attention bias: its (B, H, N, N) rows would have to travel too.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from fastvit.distributed.shards import Shards, agree, check_device, dtype_code, group_info
from fastvit.errors import ArgumentError, ShapeError
from fastvit.ops.attention.functional import attention, validate_qkv


class _AllToAll(torch.autograd.Function):
    """``dist.all_to_all_single`` along dim 0 with split sizes; its gradient swaps the splits."""

    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty((sum(out_splits),) + tuple(x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), list(out_splits), list(in_splits), group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        return _AllToAll.apply(grad.contiguous(), in_splits, out_splits, ctx.group), None, None, None


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, group=None, shards: Shards | None = None,
                      backend: str | None = None, scale: float | None = None, dropout_p: float = 0.0,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v over a sequence sharded across ``group``, by two all-to-alls.

    Args: as :func:`~fastvit.distributed.ring_attention`, except that ``backend`` is any attention
    backend (the attention op's selection: argument, ``use_backend``, environment variable,
    default), the heads H must be divisible by the world size, and no bias is taken.

    Returns:
        (B, H, n_r, D): this rank's queries' attention over the whole sequence.
    """
    validate_qkv(q, k, v, None, scale, dropout_p)
    if bias is not None:
        raise ArgumentError("ulysses attention takes no attention bias (use ring attention)")
    world, rank = group_info(group)
    check_device(q, group)
    B, H, n, D = q.shape
    if H % world:
        raise ShapeError(f"ulysses attention splits the heads across the ranks: {H} heads are not divisible by "
                         f"world size {world} (use ring attention)")
    if shards is None:
        rows = agree("ulysses attention", {"n_local": n, "batch": B, "heads": H, "head dim": D,
                                           "dtype_code": dtype_code(q.dtype)}, q.device, group)
        shards = Shards(tuple(row["n_local"] for row in rows), rank)
    if shards.world_size != world or shards.local != n:
        raise ShapeError(f"ulysses attention: shards {shards.sizes} do not match rank {rank}'s {n} tokens")
    h = H // world
    x = torch.stack([q, k, v])  # (3, B, H, n, D)
    x = x.reshape(3, B, world, h, n, D).permute(2, 4, 0, 1, 3, 5).reshape(world * n, 3, B, h, D)  # head group major
    x = _AllToAll.apply(x, shards.sizes, (n,) * world, group)  # (N, 3, B, h, D): every token, this rank's heads
    qh, kh, vh = x.permute(1, 2, 3, 0, 4).unbind(0)  # 3 x (B, h, N, D)
    out = attention(qh, kh, vh, backend=backend, scale=scale, dropout_p=dropout_p)  # (B, h, N, D)
    out = _AllToAll.apply(out.permute(2, 0, 1, 3), (n,) * world, shards.sizes, group)  # (P * n, B, h, D)
    return out.reshape(world, n, B, h, D).permute(2, 0, 3, 1, 4).reshape(B, H, n, D)
