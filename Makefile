# fastvit: `make test` and `make bench` each set themselves up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test,peers

.PHONY: setup test bench bench-gpu gpu-quick clean

# The stamp is refreshed whenever the project's dependencies change.
$(VENV)/.installed-$(EXTRAS): pyproject.toml scripts/setup_venv.sh
	scripts/setup_venv.sh $(VENV) $(EXTRAS)
	@touch $@

setup: $(VENV)/.installed-$(EXTRAS)

# The suite, then the ahead-of-time compile audit of the Triton kernels for sm_90 and sm_80 (no GPU
# needed) with each audited Triton release (kernels/audit/versions.py): the venv's own, the newest,
# and the others, each installed alone into $(VENV)/triton-<version> and put first on PYTHONPATH;
# with the oldest, the kernels' interpreter tests and test_audit too (whose probes compile with it:
# the audit itself reuses the committed results), about 2 minutes. Each audit rewrites its
# reports/audit/triton-<version>/ (deterministic: a clean run leaves no diff) and fails on any config
# of the default space that does not compile, overflows shared memory or spills.
TRITON_OLDEST := 3.7.1
TRITON_OTHERS := 3.7.1 3.8.0
KERNEL_TESTS := tests/test_flash_attention.py tests/test_flash_attention_varlen.py tests/test_layer_norm.py tests/test_patch_embed.py tests/test_audit.py
AUDIT := -m kernels.audit --arch sm_90,sm_80 --out 'reports/audit/triton-{triton}' \
	--results-cache 'reports/audit/triton-{triton}/results_cache.json'
test: setup
	$(PY) -m pytest -rs -n auto tests
	$(PY) $(AUDIT)
	@for v in $(TRITON_OTHERS); do scripts/setup_venv.sh --triton $$v $(VENV) || exit 1; done
	PYTHONPATH=$(abspath $(VENV))/triton-$(TRITON_OLDEST) $(PY) -m pytest -rs -n auto $(KERNEL_TESTS)
	@for v in $(TRITON_OTHERS); do echo "[test] audit with triton $$v"; \
	    PYTHONPATH=$(abspath $(VENV))/triton-$$v $(PY) $(AUDIT) >/dev/null || exit 1; done

# The main job: the resolution sweep on this machine's default device (CUDA if present, else CPU),
# then its report, both in reports/<device>/ (results.jsonl is written group by group as the sweep goes).
# More sweep flags (see benchmarks/conftest.py) go in BENCH_ARGS, e.g.
#   make bench BENCH_ARGS="--resolutions=224,384 --attn-backend=naive,sdpa --compile"
# WORLD_SIZES=1,2,4 adds the sweep by world size (torchrun once per world size: ring attention and the
# sharded ViT-Ti/16; in reports/<device>/world/: the rows, results.jsonl, and the "Beyond one device"
# section, beyond.md and beyond.png); WORLD_ARGS go to it (python -m fastvit.distributed bench --help).
BENCH_ARGS ?=
WORLD_SIZES ?=
WORLD_ARGS ?=
bench: setup
	@dir=reports/$$($(PY) -m fastvit.bench slug); start=$$(date +%s); \
	mkdir -p $$dir && rm -f $$dir/report.md $$dir/*.png; \
	echo "[bench] sweep on $$($(PY) -m fastvit.bench device), results in $$dir"; \
	PYTHON=$(PY) scripts/sweep.sh $$dir benchmarks/ --peers $(BENCH_ARGS); status=$$?; \
	if [ -n "$(WORLD_SIZES)" ]; then rm -f $$dir/world/results.jsonl; \
	    $(PY) -m fastvit.distributed sweep --world-sizes $(WORLD_SIZES) --results $$dir/world/results.jsonl \
	        $(WORLD_ARGS) || status=1; \
	    $(PY) -m fastvit.distributed report $$dir/world/results.jsonl -o $$dir/world || status=1; fi; \
	$(PY) -m fastvit.cli report $$dir/results.jsonl -o $$dir || status=1; \
	echo "[bench] finished in $$(( $$(date +%s) - start )) s; report: $$dir/report.md"; exit $$status

# The GPU job on a CUDA machine: the equivalence suite on CUDA (fp32/fp16/bf16, xformers and triton
# included), fastvit check per dtype, the ViT-B/16 and ViT-L/16 sweeps with every backend, and their
# reports, all under reports/<device>/ (settings: scripts/gpu_job.sh).
bench-gpu:
	$(MAKE) setup EXTRAS=test,peers,xformers
	PYTHON=$(PY) scripts/gpu_job.sh all

# The quick GPU check: the facts only a GPU gives, most important first, planned against a deadline
# (QUICK_DEADLINE, default 480 s) and bundled into at most 8 files of at most 16 MiB on any exit
# (scripts/gpu_quick.py, scripts/README.md). `make gpu-quick DEVICE=cpu` rehearses it here with tiny
# shapes (the CUDA-only steps skipped, with their reason); QUICK_ARGS go to scripts/gpu_quick.py.
# Needs no registry: the venv if there is one, else python3.
QUICK_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
QUICK_ARGS ?=
gpu-quick:
	PYTHON=$(QUICK_PY) scripts/gpu_job.sh quick $(QUICK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
