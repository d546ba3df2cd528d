"""The export scripts live outside the ``app`` package; make them importable, and give the
exporter a one-photo folder to verify on, so each export stays a few seconds on two cores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.images import REPO, dev_images

sys.path.insert(0, str(REPO / "scripts"))

SHIPPED = REPO / "models" / "u2netp.onnx"


@pytest.fixture(scope="session")
def one_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-photo")
    (folder / "lemur_original.jpg").symlink_to(dev_images()[-2])
    return folder
