"""The ``fastvit`` command, run in-process (``fastvit.cli.main``) and once as a subprocess."""
import json
import subprocess
import sys

import pytest

from fastvit import list_backends
from fastvit.cli import main

CHECK = ["check", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--batch-size", "2", "--device", "cpu"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_backends_lists_every_backend(capsys):
    code, out, _ = run_cli(capsys, "backends", "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    for row in list_backends("cpu"):
        expected = [row["op"], row["name"], "yes" if row["available"] else "no"]
        matching = [ln for ln in lines if ln.split()[:3] == expected]
        assert matching, f"no line for {row['op']} {row['name']} in:\n{out}"
        if not row["available"]:
            assert row["reason"][:40] in matching[0]


def test_check_passes_and_writes_json(capsys, tmp_path):
    path = tmp_path / "check.json"
    code, out, _ = run_cli(capsys, *CHECK, "--backends", "naive,sdpa", "--norm-backends", "torch",
                           "--patch-backends", "conv,einops", "--json", str(path))
    assert code == 0, out
    report = json.loads(path.read_text())
    status = {(r["op"], r["backend"]): r["status"] for r in report["results"]}
    assert status == {("attention", "naive"): "pass", ("attention", "sdpa"): "pass", ("norm", "torch"): "pass",
                      ("patch", "conv"): "pass", ("patch", "einops"): "pass"}
    assert report["model"] == "vit_tiny_patch16_224" and report["device"] == "cpu"
    assert "0 failed" in out


@pytest.mark.parametrize("backends,match", [("sdpa-efficient", "EFFICIENT_ATTENTION"), ("sdpa,nope", "nope")])
def test_check_fails_on_a_backend_that_cannot_run(capsys, backends, match):
    code, out, _ = run_cli(capsys, *CHECK, "--backends", backends, "--norm-backends", "torch",
                           "--patch-backends", "conv")
    assert code != 0
    assert match in out and "1 failed" in out


def test_subprocess_backends():
    proc = subprocess.run([sys.executable, "-m", "fastvit.cli", "backends", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "naive" in proc.stdout and "xformers" in proc.stdout and "einops" in proc.stdout
