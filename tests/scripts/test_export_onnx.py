"""scripts/export_onnx.py end to end: the round trip through the shipped u2netp.onnx, the file's
interface, the refusal of a graph that does not match PyTorch, and the float16/int8 variants
as the service loads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from app.model import SaliencyModel
from export_onnx import ExportMismatch, Tolerance, main, state_dict_from_onnx, verification_inputs, verify
from tests.images import REPO, dev_images, photo
from tests.scripts.conftest import SHIPPED
from u2net import build, load_checkpoint

OUTPUTS = ["fused", "side1", "side2", "side3", "side4", "side5", "side6"]


@pytest.fixture(scope="session")
def reexported(tmp_path_factory: pytest.TempPathFactory, one_photo: Path) -> Path:
    """The issue's command, as a user runs it."""
    out = tmp_path_factory.mktemp("roundtrip") / "u2netp.onnx"
    command = [sys.executable, "scripts/export_onnx.py", "--arch", "u2netp", "--from-onnx", str(SHIPPED), "--out", str(out), "--images", str(one_photo)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "verified against PyTorch" in done.stdout and out.is_file()
    return out


def rgb(path: Path) -> np.ndarray:
    return np.asarray(photo(path.stem))


def test_round_trip_gives_the_shipped_masks_on_real_photos(reexported: Path, model: SaliencyModel) -> None:
    ours = SaliencyModel.load(reexported)
    for path in dev_images():
        image = rgb(path)
        assert np.abs(ours.predict(image) - model.predict(image)).max() < 1e-5, path.name


def test_round_trip_gives_all_seven_shipped_outputs(reexported: Path) -> None:
    batch = verification_inputs(dev_images()[:2], 320, fixed=False)["2 photos at 320x320"]
    shipped = ort.InferenceSession(SHIPPED, providers=["CPUExecutionProvider"])
    ours = ort.InferenceSession(reexported, providers=["CPUExecutionProvider"])
    expected = [shipped.run(None, {"input.1": image[None]}) for image in batch]
    actual = ours.run(OUTPUTS, {"input": batch})
    for index, output in enumerate(actual):
        reference = np.concatenate([maps[index] for maps in expected])
        assert np.abs(output - reference).max() < 1e-5, OUTPUTS[index]


def test_exported_file_interface(reexported: Path) -> None:
    proto = onnx.load(reexported)
    assert [opset.version for opset in proto.opset_import if opset.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == OUTPUTS
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert {p.key: p.value for p in proto.metadata_props}["precision"] == "float32"

    session = ort.InferenceSession(reexported, providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 320, 320), (3, 3, 128, 192), (1, 3, 200, 150)]:
        outputs = session.run(OUTPUTS, {"input": np.zeros(shape, dtype=np.float32)})
        assert [o.shape for o in outputs] == [(shape[0], 1, *shape[2:])] * 7

    info = SaliencyModel.load(reexported).info
    assert (info.precision, info.input_name, info.input_width, info.input_height) == ("float32", "input", 320, 320)


def test_state_dict_from_the_shipped_file_has_the_official_names() -> None:
    state = state_dict_from_onnx("u2netp", SHIPPED)
    model = build("u2netp")
    load_checkpoint(model, state)  # strict
    shipped = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(SHIPPED).graph.initializer}
    assert np.array_equal(model.side3.weight.detach().numpy(), shipped["side3.weight"])
    assert float(model.stage1.rebnconvin.bn_s1.running_var.min()) == pytest.approx(1.0 - 1e-5)


def test_a_graph_that_differs_from_pytorch_is_refused(reexported: Path) -> None:
    model = build("u2netp")
    load_checkpoint(model, state_dict_from_onnx("u2netp", SHIPPED))
    exported = reexported.read_bytes()
    inputs = verification_inputs([], 320, fixed=False)
    assert verify(exported, model, inputs, Tolerance("max", 1e-4)).max_diff < 1e-4
    with torch.no_grad():
        model.stage3.rebnconv2.conv_s1.weight.mul_(1.01)  # the reference now computes something else
    with pytest.raises(ExportMismatch, match=r"max \|onnx - torch\| = .* exceeds the tolerance 0.0001"):
        verify(exported, model, inputs, Tolerance("max", 1e-4))


def test_cli_refuses_a_mismatch_and_leaves_the_old_file(tmp_path: Path, one_photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous model")
    argv = ["--arch", "u2netp", "--from-onnx", str(SHIPPED), "--out", str(out), "--images", str(one_photo), "--fp16", "--tolerance", "1e-7"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "mean |onnx - torch| =" in error and "exceeds the tolerance 1e-07" in error and "not written" in error
    assert out.read_bytes() == b"the previous model" and list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize(("flags", "precision", "input_type"), [(["--fp16"], "float16", "tensor(float16)"), (["--int8"], "int8", "tensor(float)")])
def test_reduced_precision_variants_serve(tmp_path: Path, one_photo: Path, model: SaliencyModel, flags: list[str], precision: str, input_type: str) -> None:
    out = tmp_path / f"u2netp-{precision}.onnx"
    assert main(["--arch", "u2netp", "--from-onnx", str(SHIPPED), "--out", str(out), "--images", str(one_photo), *flags]) == 0
    variant = SaliencyModel.load(out)
    assert variant.info.precision == precision  # what /healthz reports
    assert ort.InferenceSession(out, providers=["CPUExecutionProvider"]).get_inputs()[0].type == input_type
    image = rgb(dev_images()[0])
    assert np.abs(variant.predict(image) - model.predict(image)).mean() < 0.02
