"""A ViT or DeiT whose token sequence is cut across the ranks of a process group.

Where the tokens live (P ranks, a patch grid of gh x gw):

* the patch rows are split as evenly as they go (:func:`~fastvit.distributed.split_sizes`: the first
  gh % P ranks get one row more); rank r embeds only its strip of the image, rows
  ``r0 * patch : r1 * patch``, with its rows of the (resampled) position embedding;
* the prefix tokens -- CLS, and DeiT's distillation token -- live on rank 0, before its patches:
  rank 0 holds [CLS, (DIST), rows of rank 0], rank r > 0 only its rows. Every rank computes the
  prefix rows in its patch embedding (one fused call whatever the backend) and ranks r > 0 drop them;
* norms and MLPs run on each rank's own tokens; attention is :func:`ring_attention` over the whole
  sequence (fastvit.ops' Attention module's ``attend`` hook, so the blocks are the model's own);
* the final norm and the heads run on rank 0's prefix tokens only, and the logits are broadcast, so
  every rank returns the same logits.

Training: compute the loss from the logits on every rank (the same value everywhere), call
``backward()`` on every rank, then :meth:`ShardedViT.sync_grads`, which sums each parameter's
gradient over the group (every rank holds the gradient of its own tokens; the head's and CLS's only
rank 0). Every rank then holds the single-process model's gradients (tests/test_distributed.py: within
the fp32 rule). Not DDP: it averages, and these partial gradients must be summed. The broadcast's
backward takes rank 0's gradient of the logits once (the ranks' are equal), and hands the other ranks
a zero gradient into their last tokens, so that every rank's backward runs the ring backward of every
block, as the ring needs.

Limits: the ranks must see the same images (each cuts its own strip); attention dropout is refused
by the ring; stochastic depth in training is refused (each rank would drop a different branch of the
same image); other dropout runs per rank, so a training step with it differs from the single-process
model's. Swin and PiT are not sharded (their windows and pooling work on whole maps).
"""
from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn as nn

from fastvit.distributed.ring import ring_attention
from fastvit.distributed.shards import Shards, agree, check_device, dtype_code, group_info, split_sizes
from fastvit.errors import ArgumentError
from fastvit.models.pos_embed import resample_pos_embed
from fastvit.models.vit import VisionTransformer


class _FromRank0(torch.autograd.Function):
    """Rank 0's ``value`` on every rank. Backward: rank 0 keeps its own gradient (every rank's is the
    same: the ranks compute one loss), the other ranks send a zero gradient into ``anchor`` (their
    last tokens) so that their backward runs through every block."""

    @staticmethod
    def forward(ctx, value, anchor, group, src):
        out = value.detach().clone().contiguous()
        dist.broadcast(out, src, group=group)
        ctx.is_src = dist.get_rank() == src
        ctx.anchor_meta = (anchor.shape, anchor.dtype, anchor.device)
        return out

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, device = ctx.anchor_meta
        if ctx.is_src:
            return grad, None, None, None
        return None, torch.zeros(shape, dtype=dtype, device=device), None, None


class ShardedViT(nn.Module):
    """``model`` (a fastvit ViT or DeiT) run with its tokens sharded across ``group``.

    Args:
        model: the model; its parameters are used in place (load checkpoints into it first). The
            same weights must be on every rank (seed, load or broadcast them).
        group: the process group (None: the default one, e.g. torchrun's).
        backend: ring attention's local backend (``naive``, ``sdpa-flash``, ``triton``; None: the
            ring's default for the device). The model's own attention backend is not used.
    """

    def __init__(self, model: VisionTransformer, group=None, backend: str | None = None):
        super().__init__()
        if not isinstance(model, VisionTransformer):
            raise ArgumentError(f"ShardedViT takes a fastvit ViT or DeiT, not {type(model).__name__} (Swin and PiT "
                                "work on whole maps and are not sharded)")
        group_info(group)  # a process group must exist
        self.model, self.group, self.backend = model, group, backend

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    def layout(self, grid: tuple[int, int]) -> tuple[tuple[int, ...], Shards]:
        """(patch rows of every rank, token shards) for a patch grid (gh, gw): prefix tokens on rank 0."""
        world, rank = group_info(self.group)
        rows = split_sizes(grid[0], world, what="patch rows")
        T = self.model.num_prefix_tokens
        return rows, Shards(tuple(r * grid[1] + (T if i == 0 else 0) for i, r in enumerate(rows)), rank)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, Shards]:
        """This rank's tokens (B, n_r, E) and the shards of the whole sequence."""
        m, cfg = self.model, self.model.cfg
        grid = m.check_images(images)
        check_device(images, self.group)
        B, C, H, W = images.shape
        agree("sharded ViT", {"batch": B, "channels": C, "height": H, "width": W,
                              "dtype_code": dtype_code(images.dtype)}, images.device, self.group)
        if m.training and any(blk.drop_path_p > 0 for blk in m.blocks):
            raise ArgumentError("ShardedViT: stochastic depth (drop_path_rate > 0) in training would drop a different "
                                "branch of an image on each rank; build the model with drop_path_rate=0")
        rows, shards = self.layout(grid)
        rank, T, P = shards.rank, m.num_prefix_tokens, cfg.patch_size
        r0 = sum(rows[:rank])
        r1 = r0 + rows[rank]
        pos = resample_pos_embed(m.pos_embed, grid, cfg.grid_size, num_prefix_tokens=T)  # (1, T + gh * gw, E)
        pos = torch.cat([pos[:, :T], pos[:, T + r0 * grid[1]:T + r1 * grid[1]]], dim=1)  # (1, T + rows * gw, E)
        x = m.pos_drop(m.patch_embed(images[:, :, r0 * P:r1 * P], pos, m.prefix_tokens()))  # (B, T + rows * gw, E)
        if rank != 0:
            x = x[:, T:].contiguous()  # the prefix tokens live on rank 0
        return x, shards

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """This rank's tokens after the blocks and the final norm, (B, n_r, E); rank 0's first
        ``num_prefix_tokens`` rows are the prefix tokens."""
        m = self.model
        x, shards = self.embed(images)
        attend = functools.partial(ring_attention, group=self.group, shards=shards, backend=self.backend)
        pending = None
        for blk in m.blocks:
            x, pending = blk(x, pending, attend=attend)
        return m.norm(x) if pending is None else m.norm.add_forward(pending, x)[0]

    def forward(self, images: torch.Tensor):
        """Logits (B, num_classes) on every rank, equal to the single-process model's (a distilled
        DeiT training with ``set_distilled_training``: the pair of heads' logits)."""
        feats = self.forward_features(images)
        src = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        if self.rank == 0:
            logits = self.model.forward_head(feats)
        else:
            with torch.no_grad():  # only the shapes: rank 0's logits are received into them
                logits = self.model.forward_head(feats[:, :self.model.num_prefix_tokens].detach())
        if isinstance(logits, tuple):
            return tuple(_FromRank0.apply(t, feats, self.group, src) for t in logits)
        return _FromRank0.apply(logits, feats, self.group, src)

    @torch.no_grad()
    def sync_grads(self) -> None:
        """Sum every parameter's gradient over the group (one all-reduce per dtype); a parameter
        without a gradient on a rank counts as zero there."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        for dtype in dict.fromkeys(p.dtype for p in params):
            same = [p for p in params if p.dtype == dtype]
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in same])
            dist.all_reduce(flat, group=self.group)
            at = 0
            for p in same:
                g = flat[at:at + p.numel()].view_as(p)
                at += p.numel()
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
