"""The sweep's results file: one sweep writes it at a time, a sweep killed at any moment (SIGINT or
SIGKILL) loses at most the comparison group that was running, and ``--resume`` measures no configuration
twice; rows of another environment are refused unless forced."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env
from fastvit.bench.results import KEY, ResultsError, ResultsFile, read_rows, row_key

ROOT = Path(__file__).resolve().parents[1]
# 2 sizes x 2 passes = 4 comparison groups of op-level attention, each of 2 backends and the A/A twin:
# the interrupt comes after the first group, while three are still to run
FLAGS = ["-k", "test_attention", "--attn-backend", "naive,sdpa", "--resolutions", "32,48", "--pass",
         "fwd,train", "--batch-size", "1", "--device", "cpu", "--threads", "1", "--time-budget", "3",
         "--max-rounds", "8",
         "--model", "vit_tiny_patch16_224"]
CONFIGS = 12


def sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q", "-p", "no:cacheprovider",
            *FLAGS, "--results", str(out / "rows.jsonl"), *extra]


def run(cmd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def keys_of(path: Path) -> list[tuple]:
    return [row_key(r) for _, r in read_rows(path)[1]]


def interrupt(cmd, rows_file: Path, sig: int, after_rows: int = 3) -> None:
    # the sweep starts as from a shell, SIGINT at its default (a child inherits an ignored SIGINT, and
    # Python then leaves it ignored: the sweep would run to its end)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if rows_file.exists() and rows_file.read_text().count("\n") >= 1 + after_rows:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_sweep_resumes_without_measuring_twice(tmp_path, sig):
    rows_file = tmp_path / "rows.jsonl"
    interrupt(sweep_cmd(tmp_path), rows_file, sig)
    before = read_rows(rows_file)[1]
    assert 3 <= len(before) < CONFIGS
    proc = run(sweep_cmd(tmp_path, "--resume"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    keys = keys_of(rows_file)
    assert len(keys) == len(set(keys)) == CONFIGS, "a configuration was measured twice or not at all"
    after = {row_key(r): r for _, r in read_rows(rows_file)[1]}
    for _, row in before:  # the rows of the first run are kept as they were
        assert after[row_key(row)] == row
    assert f"{len(before)} recorded before (--resume)" in proc.stdout, proc.stdout[proc.stdout.find("fastvit sweep"):][:600]


def test_a_second_sweep_on_the_same_file_is_refused(tmp_path):
    holder = ResultsFile(tmp_path / "rows.jsonl")  # as a running sweep holds it
    try:
        proc = run(sweep_cmd(tmp_path))
    finally:
        holder.close()
    assert proc.returncode != 0
    assert f"is being written by another sweep (pid {os.getpid()})" in proc.stdout + proc.stderr
    assert not (tmp_path / "rows.jsonl").exists() or (tmp_path / "rows.jsonl").read_text() == ""


def test_rows_of_another_environment_are_refused_unless_forced(tmp_path):
    rows_file = tmp_path / "rows.jsonl"
    row = {k: None for k in KEY} | {"op": "attention", "backend": "naive", "status": "ok"}
    rows_file.write_text(json.dumps({"environment": {"device": "cpu", "torch": "0.0.1"}}) + "\n" + json.dumps(row) + "\n")
    proc = run(sweep_cmd(tmp_path, "--resume", "--collect-only"))
    assert proc.returncode != 0
    assert "cannot resume" in proc.stdout + proc.stderr and "torch: '0.0.1' then" in proc.stdout + proc.stderr
    forced = run(sweep_cmd(tmp_path, "--resume", "--force-resume", "--collect-only"))
    assert forced.returncode == 0, forced.stdout[-2000:] + forced.stderr[-2000:]


def test_a_line_cut_short_is_dropped_and_its_configuration_measured_again(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"op": "attention", "backend": b, "resolution": 32, "pass": "fwd", "status": "ok"} for b in ("a", "b")]
    lines = [json.dumps({"environment": {"device": "cpu"}})] + [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n" + lines[-1][:20])  # killed while writing a third row
    results = ResultsFile(path, resume=True)
    assert sorted(k[KEY.index("backend")] for k in results.recorded) == ["a", "b"]
    results.open_for_writing()
    results.close()
    assert path.read_text() == "\n".join(lines) + "\n"


def test_a_malformed_line_in_the_middle_names_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"environment": {}}\nnot json\n{"op": "attention"}\n')
    with pytest.raises(ResultsError, match=r"rows.jsonl', line 2: not JSON"):
        read_rows(path)
