"""fastvit.report on synthetic rows of comparison groups (members timed in the same interleaved rounds,
each with its per-round times, an A/A twin of the baseline): paired ratios, intervals and verdicts, the
fastest backend with its margin, the noise floor, the answer-first summary, the headline figure, the
CSV tables, exponents fitted over fewer than three sizes, and the same bytes from the same rows."""
import csv
import hashlib
import json
import re

import numpy as np
import pytest

from fastvit.report import load_results, write_report
from fastvit.report.comparisons import against_baseline, architecture_pairs, fastest, noise_rows
from fastvit.report.summary import MAX_BULLETS, summary

RES = [224, 384, 512, 768]
PATCH = 16
ROUNDS = 40
DRIFT = 0.05   # per-round drift shared by every member of a round: larger than the differences it hides
JITTER = 0.004  # each member's own noise per round


def tokens(res):
    return (res // PATCH) ** 2 + 1


def timed(row, times):
    t = np.asarray(times)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    row.update(status="ok", round_times_s=[float(x) for x in t], median_s=float(med), q1_s=float(q1), q3_s=float(q3),
               iqr_s=float(q3 - q1), mean_s=float(t.mean()), min_s=float(t.min()), max_s=float(t.max()),
               rounds=len(t))
    return row


def group(gid, members, seed, baseline, twin=True, rounds=ROUNDS):
    """Rows of one comparison group: ``members`` is a list of (member label, row fields, seconds or a status);
    every member of round i shares round i's drift; the twin is the baseline timed again."""
    rng = np.random.default_rng(seed)
    drift = np.exp(rng.normal(0, DRIFT, rounds))
    if twin:
        label, fields, t = next(m for m in members if m[0] == baseline)
        members = members + [(f"{label} (A/A)", {**fields, "backend": f"{fields['backend']} (A/A)",
                                                 "twin_of": baseline}, t)]
    rows = []
    for label, fields, t in members:
        r = {**fields, "group": gid, "member": label, "baseline": baseline, "group_rounds": rounds,
             "group_seed": seed, "group_stop": "converged", "group_members": len(members)}
        if isinstance(t, str):
            r["status"] = t
        else:
            timed(r, t * drift * np.exp(rng.normal(0, JITTER, rounds)))
        rows.append(r)
    return rows


def op_fields(op, backend, res, pass_="fwd", **extra):
    return {"op": op, "backend": backend, "model": "vit_tiny_patch16_224", "resolution": res, "tokens": tokens(res),
            "batch": 1, "dtype": "fp32", "device": "cpu", "device_name": "Synthetic CPU", "pass": pass_,
            "patch_size": PATCH, "depth": 12, "heads": 3, "head_dim": 64, "peak_mem_bytes": 1000.0 * tokens(res),
            "flops": 4.0 * 3 * tokens(res) ** 2 * 64, **extra}


# name: family, params, latency = 1e-12 s x coefficient x res^power
MODELS = {"vit_tiny_patch16_224": ("vit", 5.7e6, 1.0, 4),
          "swin_tiny_patch4_window7_224": ("swin", 28.3e6, 600.0 ** 2, 2),
          "resnet50": ("cnn", 25.6e6, 300.0 ** 2, 2)}


def model_fields(model, res, library="fastvit", backend="sdpa", pass_="fwd"):
    family, params, _, _ = MODELS[model]
    r = {"op": "model", "backend": backend, "library": library, "family": family, "model": model, "resolution": res,
         "tokens": tokens(res) if family == "vit" else None, "batch": 1, "dtype": "fp32", "device": "cpu",
         "device_name": "Synthetic CPU", "pass": pass_, "patch_size": PATCH if family == "vit" else None,
         "params": params, "flops": 1e9 * params / 5.7e6 * (res / 224) ** 2, "peak_mem_bytes": 1e6 * res,
         "attention_impl": "none" if family == "cnn" else "sdpa"}
    if library == "fastvit":
        r.update(norm_backend="torch", patch_backend="conv")
    return r


def model_time(model, res):
    _, _, coef, power = MODELS[model]
    return 1e-12 * coef * res ** power


def paired_rows(twin=True):
    """Attention: sdpa (baseline) and sdpa-flash (the same kernel: equal times), naive 3x, sdpa-math 1.5x,
    triton skipped; LayerNorm: torch and einops (hypothetical) equal. Whole models, one group per size:
    ViT-Ti (baseline), its timm build (equal), its HF build (1.25x), its +compile (0.8x, against eager)
    at two sizes, Swin-T and ResNet-50 (the ViT passes ResNet-50 at 300 px and Swin-T at 600 px)."""
    rows, seed = [], 0
    for p in ("fwd", "train"):
        for res in RES:
            t = 5e-10 * tokens(res) ** 2 * (3 if p == "train" else 1)
            members = [(b, op_fields("attention", b, res, p), t * k) for b, k in
                       (("sdpa", 1.0), ("sdpa-flash", 1.0), ("naive", 3.0), ("sdpa-math", 1.5))]
            members.append(("triton", op_fields("attention", "triton", res, p), "skipped: no CPU kernel"))
            rows += group(f"attention/{p}/{res}", members, seed, "sdpa", twin)
            ln = 1e-8 * tokens(res)
            rows += group(f"layernorm/{p}/{res}", [(b, op_fields("layernorm", b, res, p, bytes=1e4 * tokens(res)), ln)
                                                  for b in ("torch", "einops")], seed + 1, "torch", twin)
            vit = "vit_tiny_patch16_224 fastvit sdpa"
            members = [(f"{m} fastvit sdpa" if f != "cnn" else f"{m} torchvision",
                        model_fields(m, res, "torchvision" if f == "cnn" else "fastvit",
                                     "torchvision" if f == "cnn" else "sdpa", p), model_time(m, res))
                       for m, (f, *_rest) in MODELS.items()]
            v = model_time("vit_tiny_patch16_224", res)
            members += [("vit_tiny_patch16_224 timm", model_fields("vit_tiny_patch16_224", res, "timm", "timm", p), v),
                        ("vit_tiny_patch16_224 transformers",
                         model_fields("vit_tiny_patch16_224", res, "transformers", "transformers", p), 1.25 * v)]
            if res in (224, 384):
                members.append((f"{vit}+compile", model_fields("vit_tiny_patch16_224", res, backend="sdpa+compile",
                                                               pass_=p), 0.8 * v))
            rows += group(f"model/{p}/{res}", members, seed + 2, vit, twin)
            seed += 3
    for r in rows:  # the +compile row's baseline is its eager run
        if r["member"].endswith("+compile"):
            r["baseline"] = r["member"].removesuffix("+compile")
    return rows


def write_jsonl(path, rows):
    env = {"device": "cpu", "device_name": "Synthetic CPU", "torch": "2.13.0", "threads": 2,
           "command": "pytest benchmarks/ --results=r.jsonl"}
    path.write_text("\n".join(json.dumps(r) for r in [{"environment": env}] + rows) + "\n")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paired")
    src = write_jsonl(tmp / "r.jsonl", paired_rows())
    out = tmp / "out"
    return src, out, write_report(src, out).read_text()


def test_same_kernel_is_no_measurable_difference_and_a_slower_one_is_slower(tmp_path):
    df = load_results(write_jsonl(tmp_path / "r.jsonl", paired_rows())).rows
    comp = against_baseline(df)
    att = comp[(comp["op"] == "attention") & (comp["status"] == "ok")]
    for r in att.to_dict("records"):
        c = r["comparison"]
        if r["impl"] == "sdpa-flash":
            # the interval contains 1, or clears it by less than the group's A/A band
            assert c.paired and c.low <= 1 + c.noise.band and c.high >= 1 - c.noise.band
            assert c.verdict == "no measurable difference"
        elif r["impl"] == "sdpa-math":
            assert c.low > 1 and c.verdict == "slower" and c.value == pytest.approx(1.5, rel=0.01)
            assert c.high - c.low < 0.03  # the drift (5% per round) cancels in the paired ratio
        elif r["impl"] == "naive":
            assert c.verdict == "slower"
    assert not (comp["impl"].astype(str).str.endswith("(A/A)")).any()  # twins are no backend
    peers = comp[comp["kind"] == "peer"].set_index(["impl", "pass", "resolution"])
    assert peers.loc[("timm", "fwd", 224), "comparison"].verdict == "no measurable difference"
    assert peers.loc[("transformers", "fwd", 224), "comparison"].verdict == "slower"
    compiled = comp[comp["kind"] == "compile"]
    assert len(compiled) == 4 and all(c.verdict == "faster" for c in compiled["comparison"])
    floor = noise_rows(df)
    assert len(floor) == 2 * 3 * len(RES) and all(r["ratio"] is not None and r["ratio"].band < 0.02 for r in floor)


def test_fastest_backend_and_its_margin(tmp_path):
    df = load_results(write_jsonl(tmp_path / "r.jsonl", paired_rows())).rows
    found = {(f["op"], f["pass"], f["resolution"]): f for f in fastest(df)}
    f = found["attention", "fwd", 224]
    assert {f["fastest"], f["runner_up"]} == {"sdpa", "sdpa-flash"}  # the same kernel: a tie
    assert f["margin"].verdict == "no measurable difference"
    assert found["layernorm", "train", 768]["margin"].verdict == "no measurable difference"


def test_architecture_crossovers_follow_the_intervals(tmp_path):
    df = load_results(write_jsonl(tmp_path / "r.jsonl", paired_rows())).rows
    found = {(c["pass"], c["rival"]): c["crossover"] for c in architecture_pairs(df)}
    swin = found["fwd", "swin_tiny_patch4_window7_224"]  # ratio (res/600)^2: 0.14, 0.41, 0.73, 1.64
    assert swin.kind == "crossed" and swin.text.startswith("between 512 and 768 px (≈ 6")
    resnet = found["fwd", "resnet50"]  # (res/300)^2: 0.56, 1.64, ...: crossed between 224 and 384 px
    assert resnet.text.startswith("between 224 and 384 px")


def test_report_answers_first(report):
    src, out, text = report
    head, rest = text.split("## Summary", 1)
    assert "![headline" in head and "| --- |" not in head  # the headline figure comes before any table
    assert (out / "headline.png").stat().st_size > 10_000
    bullets = [line for line in rest.split("\n## ", 1)[0].splitlines() if line.startswith("- ")]
    assert 1 <= len(bullets) <= MAX_BULLETS
    assert bullets[0].startswith("- Noise floor: A/A twins") and "of 1 in 24 of 24 groups" in bullets[0]
    fast = next(b for b in bullets if b.startswith("- Fastest attention"))
    assert "no measurable difference between `sdpa` and `sdpa-flash` at 224–768 px" in fast
    assert any(b.startswith("- Fastest add + LayerNorm") for b in bullets)
    growth = next(b for b in bullets if b.startswith("- Growth"))
    assert "fitted over N = 577–2,305, 3 sizes" in growth  # the sizes actually fitted, not "N ≥ 1,000"
    arch = next(b for b in bullets if b.startswith("- Architectures"))
    assert "5.7M params" in arch and "28.3M params" in arch and "GFLOP" in arch
    assert "than swin_tiny_patch4_window7_224 (Swin, 28.3M params" in arch and "between 512 and 768 px" in arch
    assert any(b.startswith("- Not run here: 8 of ") and "`triton`: no CPU kernel" in b for b in bullets)
    page = (out / "report.html").read_text()
    assert page.index('src="headline.png"') < page.index("<table>")


def test_comparison_tables_carry_intervals_and_verdicts(report):
    _, _, text = report
    table = text.split("### attention, forward (inference, no_grad) (vit_tiny_patch16_224, B=1, fp32)")[1]
    first = table.split("\n\n", 2)[1]
    assert first.splitlines()[0] == ("| size | backend | median (ms) | time ÷ sdpa's [95% interval] | verdict |")
    row = next(line for line in first.splitlines() if "`sdpa-math`" in line and "224 px" in line)
    assert re.search(r"\| 1\.\d{3} \[1\.\d{3}, 1\.\d{3}\] \| slower \|$", row), row
    twin = next(line for line in first.splitlines() if "`sdpa (A/A)`" in line and "224 px" in line)
    assert re.search(r"\| [01]\.\d{3} \[0\.9\d{2}, 1\.0\d{2}\] \| noise ±\d\.\d% \|$", twin), twin
    assert "## Noise floor: A/A twins" in text and "The noise floor of this run (the widest A/A band) is ±" in text
    peers = text.split("### vit_tiny_patch16_224, forward (inference, no_grad), B=1, fp32")[1].split("###")[0]
    assert re.search(r"\| 224 px \| timm \(sdpa\) \| [\d.]+ \| [\d.]+ \[[\d.]+, [\d.]+\] \| no measurable difference "
                     r"\| 1\.00× \|", peers), peers
    assert re.search(r"\| transformers \(sdpa\) \| [\d.]+ \| 1\.2\d{2} \[[\d.]+, [\d.]+\] \| slower \|", peers)
    compiled = text.split("## torch.compile against eager")[1].split("\n## ")[0]
    assert re.search(r"\| `sdpa` \| 224 px \| [\d.]+ \w+ \| [\d.]+ \w+ \| 0\.8\d{2} \[[\d.]+, [\d.]+\] \| faster \|",
                     compiled), compiled


def test_every_table_is_a_csv_with_the_same_cells(report):
    _, out, text = report
    listed = re.findall(r"- \[`tables/([^`]+)\.csv`\]", text)
    files = sorted(p.stem for p in (out / "tables").glob("*.csv"))
    assert sorted(listed) == files and {"fastest", "noise_floor", "exponents", "environment"} <= set(files)
    tables = re.findall(r"((?:^\|.*\|\n)+)", text, flags=re.M)
    assert len(tables) == len(files)
    for block, name in zip(tables, listed):
        md = [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines()]
        md = [r for i, r in enumerate(md) if i != 1]  # the alignment row
        with open(out / "tables" / f"{name}.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows == [[re.sub(r"\*\*(.*?)\*\*|`(.*?)`", lambda m: m.group(1) or m.group(2), c) for c in r]
                        for r in md], name


def test_twins_stay_out_of_fits_and_figures(report):
    from fastvit.report.fit import architecture_rows, attention_share
    from fastvit.report.summary import headline_panels
    from fastvit.report.tables import groups, impls

    src, out, text = report
    df = load_results(src).rows
    assert df["backend"].str.endswith("(A/A)").sum() == 2 * 3 * len(RES)  # loaded, for the noise floor
    for _, g in groups(df):  # what every per-op table, fit and figure draws from
        assert not [i for i in impls(g) if i.endswith("(A/A)")] and not g["twin_of"].notna().any()
    assert not architecture_rows(df)["twin_of"].notna().any()
    assert not attention_share(df)["impl"].str.endswith("(A/A)").any()
    labels = [s.label for panel in headline_panels(df).values() for s in panel.series]
    assert labels and not [label for label in labels if "(A/A)" in label]
    exps = text.split("## Scaling exponents")[1].split("\n## ")[0]
    assert "(A/A)" not in exps
    latency = text.split("## Results by op and pass")[1]
    assert "(A/A)" not in latency
    assert "sdpa+compile | 1.00 (2 sizes)" in exps or re.search(r"sdpa\+compile \| [\d.]+ \(2 sizes\)", exps), exps
    assert "An exponent marked \"(2 sizes)\" is a line through two points" in exps
    # no size reaches N = 1,000 three times here: the text says so and the table names the sizes fitted
    assert "otherwise the largest three sizes; the last column gives the sizes each fit used" in exps
    sdpa = r"\| attention \| fwd \| vit_tiny_patch16_224, B=1, fp32 \| sdpa \| 2\.\d\d \| 1\.00 \| 577–2,305 \(3\) \|"
    assert re.search(sdpa, exps), exps


def test_same_rows_same_bytes(tmp_path, monkeypatch):
    """The text files (report.md, report.html, every CSV) of two reports from the same rows are equal
    byte for byte. Their figures are left undrawn (an empty file each; the PNGs are not compared):
    the report fixture draws every figure of these rows."""
    import dataclasses

    import fastvit.report

    build = fastvit.report.build_report

    def undrawn(*args, **kwargs):
        doc = build(*args, **kwargs)
        return dataclasses.replace(doc, figures=[dataclasses.replace(f, draw=lambda path: path.write_bytes(b""))
                                                 for f in doc.figures])

    monkeypatch.setattr(fastvit.report, "build_report", undrawn)
    src = write_jsonl(tmp_path / "r.jsonl", paired_rows())

    def digest(out):
        write_report(src, out)
        files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".md", ".html", ".csv"))
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_without_twins_verdicts_compare_with_one(tmp_path):
    df = load_results(write_jsonl(tmp_path / "r.jsonl", paired_rows(twin=False))).rows
    assert all(r["ratio"] is None for r in noise_rows(df))
    lines = summary(df)
    assert lines[0].startswith("- Noise floor: no group timed an A/A twin")
    comp = against_baseline(df)
    math_ = comp[comp["impl"] == "sdpa-math"]["comparison"]
    assert all(c.verdict == "slower" for c in math_)


def test_cuda_event_rounds_are_preferred_and_groups_never_mix():
    from fastvit.report.comparisons import compare

    rng = np.random.default_rng(1)
    wall = list(1e-3 * np.exp(rng.normal(0, 0.01, ROUNDS)))
    a = {"status": "ok", "group": "g", "median_s": 2e-3, "round_times_s": [2 * t for t in wall],
         "kernel_round_times_s": wall}
    b = {"status": "ok", "group": "g", "median_s": 1e-3, "round_times_s": wall, "kernel_round_times_s": wall}
    c = compare(a, b)
    assert c.paired and c.value == pytest.approx(1.0) and c.verdict == "no measurable difference"  # events decide
    c = compare({**a, "kernel_round_times_s": None}, b)
    assert c.value == pytest.approx(2.0) and c.verdict == "slower"  # wall-clock rounds where one row lacks events
    c = compare({**a, "group": "other"}, b)  # another group's rounds are never paired with these
    assert not c.paired and c.value == pytest.approx(2.0) and c.verdict.startswith("unpaired")


def test_a_member_against_its_baseline_pairs_the_baseline_times_beside_it():
    """The baseline's own round times drift (a call of its own, seconds away); the times measured next to
    the member in its pairs do not: against its baseline (either way round), the member's ratio pairs
    those, and any other two members pair their own round times."""
    from fastvit.report.comparisons import compare

    rng = np.random.default_rng(2)
    speed = np.exp(rng.normal(0, 0.2, ROUNDS))  # the machine's speed, round by round, pair by pair
    apart = np.exp(rng.normal(0, 0.2, ROUNDS))
    base = {"status": "ok", "group": "g", "member": "base", "baseline": "base", "median_s": 1e-3,
            "round_times_s": list(1e-3 * apart)}
    a = {"status": "ok", "group": "g", "member": "a", "baseline": "base", "median_s": 1.2e-3,
         "round_times_s": list(1.2e-3 * speed), "baseline_round_times_s": list(1e-3 * speed)}
    c = compare(a, base)
    assert c.paired and c.value == pytest.approx(1.2) and c.low == pytest.approx(1.2) == c.high
    back = compare(base, a)
    assert back.value == pytest.approx(1 / 1.2) and back.high == pytest.approx(1 / 1.2)
    assert compare(base, {**a, "baseline_round_times_s": None}).high > 1 / 1.1  # without them: the drift
    b = {**a, "member": "b", "round_times_s": list(1.2e-3 * apart), "baseline_round_times_s": list(1e-3 * apart)}
    c = compare(a, b)  # two members, neither the other's baseline: their own round times, a pair apart
    assert c.paired and c.high - c.low > 0.05


def test_cuda_graph_replay_is_labelled_and_kept_apart(tmp_path):
    from fastvit.report.verdicts import backends_section

    rows = paired_rows()
    for r in rows:
        if r["op"] == "attention" and r["pass"] == "fwd" and r["status"] == "ok" and "twin_of" not in r:
            r["graph_median_s"] = 0.5 * r["median_s"]
    rows[0].pop("graph_median_s")
    rows[0]["graph_status"] = "not captured: RuntimeError: capture failed"
    text = "\n".join(backends_section(load_results(write_jsonl(tmp_path / "r.jsonl", rows)).rows).lines)
    fwd = text.split("### attention, forward")[1].split("###")[0]
    assert "| CUDA-graph replay (ms), no L2 flush |" in fwd and "no L2 flush between replays" in text
    assert "not captured: RuntimeError: capture failed" in fwd
    assert "CUDA-graph" not in text.split("### attention, training step")[1]  # none recorded there
