"""fastvit.report on synthetic results: exponents, non-ok rows, crossover, compare mode, file formats,
the targets table, and the package's layout (pure sections, one-way imports, backend names in one place)."""
import ast
import dataclasses
import importlib
import json
import math
import re
import sys
from pathlib import Path

import pytest

from fastvit.errors import FastViTError
from fastvit.report import (crossover, exponents, fit_exponent, kernel_targets, load_results, markdown_to_html,
                            write_report)

RES = [224, 384, 512, 768, 1024]
PATCH, DEPTH = 16, 12


def tokens(res):
    return (res // PATCH) ** 2 + 1


def row(op, backend, res, median, mem, pass_="fwd", status="ok", **extra):
    r = {"op": op, "backend": backend, "model": "vit_tiny_patch16_224", "resolution": res, "tokens": tokens(res),
         "batch": 2, "dtype": "fp32", "device": "cpu", "device_name": "Synthetic CPU", "pass": pass_,
         "patch_size": PATCH, "depth": DEPTH, "heads": 3, "head_dim": 64, "threads": 2,
         "flops": 4.0 * 2 * 3 * tokens(res) ** 2 * 64, "status": status}
    if op == "model":
        r.update(norm_backend="torch", patch_backend="conv", library="fastvit", family="vit")
    if status == "ok":
        r.update(median_s=median, iqr_s=0.02 * median, q1_s=0.99 * median, q3_s=1.01 * median, rounds=5,
                 peak_mem_bytes=mem)
    r.update(extra)
    return r


def attn_time(n, backend):
    return (1e-9 if backend == "naive" else 5e-10) * n ** 2


def synthetic_rows(scale=1.0):
    """Power laws with known exponents: naive time and memory ~ N^2, sdpa time ~ N^2 and memory ~ N.
    The whole model = depth x attention + a rest ~ N, sized so sdpa's attention share (measured inside
    the model: depth x attention / model) is exactly 1/2 at 512 px (N = 1025) and naive's never reaches it."""
    rows = []
    for res in RES:
        n = tokens(res)
        for b in ("naive", "sdpa"):
            if b == "naive" and res == 1024:
                rows.append(row("attention", b, res, None, None, status="oom"))
            else:
                mem = 8.0 * n ** 2 if b == "naive" else 3000.0 * n
                rows.append(row("attention", b, res, scale * attn_time(n, b), mem))
        rows.append(row("attention", "triton", res, None, None,
                        status="skipped: Triton kernels run on CPU only in Triton's interpreter"))
        n0 = tokens(512)
        rest_sdpa = DEPTH * attn_time(n0, "sdpa") * n / n0  # ~ N, equal to the attention time at N = 1025
        inner = DEPTH * attn_time(n, "sdpa")
        rows.append(row("model", "sdpa", res, scale * (inner + rest_sdpa), 1e4 * n,
                        attention_share=inner / (inner + rest_sdpa)))
        if res < 1024:
            rest_naive = 1e3 * DEPTH * attn_time(n, "naive")
            inner = DEPTH * attn_time(n, "naive")
            rows.append(row("model", "naive", res, scale * (inner + rest_naive), 1e4 * n,
                            attention_share=inner / (inner + rest_naive)))
    return rows


def write_jsonl(path, rows, env=None):
    env = env or {"device": "cpu", "device_name": "Synthetic CPU", "torch": "2.13.0", "threads": 2,
                  "matmul_flops_per_s": {"fp32": 1e11}, "copy_bytes_per_s": 2e10, "command": "pytest benchmarks/"}
    lines = [json.dumps({"environment": env})] + [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pytest_benchmark_json(path, rows):
    """The layout pytest-benchmark writes, plus the sweep's fastvit_unmeasured and machine_info.fastvit."""
    benchmarks, unmeasured = [], []
    for r in rows:
        if r["status"] != "ok":
            unmeasured.append(r)
            continue
        stats = {"median": r["median_s"], "iqr": r["iqr_s"], "q1": r["q1_s"], "q3": r["q3_s"], "rounds": 5,
                 "min": r["q1_s"], "max": r["q3_s"], "mean": r["median_s"], "stddev": 0.0}
        info = {k: v for k, v in r.items() if not k.endswith("_s")}
        benchmarks.append({"name": f"test_{r['op']}", "extra_info": info, "stats": stats})
    data = {"machine_info": {"fastvit": {"device_name": "Synthetic CPU", "device": "cpu",
                                         "matmul_flops_per_s": {"fp32": 1e11}}},
            "commit_info": {"id": "0" * 40, "dirty": False}, "benchmarks": benchmarks,
            "datetime": "2026-01-01T00:00:00+00:00", "version": "5.3.1", "fastvit_unmeasured": unmeasured}
    path.write_text(json.dumps(data))
    return path


def test_fit_exponent_recovers_power_laws():
    n = [tokens(r) for r in RES]
    assert fit_exponent(n, [3e-9 * x ** 2 for x in n]).exponent == pytest.approx(2.0, abs=1e-9)
    assert fit_exponent(n, [7.0 * x for x in n]).exponent == pytest.approx(1.0, abs=1e-9)
    fit = fit_exponent(n, [1.0 + x for x in n], min_tokens=1000)
    assert (fit.n_min, fit.n_max, fit.points) == (1025, 4097, 3)
    assert fit_exponent([197, 577], [1.0, 2.0], min_tokens=1000).points == 2  # falls back to the largest sizes
    assert fit_exponent([197], [1.0]) is None


def test_exponents_from_rows(tmp_path):
    df = load_results(write_jsonl(tmp_path / "r.jsonl", synthetic_rows())).rows
    exps = exponents(df).set_index(["op", "impl"])
    assert exps.loc[("attention", "naive"), "latency_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc[("attention", "naive"), "memory_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc[("attention", "naive"), "points"] == 3  # two sizes reach N = 1000 (the oom row at 1024 px is
    # not a point): the largest three are fitted
    assert exps.loc[("attention", "sdpa"), "memory_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert ("attention", "triton") not in exps.index


def test_crossover():
    assert crossover([224, 384, 512], [0.2, 0.4, 0.6]).resolution == pytest.approx(
        math.exp(math.log(384) + 0.5 * (math.log(512) - math.log(384))))
    assert crossover([224, 384], [0.1, 0.2]).resolution is None
    assert "not reached in the sweep" in crossover([224, 384], [0.1, 0.2]).text
    assert crossover([224, 384], [0.6, 0.7]).kind == "already"


def test_report_from_jsonl(tmp_path):
    path = write_report(write_jsonl(tmp_path / "r.jsonl", synthetic_rows()), tmp_path / "out")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    for fig in ("attention_fwd.png", "model_fwd.png", "attention_share.png"):
        assert (tmp_path / "out" / fig).stat().st_size > 10_000
        assert f"]({fig})" in text
    assert "**oom**" in text  # naive attention at 1024 px, as a status and not a number
    assert "skipped [" in text and "Triton kernels run on CPU only in Triton's interpreter" in text
    assert "| attention | fwd | naive | 2.00 | 2.00 |" in text
    assert "| attention | fwd | sdpa | 2.00 | 1.00 |" in text
    # sdpa: attention's measured share is exactly 50% at 512 px; naive never gets there
    assert ("- Attention passes half of the model's time (fastvit's builds, forward): vit_tiny_patch16_224 ≈ 512 px."
            in text)
    assert "| vit_tiny_patch16_224 | sdpa | fwd | 16% | 36% | 50% | 69% | 80% | ≈ 512 px (N ≈ 1,025) |" in text
    assert re.search(r"\| vit_tiny_patch16_224 \| naive \| fwd \| .* \| not reached in the sweep \(at most", text)
    # rows without comparison groups: ratios of medians, said to be unpaired, with no verdict words
    assert "| 224 px (N=197) | `naive` | 0.0388 | 2.000 |" in text and "time ÷ sdpa's (unpaired)" in text
    assert "(unpaired: measured in separate configurations)" in text
    assert not re.search(r"\| (faster|slower|no measurable difference) \|", text)
    assert "Synthetic CPU" in text and "pytest benchmarks/" in text
    page = (tmp_path / "out" / "report.html").read_text()  # the same report as one HTML page
    assert '<img alt="attention fwd" src="attention_fwd.png">' in page and "<strong>oom</strong>" in page
    assert page.count("<table>") == text.count("\n| --- |")


def test_report_from_pytest_benchmark_json_keeps_unmeasured_rows(tmp_path):
    rows = synthetic_rows()
    res = load_results(write_pytest_benchmark_json(tmp_path / "r.json", rows))
    assert len(res.rows) == len(rows)
    assert set(res.rows["status"]) == {"ok", "oom", "skipped: Triton kernels run on CPU only in Triton's interpreter"}
    assert res.env["git"]["id"] == "0" * 40
    text = write_report(tmp_path / "r.json", tmp_path / "out").read_text()
    assert "**oom**" in text and "| attention | fwd | naive | 2.00 | 2.00 |" in text


def test_compare_mode(tmp_path):
    this = write_jsonl(tmp_path / "a.jsonl", synthetic_rows())
    other = write_jsonl(tmp_path / "b.jsonl", synthetic_rows(scale=2.0))
    text = write_report(this, tmp_path / "out", compare=other).read_text()
    assert "## Comparison" in text
    assert "(×2.00)" in text  # every timed configuration is twice as slow in the other run
    assert (tmp_path / "out" / "compare_attention_fwd.png").is_file()


def test_partial_jsonl_from_an_interrupted_sweep(tmp_path):
    lines = write_jsonl(tmp_path / "full.jsonl", synthetic_rows()).read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:9]) + "\n" + lines[9][: len(lines[9]) // 2])  # last line cut mid-write
    res = load_results(cut)
    assert len(res.rows) == 8
    assert write_report(cut, tmp_path / "out").is_file()


def test_no_rows_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(FastViTError, match="no benchmark rows"):
        write_report(tmp_path / "empty.jsonl", tmp_path / "out")
    with pytest.raises(FastViTError, match="does not exist"):
        write_report(tmp_path / "missing.json", tmp_path / "out")


@pytest.mark.parametrize("damage,match", [
    (lambda lines: lines[:3] + ["{not json"] + lines[3:], r"bad.jsonl', line 4: not JSON"),
    (lambda lines: lines[:2] + ['{"op": "attention", "backend": "naive"}'] + lines[2:],
     r"bad.jsonl', line 3: row lacks the field\(s\) resolution, pass, status"),
    (lambda lines: lines[:2] + [lines[2].replace('"batch": 2', '"batch": "two"')] + lines[3:],
     r"bad.jsonl', line 3: field 'batch' must be a number, got 'two'"),
    (lambda lines: lines[:2] + ["[1, 2]"] + lines[2:], r"bad.jsonl', line 3: not a JSON object"),
], ids=["not-json", "missing-fields", "not-a-number", "not-an-object"])
def test_malformed_jsonl_names_file_and_line(tmp_path, damage, match):
    lines = write_jsonl(tmp_path / "full.jsonl", synthetic_rows()).read_text().splitlines()
    (tmp_path / "bad.jsonl").write_text("\n".join(damage(lines)) + "\n")
    with pytest.raises(FastViTError, match=match):
        load_results(tmp_path / "bad.jsonl")


@pytest.mark.parametrize("damage,match", [
    (lambda d: d.update(benchmarks={"a": 1}), r"bad.json': field 'benchmarks' must be a list"),
    (lambda d: d["benchmarks"].__setitem__(1, 7), r"bad.json': field 'benchmarks\[1\]' must be an object"),
    (lambda d: d["benchmarks"][0]["stats"].update(median="slow"),
     r"bad.json', field 'benchmarks\[0\]': field 'median_s' must be a number, got 'slow'"),
    (lambda d: d["fastvit_unmeasured"][0].pop("status"),
     r"bad.json', field 'fastvit_unmeasured\[0\]': row lacks the field\(s\) status"),
], ids=["benchmarks-not-a-list", "entry-not-an-object", "stat-not-a-number", "unmeasured-without-status"])
def test_malformed_pytest_benchmark_json_names_file_and_field(tmp_path, damage, match):
    path = write_pytest_benchmark_json(tmp_path / "good.json", synthetic_rows())
    data = json.loads(path.read_text())
    damage(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(FastViTError, match=match):
        load_results(tmp_path / "bad.json")


def gpu_rows():
    """A synthetic CUDA run with the Triton kernels timed: attention at a short (197) and a long (1025)
    length, add + LayerNorm and patch embedding, with ratios on either side of their targets."""
    rows = []
    for res, batch in ((224, 64), (512, 8)):
        n = tokens(res)
        for backend, median in (("sdpa-flash", 1.0), ("xformers", 0.8), ("triton", 1.0 if res == 224 else 0.85)):
            rows.append(row("attention", backend, res, median * 1e-3, 1e6, batch=batch))
        rows.append(row("attention", "sdpa-cudnn", res, None, None, batch=batch, status="skipped: refused"))
    for backend, median in (("torch", 2e-4), ("triton", 1e-4)):
        rows.append(row("layernorm", backend, 512, median, 1e6, bytes=2.5e8, norm_backend=backend))
    for backend, median in (("conv", 1.2e-4), ("triton", 1e-4)):
        rows.append(row("patch_embed", backend, 512, median, 1e6, bytes=1e8, patch_backend=backend))
    return rows


def test_kernel_targets(tmp_path):
    env = {"device": "cuda", "device_name": "Synthetic GPU", "copy_bytes_per_s": 3e12}
    df = load_results(write_jsonl(tmp_path / "g.jsonl", gpu_rows(), env)).rows
    t = kernel_targets(df, env).set_index(["op", "resolution", "target"])
    peer = "speed vs best of SDPA kernels, xformers and flex"
    # 224 px at B=64: xformers (0.8 ms) is the best peer, triton 1.0 ms -> 0.8x, target 1.0x: not met
    assert t.loc[("attention", 224, peer), "measured"] == pytest.approx(0.8)
    assert t.loc[("attention", 224, peer), "against"] == "xformers (of sdpa-flash, xformers)"
    assert t.loc[("attention", 224, peer), "met"] is False
    # 512 px (N = 1025) at B=8: 0.8 / 0.85 = 0.94x against the 0.9x target: met
    assert t.loc[("attention", 512, peer), "measured"] == pytest.approx(0.8 / 0.85)
    assert t.loc[("attention", 512, peer), "met"] is True
    assert t.loc[("layernorm", 512, "speedup over torch"), "measured"] == pytest.approx(2.0)
    assert t.loc[("layernorm", 512, "fraction of measured copy bandwidth"), "measured"] == pytest.approx(2.5e12 / 3e12)
    assert t.loc[("patch_embed", 512, "speedup over conv"), "met"] is False  # 1.2x < 1.3x
    text = write_report(tmp_path / "g.jsonl", tmp_path / "out").read_text()
    assert "## Triton kernels against their targets" in text and "**not met**" in text
    assert "2 of 5 targets met" in text


def test_kernel_targets_show_untimed_triton_rows_and_use_cuda_event_times(tmp_path):
    env = {"device": "cuda", "device_name": "Synthetic GPU", "copy_bytes_per_s": 3e12}
    rows = gpu_rows()
    for r in rows:  # CUDA-event times, 10% below the wall-clock medians, are what the report uses
        if r["status"] == "ok":
            r.update(kernel_median_s=0.9 * r["median_s"], kernel_q1_s=0.89 * r["median_s"],
                     kernel_q3_s=0.91 * r["median_s"])
    for backend in ("sdpa-flash", "triton"):  # 768 px at B=8: triton ran out of memory, flash did not
        rows.append(row("attention", backend, 768, 2e-3, 1e6, batch=8) if backend != "triton" else
                    row("attention", backend, 768, None, None, batch=8, status="oom"))
    df = load_results(write_jsonl(tmp_path / "g.jsonl", rows, env)).rows
    flash = df[(df["backend"] == "sdpa-flash") & (df["resolution"] == 224)].iloc[0]
    assert flash["median_s"] == pytest.approx(0.9e-3) and flash["wall_median_s"] == pytest.approx(1e-3)
    assert flash["iqr_s"] == pytest.approx(0.02e-3)
    t = kernel_targets(df, env).set_index(["op", "resolution", "target"])
    peer = "speed vs best of SDPA kernels, xformers and flex"
    assert t.loc[("attention", 224, peer), "measured"] == pytest.approx(0.8)  # ratios of event times
    assert t.loc[("attention", 224, peer), "against"] == "xformers (of sdpa-flash, xformers)"
    assert t.loc[("attention", 768, peer), "status"] == "oom" and t.loc[("attention", 768, peer), "met"] is False
    text = write_report(tmp_path / "g.jsonl", tmp_path / "out").read_text()
    assert "**not measured** (oom): not met" in text and "3 of 6 targets met" in text  # LayerNorm now 93%
    assert "on CUDA the CUDA-event times of those rounds" in text


def test_no_target_section_without_timed_triton_rows(tmp_path):
    df = load_results(write_jsonl(tmp_path / "r.jsonl", synthetic_rows())).rows
    assert kernel_targets(df, {}).empty
    assert "against their targets" not in write_report(tmp_path / "r.jsonl", tmp_path / "out").read_text()


def test_failed_configurations_are_shown_as_errors(tmp_path):
    """A configuration that raised (not oom, not a refusal) is a failure the report calls one."""
    rows = synthetic_rows()
    rows.append(row("attention", "sdpa-cudnn", 512, None, None,
                    status="error: RuntimeError: cuDNN Frontend error: no valid execution plan"))
    text = write_report(write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out").read_text()
    assert "**error** [" in text
    assert "] error: RuntimeError: cuDNN Frontend error: no valid execution plan" in text
    assert "**1 failed with an error**" in text


def test_compiled_rows_with_graph_breaks_are_called_out(tmp_path):
    rows = synthetic_rows()
    for res, breaks in ((512, 2), (768, 0)):
        rows.append(row("attention", "sdpa+compile", res, 1e-3, 1e6, compile_graphs=1 + breaks,
                        compile_graph_breaks=breaks, compile_break_reasons=["Unsupported method call"] if breaks else []))
    text = write_report(write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out").read_text()
    bullet = next(line for line in text.splitlines() if line.startswith("- Not run here:"))
    assert ("torch.compile: 1 of 2 compiled configurations broke their graph and ran partly as eager PyTorch "
            "(Unsupported method call).") in bullet


def test_html_page_right_aligns_numeric_columns_and_shows_every_figure(tmp_path):
    out = tmp_path / "out"
    text = write_report(write_jsonl(tmp_path / "r.jsonl", synthetic_rows()), out).read_text()
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>fastvit resolution sweep: Synthetic CPU</title>" in page
    # the exponents table: op, pass and backend left-aligned, the exponents right-aligned
    assert "<td>attention</td>\n<td>fwd</td>\n<td>naive</td>\n" in page
    assert '<td style="text-align: right;">2.00</td>' in page
    assert '<th style="text-align: right;">latency exponent</th>' in page
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures and sorted(re.findall(r'<img alt="[^"]*" src="([^"]+)">', page)) == figures
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)) == figures
    # text in angle brackets (a quoted error message) is shown, not taken for HTML
    assert "<td>&lt;class 'x'&gt;</td>" in markdown_to_html("| a |\n| --- |\n| <class 'x'> |\n")


def test_targets_prose_is_generated_from_the_targets_table(tmp_path, monkeypatch):
    from fastvit.report import targets

    prose = targets.targets_prose()
    for t in targets.TARGETS:
        assert f"≥ {targets.format_goal(t.goal, t.against)}" in prose
    assert "≥ 0.9× (forward, N ≥ 1,025)" in prose and "≥ 85%" in prose
    changed = (dataclasses.replace(targets.TARGETS[0], goal=0.95, min_tokens=2305),) + targets.TARGETS[1:]
    assert "≥ 0.95× (forward, N ≥ 2,305)" in targets.targets_prose(changed)
    assert "≥ 0.9× (forward, N ≥ 1,025)" not in targets.targets_prose(changed)
    # the verdicts and the report's prose both follow the table
    env = {"device": "cuda", "device_name": "Synthetic GPU", "copy_bytes_per_s": 3e12}
    src = write_jsonl(tmp_path / "g.jsonl", gpu_rows(), env)
    df = load_results(src).rows
    monkeypatch.setattr(targets, "TARGETS", changed)
    t = kernel_targets(df, env).set_index(["op", "resolution", "target"])
    assert math.isnan(t.loc[("attention", 512, "speed vs best of SDPA kernels, xformers and flex"), "goal"])  # N = 1025 < 2305
    text = write_report(src, tmp_path / "out").read_text()
    assert "≥ 0.95× (forward, N ≥ 2,305)" in text and "1 of 4 targets met" in text


def test_sections_write_no_files(tmp_path, monkeypatch):
    from fastvit.report import architectures, compiled, document, sections, summary, verdicts
    from fastvit.report.compare import compare_section

    env = {"device": "cuda", "device_name": "Synthetic GPU", "copy_bytes_per_s": 3e12}
    res = load_results(write_jsonl(tmp_path / "r.jsonl", synthetic_rows() + gpu_rows(), env))
    other = load_results(write_jsonl(tmp_path / "o.jsonl", synthetic_rows(scale=2.0)))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    df = res.rows
    parts = [summary.header(df, env), verdicts.fastest_section(df), verdicts.backends_section(df),
             verdicts.noise_section(df), sections.exponent_section(df), sections.targets_section(df, env),
             sections.share_section(df), architectures.architectures_section(df), architectures.peers_section(df),
             compiled.compile_section(df), sections.results_section(df, env), compare_section(res, other)]
    doc = document.build_report(res, other)
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "o.jsonl", "r.jsonl"]
    # no comparison groups, one model, nothing compiled: none of those sections (the model's naive build is
    # set against its default in the peers' section)
    assert [i for i, part in enumerate(parts) if not part.lines] == [3, 7, 9]
    names = [f.name for part in parts for f in part.figures]
    assert names == [f.name for f in doc.figures] and names[0] == "headline.png" and "attention_share.png" in names
    assert [t.name for part in parts for t in part.tables] == [t.name for t in doc.tables]
    body = "\n".join(line for part in parts for line in part.lines)
    assert doc.markdown.startswith(body.rstrip() + "\n") and "\n## Tables as CSV\n" in doc.markdown[len(body):]
    doc.figures[0].draw(work / doc.figures[0].name)  # drawing is what writes
    assert [p.name for p in work.iterdir()] == [doc.figures[0].name]


REPORT_MODULES = ["facts", "tables", "load", "fit", "comparisons", "targets", "plots", "sections", "verdicts",
                  "architectures", "compiled", "packing", "beyond", "summary", "compare", "document", "html",
                  "__init__"]


def _report_sources():
    import fastvit.report

    root = Path(fastvit.report.__file__).parent
    assert sorted(p.stem for p in root.glob("*.py")) == sorted(REPORT_MODULES)
    return {name: ast.parse((root / f"{name}.py").read_text()) for name in REPORT_MODULES}


def test_report_modules_import_one_way():
    """Each module of fastvit.report imports only modules listed before it (function-level imports too)."""
    for i, (name, tree) in enumerate(_report_sources().items()):
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastvit.report"):
                imported.add(node.module.removeprefix("fastvit.report").lstrip(".") or "__init__")
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix("fastvit.report.") for a in node.names
                             if a.name.startswith("fastvit.report")}
        assert imported <= set(REPORT_MODULES[:i]), f"{name} imports {imported - set(REPORT_MODULES[:i])}"


def test_backend_names_only_in_facts():
    from fastvit.report import facts

    names = {*facts.ATTENTION_PEERS, *facts.ATTENTION_REFERENCES, *facts.COLORS, facts.NORM_REFERENCE,
             facts.PATCH_REFERENCE, facts.DEFAULT_NORM, facts.DEFAULT_PATCH, facts.KERNEL_BACKEND, facts.SDPA}
    assert {"naive", "sdpa", "triton", "torch", "conv", "xformers"} <= names
    for name, tree in _report_sources().items():
        if name == "facts":
            continue
        literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not literals & names, f"{name} names backends {literals & names}"


def _import_report_without(monkeypatch, *packages):
    for name in [m for m in sys.modules if m == "fastvit.report" or m.startswith("fastvit.report.")]:
        monkeypatch.delitem(sys.modules, name)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)  # importlib.util.find_spec() then finds nothing
    return importlib.import_module("fastvit.report")


def test_missing_bench_extra_is_a_clear_error(monkeypatch, capsys, tmp_path):
    with pytest.raises(ImportError) as info:
        _import_report_without(monkeypatch, "pandas", "markdown")
    assert isinstance(info.value, FastViTError)
    assert str(info.value) == ("fastvit report needs the 'bench' extra: pip install 'fastvit[bench]' "
                               "(missing: pandas, markdown)")
    from fastvit.cli import main

    assert main(["report", str(tmp_path / "r.json"), "-o", str(tmp_path / "out")]) == 2
    assert "fastvit: error: fastvit report needs the 'bench' extra" in capsys.readouterr().err
