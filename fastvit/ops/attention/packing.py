"""Packed sequences: the tokens of several images one after another in one sequence, each attending
only to its own.

Layout. ``q``, ``k`` and ``v`` are (1, H, T, D): a batch of one whose T tokens are the S sequences'
tokens end to end, sequence ``s`` at positions ``offsets[s]:offsets[s + 1]``. A :class:`Packing`
describes them: the lengths as Python ints (``lengths``, ``offsets``, ``max_len``, ``total``) and the
same offsets as a tensor on the inputs' device (``cu_seqlens``: int32 (S + 1,), 0 first, T last, the
layout FlashAttention's varlen functions take), with each token's sequence index (``seq_ids``: int32
(T,)). Both forms are made once, when the packing is: a backend that needs the lengths on the host
(splitting per sequence, xformers' block-diagonal mask) reads the Python ints and one that runs on
the device (the Triton kernel, FlexAttention's mask) reads the tensors, so no call reads a tensor
back to Python on the hot path, and under torch.compile nothing breaks the graph (the Python ints
are guarded constants: a new packing of other lengths recompiles, as a new shape does).

``fastvit.attention(q, k, v, packing=p)`` computes, for every sequence s, softmax(q_s k_s^T * scale)
v_s, exactly what attention over the sequence alone gives; a query never sees another sequence's
keys. An additive bias is not taken together with a packing (ArgumentError).
"""
from __future__ import annotations

from typing import Sequence

import torch

from fastvit.errors import ArgumentError, DeviceError, ShapeError


class Packing:
    """S sequences of ``lengths`` tokens packed into one of ``total`` tokens (the module docstring)."""

    __slots__ = ("lengths", "offsets", "max_len", "total", "cu_seqlens", "seq_ids")

    def __init__(self, lengths: Sequence[int], device: torch.device | str = "cpu"):
        if isinstance(lengths, torch.Tensor):
            raise ArgumentError("Packing: lengths must be Python ints (a tensor of offsets goes to "
                                "Packing.from_cu_seqlens, which reads it back once)")
        lengths = tuple(lengths)
        if not lengths or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in lengths):
            raise ArgumentError(f"Packing: lengths must be a non-empty sequence of positive ints, got {lengths!r}")
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        self.lengths, self.offsets = lengths, tuple(offsets)
        self.max_len, self.total = max(lengths), offsets[-1]
        if self.total >= 2 ** 31:
            raise ShapeError(f"Packing: {self.total} tokens in all do not fit the int32 offsets")
        device = torch.device(device)
        self.cu_seqlens = torch.tensor(offsets, dtype=torch.int32, device=device)
        self.seq_ids = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32, device=device),
                                               torch.tensor(lengths, device=device), output_size=self.total)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor) -> "Packing":
        """The packing whose offsets ``cu_seqlens`` holds (integer (S + 1,), 0 first, increasing):
        reads them back to the host once, here."""
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point():
            raise ArgumentError("Packing.from_cu_seqlens: cu_seqlens must be a 1-D integer tensor, got "
                                f"{getattr(cu_seqlens, 'shape', type(cu_seqlens).__name__)}")
        offsets = [int(x) for x in cu_seqlens.tolist()]
        if len(offsets) < 2 or offsets[0] != 0:
            raise ArgumentError(f"Packing.from_cu_seqlens: cu_seqlens must start at 0 and hold at least two "
                                f"offsets, got {offsets[:8]}")
        return cls([b - a for a, b in zip(offsets, offsets[1:])], cu_seqlens.device)

    @property
    def device(self) -> torch.device:
        return self.cu_seqlens.device

    @property
    def num_seqs(self) -> int:
        return len(self.lengths)

    def to(self, device: torch.device | str) -> "Packing":
        device = torch.device(device)
        return self if device == self.device else Packing(self.lengths, device)

    def split(self, x: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
        """``x`` cut along ``dim`` (of size ``total``) into the sequences: views."""
        return x.split(self.lengths, dim=dim)

    def block_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The (T, T) additive mask of the packing: 0 where query and key are of one sequence, -inf
        elsewhere. T x T elements: for the materializing reference, not for large packings."""
        other = self.seq_ids[:, None] != self.seq_ids[None, :]
        return torch.zeros(other.shape, dtype=dtype, device=self.device).masked_fill_(other, float("-inf"))

    def check(self, q: torch.Tensor, bias) -> None:
        """Raise the typed error if (1, H, T, D) ``q`` does not fit this packing or a bias comes with it."""
        if q.shape[0] != 1 or q.shape[2] != self.total:
            raise ShapeError(f"attention: packed q, k, v must be (1, H, T, D) with T = {self.total} tokens "
                             f"(the packing's {self.num_seqs} sequences), got shape {tuple(q.shape)}")
        if q.device != self.device:
            raise DeviceError(f"attention: the packing's offsets are on {self.device}, q on {q.device} "
                              "(Packing(..., device=q.device) or packing.to(q.device))")
        if bias is not None:
            raise ArgumentError("attention: an additive bias is not taken together with a packing")

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self.lengths[:8])) + (", ..." if self.num_seqs > 8 else "")
        return f"Packing({self.num_seqs} sequences [{shown}], {self.total} tokens, {self.device})"
