# `make run` and `make test` do every set-up step themselves, idempotently:
# a virtual environment in .venv (reinstalled only when pyproject.toml changes;
# the tests need the export extra, PyTorch's CPU build, for scripts/export_onnx.py)
# and the verified model in models/.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench

.PHONY: run test setup model bench clean

run: setup
	$(PY) -m app

test: setup
	$(PY) -m pytest

setup: $(INSTALLED) model

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

model: $(INSTALLED)
	$(PY) scripts/fetch_model.py

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[dev,export,bench]'
	touch $@

bench: $(BENCH_INSTALLED) model
	$(PY) bench/latency.py

clean:
	rm -rf $(VENV) models .pytest_cache
