"""The real container image: built from the Dockerfile with buildah, then the service run inside it.

No Docker daemon runs here and no registry can be pulled from, so deploy/offline-build.sh builds
with Debian's buildah on a debootstrapped Debian bookworm standing in for the slim Python base
(the Dockerfile's BASE argument); the build's own `RUN pip install` and model download reach the
package index. The base image and the build's layers are cached under .buildah/, so only the first
run pays for them (about 3-4 minutes on 2 cores, against seconds after).

The service then runs as the image says (its user, working directory, environment, entrypoint),
with the host's network: /healthz turns 200, the image's own HEALTHCHECK command passes, a real
photo comes back cut out, SIGTERM ends it cleanly, and nothing in the image's file system changed
(so a read-only root file system does it no harm).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.deploy.manifests import REPO
from tests.images import photo_bytes
from tests.wire import free_port

SCRIPT = REPO / "deploy" / "offline-build.sh"
IMAGE = "localhost/bgremove:test"
CONTAINER = "bgremove-image-test"
# What buildah's chroot isolation mounts or writes itself: not the service's writes. /tmp counts:
# under `docker run --read-only` it is read-only too.
RUNTIME_PATHS = ("proc", "sys", "dev", "run", "etc/hosts", "etc/resolv.conf", "etc/hostname")

# The first build debootstraps the base and installs the dependencies: minutes, not seconds.
pytestmark = pytest.mark.timeout(1200)


def _require_tools() -> None:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        reason = (
            f"{' and '.join(missing)} missing: `make test` as root installs them (apt-get install buildah debootstrap)"
        )
    elif os.geteuid() != 0:
        reason = "building the image needs root (debootstrap, buildah's chroot isolation)"
    else:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(SCRIPT), "buildah", *args], check=False, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout


def run_in_container(name: str, env: dict[str, str], command: list[str]) -> list[str]:
    """``buildah run`` of ``command`` in container ``name``, on the host's network, with ``env``."""
    settings = [part for key, value in env.items() for part in ("--env", f"{key}={value}")]
    return [str(SCRIPT), "buildah", "run", "--network", "host", *settings, name, "--", *command]


@pytest.fixture(scope="module")
def image() -> str:
    _require_tools()
    started = time.monotonic()
    result = subprocess.run([str(SCRIPT), "build", IMAGE], check=False, capture_output=True, text=True, timeout=1100)
    assert result.returncode == 0, f"the image did not build:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    print(f"\nimage built in {time.monotonic() - started:.0f} s; {result.stderr.strip().splitlines()[-1]}")
    return IMAGE


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, Any]:
    return json.loads(buildah("inspect", "--type", "image", image))["Docker"]["config"]


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, Path]]:
    subprocess.run(
        [str(SCRIPT), "buildah", "rm", CONTAINER], check=False, capture_output=True, timeout=120
    )  # a stale one
    buildah("from", "--pull-never", "--name", CONTAINER, image)
    root = Path(buildah("mount", CONTAINER).strip())
    yield CONTAINER, root
    subprocess.run([str(SCRIPT), "buildah", "rm", CONTAINER], check=False, capture_output=True, timeout=120)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path of the container's file system with its mtime and size."""
    skip = {root / path for path in RUNTIME_PATHS}
    state = {}
    for folder, folders, files in os.walk(root):
        here = Path(folder)
        folders[:] = [name for name in folders if here / name not in skip]
        for name in folders + files:
            path = here / name
            if path not in skip:
                info = path.lstat()
                state[str(path.relative_to(root))] = (info.st_mtime_ns, info.st_size)
    return state


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _service_process(runner: subprocess.Popen[bytes], entrypoint: list[str]) -> tuple[int, int]:
    """The pid and uid of the entrypoint's process, below `buildah run`."""
    for pid in _descendants(runner.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
            uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if argv[1:] == entrypoint[1:] and Path(argv[0]).name.startswith("python"):
            return pid, uid
    raise AssertionError(f"no process running {entrypoint} under buildah run")


def test_the_image_is_configured_to_run_the_service_safely(config: dict[str, Any]) -> None:
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python3", "-m", "app"]
    assert config["WorkingDir"] == "/srv/bgremove"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "8000/tcp" in config["ExposedPorts"]


def test_the_service_runs_in_the_image_cuts_out_a_photo_and_stops_on_sigterm(
    config: dict[str, Any], container: tuple[str, Path]
) -> None:
    name, root = container
    assert (root / "srv/bgremove/models/u2netp.onnx").is_file() and (root / "srv/bgremove/models/u2net.onnx").is_file()
    assert not (root / "usr/bin/gcc").exists() and not (root / "opt/venv/bin/pip").exists()
    before = _snapshot(root)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    entrypoint = config["Entrypoint"] + (config.get("Cmd") or [])
    log = open(REPO / ".buildah" / "image-test.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    runner = subprocess.Popen(
        run_in_container(name, {"PORT": str(port), "HOST": "127.0.0.1"}, entrypoint),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        status = None
        while status != 200:
            assert runner.poll() is None, (
                f"the service exited with {runner.returncode}: {(REPO / '.buildah/image-test.log').read_text()[-3000:]}"
            )
            assert time.monotonic() - started < 60, f"/healthz still says {status} after 60 s"
            try:
                status = httpx.get(url + "/healthz", timeout=2).status_code
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        ready = time.monotonic() - started
        print(f"\n/healthz 200 after {ready:.2f} s from `buildah run` (its own set-up included)")
        health = httpx.get(url + "/healthz").json()
        assert health["model"]["name"] == "u2net"
        assert health["model"]["path"] == "/srv/bgremove/models/u2net.onnx"

        pid, uid = _service_process(runner, entrypoint)
        assert uid == 10001, "the service runs as the image's non-root user"

        # The image's own HEALTHCHECK command, run inside the container as Docker would.
        check = subprocess.run(
            run_in_container(name, {"PORT": str(port)}, config["Healthcheck"]["Test"][1:]),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stderr

        photo = photo_bytes()
        response = httpx.post(url + "/remove", files={"file": ("lemur.jpg", photo, "image/jpeg")}, timeout=120)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        cutout = Image.open(BytesIO(response.content))
        assert cutout.format == "PNG" and cutout.mode == "RGBA"
        assert cutout.size == Image.open(BytesIO(photo)).size
        alpha = cutout.getchannel("A").getextrema()
        assert alpha == (0, 255), "a real cut-out: some background removed, some subject kept"

        metrics = httpx.get(url + "/metrics")
        assert metrics.status_code == 200 and "# TYPE " in metrics.text

        os.kill(pid, signal.SIGTERM)
        code = runner.wait(timeout=60)
    finally:
        if runner.poll() is None:
            runner.terminate()
            runner.wait(timeout=30)
        log.close()
    output = (REPO / ".buildah/image-test.log").read_text()
    # uvicorn shuts down, then re-raises the signal it caught, so the process ends *by* SIGTERM
    # (Docker shows 143); buildah reports that as "exited on terminated", status 1.
    assert "Application shutdown complete" in output, output[-3000:]
    assert code == 0 or "subprocess exited on terminated" in output, output[-3000:]

    changed = {path: after for path, after in _snapshot(root).items() if before.get(path) != after}
    gone = set(before) - set(_snapshot(root))
    assert not changed and not gone, f"the service wrote to its file system: {sorted(changed)[:20]} {sorted(gone)[:20]}"
