"""GPU readiness of fastvit's kernels, proven without a GPU: compile every launch for sm_90 and sm_80.

    python -m kernels.audit [--arch sm_90,sm_80] [--space on|full|off] [--json PATH] [--out DIR]
        [--results-cache PATH]
    python -m kernels.audit --check-version

``{triton}`` in a path given to --json, --out or --results-cache stands for the installed triton's
version (``make test``: ``--out 'reports/audit/triton-{triton}'``): each audited release
(kernels.audit.versions.AUDITED) has its own report and results cache. ``--check-version`` only
prints the installed triton's version and whether it is one of the audited releases (a warning on
stderr when not; kernels.audit.versions).

For each architecture, every kernel the launchers would launch for the shapes of fastvit's ViT presets
(kernels.audit.capture: the real launchers are called on CPU tensors with each launch recorded), each
configuration of the chosen autotuning space that the kernel's own pruning keeps, in fp16, bf16 and
fp32, is compiled ahead of time (kernels.audit.compile). It prints a summary per kernel x arch x dtype
and one table per kernel; ``--json`` writes ``{"meta", "summary", "rows"}`` with one row per distinct
compiled kernel: ``kernel, arch ("sm_90"), dtype, variant, config, compiled, error, shared_bytes,
shared_limit, registers, spill_bytes (ptxas spill stores + loads), mma (wgmma / mma.sync / none)``,
plus ``mma_work`` (static sum of m * n * k over the MMA instructions), ``wgmma_serialized`` (ptxas
warned that it serialized wgmma), ``over_shared``, ``spills``, ``clean``, the shapes that launch it
and its constexprs. ``--out DIR`` writes DIR/audit.txt and DIR/audit.json.

Exit status: 0 when clean; 1 when, in the ``on`` (default) or ``off`` space, a configuration fails to
compile, exceeds the architecture's shared memory per block (sm_90 232,448 B, sm_80 166,912 B),
spills, gets its wgmma serialized, or a launcher refuses a model's inputs; with ``--space full`` only
compile failures and refusals count (its wider space is for tuning work: spills and overflows are
reported, and the autotuner skips an overflowing config at its first launch); 2 when ptxas is
missing or the arguments are wrong.

It needs nothing beyond PyTorch and the triton wheel (which ships ptxas). The kernels must be the
compiled ones, not the interpreter's: run with TRITON_INTERPRET set, it re-runs itself without.
Triton's cache makes a rerun fast; ptxas results are cached beside it. ``--results-cache PATH``
keeps each compile's measurements in a JSON file keyed by everything the result depends on (the
job, the kernel's source and the Triton functions it calls, triton's and ptxas's versions:
``compile.result_key``): a job whose key is there is not compiled again, every other one is, and the
file is rewritten with the keys of this run only. ``make test`` keeps it in reports/audit/, so a
clean checkout compiles only the kernels that changed since the committed audit.

What it cannot tell: correctness, speed, which configuration the autotuner picks, real occupancy.

What it does not cover: kernels that are not fastvit's. The ``flex`` attention backend's kernels
(PyTorch's FlexAttention) have no source to compile ahead of time: inductor generates them when a
shape is first called, from the score and mask functions of that call, and its own autotuning picks
their tiles; their spills and shared memory are PyTorch's to keep in bounds.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
import time

from kernels._common import MODES, interpreter_enabled
from kernels.audit import report
from kernels.audit.capture import DTYPES, base_fn, launchable_kernels, model_launches
from kernels.audit.compile import SHARED_LIMITS, compile_job, jobs_for, ptxas_tool, result_key, worker_init

ARCHS = {"sm_90": 90, "sm_80": 80}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m kernels.audit", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90,sm_80", help="comma-separated: sm_90, sm_80 [both]")
    parser.add_argument("--space", default="on", choices=MODES, help="autotuning space to audit [on: the default]")
    parser.add_argument("--dtypes", default="fp16,bf16,fp32")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON here")
    parser.add_argument("--out", metavar="DIR", help="write DIR/audit.txt and DIR/audit.json")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes [all CPUs]")
    parser.add_argument("--results-cache", metavar="PATH", help="reuse and keep compile results in this JSON file")
    parser.add_argument("--check-version", action="store_true",
                        help="only print the installed triton's version and whether it was audited (alone)")
    args = parser.parse_args(argv)
    if args.check_version:
        parser.error("--check-version takes no other arguments")
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        parser.error(f"--arch: unknown {unknown}; choose from {', '.join(ARCHS)}")
    args.archs = [ARCHS[a] for a in archs]
    args.dtype_list = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    if not args.dtype_list or set(args.dtype_list) - set(DTYPES):
        parser.error(f"--dtypes: choose from {', '.join(DTYPES)}")
    return args


def _read_cache(path: str) -> dict:
    """The results cache at ``path`` ({} when absent or unreadable: everything is compiled)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cost(job: dict) -> int:
    """Rough compile cost, to start the slow compiles first."""
    name, ieee = job["name"], any(v is True for v in job["constexprs"].values())
    return (4 if "flash" in name else 2 if "patch" in name else 0) + ieee


def run_audit(archs, space: str = "on", dtypes=("fp16", "bf16", "fp32"), jobs: int = 1,
              cache: dict | None = None, toolchain: str = "") -> tuple[list, list]:
    """Capture, compile and judge; returns (rows, summary). ``cache``: compile results by
    ``result_key`` (reused where present; updated in place to hold exactly this run's keys)."""
    worker_init()
    launches, refused = model_launches(space, dtypes)
    pairs = sorted(jobs_for(launches, archs), key=lambda p: -_cost(p[0]))
    keys = [result_key(job, toolchain) for job, _ in pairs] if cache is not None else [None] * len(pairs)
    todo = [i for i, key in enumerate(keys) if cache is None or key not in cache]
    if jobs > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=worker_init) as pool:
            fresh = list(pool.map(compile_job, [pairs[i][0] for i in todo], chunksize=1))
    else:
        fresh = [compile_job(pairs[i][0]) for i in todo]
    results = [None] * len(pairs)
    for i, result in zip(todo, fresh):
        results[i] = result
    if cache is not None:
        for i, key in enumerate(keys):
            if results[i] is None:
                results[i] = cache[key]
        cache.clear()
        cache.update({key: result for key, result in zip(keys, results)})
    if cache is not None:
        print(f"kernels.audit: {len(todo)} of {len(pairs)} kernels compiled now, the others' results taken from "
              "the results cache (same job, source and compilers)", file=sys.stderr)
    rows = [report.make_row(job, users, result) for (job, users), result in zip(pairs, results)]
    report.name_specializations(rows)
    rows += [report.refused_row(r, arch) for arch in archs for r in report.merge_refusals(refused)]
    order = list(dict.fromkeys(report.kernel_name(base_fn(k).__name__) for k in launchable_kernels()))
    rows = report.sort_rows(rows, order)
    return rows, report.summarize(rows)


def main(argv=None) -> int:
    """The command line: ``python -m kernels.audit --help``. Returns the exit status.

    The compiler processes are spawned, so a script calling this must do so under
    ``if __name__ == "__main__":`` (console-script entry points do)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--check-version"]:  # the installed triton against the audited releases (kernels.audit.versions)
        from kernels.audit import versions
        return versions.main()
    if interpreter_enabled():  # the interpreter's kernels cannot be compiled: run in a fresh Python without it
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "kernels.audit", *argv], env=env)
    args = _parse(argv)
    try:
        tools = {arch: ptxas_tool(arch) for arch in args.archs}
    except RuntimeError as e:
        print(f"kernels.audit: ptxas not found ({e}); Triton's wheel ships it under triton/backends/nvidia/bin "
              "(or set TRITON_PTXAS_PATH / TRITON_PTXAS_BLACKWELL_PATH)", file=sys.stderr)
        return 2
    import triton

    for name in ("json", "out", "results_cache"):  # "{triton}" in a path: the installed triton's version
        if getattr(args, name):
            setattr(args, name, getattr(args, name).replace("{triton}", triton.__version__))
    start = time.perf_counter()
    ptxas = ", ".join(sorted({f"{os.path.basename(t.path)} {t.version}" for t in tools.values()}))
    cache = _read_cache(args.results_cache) if args.results_cache else None
    rows, summary = run_audit(args.archs, args.space, args.dtype_list, args.jobs, cache,
                              toolchain=f"triton {triton.__version__}; {ptxas}")
    if cache is not None:
        os.makedirs(os.path.dirname(args.results_cache) or ".", exist_ok=True)
        with open(args.results_cache, "w") as f:
            json.dump(cache, f, sort_keys=True, indent=0)
            f.write("\n")
    meta = dict(space=args.space, archs=[f"sm_{a}" for a in args.archs], dtypes=list(args.dtype_list),
                triton=triton.__version__, ptxas=ptxas, shared_limits={f"sm_{a}": SHARED_LIMITS[a] for a in args.archs})
    text = report.render(rows, summary, meta)
    sys.stdout.write(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "audit.txt"), "w") as f:
            f.write(text)
    for path in [args.json] + ([os.path.join(args.out, "audit.json")] if args.out else []):
        if path:
            with open(path, "w") as f:
                f.write(report.document(rows, summary, meta))
    bad = report.failing(rows, args.space)
    refused = sum(r["kernel"].endswith("(launcher)") for r in rows)
    print(f"kernels.audit: {len(rows) - refused} kernels audited, {refused} launches refused, {len(bad)} failing "
          f"the {args.space} space's checks, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 1 if bad else 0
