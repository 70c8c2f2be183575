#!/usr/bin/env python3
"""fastvit's quick GPU check: the facts only a GPU gives, most important first, inside one deadline.

    scripts/gpu_quick.py [--out DIR] [--bundle-dir DIR] [--deadline S] [--reserve S] [--device cuda|cpu]
                         [--only A,B] [--skip A,B] [--list]
    scripts/gpu_quick.py probe --device D --out DIR      (the environment step, on its own)

``scripts/gpu_job.sh quick`` and ``make gpu-quick`` run this; on the device tool's machine
``scripts/device_job.sh quick`` (which installs the carried wheels first). scripts/README.md has the
plan, the estimated cost of each step and the device command.

How it plans. Every step has an estimated cost on an H100/H200 (``est_s``; on a CPU rehearsal its
``cpu_est_s``). The steps run one at a time in priority order until the horizon, which is the deadline
less a reserve kept for stopping a step, rendering the reports and bundling. A step is started only
if its estimate fits in the time left before the horizon, else it is recorded as skipped ("would not
finish") and the next, cheaper ones are still tried; a step still running at the horizon (or past its
own cap) gets SIGINT, so that a sweep keeps every comparison group it finished and pytest writes its
junit file, then SIGTERM and SIGKILL if it does not stop. A step that needs CUDA is skipped, with
that reason, on a machine without it. Each step's status (ok, failed with its exit status, skipped
with why, interrupted with by what) and seconds go to plan.json as they change.

Whatever happens (the deadline, a failure, SIGINT or SIGTERM to this script), the end runs: a
``fastvit report`` of every results.jsonl that holds rows (also a partial one), quick.md (the steps,
the SDPA kernels, the measured comparisons), and the bundle: the output folder as a .tar.gz split
into parts of at most 16 MiB, with quick.md and plan.json beside it, at most 8 files and 64 MiB in
all (the device tool's limits on what comes back), counting what the bundle folder already holds.

This file needs only the standard library, except for ``probe``, which imports torch and fastvit.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
LIMIT_FILES = 8               # the device tool returns at most 8 files ...
LIMIT_FILE_BYTES = 16 * MiB   # ... of at most 16 MiB each ...
LIMIT_TOTAL_BYTES = 64 * MiB  # ... and 64 MiB together
BUNDLE_NAME = "fastvit-quick.tar.gz"
DEFAULTS = {"deadline": 480.0, "reserve": {"cuda": 40.0, "cpu": 60.0}, "grace": {"cuda": 15.0, "cpu": 10.0},
            "report_timeout": 120.0}

# The device tool's command (carry [".whl"], made by scripts/gpu_wheels.sh; timeout_s 600): the wheels
# installed, this plan run against its deadline, everything back in $OUT (scripts/README.md).
DEVICE_COMMAND = "set -o pipefail; BUNDLE_DIR=$OUT bash scripts/device_job.sh quick /tmp/fq 2>&1 | tee $OUT/console.log"

# -- the plan ----------------------------------------------------------------------------------------------

GPU_MODEL, CPU_MODEL = "vit_base_patch16_224", "vit_tiny_patch16_224"
ATTN_PEERS = "triton,sdpa-flash,sdpa-efficient,sdpa-cudnn,xformers"  # triton first: every ratio is X over triton
CORRECTNESS_TESTS = ["tests/test_flash_attention.py", "tests/test_attention.py", "tests/test_layer_norm.py",
                     "tests/test_patch_embed.py"]


@dataclasses.dataclass
class Step:
    name: str
    priority: int
    est_s: float                 # estimated seconds on an H100/H200 (start of its process included)
    what: str                    # the question it answers
    gpu: list                    # its command on CUDA (list of str; "{py}" and "{dir}" are filled in)
    cpu: list | None = None      # its CPU rehearsal command (tiny shapes); None: CUDA only
    cpu_est_s: float = 0.0       # estimated seconds of the rehearsal on a 2-core CPU
    needs_cuda: str = ""         # why it needs CUDA (with cpu None)
    sweep: bool = False          # writes results.jsonl into its folder, reported at the end
    cap_s: float | None = None   # the longest it may run, even with time left
    env: dict = dataclasses.field(default_factory=dict)


def _sweep(paths: list, *flags: str) -> list:
    return ["bash", "scripts/sweep.sh", "{dir}", *paths, *flags]


def _gpu_sweep(paths, *flags):
    return _sweep(paths, "--device", "cuda", "--dtype", "bf16", *flags)


def _cpu_sweep(paths, *flags):  # tiny shapes, one thread, a short budget per group
    return _sweep(paths, "--device", "cpu", "--dtype", "fp32", "--model", CPU_MODEL, "--batch-size", "1",
                  "--pass", "fwd", "--threads", "1", "--time-budget", "0.5", "--no-aa", *flags)


def _check(model, dtype, device, *extra):
    return ["{py}", "-m", "fastvit.cli", "check", "--model", model, "--dtype", dtype, "--device", device,
            "--json", "{dir}/check.json", *extra]


def _pytest(*args):
    return ["{py}", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--junitxml={dir}/tests.xml", *args]


B_ATT = ["benchmarks/bench_attention.py"]
B_OPS = ["benchmarks/bench_layer_norm.py", "benchmarks/bench_patch_embed.py"]
B_VIT = ["benchmarks/bench_vit.py"]
COMPILE_ON_CPU = "torch.compile of a model takes minutes on this CPU (make bench has the CPU +compile rows)"

PLAN = [
    Step("environment", 1, 20, "GPU, driver, torch, CUDA, cuDNN, Triton, xformers versions; the SDPA kernel PyTorch "
         "picks per shape and dtype, and which pinned kernels accept each shape",
         ["{py}", "scripts/gpu_quick.py", "probe", "--device", "cuda", "--out", "{dir}"],
         ["{py}", "scripts/gpu_quick.py", "probe", "--device", "cpu", "--out", "{dir}"], cpu_est_s=20, cap_s=90),
    Step("correctness", 2, 90, "the Triton kernels (attention, add + LayerNorm, patch embedding) and every attention "
         "backend forward and backward against float64 on CUDA in fp32, fp16 and bf16: ViT-B/16 at 224 and 384 px, "
         "head dim 80, Swin's window bias, DeiT's two prefix rows, the attention-semantics cases, and every "
         "configuration of the default autotune space (the rest with the single 'off' tile, as gpu_job.sh tests)",
         _pytest("-k", "cuda", "{xdist}", *CORRECTNESS_TESTS),
         needs_cuda="the kernel tests on CUDA (make test runs them through Triton's interpreter)", cap_s=200,
         env={"FASTVIT_AUTOTUNE": "off"}),
    Step("attention-short", 3, 70, "op-level attention, ViT-B/16 shapes at N = 197 and 577 (224, 384 px), batch 64, "
         "bf16, forward and training step: triton against sdpa-flash, sdpa-efficient, sdpa-cudnn and xformers, "
         "paired, with TFLOP/s",
         _gpu_sweep(B_ATT, "--model", GPU_MODEL, "--attn-backend", ATTN_PEERS, "--resolutions", "224,384",
                    "--batch-size", "64", "--time-budget", "2"),
         _cpu_sweep(B_ATT, "--attn-backend", "sdpa-flash,naive,triton,xformers", "--resolutions", "32"),
         cpu_est_s=50, sweep=True),
    Step("attention-long", 3, 45, "the same at N = 1025 and 4097 (512, 1024 px), batch 8",
         _gpu_sweep(B_ATT, "--model", GPU_MODEL, "--attn-backend", ATTN_PEERS, "--resolutions", "512,1024",
                    "--batch-size", "8", "--time-budget", "2"),
         _cpu_sweep(B_ATT, "--attn-backend", "sdpa-flash,naive,triton", "--resolutions", "48"),
         cpu_est_s=50, sweep=True),
    Step("norm-patch", 4, 55, "add + LayerNorm (triton against eager torch, GB/s against the copy bandwidth) and "
         "patch embedding (triton and einops against the convolution), ViT-B/16 shapes at 224 and 1024 px, batch 64",
         _gpu_sweep(B_OPS, "--model", GPU_MODEL, "--resolutions", "224,1024", "--batch-size", "64",
                    "--time-budget", "2"),
         _cpu_sweep(B_OPS, "--resolutions", "32"), cpu_est_s=50, sweep=True),
    Step("vit-b", 5, 70, "the whole ViT-B/16, forward and training step, bf16, batch 8, at 224 and 384 px, per backend "
         "set: attention sdpa or triton x LayerNorm torch or triton (patch embedding conv), eager",
         _gpu_sweep(B_VIT, "--model", GPU_MODEL, "--resolutions", "224,384", "--model-resolutions", "224,384",
                    "--attn-backend", "sdpa,triton", "--norm-backend", "torch,triton", "--compile-at", "none",
                    "--batch-size", "8", "--time-budget", "2"),
         _cpu_sweep(B_VIT, "--resolutions", "32", "--model-resolutions", "32", "--attn-backend", "sdpa,naive",
                    "--compile-at", "none"), cpu_est_s=50, sweep=True),
    Step("vit-b-compile", 5, 80, "ViT-B/16 forward at 224 px, batch 8: sdpa and triton attention eager and under "
         "torch.compile (inductor), paired",
         _gpu_sweep(B_VIT, "--model", GPU_MODEL, "--resolutions", "224", "--model-resolutions", "224",
                    "--attn-backend", "sdpa,triton", "--compile-at", "224", "--pass", "fwd", "--batch-size", "8",
                    "--time-budget", "2"),
         needs_cuda=COMPILE_ON_CPU, sweep=True),
    # 6: anything left, each tried in turn while time remains
    Step("check-bf16", 6, 40, "fastvit check --backward of ViT-B/16 in bf16: every backend of every op in the "
         "whole model against the float64 reference, the kernels autotuned as in the sweeps",
         _check(GPU_MODEL, "bf16", "cuda", "--backward"),
         _check(CPU_MODEL, "fp32", "cpu", "--batch-size", "1", "--img-size", "32"), cpu_est_s=40),
    Step("vit-b-compile-train", 6, 140, "the ViT-B/16 training step at 224 px, eager and compiled (sdpa, triton)",
         _gpu_sweep(B_VIT, "--model", GPU_MODEL, "--resolutions", "224", "--model-resolutions", "224",
                    "--attn-backend", "sdpa,triton", "--compile-at", "224", "--pass", "train", "--batch-size", "8",
                    "--time-budget", "2"),
         needs_cuda=COMPILE_ON_CPU, sweep=True),
    Step("vit-b-sizes", 6, 90, "the whole ViT-B/16 at 512, 768 and 1024 px (sdpa, triton, xformers), both passes",
         _gpu_sweep(B_VIT, "--model", GPU_MODEL, "--resolutions", "512,768,1024", "--model-resolutions",
                    "512,768,1024", "--attn-backend", "sdpa,triton,xformers", "--compile-at", "none",
                    "--batch-size", "8", "--time-budget", "2"),
         _cpu_sweep(B_VIT, "--resolutions", "48", "--model-resolutions", "48", "--compile-at", "none"),
         cpu_est_s=50, sweep=True),
    Step("vit-l", 6, 150, "ViT-L/16 at 224 and 384 px: op-level attention (every peer) and the whole model, batch 8",
         _gpu_sweep(B_ATT + B_VIT, "--model", "vit_large_patch16_224", "--attn-backend", ATTN_PEERS, "--resolutions",
                    "224,384", "--compile-at", "none", "--batch-size", "8", "--time-budget", "2"),
         needs_cuda="ViT-L/16 is a GPU-sized model (the CPU sweep uses the small presets)", sweep=True),
    Step("check-fp16", 6, 40, "fastvit check --backward of ViT-B/16 in fp16", _check(GPU_MODEL, "fp16", "cuda", "--backward"),
         needs_cuda="fp16 on CPU is not what the GPU runs"),
    Step("check-fp32", 6, 40, "fastvit check --backward of ViT-B/16 in fp32", _check(GPU_MODEL, "fp32", "cuda", "--backward"),
         needs_cuda="the CPU check is make test's"),
    Step("full-suite", 6, 600, "the whole equivalence suite on CUDA (as scripts/gpu_job.sh tests)",
         _pytest("{xdist}", "tests", "--ignore=tests/test_gpu_quick.py"),
         _pytest("tests", "--ignore=tests/test_gpu_quick.py"), cpu_est_s=1800, env={"FASTVIT_AUTOTUNE": "off"}),
]


def plan_steps(only: list | None = None, skip: list | None = None) -> list:
    names = [s.name for s in PLAN]
    for name in (only or []) + (skip or []):
        if name not in names:
            raise SystemExit(f"gpu_quick: unknown step {name!r}; steps: {', '.join(names)}")
    return [s for s in PLAN if (not only or s.name in only) and s.name not in (skip or [])]


# -- running -------------------------------------------------------------------------------------------------

class Job:
    def __init__(self, steps, out: Path, bundle_dir: Path, device: str, deadline: float, reserve: float,
                 grace: float, python: str, report_timeout: float, xdist: str | None = None, scale: float = 1.0):
        self.steps, self.out, self.bundle_dir, self.device, self.scale = steps, out, bundle_dir, device, scale
        self.deadline, self.reserve, self.grace, self.python = deadline, reserve, grace, python
        self.report_timeout = report_timeout
        self.horizon = max(0.0, deadline - reserve)
        self.xdist = xdist
        self.stop_reason: str | None = None  # set by SIGINT / SIGTERM to this script
        self.t0 = time.monotonic()
        self.started = dt.datetime.now(dt.timezone.utc)
        self.records = [self._record(s) for s in steps]
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "quick.log", "a", buffering=1)

    # -- bookkeeping --
    def _record(self, s: Step) -> dict:
        runs_here = self.device == "cuda" or s.cpu is not None
        return {"name": s.name, "priority": s.priority, "what": s.what, "est_s": s.est_s,
                "planned_s": (s.est_s if self.device == "cuda" else s.cpu_est_s) * self.scale, "cuda_only": s.cpu is None,
                "command": shlex.join(self.command(s)) if runs_here else shlex.join(self.command(s, "cuda")),
                "status": "pending", "reason": "", "rc": None, "seconds": None, "start_s": None,
                "dir": s.name, "log": f"{s.name}/step.log"}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, msg: str) -> None:
        line = f"[quick {self.now():5.0f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def command(self, s: Step, device: str | None = None) -> list:
        cmd = s.gpu if (device or self.device) == "cuda" else s.cpu
        d = str(self.out / s.name)
        out = []
        for part in cmd:
            if part == "{xdist}":
                out += ["-n", self.xdist] if self.xdist else []
            else:
                out.append(part.replace("{py}", self.python).replace("{dir}", d))
        return out

    def write_plan(self, final: dict | None = None) -> dict:
        plan = {"job": "fastvit quick GPU check (scripts/gpu_quick.py)", "device": self.device,
                "started": self.started.isoformat(timespec="seconds"), "elapsed_s": round(self.now(), 1),
                "deadline_s": self.deadline, "reserve_s": self.reserve, "horizon_s": self.horizon,
                "grace_s": self.grace, "scale": self.scale,
                "estimates": "est_s: seconds on an H100/H200; planned_s: this device's estimate (est_s on CUDA, the "
                             "rehearsal's on a CPU) times scale, what the plan compares with the time left",
                "estimated_total_s": sum(r["est_s"] for r in self.records),
                "stopped_by": self.stop_reason, "steps": self.records, **(final or {})}
        tmp = self.out / "plan.json.tmp"
        tmp.write_text(json.dumps(plan, indent=2) + "\n")
        tmp.replace(self.out / "plan.json")
        return plan

    def child_env(self, s: Step) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}
        env.update(PYTHONUNBUFFERED="1", PYTHON=self.python, MPLBACKEND="Agg", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", **s.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        return env

    # -- one step --
    def run_step(self, s: Step, rec: dict) -> None:
        if s.cpu is None and self.device != "cuda":
            rec.update(status="skipped", reason=f"needs CUDA: {s.needs_cuda}")
            return
        if self.stop_reason:
            rec.update(status="skipped", reason=f"the job was stopped ({self.stop_reason})")
            return
        left = self.horizon - self.now()
        if left <= 0:
            rec.update(status="skipped", reason=f"deadline reached ({self.horizon:.0f} s after the start, "
                                                f"{self.reserve:.0f} s kept for the reports and the bundle)")
            return
        if rec["planned_s"] > left:
            rec.update(status="skipped", reason=f"would not finish before the deadline (estimated "
                                                f"{rec['planned_s']:.0f} s, {left:.0f} s left)")
            return
        limit, by = (left, "the deadline") if s.cap_s is None or s.cap_s >= left else (s.cap_s, f"its cap of {s.cap_s:.0f} s")
        folder = self.out / s.name
        folder.mkdir(parents=True, exist_ok=True)
        cmd = self.command(s)
        rec.update(status="running", start_s=round(self.now(), 1))
        self.write_plan()
        self.say(f"{s.name}: started (estimated {rec['planned_s']:.0f} s, {left:.0f} s left): {shlex.join(cmd)}")
        start = time.monotonic()
        with open(folder / "step.log", "w") as log:
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.child_env(s), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, process_group=0)
            interrupted = None
            while proc.poll() is None:
                if self.stop_reason or time.monotonic() - start >= limit:
                    interrupted = f"the job was stopped ({self.stop_reason})" if self.stop_reason else by
                    self.say(f"{s.name}: interrupting at {by if not self.stop_reason else self.stop_reason}")
                    self._stop(proc)
                    break
                time.sleep(0.1)
            _killpg(proc.pid, signal.SIGKILL)  # whatever the step left behind in its process group
        rec["seconds"] = round(time.monotonic() - start, 1)
        rec["rc"] = proc.returncode
        if interrupted:
            rec.update(status="interrupted", reason=f"interrupted by {interrupted} after {rec['seconds']:.0f} s")
        elif proc.returncode == 0:
            rec.update(status="ok", reason="")
        else:
            rec.update(status="failed", reason=f"exit status {proc.returncode}")
            self.say(f"{s.name}: failed (exit status {proc.returncode}); the end of its log:\n"
                     + _tail(folder / "step.log", 15))
        if s.sweep:
            rec["rows"] = count_rows(folder / "results.jsonl")
            if interrupted:
                rec["reason"] += f"; {rec['rows']} finished rows kept"

    def _stop(self, proc) -> None:
        """SIGINT (a sweep keeps its finished groups, pytest writes its junit file), then SIGTERM, SIGKILL."""
        for sig, wait in ((signal.SIGINT, self.grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            _killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def run(self) -> int:
        self.say(f"plan on {self.device}: deadline {self.deadline:.0f} s, steps until {self.horizon:.0f} s, "
                 f"{len(self.steps)} steps, out {self.out}")
        self.write_plan()
        try:
            for s, rec in zip(self.steps, self.records):
                self.run_step(s, rec)
                self.say(f"{s.name}: {rec['status']}{': ' + rec['reason'] if rec['reason'] else ''}")
                self.write_plan()
        finally:
            self.finish()
        return 0 if all(r["status"] in ("ok", "skipped", "interrupted") for r in self.records) else 1

    # -- the end: reports, summary, bundle --
    def finish(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the end is short and must complete
        for rec in self.records:
            if rec["status"] in ("pending", "running"):
                rec.update(status="skipped", reason=f"the job was stopped ({self.stop_reason or 'error'})")
        self.render_reports()
        plan = self.write_plan()
        summary = write_summary(self.out, plan)
        try:
            info = bundle(self.out, self.bundle_dir, extra=[self.out / "plan.json", self.out / "quick.md"])
        except Exception as err:  # the summary still comes back
            info = {"error": f"{type(err).__name__}: {err}"}
        plan = self.write_plan({"bundle": info})
        if info.get("files"):
            (self.bundle_dir / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
        print(summary, flush=True)
        self.say(f"finished in {self.now():.0f} s; bundle: {info}")
        self.log.close()

    def render_reports(self) -> None:
        todo = [(rec, self.out / rec["dir"] / "results.jsonl") for rec in self.records]
        todo = [(rec, path) for rec, path in todo if count_rows(path) > 0]
        if not todo:
            return

        # on CUDA the reports end at most a minute after the deadline: the device tool's command has 600 s
        timeout = self.report_timeout if self.device != "cuda" else \
            max(20.0, min(self.report_timeout, self.deadline + 60 - self.now()))

        def render(item):
            rec, path = item
            cmd = [self.python, "-m", "fastvit.cli", "report", str(path), "-o", str(path.parent)]
            with open(path.parent / "report.log", "w") as log:
                try:
                    p = subprocess.run(cmd, cwd=ROOT, env=self.child_env(Step("report", 0, 0, "", [])), stdout=log,
                                       stderr=subprocess.STDOUT, timeout=timeout)
                    return rec, "ok" if p.returncode == 0 and (path.parent / "report.md").exists() \
                        else f"failed (exit status {p.returncode})"
                except subprocess.TimeoutExpired:
                    return rec, f"timed out after {timeout:.0f} s"

        self.say(f"rendering {len(todo)} report(s)")
        workers = max(1, min(len(todo), (os.cpu_count() or 2) // 2, 8))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for rec, status in pool.map(render, todo):
                rec["report"] = status
                rec["report_md"] = f"{rec['dir']}/report.md" if status == "ok" else None


def _killpg(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def read_rows(path: Path) -> list:
    rows = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by an interrupt
        if isinstance(row, dict) and "environment" not in row:
            rows.append(row)
    return rows


def count_rows(path: Path) -> int:
    return len(read_rows(path))


# -- the summary -------------------------------------------------------------------------------------------

def _fmt_ratio(r: dict) -> str:
    if r.get("ratio") is None:
        return "baseline" if r.get("member") == r.get("baseline") else ""
    lo, hi = r.get("ratio_low"), r.get("ratio_high")
    interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{r['ratio']:.3f}{interval} {r.get('verdict') or ''}".rstrip()


def _measured_lines(rows: list) -> list:
    out = []
    for r in rows:
        member = r.get("member") or r.get("backend")
        median = r.get("kernel_median_s") or r.get("median_s")
        if r.get("status") != "ok" or median is None:
            status = str(r.get("status"))
            out.append(f"| {r.get('op')} | {r.get('resolution')} | {r.get('batch')} | {r.get('pass')} | {member} | "
                       f"{status[:90] + ('...' if len(status) > 90 else '')} | | |")
            continue
        rate = ""
        if r.get("flops") and r.get("op") in ("attention", "model"):
            per_s = r["flops"] / median
            rate = f"{per_s / 1e12:.0f} TFLOP/s" if per_s >= 1e12 else f"{per_s / 1e9:.1f} GFLOP/s"
        elif r.get("bytes"):
            rate = f"{r['bytes'] / median / 1e9:.0f} GB/s"
        out.append(f"| {r.get('op')} | {r.get('resolution')} | {r.get('batch')} | {r.get('pass')} | {member} | "
                   f"{median * 1e3:.3f} ms | {rate} | {_fmt_ratio(r)} |")
    return out


def write_summary(out: Path, plan: dict) -> str:
    """Write quick.md (the steps, the SDPA kernels, the measured rows); return the same for the console,
    the measured rows first and the steps last."""
    lines = [f"# fastvit quick GPU check on {plan['device']}", ""]
    env = {}
    try:
        env = json.loads((out / "environment" / "environment.json").read_text())
    except (OSError, ValueError):
        pass
    v = env.get("versions", {})
    if env:
        lines += [f"- device: {env.get('device_name', plan['device'])}; " + ", ".join(
            f"{k} {v[k]}" for k in ("torch", "cuda", "cudnn", "triton", "xformers", "driver") if v.get(k)), ""]
    used = plan["elapsed_s"]
    lines += [f"- started {plan['started']}, deadline {plan['deadline_s']:.0f} s (steps until {plan['horizon_s']:.0f} s), "
              f"took {used:.0f} s; estimated cost of the whole plan on an H100/H200 {plan['estimated_total_s']:.0f} s"
              + (f"; stopped by {plan['stopped_by']}" if plan.get("stopped_by") else ""), "",
              "| # | step | est. s (H100/H200) | planned s | seconds | status | why |",
              "|---|---|---|---|---|---|---|"]
    for r in plan["steps"]:
        secs = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        extra = f" ({r['rows']} rows)" if "rows" in r else ""
        report = f"[report]({r['report_md']})" if r.get("report_md") else ""
        report = f"; {report}" if report and r["reason"] else report
        lines.append(f"| {r['priority']} | {r['name']} | {r['est_s']:.0f} | {r['planned_s']:.0f} | {secs} | "
                     f"{r['status']}{extra} | {r['reason']}{report} |")
    sdpa, kernels = env.get("sdpa") or [], []
    if sdpa:
        kernels += ["", "## SDPA kernels per shape", "",
                  "| shape | dtype | sdpa picks (fwd / train) | pinned kernels that refuse it |", "|---|---|---|---|"]
        for e in sdpa:
            refused = "; ".join(f"{k}" for k, ok in e.get("pinned", {}).items() if ok != "ok") or "none"
            kernels.append(f"| {e['shape']} | {e['dtype']} | {e.get('fwd')} / {e.get('train')} | {refused} |")
    measured = []
    for r in plan["steps"]:
        rows = read_rows(out / r["dir"] / "results.jsonl")
        if rows:
            measured += [f"", f"### {r['name']}", "", "| op | px | batch | pass | member | median | rate | "
                         "ratio to baseline [95%] |", "|---|---|---|---|---|---|---|---|"] + _measured_lines(rows)
    if measured:
        measured = ["", "## Measured (CUDA-event medians where there are any; ratios paired within a group)"] + measured
    (out / "quick.md").write_text("\n".join(lines + kernels + measured) + "\n")
    # printed with the steps last: the device tool's reply shows the end of the output
    return "\n".join(kernels + measured + [""] + lines) + "\n"


# -- the bundle -----------------------------------------------------------------------------------------------

def bundle(out: Path, bundle_dir: Path, extra=(), name: str = BUNDLE_NAME, max_files: int = LIMIT_FILES,
           part_bytes: int = LIMIT_FILE_BYTES, total_bytes: int = LIMIT_TOTAL_BYTES, margin: int = MiB) -> dict:
    """Pack ``out`` (less ``bundle_dir`` if inside it) into ``bundle_dir/name``, split into parts of at most
    ``part_bytes``, and copy ``extra`` beside it, so that bundle_dir holds at most ``max_files`` files and
    ``total_bytes`` in all, counting what it held before. Largest files are left out (and listed) until it fits."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    for old in list(bundle_dir.glob(name + "*")):
        old.unlink()
    ours = {p.name for p in extra} | {name}
    others = [p for p in bundle_dir.iterdir() if p.is_file() and p.name not in ours and not p.name.startswith(name)]
    room_files = max_files - len(others) - len(extra)
    room_bytes = total_bytes - sum(p.stat().st_size for p in others) - sum(Path(p).stat().st_size for p in extra
                                                                           if Path(p).exists()) - margin
    if room_files < 1 or room_bytes < 1:
        raise RuntimeError(f"no room in {bundle_dir}: {len(others)} other files, {room_bytes} bytes left")
    limit = min(room_bytes, room_files * part_bytes)
    inside = bundle_dir.resolve().is_relative_to(out.resolve())
    files = sorted((p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock")
                    and not (inside and p.resolve().is_relative_to(bundle_dir.resolve()))),
                   key=lambda p: str(p.relative_to(out)))
    left_out = []
    tar = bundle_dir / name
    while True:
        with tarfile.open(tar, "w:gz") as t:
            for p in files:
                t.add(p, arcname=str(p.relative_to(out)))
        size = tar.stat().st_size
        if size <= limit or not files:
            break
        biggest = max(files, key=lambda p: p.stat().st_size)
        files.remove(biggest)
        left_out.append(f"{biggest.relative_to(out)} ({biggest.stat().st_size} bytes)")
    parts = [tar]
    if size > part_bytes:
        parts = []
        with open(tar, "rb") as f:
            i = 0
            while chunk := f.read(part_bytes):
                part = bundle_dir / f"{name}.part{i:02d}"
                part.write_bytes(chunk)
                parts.append(part)
                i += 1
        tar.unlink()
    copied = []
    for p in extra:
        p = Path(p)
        if p.exists() and p.resolve() != (bundle_dir / p.name).resolve():
            (bundle_dir / p.name).write_bytes(p.read_bytes())
        if (bundle_dir / p.name).exists():
            copied.append(p.name)
    return {"dir": str(bundle_dir), "files": [p.name for p in parts] + copied, "tar_bytes": size,
            "members": len(files), "left_out": left_out,
            "unpack": (f"cat {name}.part* > {name} && " if len(parts) > 1 else "") + f"tar xzf {name} -C DIR"}


# -- the environment step (imports torch) -------------------------------------------------------------------

SDPA_SHAPES = [  # (label, B, H, N, D, bias)
    ("ViT-B/16 224px", 64, 12, 197, 64, False), ("ViT-B/16 384px", 64, 12, 577, 64, False),
    ("ViT-B/16 512px", 8, 12, 1025, 64, False), ("ViT-B/16 1024px", 8, 12, 4097, 64, False),
    ("ViT-L/16 224px", 8, 16, 197, 64, False), ("ViT-H/14 224px", 8, 16, 257, 80, False),
    ("DeiT-B distilled 224px", 8, 12, 198, 64, False), ("Swin-T window + bias", 512, 3, 49, 32, True),
]


def probe(device: str, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    info: dict = {"datetime": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": device,
                  "errors": []}
    text = []

    def attempt(label, fn):
        try:
            return fn()
        except Exception as err:  # every part on its own: one failure must not hide the rest
            info["errors"].append(f"{label}: {type(err).__name__}: {err}")
            return None

    def run(cmd, timeout=60):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            return (p.stdout + p.stderr).strip()
        except (OSError, subprocess.SubprocessError) as err:
            return f"{cmd[0]}: {err}"

    git = run(["git", "rev-parse", "HEAD"])
    info["git"] = git.splitlines()[0] if git and "fatal" not in git and "git:" not in git else None
    smi = run(["nvidia-smi"]) if device == "cuda" else "not asked for on cpu"
    text += ["## nvidia-smi", smi]
    driver = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if device == "cuda" else ""

    import importlib.metadata as md
    versions = {"python": sys.version.split()[0]}
    for dist in ("torch", "triton", "xformers", "numpy", "scipy", "pandas", "matplotlib", "markdown", "hypothesis",
                 "pytest", "pytest-xdist", "pytest-benchmark", "timm", "transformers", "einops"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    import torch
    versions.update(cuda=torch.version.cuda, cudnn=attempt("cudnn", torch.backends.cudnn.version),
                    driver=driver.splitlines()[0] if driver and "nvidia-smi" not in driver else None)
    info["versions"] = versions
    info["triton_autotune"] = os.environ.get("FASTVIT_AUTOTUNE", "on")
    # whether this Triton is one the kernels were audited with (a warning on stderr when it is not)
    info["triton_audit"] = run([sys.executable, "-m", "kernels.audit", "--check-version"])
    text += ["## triton audited?", info["triton_audit"]]
    if device == "cuda":
        if not torch.cuda.is_available():
            info["errors"].append("CUDA is not available to torch")
        else:
            p = torch.cuda.get_device_properties(0)
            info.update(device_name=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                        memory_gib=round(p.total_memory / 2**30, 1),
                        l2_mib=round(getattr(p, "L2_cache_size", 0) / MiB, 1))
    else:
        info["device_name"] = "cpu"
    import fastvit
    from fastvit.devices import DTYPES
    dtypes = ["bf16", "fp16", "fp32"] if device == "cuda" else ["fp32", "bf16"]
    info["backends"] = attempt("backends", lambda: {d: fastvit.list_backends(device, dtype=DTYPES[d]) for d in dtypes})
    info["sdpa"] = attempt("sdpa", lambda: _sdpa_table(torch, device, dtypes, DTYPES))
    info["xformers_dispatch"] = attempt("xformers", lambda: _xformers_dispatch(torch)) if device == "cuda" else None
    if device == "cuda":
        text += ["## python -m xformers.info", run([sys.executable, "-m", "xformers.info"], timeout=90)]
    text += ["## versions", json.dumps(versions, indent=2), "## backends", json.dumps(info["backends"], indent=1),
             "## sdpa", json.dumps(info["sdpa"], indent=1), "## errors", "\n".join(info["errors"]) or "none"]
    (out / "environment.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    (out / "environment.txt").write_text("\n\n".join(text) + "\n")
    print(json.dumps({k: info.get(k) for k in ("device_name", "versions", "errors")}, indent=1, default=str))
    return 0


def _sdpa_table(torch, device: str, dtypes, DTYPES) -> list:
    import warnings

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fastvit.ops.attention.sdpa import sdpa_kernel_choice
    pinned = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
              "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION}
    table = []
    for label, B, H, N, D, with_bias in SDPA_SHAPES:
        n = N if device == "cuda" else min(N, 64)  # on a CPU the kernels are asked about short rows only
        for d in dtypes:
            dtype = DTYPES[d]
            entry = {"shape": f"{label} (B={B}, H={H}, N={N}, D={D}{', bias' if with_bias else ''})", "dtype": d}
            b = B if device == "cuda" else 1
            q = torch.randn(b, H, N, D, device=device, dtype=dtype)
            bias = torch.randn(1, H, N, N, device=device, dtype=dtype) if with_bias else None
            entry["fwd"] = sdpa_kernel_choice(q, q, q, bias=bias)
            qg = q.detach().requires_grad_(True)
            entry["train"] = sdpa_kernel_choice(qg, qg, qg, bias=bias)
            entry["pinned"] = {}
            x = torch.randn(1, H, n, D, device=device, dtype=dtype, requires_grad=True)
            m = torch.randn(1, H, n, n, device=device, dtype=dtype) if with_bias else None
            for name, kernel in pinned.items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        with sdpa_kernel(kernel):
                            F.scaled_dot_product_attention(x, x, x, attn_mask=m).sum().backward()
                        entry["pinned"][name] = "ok"
                    except RuntimeError as err:
                        why = " ".join(str(w.message).splitlines()[0] for w in caught)[:300]
                        entry["pinned"][name] = f"refused: {str(err).splitlines()[0][:120]} {why}".strip()
            table.append(entry)
            del q, qg, x
    return table


def _xformers_dispatch(torch) -> dict:
    from xformers.ops import fmha
    out = {}
    for label, B, H, N, D, _ in SDPA_SHAPES[:4]:
        q = torch.randn(B, N, H, D, device="cuda", dtype=torch.bfloat16)
        inp = fmha.Inputs(query=q, key=q, value=q)
        out[label] = {"fwd": getattr(fmha._dispatch_fw(inp, False), "NAME", "?"),
                      "train": getattr(fmha._dispatch_fw(inp, True), "NAME", "?")}
    return out


# -- the command line -----------------------------------------------------------------------------------------

def _has_cuda() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _split(value) -> list:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _default_out(python: str, device: str) -> Path:
    if device != "cuda":  # a rehearsal: kept out of reports/
        return ROOT / ".benchmarks" / "quick-cpu"
    try:
        slug = subprocess.run([python, "-m", "fastvit.bench", "slug", "--device", device], cwd=ROOT, text=True,
                              capture_output=True, timeout=120).stdout.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        slug = "cuda-unknown"
    return ROOT / "reports" / slug / "quick"


def print_plan(steps, device: str) -> None:
    total = 0.0
    print(f"{'#':>2}  {'step':<20} {'est s':>6} {'cum s':>6}  on cpu")
    for s in steps:
        total += s.est_s
        print(f"{s.priority:>2}  {s.name:<20} {s.est_s:>6.0f} {total:>6.0f}  "
              + (f"rehearsed, {s.cpu_est_s:.0f} s" if s.cpu else f"skipped: {s.needs_cuda}"))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe"]:
        p = argparse.ArgumentParser(prog="gpu_quick.py probe")
        p.add_argument("--device", default="cuda")
        p.add_argument("--out", type=Path, required=True)
        a = p.parse_args(argv[1:])
        return probe(a.device, a.out)
    env = os.environ.get
    p = argparse.ArgumentParser(prog="gpu_quick.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default=env("DEVICE"),
                   help="default: $DEVICE, else cuda where nvidia-smi sees a GPU, else cpu (the rehearsal)")
    p.add_argument("--out", type=Path, default=Path(env("QUICK_OUT")) if env("QUICK_OUT") else None,
                   help="output folder (default: reports/<device slug>/quick on CUDA, .benchmarks/quick-cpu on cpu)")
    p.add_argument("--bundle-dir", type=Path, default=Path(env("BUNDLE_DIR")) if env("BUNDLE_DIR") else None,
                   help="where the bundle goes ($OUT on the device machine; default: OUT/bundle)")
    p.add_argument("--deadline", type=float, default=float(env("QUICK_DEADLINE", DEFAULTS["deadline"])),
                   help="seconds from the start by which everything, the reports and the bundle included, is done "
                        "[$QUICK_DEADLINE, 480]")
    p.add_argument("--reserve", type=float, default=float(env("QUICK_RESERVE")) if env("QUICK_RESERVE") else None,
                   help="seconds before the deadline kept for stopping a step, the reports and the bundle "
                        "[$QUICK_RESERVE, 40 on CUDA, 60 on cpu]")
    p.add_argument("--grace", type=float, default=None, help="seconds between SIGINT and SIGTERM [15 / 10]")
    p.add_argument("--report-timeout", type=float, default=DEFAULTS["report_timeout"])
    p.add_argument("--only", default=env("QUICK_ONLY"), help="run only these steps (comma-separated) [$QUICK_ONLY]")
    p.add_argument("--skip", default=env("QUICK_SKIP"), help="leave these steps out [$QUICK_SKIP]")
    p.add_argument("--python", default=env("PYTHON") or sys.executable, help="interpreter of the steps [$PYTHON]")
    p.add_argument("--workers", default=env("QUICK_WORKERS", "8"),
                   help="pytest-xdist workers of the CUDA test steps (0: serial) [$QUICK_WORKERS, 8]")
    p.add_argument("--scale", type=float, default=float(env("QUICK_SCALE", "1")),
                   help="multiplies every estimate before it is compared with the time left (1.3 for a slower card; "
                        "0 starts every step while time is left, so the deadline alone stops them) [$QUICK_SCALE, 1]")
    p.add_argument("--list", action="store_true", help="print the plan with its estimates and exit")
    a = p.parse_args(argv)
    device = a.device or ("cuda" if _has_cuda() else "cpu")
    steps = plan_steps(_split(a.only), _split(a.skip))
    if a.list:
        print_plan(steps, device)
        return 0
    out = (a.out or _default_out(a.python, device)).resolve()
    bundle_dir = (a.bundle_dir or out / "bundle").resolve()
    reserve = a.reserve if a.reserve is not None else DEFAULTS["reserve"][device]
    grace = a.grace if a.grace is not None else DEFAULTS["grace"][device]
    xdist = a.workers if a.workers not in ("", "0") and importlib.util.find_spec("xdist") is not None else None
    job = Job(steps, out, bundle_dir, device, a.deadline, reserve, grace, a.python, a.report_timeout, xdist, a.scale)

    def stop(signum, _frame):
        job.stop_reason = signal.Signals(signum).name
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return job.run()


if __name__ == "__main__":
    sys.exit(main())
