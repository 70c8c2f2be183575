"""Starting process groups: under torchrun, and from Python on one machine.

* Under ``torchrun --nproc-per-node=P`` (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and
  MASTER_PORT), :func:`init_process_group` joins the group: NCCL when CUDA is available (one GPU
  per rank, LOCAL_RANK's), gloo otherwise. An existing group is used as it is.
* :func:`spawn` runs ``fn(rank, world_size, *args)`` in P fresh processes on this machine, joined by
  gloo over a FileStore in a temporary directory, one CPU thread each (what the tests do), and returns
  each rank's result. A rank that raises, or a run past ``timeout_s``, ends every process and raises
  DistributedError naming the ranks and their errors: never a hang. The processes also get a
  process-group timeout, so a rank blocked on a peer that died gives up on its own.
"""
from __future__ import annotations

import datetime
import os
import queue
import tempfile
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastvit.errors import ArgumentError, DistributedError


def init_process_group(backend: str | None = None, timeout_s: float = 600.0) -> tuple[int, int]:
    """Join the process group the launcher describes (torchrun's environment variables); returns
    (rank, world size). ``backend`` None: ``nccl`` with CUDA, else ``gloo``. A group already
    initialized is kept as it is."""
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ArgumentError(f"no process group and no launcher environment ({', '.join(missing)} unset): start "
                                "with torchrun --nproc-per-node=P, or call torch.distributed.init_process_group")
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def default_device() -> torch.device:
    """The device of this rank's tensors: its GPU under NCCL, the CPU under gloo."""
    if dist.is_initialized() and "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gloo_available() -> tuple[bool, str]:
    if not dist.is_available():
        return False, "this torch build has no torch.distributed"
    if not dist.is_gloo_available():
        return False, "this torch build has no gloo backend"
    return True, ""


def _child(rank, world, fn, args, store_path, threads, pg_timeout_s, results):
    try:
        torch.set_num_threads(threads)
        store = dist.FileStore(store_path, world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=pg_timeout_s))
        try:
            value = fn(rank, world, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, value))
    except BaseException as err:  # reported to the parent, which raises
        results.put((rank, False, (type(err).__name__, str(err), traceback.format_exc())))


def spawn(fn, world_size: int, args: tuple = (), *, timeout_s: float = 120.0, threads: int = 1,
          pg_timeout_s: float = 30.0) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined by a gloo group; returns
    the ranks' results in rank order. ``fn`` and its results must be picklable (a module-level
    function). Raises DistributedError when a rank raises (with every failed rank's error) or when
    the run takes more than ``timeout_s``."""
    if world_size < 1:
        raise ArgumentError(f"world size must be at least 1, got {world_size}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="fastvit-gloo-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_child, args=(r, world_size, fn, args, store, threads, pg_timeout_s, results),
                             daemon=True) for r in range(world_size)]
        for p in procs:
            p.start()
        done, failed = {}, {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(done) + len(failed) < world_size:
                left = deadline - time.monotonic()
                if failed:  # the others may be blocked on the failed rank: give them a moment to report
                    left = min(left, 2.0)
                if left <= 0:
                    break
                try:
                    rank, ok, value = results.get(timeout=min(left, 0.5))
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)
                            and r not in done and r not in failed]
                    for r in dead:
                        failed[r] = ("ProcessExit", f"exited with code {procs[r].exitcode}", "")
                    continue
                (done if ok else failed)[rank] = value
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
    if failed:
        lines = [f"rank {r}: {kind}: {msg}" for r, (kind, msg, _) in sorted(failed.items())]
        err = DistributedError(f"{len(failed)} of {world_size} ranks failed:\n" + "\n".join(lines))
        err.errors = failed
        raise err
    if len(done) < world_size:
        missing = sorted(set(range(world_size)) - set(done))
        raise DistributedError(f"ranks {missing} of {world_size} did not finish within {timeout_s:g} s")
    return [done[r] for r in range(world_size)]
