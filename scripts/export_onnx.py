"""Export a U²-Net checkpoint to an ONNX file the service loads, verified against PyTorch first.

    python scripts/export_onnx.py --arch u2net  --weights u2net.pth --out models/u2net.onnx
    python scripts/export_onnx.py --arch u2netp --from-onnx models/u2netp.onnx --out /tmp/u2netp.onnx
    python scripts/export_onnx.py --arch u2netp --weights u2netp.pth --out u2netp-fp16.onnx --fp16
    python scripts/export_onnx.py --arch u2netp --weights u2netp.pth --out u2netp-int8.onnx --int8 [--calibration DIR]

The weights are the authors' state_dict layout (``u2net.pth``, ``u2netp.pth``, fine-tunes of
them), loaded strictly into our definition in ``scripts/u2net.py``; ``--from-onnx`` rebuilds
them from an existing U²-Net ONNX file instead (see ``state_dict_from_onnx``).

The file has one input, ``input`` (N x 3 x H x W, ImageNet-normalised RGB), and seven outputs,
``fused`` then ``side1`` .. ``side6`` (N x 1 x H x W probabilities); the batch is dynamic, and
so are H and W unless ``--fixed-size`` (any size works; multiples of 32 keep every pooling
exact). Before anything is written, onnxruntime runs the file on random inputs and on real
photos, and the script refuses, with exit status 1, if any output differs from PyTorch's by
more than the tolerance it prints. The file appears under ``--out`` atomically, or not at all.

``--fp16`` halves the weights (float16 input and outputs; the service feeds it float16).
``--int8`` quantises the convolutions with onnxruntime's tools: dynamically (int8 weights,
inputs quantised at run time), or statically (QDQ, ranges measured beforehand, the whole path
between convolutions in int8) when ``--calibration DIR`` names a folder of typical photos. On a
2-core Xeon only the static one is faster than float32 (see bench/export_variants.py); the
dynamic one is slower.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from u2net import ARCHITECTURES, SIDE_OUTPUTS, U2Net, build, load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = REPO.parent / "shared" / "evaldata" / "dev" / "images"
DEFAULT_OPSET = 17  # onnxruntime's CPU kernels cover it fully; QDQ per-channel needs >= 13
DEFAULT_SIDE = 320  # the resolution the U²-Net checkpoints were trained at
OUTLIER_RATIO = 10.0  # see outlier_convs
STATIC_INT8_OPS = ("Conv", "Relu", "Concat", "MaxPool", "Resize")  # see to_int8
_TRACE_SIDE = 64  # tracing runs the model once; with a dynamic size, a small input is as good
INPUT_NAME = "input"
OUTPUT_NAMES = ("fused", *(f"side{index}" for index in range(1, SIDE_OUTPUTS)))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
# As the service (and the authors' ToTensorLab) prepares an image: RGB / its max, then ImageNet.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Tolerance:
    """How far the ONNX outputs may stray from PyTorch's float32 outputs: the largest
    difference of any probability for float32, the mean difference for the reduced
    precisions, whose rounding legitimately moves a few edge pixels a long way."""

    metric: str  # "max" or "mean" absolute difference, over all seven outputs
    limit: float


TOLERANCES = {
    "float32": Tolerance("max", 1e-4),
    "float16": Tolerance("mean", 5e-3),
    "int8": Tolerance("mean", 3e-2),
}


class ExportMismatch(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class Verification:
    """The largest and the mean |onnx - torch| over all outputs, of the worst input batch."""

    max_diff: float
    mean_diff: float


# ---------------------------------------------------------------- weights


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict saved by ``torch.save(net.state_dict(), path)``, or a dict holding one."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SystemExit(f"error: {path} holds a {type(state).__name__}, not a state_dict")
    return state


def state_dict_from_onnx(arch: str, path: Path) -> dict[str, torch.Tensor]:
    """Rebuild an official-layout state_dict from a U²-Net ONNX file's initializers.

    PyTorch's exporter folds each BatchNorm into the convolution before it and gives the fused
    weights anonymous names, so they are matched to our ``conv_s1`` layers by order: the graph
    lists convolutions in execution order, which is the modules' order. Each shape and dilation
    is checked on the way. A folded convolution loads as the convolution plus an identity
    BatchNorm; only ``side1`` .. ``side6`` and ``outconv`` keep their names and load directly.
    """
    graph = onnx.load(str(path)).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    model = build(arch)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    layers = [key.removesuffix(".conv_s1.weight") for key in state if key.endswith(".conv_s1.weight")]
    convs = [node for node in graph.node if node.op_type == "Conv"]
    folded = [node for node in convs if node.input[1] not in state]
    named = [node for node in convs if node.input[1] in state]
    if len(folded) != len(layers) or len(named) != SIDE_OUTPUTS:
        raise SystemExit(
            f"error: {path} has {len(folded)} folded and {len(named)} named convolutions; "
            f"{arch} has {len(layers)} conv+BatchNorm layers and {SIDE_OUTPUTS} side/fusion convolutions"
        )

    def tensor(name: str, key: str) -> torch.Tensor:
        value = torch.from_numpy(numpy_helper.to_array(initializers[name]).copy())
        if value.shape != state[key].shape:
            raise SystemExit(f"error: {path}: {name} has shape {tuple(value.shape)}, {key} needs {tuple(state[key].shape)}")
        return value

    modules = dict(model.named_modules())
    for layer, node in zip(layers, folded, strict=True):
        dilation = next((list(a.ints) for a in node.attribute if a.name == "dilations"), [1, 1])
        expected = list(modules[f"{layer}.conv_s1"].dilation)
        if dilation != expected:
            raise SystemExit(f"error: {path}: the convolution for {layer} has dilation {dilation}, expected {expected}")
        state[f"{layer}.conv_s1.weight"] = tensor(node.input[1], f"{layer}.conv_s1.weight")
        state[f"{layer}.conv_s1.bias"] = tensor(node.input[2], f"{layer}.conv_s1.bias")
        bn = modules[f"{layer}.bn_s1"]
        state[f"{layer}.bn_s1.weight"] = torch.ones_like(bn.weight)
        state[f"{layer}.bn_s1.bias"] = torch.zeros_like(bn.bias)
        state[f"{layer}.bn_s1.running_mean"] = torch.zeros_like(bn.running_mean)
        state[f"{layer}.bn_s1.running_var"] = torch.full_like(bn.running_var, 1.0 - bn.eps)  # sqrt(var + eps) == 1
    for node in named:
        for name in node.input[1:]:
            state[name] = tensor(name, name)
    return state


def load_model(arch: str, weights: Path | None = None, from_onnx: Path | None = None) -> U2Net:
    model = build(arch)
    state = read_checkpoint(weights) if weights else state_dict_from_onnx(arch, from_onnx)  # type: ignore[arg-type]
    try:
        load_checkpoint(model, state)
    except RuntimeError as exc:
        source = weights or from_onnx
        raise SystemExit(f"error: {source} does not fit {arch}:\n{exc}") from None
    return model


# ---------------------------------------------------------------- ONNX conversion


def to_onnx(model: U2Net, opset: int = DEFAULT_OPSET, fixed_side: int | None = None) -> onnx.ModelProto:
    """The TorchScript exporter (``dynamo=False``; torch.export's needs onnxscript besides): it
    folds each BatchNorm into its convolution, and its graph for this network is plain
    Conv/Relu/MaxPool/Resize/Concat, node for node the shipped u2netp.onnx's."""
    side = fixed_side or _TRACE_SIDE
    dims = {0: "batch"} if fixed_side else {0: "batch", 2: "height", 3: "width"}
    buffer = BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy exporter": chosen, see the docstring
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, side, side),),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: dims for name in (INPUT_NAME, *OUTPUT_NAMES)},
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def to_float16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 weights and activations, float16 input and outputs (no casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=False)


def outlier_convs(proto: onnx.ModelProto, batch: np.ndarray, ratio: float = OUTLIER_RATIO) -> list[str]:
    """Convolutions whose input has a channel ``ratio`` times larger than its median channel.

    Both quantisers give a convolution's input one scale for all its channels, so such an
    outlier (in the authors' u2netp, a folded BatchNorm bias of 228 feeding
    ``stage2d.rebnconv1d``) rounds every other channel to nothing and the mask collapses
    (mean error 0.63 against float32 with it quantised, 0.006 without). They stay float32.
    """
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(node.input[0]) for node in convs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    activations = session.run([node.input[0] for node in convs], {INPUT_NAME: batch})
    outliers = []
    for node, activation in zip(convs, activations, strict=True):
        channels = np.abs(activation).max(axis=(0, 2, 3))
        if channels.max() > ratio * max(float(np.median(channels)), 1e-6):
            outliers.append(node.name)
    return outliers


def to_int8(proto: onnx.ModelProto, probe: np.ndarray, calibration: list[np.ndarray] | None, workdir: Path) -> tuple[onnx.ModelProto, list[str]]:
    """Quantise the convolutions to int8, except the ``outlier_convs`` found on ``probe``:
    dynamically (int8 weights, inputs quantised per run), or with calibration inputs
    statically (QDQ, per-channel int8 weights, uint8 activations with MinMax ranges measured
    on them). Returns the model and the convolutions left in float32.

    Statically, ``STATIC_INT8_OPS`` are quantised, not only Conv: with Relu, onnxruntime folds
    each Relu into its convolution's output range, so that output is rounded once, over
    [0, max] instead of [min, max] (mean error of the fused mask against float32 on sample
    photos 0.006 instead of 0.016); with Concat, MaxPool and Resize, the tensors stay int8
    between convolutions instead of passing through a dequantise/quantise pair at each one
    (1.8x float32's speed on one thread instead of 1.45x, about the same error)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    excluded = outlier_convs(proto, probe)
    source, prepared, target = workdir / "fp32.onnx", workdir / "prepared.onnx", workdir / "int8.onnx"
    onnx.save(proto, source)
    # ONNX shape inference and graph clean-up, as onnxruntime advises; its symbolic shape
    # inference is for transformers and takes seconds here.
    quant_pre_process(source, prepared, skip_symbolic_shape=True)
    if calibration is None:
        quantize_dynamic(prepared, target, weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"], nodes_to_exclude=excluded)
        return onnx.load(target), excluded

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    quantize_static(
        prepared,
        target,
        Images(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(STATIC_INT8_OPS),
        nodes_to_exclude=excluded,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return onnx.load(target), excluded


def stamp(
    proto: onnx.ModelProto, arch: str, precision: str, source: str, quantization: str | None = None, source_sha256: str | None = None
) -> None:
    """Metadata the service reads back: ``precision`` in /healthz, ``source_sha256`` to check a
    model derived from a catalogue file (u2net-int8) was made from the pinned one."""
    props = {"arch": arch, "precision": precision, "source": source, "exporter": "scripts/export_onnx.py"}
    if source_sha256:
        props["source_sha256"] = source_sha256
    if quantization:
        props["quantization"] = quantization
    onnx.helper.set_model_props(proto, props)


# ---------------------------------------------------------------- verification


def prepare_image(path: Path, side: int = DEFAULT_SIDE) -> np.ndarray:
    """1 x 3 x side x side float32, as the service prepares a photo for the model."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)
    rgb *= 1.0 / max(float(rgb.max()), 1.0)
    return np.ascontiguousarray(((rgb - _MEAN) / _STD).transpose(2, 0, 1)[None])


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def verification_inputs(images: list[Path], side: int, fixed: bool) -> dict[str, np.ndarray]:
    """Named batches: random normal noise, two images at once (at ``side``, or with a dynamic
    size at a smaller, non-square one), then the real photos as one batch."""
    height, width = (side, side) if fixed else (160, 224)
    rng = np.random.default_rng(0)
    inputs = {f"random 2x3x{height}x{width}": rng.standard_normal((2, 3, height, width), dtype=np.float32)}
    if images:
        inputs[f"{len(images)} photos at {side}x{side}"] = np.concatenate([prepare_image(path, side) for path in images])
    return inputs


def verify(model_bytes: bytes, reference: U2Net, inputs: dict[str, np.ndarray], tolerance: Tolerance) -> Verification:
    """Run the serialised graph with onnxruntime and PyTorch on every input; raise
    ``ExportMismatch`` with the measured difference if it exceeds the tolerance."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    worst = Verification(0.0, 0.0)
    for label, batch in inputs.items():
        with torch.no_grad():
            expected = [output.numpy() for output in reference(torch.from_numpy(batch))]
        actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch.astype(dtype)})
        diffs = [np.abs(np.asarray(a, dtype=np.float32) - e) for a, e in zip(actual, expected, strict=True)]
        found = Verification(max(float(d.max()) for d in diffs), float(np.mean([d.mean() for d in diffs])))
        measured = found.max_diff if tolerance.metric == "max" else found.mean_diff
        if measured > tolerance.limit:
            raise ExportMismatch(
                f"onnxruntime and PyTorch disagree on {label}: {tolerance.metric} |onnx - torch| = {measured:.3g} "
                f"exceeds the tolerance {tolerance.limit:.3g} (max {found.max_diff:.3g}, mean {found.mean_diff:.3g})"
            )
        worst = Verification(max(worst.max_diff, found.max_diff), max(worst.mean_diff, found.mean_diff))
    return worst


def write_atomically(data: bytes, out: Path) -> None:
    """A temporary file beside ``out``, renamed over it: readers see the old file or the new one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHITECTURES, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="a .pth state_dict in the authors' layout")
    source.add_argument("--from-onnx", type=Path, help="rebuild the weights from this U²-Net ONNX file")
    parser.add_argument("--out", type=Path, required=True)
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 weights, activations, input and outputs")
    precision.add_argument("--int8", action="store_true", help="int8 quantisation with onnxruntime's tools")
    parser.add_argument("--calibration", type=Path, help="with --int8: photos for static quantisation")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--size", type=int, default=DEFAULT_SIDE, help="side of the verification and calibration inputs")
    parser.add_argument("--fixed-size", action="store_true", help="fix height and width to --size (the batch stays dynamic)")
    parser.add_argument("--images", type=Path, help=f"photos to verify on (default: {DEFAULT_IMAGES}, if present)")
    parser.add_argument("--tolerance", type=float, help="override the precision's default tolerance")
    args = parser.parse_args(argv)
    if args.calibration and not args.int8:
        parser.error("--calibration only applies to --int8")
    for folder in (args.calibration, args.images):
        if folder and not (folder.is_dir() and image_files(folder)):
            parser.error(f"{folder} is not a folder of images")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    precision = "float16" if args.fp16 else "int8" if args.int8 else "float32"
    tolerance = TOLERANCES[precision]
    if args.tolerance is not None:
        tolerance = Tolerance(tolerance.metric, args.tolerance)

    source = args.weights or args.from_onnx
    image_dir = args.images or (DEFAULT_IMAGES if DEFAULT_IMAGES.is_dir() else None)
    images = image_files(image_dir) if image_dir else []
    inputs = verification_inputs(images, args.size, args.fixed_size)

    model = load_model(args.arch, args.weights, args.from_onnx)
    proto = to_onnx(model, args.opset, args.size if args.fixed_size else None)
    if args.fp16:
        proto = to_float16(proto)
    elif args.int8:
        calibration = [prepare_image(path, args.size) for path in image_files(args.calibration)] if args.calibration else None
        probe = np.concatenate(calibration) if calibration else list(inputs.values())[-1]
        with tempfile.TemporaryDirectory(prefix="export-int8-") as workdir:
            proto, excluded = to_int8(proto, probe, calibration, Path(workdir))
        print(f"int8: {len(excluded)} convolution(s) with outlier input channels left in float32: {', '.join(excluded) or '-'}")
    quantization = ("static" if args.calibration else "dynamic") if args.int8 else None
    stamp(proto, args.arch, precision, source.name, quantization, hashlib.sha256(source.read_bytes()).hexdigest())
    data = proto.SerializeToString()

    try:
        result = verify(data, model, inputs, tolerance)
    except ExportMismatch as exc:
        print(f"error: {exc}; {args.out} not written", file=sys.stderr)
        return 1
    if not images:
        print("warning: no photos to verify on (pass --images DIR); verified on random inputs only", file=sys.stderr)
    print(
        f"verified against PyTorch on {', '.join(inputs)}: max |onnx - torch| {result.max_diff:.3g}, "
        f"mean {result.mean_diff:.3g} (tolerance: {tolerance.metric} <= {tolerance.limit:.3g})"
    )
    write_atomically(data, args.out)
    shape = ["batch", 3, args.size, args.size] if args.fixed_size else ["batch", 3, "height", "width"]
    variant = f"{precision} ({quantization})" if quantization else precision
    print(f"wrote {args.out}: {args.arch} from {source}, {variant}, opset {args.opset}, {len(data) / 1e6:.1f} MB, input '{INPUT_NAME}' {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
