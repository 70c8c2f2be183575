"""The sweep's results file: one writer at a time, and ``--resume`` of an interrupted sweep.

A sweep holds an exclusive lock (``flock`` on ``<results>.lock``) while it runs, so a second sweep
naming the same file is refused instead of interleaving lines; the lock goes with the process, also
when it is killed. Rows are flushed and fsynced one by one, so a sweep killed at any moment loses at
most the comparison group that was being timed (and leaves at most a last line cut short).

Resuming reads the rows already recorded, checks that they were measured under the same environment
(:data:`ENV_KEY`: device, versions, commit, settings; a different one is refused with the fields that
differ, unless forced), cuts a last line left incomplete, and appends: a configuration already
recorded, whatever its status, is not measured again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fastvit.bench.rows import KEY
from fastvit.errors import ResultsError

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

# what must be equal for rows of two runs to be measurements under one environment
ENV_KEY = ("device", "device_name", "threads", "torch", "cuda", "cudnn", "triton", "xformers", "triton_autotune",
           "python", "git", "time_budget_s", "min_rounds", "max_rounds")


def row_key(row: dict) -> tuple:
    """The configuration a row measured (its KEY columns)."""
    return tuple(row.get(k) for k in KEY)


def read_rows(path: Path) -> tuple[dict, list[tuple[int, dict]], int]:
    """(last environment, (line number, row) pairs, bytes of the complete lines) of a JSONL results
    file. Only a last line cut short (no newline at its end) is tolerated; any other line that is not
    a JSON object raises ResultsError naming the file and line."""
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes up to the last newline
    env, rows = {}, []
    for number, line in enumerate(data[:complete].decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ResultsError(f"results file {str(path)!r}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise ResultsError(f"results file {str(path)!r}, line {number}: not a JSON object")
        if "environment" in record:
            env = record["environment"]
        else:
            rows.append((number, record))
    return env, rows, complete


def env_differences(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in ENV_KEY if old.get(k) != new.get(k)]


class ResultsFile:
    """The JSONL file of one sweep, locked for it; with ``resume`` its recorded rows are kept."""

    def __init__(self, path: str | os.PathLike, resume: bool = False):
        self.path = Path(path)
        self.resume = resume
        self.recorded: dict[tuple, dict] = {}
        self.previous_env: dict = {}
        self._complete = 0
        self._lock = self._acquire()
        if resume and self.path.exists():
            self.previous_env, rows, self._complete = read_rows(self.path)
            self.recorded = {row_key(r): r for _, r in rows}

    def _acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{self.path}.lock", "a+")
        if fcntl is None:
            return lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise ResultsError(f"results file {str(self.path)!r} is being written by another sweep (pid {holder}); "
                               "wait for it to finish or choose another file with --results") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        return lock

    def check_environment(self, env: dict, force: bool = False) -> None:
        """Refuse to resume rows measured under another environment (unless ``force``)."""
        if not self.recorded or force:
            return
        diff = env_differences(self.previous_env, env)
        if diff:
            raise ResultsError(f"cannot resume {str(self.path)!r}: its rows were measured under another environment "
                               f"({'; '.join(diff)}); rerun without --resume to start afresh, or add "
                               "--force-resume to mix them")

    def open_for_writing(self) -> None:
        """Start the file afresh, or, resuming, cut an incomplete last line and append after it."""
        if self.resume and self.path.exists():
            with self.path.open("r+b") as fh:
                fh.truncate(self._complete)
        else:
            self.path.write_text("")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
