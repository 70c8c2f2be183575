"""scripts/gpu_quick.py, the quick GPU check, rehearsed on CPU: the planner records every outcome (ok,
failed, skipped for CUDA, skipped by the deadline, interrupted by the deadline or a step's cap, its
finished rows kept), the bundle stays within the device tool's limits, the entry point honours a
deadline of a few seconds, and a rehearsal with tiny shapes renders its report."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_quick", ROOT / "scripts" / "gpu_quick.py")
gq = importlib.util.module_from_spec(_spec)
sys.modules["gpu_quick"] = gq  # dataclasses look the module up
_spec.loader.exec_module(gq)

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """A Job run in this process ignores SIGINT while it finishes (gpu_quick.Job.finish) and leaves it so:
    the worker's children would inherit SIG_IGN (a sweep interrupted in tests/test_sweep_resume.py would
    ignore the signal and run to its end), so each test gets the handlers back as they were."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _py(code: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(code)]


FAKE_SWEEP = """
    import json, os, sys, time
    d = sys.argv[1]
    with open(os.path.join(d, "results.jsonl"), "w") as f:
        f.write(json.dumps({"environment": {"device": "cpu"}}) + "\\n")
        f.write(json.dumps({"op": "attention", "backend": "naive", "status": "ok", "median_s": 1e-3}) + "\\n")
        f.write('{"op": "attention", "backe')  # a row cut by the interrupt
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(130)
"""
STUBBORN = """
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(60)
"""


def _assert_bundle(bundle_dir: Path) -> list:
    """Within the device tool's limits; returns the names in the reassembled tar."""
    files = [p for p in bundle_dir.iterdir() if p.is_file()]
    assert 0 < len(files) <= 8, [p.name for p in files]
    assert all(p.stat().st_size <= 16 * MiB for p in files)
    assert sum(p.stat().st_size for p in files) <= 64 * MiB
    assert {"plan.json", "quick.md"} <= {p.name for p in files}
    parts = sorted(bundle_dir.glob(gq.BUNDLE_NAME + "*"))
    tar = bundle_dir / "joined.tar.gz"
    tar.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tar) as t:
        names = t.getnames()
    tar.unlink()
    return names


def test_planner_records_every_outcome(tmp_path, monkeypatch):
    monkeypatch.setattr(gq.Job, "render_reports", lambda self: None)  # the fake rows are no sweep's
    steps = [
        gq.Step("fine", 1, 1, "", [], cpu=_py("pass"), cpu_est_s=0.1),
        gq.Step("fails", 1, 1, "", [], cpu=_py("import sys; sys.exit(3)"), cpu_est_s=0.1),
        gq.Step("gpu-only", 2, 1, "", [], needs_cuda="a CUDA kernel"),
        gq.Step("too-long", 2, 1, "", [], cpu=_py("pass"), cpu_est_s=1000),
        gq.Step("capped", 3, 1, "", [], cpu=_py(STUBBORN), cpu_est_s=0.1, cap_s=1),
        gq.Step("runs-over", 3, 1, "", [], cpu=_py(FAKE_SWEEP) + ["{dir}"], cpu_est_s=0.1, sweep=True),
        gq.Step("after", 4, 1, "", [], cpu=_py("pass"), cpu_est_s=0.1),
    ]
    out = tmp_path / "out"
    job = gq.Job(steps, out, tmp_path / "bundle", "cpu", deadline=4, reserve=0, grace=0.5,
                 python=sys.executable, report_timeout=10)
    assert job.run() == 1  # one step failed
    plan = json.loads((out / "plan.json").read_text())
    got = {s["name"]: s for s in plan["steps"]}
    assert got["fine"]["status"] == "ok" and got["fine"]["rc"] == 0 and got["fine"]["seconds"] is not None
    assert got["fails"]["status"] == "failed" and got["fails"]["rc"] == 3 and "exit status 3" in got["fails"]["reason"]
    assert got["gpu-only"]["status"] == "skipped" and got["gpu-only"]["reason"] == "needs CUDA: a CUDA kernel"
    assert got["too-long"]["status"] == "skipped" and "would not finish" in got["too-long"]["reason"]
    capped = got["capped"]
    assert capped["status"] == "interrupted" and "its cap of 1 s" in capped["reason"]
    assert 1 <= capped["seconds"] < 5, "SIGINT was ignored: SIGTERM must follow after the grace"
    over = got["runs-over"]
    assert over["status"] == "interrupted" and "the deadline" in over["reason"], over
    assert over["rows"] == 1 and "1 finished rows kept" in over["reason"]
    assert got["after"]["status"] == "skipped" and "deadline reached" in got["after"]["reason"]
    assert plan["elapsed_s"] < 4 + 5
    names = _assert_bundle(tmp_path / "bundle")
    assert {"plan.json", "quick.md", "quick.log", "runs-over/results.jsonl", "capped/step.log"} <= set(names)
    bundled = json.loads((tmp_path / "bundle" / "plan.json").read_text())
    assert bundled["bundle"]["files"] and not bundled["bundle"]["left_out"]


def test_bundle_splits_and_leaves_out_what_does_not_fit(tmp_path):
    out, bundle_dir = tmp_path / "out", tmp_path / "back"
    (out / "step").mkdir(parents=True)
    small = os.urandom(200_000)  # random bytes: gzip cannot shrink them
    (out / "step" / "a.bin").write_bytes(small)
    (out / "big.bin").write_bytes(os.urandom(1_000_000))
    (out / "plan.json").write_text("{}")
    (out / "quick.md").write_text("# quick\n")
    bundle_dir.mkdir()
    (bundle_dir / "console.log").write_text("already here\n")  # counts against the 8 files
    info = gq.bundle(out, bundle_dir, extra=[out / "plan.json", out / "quick.md"], part_bytes=64 * 1024,
                     total_bytes=4 * MiB, margin=0)
    files = sorted(p.name for p in bundle_dir.iterdir())
    assert len(files) <= 8 and "console.log" in files
    parts = [f for f in files if f.startswith(gq.BUNDLE_NAME)]
    assert len(parts) == 4 and all((bundle_dir / f).stat().st_size <= 64 * 1024 for f in parts)  # 200 kB in 64 kB parts
    assert info["left_out"] == ["big.bin (1000000 bytes)"] and "cat " in info["unpack"]
    joined = tmp_path / "joined.tar.gz"
    joined.write_bytes(b"".join((bundle_dir / f).read_bytes() for f in sorted(parts)))
    with tarfile.open(joined) as t:
        assert t.extractfile("step/a.bin").read() == small
        assert "big.bin" not in t.getnames()
    assert gq.LIMIT_FILES == 8 and gq.LIMIT_FILE_BYTES == 16 * MiB and gq.LIMIT_TOTAL_BYTES == 64 * MiB


def _run_entry_point(out: Path, *flags: str, timeout: float) -> subprocess.CompletedProcess:
    env = subprocess_env() | {"DEVICE": "cpu", "PYTHON": sys.executable}
    return subprocess.run(["bash", "scripts/gpu_job.sh", "quick", str(out), "--bundle-dir", str(out.parent / "back"),
                           *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_entry_point_honours_a_short_deadline(tmp_path):
    """A deadline of 4 s (steps until 3 s) and every estimate scaled to 0: the step running at 3 s is
    interrupted, every later one is skipped for the deadline, the CUDA-only ones for CUDA; bundled."""
    out = tmp_path / "quick"
    proc = _run_entry_point(out, "--deadline", "4", "--reserve", "1", "--scale", "0", timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads((out / "plan.json").read_text())["steps"]
    assert [s["name"] for s in steps] == [s.name for s in gq.PLAN]
    cuda_only = {s.name for s in gq.PLAN if s.cpu is None}
    assert cuda_only and all(s["status"] == "skipped" and s["reason"].startswith("needs CUDA: ")
                             for s in steps if s["name"] in cuda_only)
    runnable = [s for s in steps if s["name"] not in cuda_only]
    statuses = [s["status"] for s in runnable]
    assert statuses.count("interrupted") == 1, statuses
    cut = statuses.index("interrupted")
    assert all(s == "ok" for s in statuses[:cut]), statuses
    assert "interrupted by the deadline" in runnable[cut]["reason"]
    assert runnable[cut + 1:] and all(s["status"] == "skipped" and "deadline reached" in s["reason"]
                                      for s in runnable[cut + 1:])
    names = _assert_bundle(out.parent / "back")
    assert {"plan.json", "quick.md", "quick.log", f"{runnable[cut]['name']}/step.log"} <= set(names)
    assert "| interrupted |" in (out / "quick.md").read_text()


@pytest.mark.slow
def test_cpu_rehearsal_renders_its_report(tmp_path):
    """The entry point with tiny shapes end to end: a CUDA-only step skipped with its reason, op-level
    attention measured, a step whose estimate exceeds the time left skipped, the report rendered from
    the results and bundled with them."""
    out = tmp_path / "quick"
    proc = _run_entry_point(out, "--only", "correctness,attention-short,full-suite", "--deadline", "600",
                            "--reserve", "120", timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = {s["name"]: s for s in json.loads((out / "plan.json").read_text())["steps"]}
    assert got["correctness"]["status"] == "skipped" and got["correctness"]["reason"].startswith("needs CUDA")
    assert got["full-suite"]["status"] == "skipped" and "would not finish" in got["full-suite"]["reason"]
    attn = got["attention-short"]
    assert attn["status"] == "ok" and attn["rows"] >= 2 and attn["report"] == "ok", attn
    report = (out / "attention-short" / "report.md").read_text()
    assert "sdpa-flash" in report
    summary = (out / "quick.md").read_text()
    assert "## Measured" in summary and "attention-short/report.md" in summary
    names = _assert_bundle(out.parent / "back")
    assert {"attention-short/results.jsonl", "attention-short/report.md", "quick.md"} <= set(names)


def test_probe_describes_the_environment(tmp_path):
    assert gq.probe("cpu", tmp_path) == 0
    info = json.loads((tmp_path / "environment.json").read_text())
    assert info["versions"]["torch"] and info["versions"]["python"]
    assert not info["errors"], info["errors"]
    assert len(info["sdpa"]) == 2 * len(gq.SDPA_SHAPES)  # fp32 and bf16 on a CPU
    assert {e["fwd"] for e in info["sdpa"]} <= {"sdpa-flash", "sdpa-math", "sdpa-efficient", "sdpa-cudnn"}
    assert all(set(e["pinned"]) == {"sdpa-flash", "sdpa-efficient", "sdpa-cudnn"} for e in info["sdpa"])
    assert {r["name"] for r in info["backends"]["fp32"]} >= {"sdpa", "triton", "naive"}


def test_the_plan_fits_the_device_budget():
    """Priorities 1-5 fit inside the default deadline less its reserve on an H100/H200 by their
    estimates; the device command fits the tool's 2,000 characters and is the documented one."""
    d = gq.DEFAULTS
    first = sum(s.est_s for s in gq.PLAN if s.priority <= 5)
    assert first <= d["deadline"] - d["reserve"]["cuda"]
    assert [s.priority for s in gq.PLAN] == sorted(s.priority for s in gq.PLAN)
    assert len(set(s.name for s in gq.PLAN)) == len(gq.PLAN)
    assert all(s.cpu is not None or s.needs_cuda for s in gq.PLAN)
    assert len(gq.DEVICE_COMMAND) < 2000
    assert gq.DEVICE_COMMAND in (ROOT / "scripts" / "README.md").read_text()
