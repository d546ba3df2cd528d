from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.model import ModelSet, ModelError, SaliencyModel
from app.model.catalog import U2NETP
from app.model.session import _normalised
from app.pipeline import RemoveOptions, remove_background
from app.settings import DEFAULT_MODEL_DIR
from tests.images import photo, photo_bytes


def test_shipped_model_is_described(model: SaliencyModel) -> None:
    info = model.info
    assert info.name == "u2netp" and info.sha256 == U2NETP.sha256
    assert (info.input_width, info.input_height) == (320, 320)
    assert info.precision == "float32" and info.provider == "CPUExecutionProvider"


def test_prediction_is_a_normalised_map_that_finds_the_subject(model: SaliencyModel) -> None:
    prob = model.predict(np.asarray(photo()))
    assert prob.shape == (320, 320) and prob.dtype == np.float32
    assert prob.min() == 0.0 and prob.max() == pytest.approx(1.0)
    # the lemur sits in the middle of the frame, the corners are background
    assert prob[140:200, 130:190].mean() > 0.9
    assert prob[:30, :30].mean() < 0.1


@pytest.mark.parametrize("kind", ["grey", "black", "white"])
def test_a_photo_without_a_subject_maps_to_nothing(models: ModelSet, kind: str) -> None:
    """Stretched to 0..1 as rembg does, a flat frame's faint map would become random blobs."""
    rgb = np.full((150, 200, 3), {"grey": 128, "black": 0, "white": 255}[kind], np.uint8)
    for model in models:
        assert not model.predict(rgb).any(), model.info.name


@pytest.mark.parametrize("brightest", [255, 97, 0])
def test_input_is_normalised_as_u2net_was_trained(brightest: int) -> None:
    """U²-Net's ToTensorLab: scale by the image's own maximum, then the ImageNet mean and deviation."""
    rgb = np.random.default_rng(1).integers(0, brightest + 1, (7, 5, 3), dtype=np.uint8)
    scaled = rgb.astype(np.float64) / max(int(rgb.max()), 1)
    expected = ((scaled - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None]
    tensor = _normalised(rgb)
    assert tensor.shape == (1, 3, 7, 5) and tensor.dtype == np.float32
    assert np.allclose(tensor, expected, atol=1e-5)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="make model"):
        SaliencyModel.load(tmp_path / "nope.onnx")


def test_corrupt_model_names_the_fix(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match="make model"):
        SaliencyModel.load(corrupt)


def test_wrong_hash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="corrupt"):
        SaliencyModel.load(Path("models/u2netp.onnx"), expected_sha256="0" * 64)


def test_precision_is_inferred_for_files_without_our_metadata(tmp_path: Path) -> None:
    """Files quantised or halved by other tools: onnxruntime's own converters, no metadata."""
    onnx = pytest.importorskip("onnx")  # the export extra
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import convert_float_to_float16

    shipped = Path("models/u2netp.onnx")
    int8, fp16 = tmp_path / "int8.onnx", tmp_path / "fp16.onnx"
    quantize_dynamic(shipped, int8, weight_type=QuantType.QUInt8)
    onnx.save(convert_float_to_float16(onnx.load(shipped)), fp16)

    assert SaliencyModel.load(int8).info.precision == "int8"
    halved = SaliencyModel.load(fp16)
    assert halved.info.precision == "float16"
    assert halved.predict(np.asarray(photo())).shape == (320, 320)  # fed float16


class _Recording:
    """The real session, noting each run."""

    def __init__(self, session: Any, runs: list[str], name: str) -> None:
        self._session, self._runs, self._name = session, runs, name

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._runs.append(self._name)
        return self._session.run(*args, **kwargs)


def test_an_image_alone_runs_on_every_core_and_in_company_on_one() -> None:
    model = SaliencyModel.load(DEFAULT_MODEL_DIR / "u2netp.onnx", intra_op_threads=1, solo_threads=2)
    assert model.solo_threads == 2
    runs: list[str] = []
    solo, shared = model._solo, model._session
    model._solo, model._session = _Recording(solo, runs, "solo"), _Recording(shared, runs, "shared")
    rgb = np.asarray(photo())

    alone = model.predict(rgb)
    remove_background(photo_bytes(), RemoveOptions(), model)  # the pipeline holds the model for its image
    with model.in_use(), model.in_use():  # another image is being cut out meanwhile
        in_company = model.predict(rgb)
    assert runs == ["solo", "solo", "shared"]
    assert np.allclose(alone, in_company, atol=1e-4)  # the same network, only the threads differ


def test_no_solo_session_unless_it_has_more_threads() -> None:
    assert SaliencyModel.load(DEFAULT_MODEL_DIR / "u2netp.onnx", intra_op_threads=2, solo_threads=2).solo_threads is None


_RESIDENT_AFTER_BOTH_SESSIONS = """
import sys
from app.model import SaliencyModel
from app.settings import DEFAULT_MODEL_DIR
model = SaliencyModel.load(DEFAULT_MODEL_DIR / "u2netp.onnx", intra_op_threads=1, solo_threads=int(sys.argv[1]))
model.warm_up()  # a run in each session
print(int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024)
"""


def test_the_solo_session_shares_the_arena() -> None:
    """Each session's own arena would hold its own ~280 MB of u2netp activations."""
    def resident_mb(solo_threads: int) -> int:
        command = [sys.executable, "-c", _RESIDENT_AFTER_BOTH_SESSIONS, str(solo_threads)]
        return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    resident = {threads: resident_mb(threads) for threads in (1, 2)}
    assert resident[2] - resident[1] < 100, resident
