"""fastvit.report on synthetic whole-model rows of every family (ViT, DeiT, Swin, PiT, CNN) and library
(fastvit, timm, transformers, torchvision): exponents per architecture, where a global-attention model
becomes costlier than a Swin model or a CNN, fastvit against its peers, the measured attention share,
and rows of older results files."""
import json
import math
import re

import pytest

from fastvit.report import costlier_from, fit_pixels, load_results, write_report
from fastvit.report.architectures import architectures_section, peers_section
from fastvit.report.fit import architecture_crossings, attention_share, crossings
from fastvit.report.sections import share_section
from fastvit.report.summary import summary

RES = [224, 384, 512, 768, 1024]
B = 2
# name: (family, patch, latency ∝ res^k: (coefficient, k), memory ∝ res^k: (coefficient, k), params)
MODELS = {
    "vit_base_patch16_224": ("vit", 16, (1.0, 4), (1.0, 2), 86.6e6),
    "deit_tiny_patch16_224": ("deit", 16, (0.1, 4), (1.0, 4), 5.7e6),
    "swin_tiny_patch4_window7_224": ("swin", 4, (600.0 ** 2, 2), (1.0, 2), 28.3e6),
    "pit_ti_224": ("pit", 16, (1.0, 3), (1.0, 2.5), 4.9e6),
    "resnet50": ("cnn", None, (300.0 ** 2, 2), (1.0, 2), 25.6e6),
    "convnext_tiny": ("cnn", None, (100.0 ** 2, 2), (1.0, 2), 28.6e6),
}
# the ViT's latency is res^4 and Swin's 600² res²: the ViT is costlier from exactly 600 px; than resnet50
# from 300 px, than convnext_tiny already at 224 px; DeiT (0.1 res^4) passes Swin only at 600 √10 ≈ 1897 px
SCALE = 1e-12  # seconds per unit of the power laws above
PEERS = {"timm": ("sdpa", 1.25, 1.0), "transformers": ("eager", 0.8, 2.0)}  # attention, latency and memory ratio


def tokens(model, res):
    family, patch = MODELS[model][:2]
    return (res // patch) ** 2 + 1 if family in ("vit", "deit") else None  # Swin, PiT, CNN: no global count


def model_row(model, res, pass_="fwd", library="fastvit", backend="sdpa", status="ok", lat=1.0, mem=1.0, **extra):
    family, patch, (ct, kt), (cm, km), params = MODELS[model]
    r = {"op": "model", "backend": backend if library == "fastvit" else library, "library": library,
         "family": family, "model": model, "resolution": res, "tokens": tokens(model, res), "batch": B,
         "dtype": "fp32", "device": "cpu", "device_name": "Synthetic CPU", "pass": pass_, "patch_size": patch,
         "params": params + res, "status": status,
         "heads": [3, 6, 12, 24] if family == "swin" else 12, "attention_impl": "none" if family == "cnn" else None}
    if library == "fastvit":
        r.update(norm_backend="torch", patch_backend="conv")
    if status == "ok":
        t = lat * SCALE * ct * res ** kt * (3 if pass_ == "train" else 1)
        r.update(median_s=t, iqr_s=0.02 * t, q1_s=0.99 * t, q3_s=1.01 * t, rounds=5,
                 peak_mem_bytes=mem * 100.0 * cm * res ** km)
    r.update(extra)
    return r


def vit_share(res):
    """Linear in log(resolution), so the interpolated crossover is exactly 600 px."""
    return 0.5 + 0.3 * math.log(res / 600)


def model_rows(with_share=True):
    rows = []
    for res in RES:
        for p in ("fwd", "train"):
            for model, (family, *_rest) in MODELS.items():
                lib = "torchvision" if family == "cnn" else "fastvit"
                share = {"attention_share": vit_share(res)} if with_share and model.startswith("vit") else {}
                if family == "cnn":
                    rows.append(model_row(model, res, p, lib))
                else:
                    rows.append(model_row(model, res, p, lib, **share))
                    rows.append(model_row(model, res, p, lib, backend="naive", lat=5.0))  # not a default: left out
            rows.append(model_row("vit_base_patch16_224", res, p, backend="sdpa+compile", lat=0.9))
            for lib, (attn, lat, mem) in PEERS.items():
                share = {"attention_share": 0.1} if with_share and lib == "timm" else {}
                bad = "error: RuntimeError: boom" if lib == "transformers" and res == 1024 else "ok"
                rows.append(model_row("vit_base_patch16_224", res, p, lib, status=bad, lat=lat, mem=mem,
                                      attention_impl=attn, **share))
            rows.append(model_row("swin_tiny_patch4_window7_224", res, p, "timm", lat=1.1, attention_impl="eager"))
    return rows


def write_jsonl(path, rows):
    env = {"device": "cpu", "device_name": "Synthetic CPU", "torch": "2.13.0", "threads": 2}
    path.write_text("\n".join(json.dumps(r) for r in [{"environment": env}] + rows) + "\n")
    return path


@pytest.fixture
def df(tmp_path):
    return load_results(write_jsonl(tmp_path / "m.jsonl", model_rows())).rows


def test_fit_pixels_recovers_power_laws():
    assert fit_pixels(RES, [r ** 4 for r in RES]).exponent == pytest.approx(2.0)  # ∝ N²
    fit = fit_pixels(RES, [r ** 2 + 1e9 for r in RES])
    assert (fit.n_min, fit.n_max, fit.points) == (512, 1024, 3)


def test_exponents_per_architecture(df):
    text = "\n".join(architectures_section(df).lines)
    for model, (family, _, (_, kt), (_, km), _) in MODELS.items():
        assert f"| {model} | " in text
        row = next(line for line in text.splitlines() if line.startswith(f"| {model} | "))
        assert f"| {kt / 2:.2f} | {km / 2:.2f} | 512–1,024 px (3) |" in row  # slope against log(res²)


def test_costlier_crossovers(df):
    found = {(c["pass"], c["model"], c["rival"]): c["crossover"] for c in architecture_crossings(df)}
    assert found["fwd", "vit_base_patch16_224", "swin_tiny_patch4_window7_224"].resolution == pytest.approx(600)
    assert found["train", "vit_base_patch16_224", "resnet50"].resolution == pytest.approx(300)
    assert found["fwd", "vit_base_patch16_224", "convnext_tiny"].kind == "already"
    deit = found["fwd", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"]
    assert deit.kind == "not reached" and deit.text == "not reached in the sweep (ratio at most 0.29 at 1024 px)"
    assert not any(m.startswith("pit") or r.startswith("pit") for _, m, r in found)  # PiT is neither side
    assert len(found) == 2 * 2 * 3  # passes x global-attention models x (one Swin + two CNNs)
    bullet = next(line for line in summary(df) if line.startswith("- Architectures"))
    assert bullet.startswith("- Architectures (unpaired: measured in separate configurations), forward: ")
    assert ("vit_base_patch16_224 (86.6M params) becomes costlier than swin_tiny_patch4_window7_224 (Swin, 28.3M "
            "params) from ≈ 600 px; than resnet50 (CNN, 25.6M params) from ≈ 300 px; than convnext_tiny (CNN, "
            "28.6M params) already at the smallest size (ratio 5.02 at 224 px);") in bullet
    assert bullet.endswith("training step: the same.")  # the same crossings in both passes: said once
    assert costlier_from([224, 384], [0.5, 2.0]).resolution == pytest.approx(math.exp(
        math.log(224) + 0.5 * (math.log(384) - math.log(224))))
    assert costlier_from([224, 384], [1.5, 2.0]).text == "already costlier at the smallest size (ratio 1.50 at 224 px)"


def test_architecture_table_and_figures(df, tmp_path):
    section = architectures_section(df)
    text = "\n".join(section.lines)
    ratios = [f"| vit_base_patch16_224 | swin_tiny_patch4_window7_224 | {r} px | {q} |"
              for r, q in zip(RES, ("0.139", "0.410", "0.728", "1.638", "2.913"))]
    assert all(line in text for line in ratios), text
    assert ("| vit_base_patch16_224 | 86.6M params | swin_tiny_patch4_window7_224 | Swin | 28.3M params "
            "| from ≈ 600 px |") in text
    assert [f.name for f in section.figures] == ["architectures_fwd.png", "architectures_train.png"]
    section.figures[0].draw(tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_peer_ratio_tables(df):
    text = "\n".join(peers_section(df).lines)
    vit = text.split("### vit_base_patch16_224, forward (inference, no_grad), B=2, fp32")[1].split("###")[0]
    assert "| size | build | median (ms) | time ÷ fastvit's (unpaired) | peak memory ÷ fastvit's |" in vit
    for res in RES:
        assert re.search(rf"\| {res} px \| fastvit \(sdpa\) \| [\d.,]+ \| 1 \(baseline\) \| 1× \|", vit)
        assert re.search(rf"\| {res} px \| timm \(sdpa\) \| [\d.,]+ \| 1\.250 \| 1\.00× \|", vit)
        assert re.search(rf"\| {res} px \| fastvit naive \| [\d.,]+ \| 5\.000 \| 1\.00× \|", vit)
        if res < 1024:
            assert re.search(rf"\| {res} px \| transformers \(eager\) \| [\d.,]+ \| 0\.800 \| 2\.00× \|", vit)
    assert "| 1024 px | transformers (eager) | **error** [1] | – | – |" in vit
    assert "[1] error: RuntimeError: boom" in text
    assert "Attention: fastvit `sdpa`; timm `sdpa`; HF transformers `eager`." in text
    assert "(unpaired: measured in separate configurations)" in vit and "| slower |" not in text
    swin = text.split("### swin_tiny_patch4_window7_224, forward (inference, no_grad), B=2, fp32")[1].split("###")[0]
    assert re.search(r"\| 224 px \| timm \(eager\) \| [\d.,]+ \| 1\.100 \|", swin)


def test_measured_share_and_its_crossover(df):
    share = attention_share(df)
    assert set(share["impl"]) == {"sdpa", "timm"}  # not naive, the compiled model or the CNNs: none measured
    found = {(c["pass"], c["impl"]): c["crossover"] for c in crossings(share)}
    assert found["fwd", "sdpa"].resolution == pytest.approx(600)
    assert found["fwd", "sdpa"].text == "≈ 600 px (N ≈ 1,407)"
    assert found["train", "timm"].kind == "not reached"
    text = "\n".join(share_section(df).lines)
    vit = "| vit_base_patch16_224 |"
    assert f"{vit} sdpa | fwd | 20% | 37% | 45% | 57% | 66% | ≈ 600 px (N ≈ 1,407) |" in text
    assert (f"{vit} timm (sdpa) | fwd | 10% | 10% | 10% | 10% | 10% | not reached in the sweep (at most 10% at "
            "224 px) |") in text
    assert text.count("\n| --- |") == 1  # one table for every model and pass
    assert ("- Attention passes half of the model's time (fastvit's builds, forward / training step): "
            "vit_base_patch16_224 ≈ 600 px / ≈ 600 px. Every build: table *attention_share*.") in summary(df)


def test_no_share_section_without_the_column(tmp_path):
    df = load_results(write_jsonl(tmp_path / "m.jsonl", model_rows(with_share=False))).rows
    assert attention_share(df).empty and share_section(df).lines == []
    text = write_report(tmp_path / "m.jsonl", tmp_path / "out").read_text()
    assert "## Share of the whole-model time" not in text and not (tmp_path / "out" / "attention_share.png").exists()
    assert "## Architectures against resolution" in text and "## fastvit, timm, HF and torchvision" in text


def test_models_without_tokens_are_plotted_against_resolution(df, tmp_path):
    text = write_report(write_jsonl(tmp_path / "m.jsonl", model_rows()), tmp_path / "out").read_text()
    swin = text.split("### whole model, forward (inference, no_grad) (swin_tiny_patch4_window7_224")[1]
    assert "| backend | 224 px | 384 px | 512 px | 768 px | 1024 px |" in swin.split("###")[0]
    assert "| timm (eager) |" in swin.split("###")[0]
    vit = text.split("### whole model, forward (inference, no_grad) (vit_base_patch16_224")[1]
    assert "| backend | 224 px (N=197) |" in vit
    assert (tmp_path / "out" / "model_fwd_swin_tiny_patch4_window7_224_fp32_b2.png").stat().st_size > 10_000
    linked = sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    assert linked == sorted(p.name for p in (tmp_path / "out").glob("*.png")) and "attention_share.png" in linked
    assert "| whole model | fwd | swin_tiny_patch4_window7_224, B=2, fp32 | sdpa | 1.00 | 1.00 | 512–1,024 px (3) |" \
        in text


def test_legacy_vit_rows_load_as_fastvit_models(tmp_path):
    old = [{k: v for k, v in model_row("vit_base_patch16_224", res).items() if k not in ("library", "family")}
           | {"op": "vit"} for res in RES]
    rows = load_results(write_jsonl(tmp_path / "old.jsonl", old)).rows
    assert set(rows["op"]) == {"model"} and set(rows["library"]) == {"fastvit"} and set(rows["family"]) == {"vit"}
    assert set(rows["impl"]) == {"sdpa"}
    text = write_report(tmp_path / "old.jsonl", tmp_path / "out").read_text()
    assert "(model_fwd.png)" in text and "## Share of" not in text and "## fastvit, timm, HF and torchvision" not in text


def test_compile_section_sets_compiled_beside_eager():
    """Each +compile row beside its eager row at the same size: the ratio, graphs and breaks; a
    compiled row that did not run shows its status with a footnote; no section without compiled rows."""
    import pandas as pd

    from fastvit.report.compiled import compile_section

    vit = "vit_base_patch16_224"
    rows = [model_row(vit, 224, lat=1.0), model_row(vit, 384, lat=1.0),
            model_row(vit, 224, backend="sdpa+compile", lat=0.5, compile_graphs=1, compile_graph_breaks=0),
            model_row(vit, 384, backend="sdpa+compile", status="skipped: over the time budget")]
    df = pd.DataFrame(rows).assign(impl=lambda d: d["backend"])
    text = "\n".join(compile_section(df).lines)
    assert "## torch.compile against eager" in text
    assert re.search(r"\| `sdpa` \| 224 px \| [\d.]+ \w+ \| [\d.]+ \w+ \| 0\.500 \| 1 / 0 \|", text), text
    assert "compiled ÷ eager (unpaired)" in text  # rows of no comparison group: a ratio of medians
    assert re.search(r"\| `sdpa` \| 384 px \| [\d.]+ \w+ \| skipped \[1\] \| – \| – \|", text), text
    assert "[1] skipped: over the time budget" in text
    assert compile_section(df[~df["impl"].str.endswith("+compile")]).lines == []
