# fastvit: `make test` and `make bench` each set themselves up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test

.PHONY: setup test bench clean

# The stamp is refreshed whenever the project's dependencies change.
$(VENV)/.installed-$(EXTRAS): pyproject.toml scripts/setup_venv.sh
	scripts/setup_venv.sh $(VENV) $(EXTRAS)
	@touch $@

setup: $(VENV)/.installed-$(EXTRAS)

test: setup
	$(PY) -m pytest -rs tests

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
