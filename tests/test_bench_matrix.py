"""The sweep's default whole-model matrix on a CPU: which models get peers, which sizes get a training
step, and the budget of the whole-model groups (collected and built, not timed)."""
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env
from test_benchmark_harness import _bench_module, _settings

ROOT = Path(__file__).resolve().parents[1]


def test_peers_join_the_model_group_for_the_peer_presets_only_with_the_group_budget():
    bench = _bench_module("bench_vit")
    group = bench.model_group(_settings(peers=True, peer_models=["vit_tiny_patch16_224"], model_time_budget=7.0),
                              96, "fwd", "fp32")
    libraries = {(c.label.split()[0], c.label.split()[1]) for c in group.cases}
    assert ("vit_tiny_patch16_224", "timm") in libraries and ("pit_ti_224", "fastvit") in libraries
    assert not {lib for m, lib in libraries if m == "pit_ti_224"} - {"fastvit"}
    assert ("resnet50", "torchvision") in libraries  # the CNNs are architectures, not peers
    assert group.time_budget == 7.0
    every = bench.model_group(_settings(peers=True), 96, "fwd", "fp32")
    assert ("pit_ti_224", "timm") in {(c.label.split()[0], c.label.split()[1]) for c in every.cases}


def test_the_default_cpu_sweep_times_the_whole_models_training_step_at_its_own_sizes():
    """Collected only: the whole-model tests of the CPU default are forward at 224, 448 and 672 px and a
    training step at 224 and 448 px."""
    def collected():
        proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/bench_vit.py", "--benchmark-only", "-q",
                               "-p", "no:cacheprovider", "--collect-only", "--device=cpu"],
                              cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return sorted(line.split("[")[1].rstrip("]") for line in proc.stdout.splitlines() if "test_models[" in line)

    assert collected() == sorted(["224px-fwd-fp32", "224px-train-fp32", "448px-fwd-fp32", "448px-train-fp32",
                                  "672px-fwd-fp32"])
