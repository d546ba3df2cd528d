# `make run` and `make test` do every set-up step themselves, idempotently:
# a virtual environment in .venv (reinstalled only when pyproject.toml changes;
# the tests need the export extra, PyTorch's CPU build, for scripts/export_onnx.py)
# and the verified model in models/.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test setup model browser bench clean

run: setup
	$(PY) -m app

test: setup browser
	$(PY) -m pytest

setup: $(INSTALLED) model

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

model: $(INSTALLED)
	$(PY) scripts/fetch_model.py

# The web page's tests drive Debian's chromium through Playwright (no browser download);
# without root to install it they are skipped, except under CI, where they fail.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	  else echo "no $(CHROMIUM) and no root to install it: the browser tests will be skipped"; fi; }

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[dev,export,bench]'
	touch $@

bench: $(BENCH_INSTALLED) model
	$(PY) bench/latency.py

clean:
	rm -rf $(VENV) models .pytest_cache
