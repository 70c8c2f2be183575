"""How a token sequence is cut across the ranks of a process group, and the checks every rank makes
together before a ring starts (so that a misconfigured group raises one error on every rank instead
of hanging in a receive that never comes)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastvit.errors import ArgumentError, DeviceError, ShapeError

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def split_sizes(total: int, parts: int, what: str = "tokens") -> tuple[int, ...]:
    """``total`` items in ``parts`` contiguous shards as even as they go: the first ``total % parts``
    shards one longer (197 tokens on 3 ranks: 66, 66, 65)."""
    if parts < 1:
        raise ArgumentError(f"world size must be at least 1, got {parts}")
    if total < parts:
        raise ShapeError(f"{total} {what} cannot be cut into {parts} shards (world size {parts}): every rank "
                         f"needs at least one")
    base, extra = divmod(total, parts)
    return tuple(base + (r < extra) for r in range(parts))


@dataclass(frozen=True)
class Shards:
    """Contiguous shards of one sequence: rank ``r`` holds tokens ``offsets[r] : offsets[r] + sizes[r]``."""

    sizes: tuple[int, ...]
    rank: int

    def __post_init__(self):
        if not self.sizes or any(not isinstance(s, int) or s < 1 for s in self.sizes):
            raise ShapeError(f"shard sizes must be positive integers, one per rank; got {self.sizes}")
        if not 0 <= self.rank < len(self.sizes):
            raise ArgumentError(f"rank {self.rank} is outside the world size {len(self.sizes)}")

    @classmethod
    def even(cls, total: int, group=None) -> "Shards":
        """``total`` tokens split as evenly as possible over ``group`` (None: the default group)."""
        world, rank = group_info(group)
        return cls(split_sizes(total, world), rank)

    @property
    def world_size(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def local(self) -> int:
        return self.sizes[self.rank]

    @property
    def longest(self) -> int:
        return max(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, at = [], 0
        for s in self.sizes:
            out.append(at)
            at += s
        return tuple(out)

    def cut(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's shard of a tensor holding the whole sequence along ``dim`` (a view)."""
        return x.narrow(dim, self.offsets[self.rank], self.local)


def group_info(group=None) -> tuple[int, int]:
    """(world size, rank) of ``group`` (None: the default group); ArgumentError when torch.distributed
    has no process group."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ArgumentError("no torch.distributed process group: start the processes with torchrun and call "
                            "fastvit.distributed.init_process_group() (or torch.distributed.init_process_group) first")
    return dist.get_world_size(group), dist.get_rank(group)


def check_device(t: torch.Tensor, group=None) -> None:
    """DeviceError unless the group's backend can pass ``t`` point to point (gloo: CPU, NCCL: CUDA)."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and t.device.type != "cuda":
        raise DeviceError(f"the process group runs NCCL, which passes CUDA tensors only; the inputs are on {t.device}")
    if backend == "gloo" and t.device.type != "cpu":
        raise DeviceError(f"the process group runs gloo, whose point-to-point calls here take CPU tensors; the inputs "
                          f"are on {t.device} (use an NCCL group for CUDA tensors)")


def agree(what: str, fields: dict[str, int], device: torch.device, group=None) -> list[dict[str, int]]:
    """Gather ``fields`` (small integers) from every rank; ShapeError on every rank, naming the ranks
    and the field, unless the fields marked as shared are equal everywhere. Returns every rank's fields
    (one collective). Fields whose name ends in ``_local`` may differ between ranks."""
    world, rank = group_info(group)
    names = list(fields)
    mine = torch.tensor([int(fields[n]) for n in names], dtype=torch.int64, device=device)
    if world == 1:
        return [dict(fields)]
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    rows = [dict(zip(names, (int(x) for x in t.tolist()))) for t in everyone]
    for name in names:
        if name.endswith("_local"):
            continue
        values = [row[name] for row in rows]
        if len(set(values)) > 1:
            shown = ", ".join(f"rank {r}: {_show(name, v)}" for r, v in enumerate(values))
            raise ShapeError(f"{what}: the ranks disagree on {name.removesuffix('_code')} ({shown}); every rank must "
                             f"call it with the same {name.removesuffix('_code')}")
    return rows


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def _show(name: str, value: int) -> str:
    if name == "dtype_code":
        return str(_DTYPES[value]) if value < len(_DTYPES) else "another dtype"
    return str(value)
