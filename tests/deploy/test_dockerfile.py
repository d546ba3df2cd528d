"""The Dockerfile lints clean with hadolint and keeps its promises; requirements.lock is exact and closed."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import CONTAINER_PORT, REPO

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    binary = binary if binary.exists() else Path(shutil.which("hadolint") or "hadolint")
    return subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            result.append((keyword.upper(), " ".join(arguments.split())))
    return result


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last_from = max(index for index, (keyword, _) in enumerate(found) if keyword == "FROM")
    return found[last_from:]


def test_hadolint_finds_nothing_at_any_severity() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_really_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install curl\nCMD python3 -m app\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):  # :latest, unpinned apt package, shell-form CMD
        assert rule in result.stdout


def test_the_base_is_an_argument_defaulting_to_the_slim_python_image() -> None:
    found = instructions()
    assert found[0] == ("ARG", "BASE=python:3.11-slim-bookworm")
    stages = [arguments for keyword, arguments in found if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    assert all(stage.split()[0] == "${BASE}" or stage.split()[0] in {s.split()[-1] for s in stages} for stage in stages)


def test_the_final_stage_runs_python_m_app_as_a_numeric_non_root_user_from_srv() -> None:
    stage = final_stage()
    keywords = [keyword for keyword, _ in stage]
    (user,) = [arguments for keyword, arguments in stage if keyword == "USER"]
    uid = re.fullmatch(r"\$\{UID\}:\$\{UID\}|(\d+)(:\d+)?", user)
    assert uid, user
    (uid_arg,) = [arguments for keyword, arguments in stage if keyword == "ARG" and arguments.startswith("UID=")]
    assert int(uid_arg.split("=")[1]) >= 1000
    assert ("WORKDIR", "/srv/bgremove") in stage
    (entrypoint,) = [json.loads(arguments) for keyword, arguments in stage if keyword == "ENTRYPOINT"]
    assert entrypoint == ["python3", "-m", "app"], "exec form, so SIGTERM reaches the server"
    assert "CMD" not in keywords or json.loads(dict(stage)["CMD"])
    # The final stage installs nothing: no pip, no apt, no compilers; it only copies.
    runs = [arguments for keyword, arguments in stage if keyword == "RUN"]
    assert not any(re.search(r"\b(pip|apt-get|apt|gcc|make)\b", run) for run in runs), runs


def test_the_environment_listens_everywhere_and_writes_no_bytecode() -> None:
    env = " ".join(arguments for keyword, arguments in final_stage() if keyword == "ENV")
    for setting in ("HOST=0.0.0.0", f"PORT={CONTAINER_PORT}", "PYTHONDONTWRITEBYTECODE=1", "PATH=/opt/venv/bin:$PATH"):
        assert setting in env.split(), setting
    assert ("EXPOSE", str(CONTAINER_PORT)) in final_stage()


def test_the_healthcheck_uses_python_not_curl() -> None:
    (check,) = [arguments for keyword, arguments in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD ") + 4 :])
    assert command[0] == "python3" and "urllib.request" in command[2] and "/healthz" in command[2]


def test_dependencies_come_from_the_lock_and_the_model_from_fetch_model() -> None:
    runs = " ".join(arguments for keyword, arguments in instructions() if keyword == "RUN")
    assert "pip install --no-cache-dir --no-deps --only-binary=:all: -r /tmp/requirements.lock" in runs
    assert "scripts/fetch_model.py --dir /build/models" in runs  # every catalogue model
    copies = [arguments for keyword, arguments in instructions() if keyword == "COPY"]
    assert "requirements.lock /tmp/requirements.lock" in copies
    final_copies = [arguments for keyword, arguments in final_stage() if keyword == "COPY"]
    assert any(copy.endswith(" /srv/bgremove/models/") for copy in final_copies)
    assert any(copy.endswith(" /srv/bgremove/app") for copy in final_copies)
    # The project is never pip-installed: the default MODEL_DIR is resolved beside the app package.
    assert not re.search(r"pip install [^&]*(\s\.(\s|$)|-e )", runs)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a folder above it) decides."""
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        regex = fnmatch.translate(pattern)
        if pattern.startswith("**/"):
            regex = f"(?:.*/)?{fnmatch.translate(pattern[3:])}"
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    sources = [
        arguments.split()[0]
        for keyword, arguments in instructions()
        if keyword == "COPY" and not arguments.startswith("--from")
    ]
    assert sources
    for source in sources:
        files = [path for path in (REPO / source).rglob("*.py")] if (REPO / source).is_dir() else [REPO / source]
        for file in files:
            if "__pycache__" not in file.parts:
                assert not dockerignored(str(file.relative_to(REPO))), file
    for heavy in (
        ".venv/bin/python",
        "models/u2netp.onnx",
        "models/u2net.onnx",
        ".git/HEAD",
        ".buildah/overlay",
        "tests/images.py",
        "app/__pycache__/x.pyc",
    ):
        assert dockerignored(heavy), heavy


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line.strip())
            assert match, f"not an exact pin: {line!r}"
            name = canonicalize_name(match.group(1))
            assert name not in pins, f"pinned twice: {name}"
            pins[name] = match.group(2)
    return pins


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = locked()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert canonicalize_name(project["name"]) not in pins, "the project itself is copied, never installed"
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement.specifier}"
        )


def test_the_lock_is_closed_under_each_pinned_package_s_own_requirements() -> None:
    """Checked through the metadata installed here, for every pin that matches what is installed."""
    pins = locked()
    environment = {**default_environment(), "extra": ""}
    checked = []
    for name, version in pins.items():
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed.version != version:
            continue
        for spec in installed.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                needed = canonicalize_name(requirement.name)
                assert needed in pins, (
                    f"{name}=={version} needs {needed}, which requirements.lock lacks: run `make lock`"
                )
                assert requirement.specifier.contains(pins[needed], prereleases=True), f"{name} needs {requirement}"
        checked.append(name)
    assert len(checked) >= len(pins) // 2, f"too few pins match the installed versions to check the closure: {checked}"
