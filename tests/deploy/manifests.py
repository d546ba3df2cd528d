"""Readers for the deployment files, and the settings the app really reads, for the tests to check against."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
CONTAINER_PORT = 8000  # the image's PORT and EXPOSE


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    (doc,) = load_all(path)
    return doc


def settings_env_names() -> set[str]:
    """The environment variables app/settings.py reads (``_env_*("NAME", ...)``)."""
    source = (REPO / "app" / "settings.py").read_text()
    names = set(re.findall(r"""_env_\w+\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    assert {"HOST", "PORT", "WORKERS", "LOG_LEVEL"} <= names, "could not read the settings' names from app/settings.py"
    return names
