"""Load a U²-Net-family ONNX file once and run it on RGB images.

One ``InferenceSession`` is shared by every worker thread: onnxruntime's
``run`` is thread-safe, and with one intra-op thread per run, N workers keep
N cores busy with less overhead than one run spread over N threads.

That leaves cores idle when only one image is being cut out, so a second,
"solo" session over the same file runs on all of them, and is used only by an
image that has the model to itself (0.5 MP here: 0.27 s against 0.45 s). Its
threads sleep rather than spin between operators, so a solo run that gains
company late costs the others little. Both sessions draw on one shared
onnxruntime arena: the second costs 17 MB, not another 280.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

from app.model.catalog import IMAGENET_MEAN, IMAGENET_STD, KNOWN_MODELS, KnownModel

_DEFAULT_SIDE = 320  # for files with a dynamic spatial input
# A map whose peak is below this found no subject, and is not stretched into one: on all 86 real
# photos the peak is at least 0.979 (u2netp) and 0.9995 (u2net-int8); on a flat grey or black
# frame at most 0.058. Stretched, as rembg does, those come out as random blobs. (Noise is not
# always told apart: u2netp peaks at 0.01-0.62 on four noise images.)
_NOTHING_STANDS_OUT = 0.25
_PRECISIONS = ("float32", "float16", "int8")
# QuantizeLinear also matches DequantizeLinear and DynamicQuantizeLinear.
_QUANTISED_OPS = (b"QuantizeLinear", b"QLinearConv", b"ConvInteger", b"MatMulInteger")
_FIX_HINT = "run `make model` to fetch the catalogue's models, or set MODEL_PATH to a U²-Net ONNX file"


class ModelError(RuntimeError):
    """The model file is missing, corrupt or not a U²-Net-shaped network."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    sha256: str
    input_name: str
    input_height: int
    input_width: int
    precision: str
    provider: str
    onnxruntime_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SaliencyModel:
    """``predict(rgb) -> map``: a low-resolution foreground probability in 0..1."""

    def __init__(
        self,
        session: ort.InferenceSession,
        info: ModelInfo,
        solo: ort.InferenceSession | None = None,
        known: KnownModel | None = None,
    ) -> None:
        self._session = session
        self._solo = solo  # more intra-op threads, for an image that has the model to itself
        self._output_name = session.get_outputs()[0].name  # the fused map
        self._input_dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
        self._users = 0  # images being cut out with this model now, from decode to encode
        self._users_lock = threading.Lock()
        self.info = info
        self.known = known  # its catalogue entry, if it has one: how it is fed, what helps it
        mean, std = (known.mean, known.std) if known else (IMAGENET_MEAN, IMAGENET_STD)
        self._mean, self._std = np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32)

    @classmethod
    def load(
        cls,
        path: Path,
        intra_op_threads: int = 1,
        expected_sha256: str | None = None,
        solo_threads: int = 1,
        expected_source_sha256: str | None = None,
        known: KnownModel | None = None,
    ) -> SaliencyModel:
        """``solo_threads`` above ``intra_op_threads`` adds the solo session (see the module's docstring).

        ``expected_source_sha256`` holds a file made from another (u2net-int8 from u2net) to the
        source hash its exporter stamped into it, since its own bytes are not pinned.
        ``known`` is the catalogue entry the caller loads; without it the file's hash finds one.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model file {path} not found; {_FIX_HINT}") from None
        except OSError as exc:
            raise ModelError(f"model file {path} cannot be read ({exc.strerror}); {_FIX_HINT}") from None
        # The hash and both sessions are made side by side: each lets go of the GIL, and for
        # u2net (176 MB) each takes about a second on its own.
        with ThreadPoolExecutor(3, thread_name_prefix="model-load") as pool:
            hashing = pool.submit(lambda: hashlib.sha256(data).hexdigest())
            threads = [intra_op_threads, *([solo_threads] if solo_threads > intra_op_threads else [])]
            making = [pool.submit(_session, data, count) for count in threads]
            digest = hashing.result()
            if expected_sha256 is not None and digest != expected_sha256:
                raise ModelError(f"model file {path} is corrupt (sha256 {digest[:12]}..., expected {expected_sha256[:12]}...); {_FIX_HINT}")
            try:
                session, *others = [made.result() for made in making]
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own zoo of types
                reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"model file {path} is not a loadable ONNX model ({reason}); {_FIX_HINT}") from None
        solo = others[0] if others else None
        if expected_source_sha256 is not None:
            stamped = session.get_modelmeta().custom_metadata_map.get("source_sha256", "")
            if stamped != expected_source_sha256:
                raise ModelError(
                    f"model file {path} was not made from the pinned source (its stamp says {stamped[:12] or 'nothing'}..., "
                    f"expected {expected_source_sha256[:12]}...); {_FIX_HINT}"
                )
        known = known or KNOWN_MODELS.get(digest)
        info = _describe(session, path, data, digest, known)
        return cls(session, info, solo, known)

    @property
    def solo_threads(self) -> int | None:
        """Intra-op threads of the solo session; None without one."""
        return None if self._solo is None else self._solo.get_session_options().intra_op_num_threads

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Held by each image for its whole cut-out, so ``predict`` knows when one has the model alone."""
        with self._users_lock:
            self._users += 1
        try:
            yield
        finally:
            with self._users_lock:
                self._users -= 1

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Foreground probability at the model's resolution, stretched to span 0..1 (all 0 if nothing stands out)."""
        height, width = self.info.input_height, self.info.input_width
        tensor = _normalised(_model_input(rgb, width, height), self._mean, self._std).astype(self._input_dtype, copy=False)
        session = self._solo if self._solo is not None and self._users <= 1 else self._session
        output = session.run([self._output_name], {self.info.input_name: tensor})[0]
        prob = np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])
        low, high = float(prob.min()), float(prob.max())
        if high < _NOTHING_STANDS_OUT or high - low < 1e-6:
            return np.zeros_like(prob)
        return (prob - low) / (high - low)

    def reduce(self, rgb: np.ndarray) -> np.ndarray:
        """The photo box-averaged to at most 4x the model's input, the first step of ``predict``:
        made once, it also serves the refinement, which would otherwise reduce the photo again."""
        return _bounded(rgb, self.info.input_width, self.info.input_height)

    def warm_up(self) -> None:
        """One real inference in each session, so the first request does not pay for lazy initialisation.

        One after the other: side by side, the two runs would grow the shared arena to hold
        both at once (240 MB more for u2netp), for a saving only the cold start sees.
        """
        grey = np.full((self.info.input_height, self.info.input_width, 3), 127, dtype=np.uint8)
        self.predict(grey)  # alone: the solo session, if any
        with self.in_use(), self.in_use():
            self.predict(grey)  # in company: the shared one


def _session(data: bytes, intra_op_threads: int, shared_arena: bool = True) -> ort.InferenceSession:
    """``shared_arena=False``, for bench/scaling.py only: the session's own arena, onnxruntime's default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern pre-plans one block per run: ~200 MB more resident for u2netp
    # and no faster (0.38 s against 0.40 s a run, measured here).
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    # Pool threads that spin between operators burn the cores the other workers need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared_arena:
        _register_shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


@cache
def _register_shared_arena() -> None:
    """One CPU arena in onnxruntime's process-wide environment, for every session to share.

    It grows by what is asked (kSameAsRequested), not to the next power of two: for u2net-int8
    that is 64 MB less resident (484 -> 420 MB after a warm-up and a 6 MP photo), no slower.
    """
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    same_as_requested = 1
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, same_as_requested, -1, -1))


def _model_input(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's antialiased Lanczos to the model's size, as rembg resizes. A large photo is
    first box-averaged to at most 4x that size, so Pillow never copies the full photo.
    On the dev set this scores MAE 0.0303 / IoU 0.937 against 0.0310 / 0.934 for OpenCV's
    area resize alone."""
    return np.asarray(Image.fromarray(_bounded(rgb, width, height)).resize((width, height), Image.Resampling.LANCZOS))


def _normalised(
    rgb: np.ndarray, mean: np.ndarray = np.array(IMAGENET_MEAN), std: np.ndarray = np.array(IMAGENET_STD)
) -> np.ndarray:
    """1 x 3 x H x W, each channel scaled by the image's maximum and standardised: one
    multiply-add per channel straight into the planar tensor (5x faster than step by step)."""
    gain = (1.0 / max(int(rgb.max()), 1) / std).astype(np.float32)
    offset = (-mean / std).astype(np.float32)
    tensor = np.empty((1, 3, rgb.shape[0], rgb.shape[1]), dtype=np.float32)
    for channel in range(3):
        plane = tensor[0, channel]
        np.multiply(rgb[..., channel], gain[channel], out=plane)
        plane += offset[channel]
    return tensor


def _bounded(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    bounded = (min(rgb.shape[1], 4 * width), min(rgb.shape[0], 4 * height))
    if bounded == (rgb.shape[1], rgb.shape[0]):
        return rgb
    return cv2.resize(rgb, bounded, interpolation=cv2.INTER_AREA)


def _precision(session: ort.InferenceSession, data: bytes) -> str:
    """``float32``, ``float16`` or ``int8``: as scripts/export_onnx.py records it in the file's
    metadata, else inferred: a float16 input, or onnxruntime's quantisation operators, whose
    names appear verbatim in the serialised graph (onnxruntime does not list a session's nodes)."""
    declared = session.get_modelmeta().custom_metadata_map.get("precision")
    if declared in _PRECISIONS:
        return declared
    if session.get_inputs()[0].type == "tensor(float16)":
        return "float16"
    if any(op in data for op in _QUANTISED_OPS):
        return "int8"
    return "float32"


def _describe(session: ort.InferenceSession, path: Path, data: bytes, digest: str, known: KnownModel | None) -> ModelInfo:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(shape) != 4 or shape[1] not in (3, "3") or not outputs or len(outputs[0].shape) != 4:
        raise ModelError(
            f"model file {path} is not a U²-Net-style network (expected one N x 3 x H x W input and "
            f"N x 1 x H x W outputs, got inputs {[i.shape for i in inputs]}); {_FIX_HINT}"
        )
    height = shape[2] if isinstance(shape[2], int) else _DEFAULT_SIDE
    width = shape[3] if isinstance(shape[3], int) else _DEFAULT_SIDE
    return ModelInfo(
        name=known.name if known else path.stem,
        path=str(path),
        sha256=digest,
        input_name=inputs[0].name,
        input_height=height,
        input_width=width,
        precision=_precision(session, data),
        provider=session.get_providers()[0],
        onnxruntime_version=ort.__version__,
    )
