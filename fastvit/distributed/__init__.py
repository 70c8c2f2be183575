"""Beyond one device: attention and the ViT over a token sequence sharded across a process group.

* :func:`ring_attention` (ring.py): sequence-parallel attention, K/V passed round the ring with
  torch.distributed point-to-point calls, partial results merged through the log-sum-exp; exact
  forward and backward. :func:`ulysses_attention` (ulysses.py): the all-to-all variant beside it.
* :class:`ShardedViT` (sharded.py): a ViT or DeiT whose tokens are cut across the ranks.
* :func:`init_process_group`, :func:`spawn` (launch.py): joining torchrun's group, or starting P
  gloo processes from Python.

``python -m fastvit.distributed`` (under torchrun) runs the sharded model and the sweep by world size.
"""
from fastvit.distributed.launch import default_device, gloo_available, init_process_group, spawn
from fastvit.distributed.ring import comm_bytes, ring_attention
from fastvit.distributed.sharded import ShardedViT
from fastvit.distributed.shards import Shards, split_sizes
from fastvit.distributed.ulysses import ulysses_attention

__all__ = ["ring_attention", "ulysses_attention", "comm_bytes", "ShardedViT", "Shards", "split_sizes", "init_process_group", "spawn", "default_device",
           "gloo_available"]
