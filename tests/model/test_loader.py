"""Loading the model the settings name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from app.model import ModelError, load_model, load_models
from app.model.catalog import CATALOGUE
from app.settings import DEFAULT_MODEL_DIR as CATALOGUE_DIR
from app.settings import Settings


def _threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or not os.path.isdir("/proc/self/task"), reason="Linux's")
def test_onnxruntime_threads_start_at_the_workers_priority() -> None:
    """A solo session's intra-op threads run images too: at the loop's priority they would compete with it."""
    before = _threads()
    model = load_model(Settings(model="u2netp", intra_op_threads=1, solo_threads=2))
    started = _threads() - before
    assert model.solo_threads == 2
    assert started, "onnxruntime started no intra-op thread"
    assert {os.sched_getscheduler(tid) for tid in started} == {os.SCHED_IDLE}


def test_model_and_models_load_from_the_catalogue_default_first(tmp_path: Path) -> None:
    models = load_models(Settings(model="u2netp", models=("u2net", "u2netp")))
    assert models.default == "u2netp" and list(models.models) == ["u2netp", "u2net"]
    assert models.default_model.info.sha256 == CATALOGUE["u2netp"].sha256
    assert models.get("u2net") is not None and models.get("u2net").info.sha256 == CATALOGUE["u2net"].sha256  # type: ignore[union-attr]
    assert all(model.known is CATALOGUE[name] for name, model in models.models.items()), "each carries its entry"


def test_a_name_outside_the_catalogue_is_refused_before_anything_loads() -> None:
    with pytest.raises(ModelError, match="u2net_human_seg"):
        load_models(Settings(model="u2netp", models=("u2net_human_seg",)))


def test_a_catalogue_file_is_held_to_its_hash(tmp_path: Path) -> None:
    (tmp_path / "u2netp.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelError, match="corrupt"):
        load_models(Settings(model="u2netp", model_dir=tmp_path))


def test_model_path_replaces_the_default_by_its_own_name(tmp_path: Path) -> None:
    own = tmp_path / "my-fine-tune.onnx"
    shutil.copy(CATALOGUE_DIR / "u2netp.onnx", own)
    models = load_models(Settings(model_path=own))
    assert list(models.models) == ["u2netp"], "a known file is named by its hash"
    with_catalogue = load_models(Settings(model_path=own, models=("u2net",)))
    assert with_catalogue.default == "u2netp" and set(with_catalogue.models) == {"u2netp", "u2net"}


def test_a_derived_model_must_carry_its_sources_stamp(tmp_path: Path) -> None:
    """u2net-int8 is made by the set-up, so its bytes are not pinned: the exporter's stamp of u2net's hash is."""
    made = load_models(Settings())
    assert made.default == "u2net-int8" and made.default_model.info.precision == "int8"
    shutil.copy(CATALOGUE_DIR / "u2netp.onnx", tmp_path / "u2net-int8.onnx")  # a loadable file, but not made from u2net
    with pytest.raises(ModelError, match="not made from the pinned source"):
        load_models(Settings(model_dir=tmp_path))
