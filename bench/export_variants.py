"""float32 against float16 and int8 exports of u2netp: mask quality, latency and batching, one run.

    .venv/bin/python bench/export_variants.py [--data ../shared/evaldata/dev] [--rounds 7] [--rebuild]

1. Exports each variant with scripts/export_onnx.py from the shipped models/u2netp.onnx
   (``--from-onnx``), into .bench/variants/ (kept between runs; ``--rebuild`` redoes them):
   float32, float16, int8 dynamic, and int8 static calibrated on scikit-image's sample photos
   (astronaut, cat, motorcycle, camera: none of them in the dev set, so the scores are fair).
   The shipped file itself is the baseline row.
2. Quality: the full pipeline (refinement on, as served) with each file, against the dev set's
   ground truth, with bench/evalset.py's measures (MAE, IoU, edge MAE within 8 px).
3. Latency: one 1x3x320x320 run of the model alone, the service's session settings (one
   intra-op thread), the variants interleaved round by round so machine noise hits all alike.
4. Batching: float32 (and int8 static) per-image time at batch 1, 2 and 4, also interleaved,
   to tell whether batching queued requests would raise throughput on this CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration_photos import write_calibration_photos  # noqa: E402
import evalset  # noqa: E402
from quality import evaluate  # noqa: E402

from app.model import SaliencyModel  # noqa: E402
from app.pipeline import RemoveOptions, remove_background  # noqa: E402

SHIPPED = REPO / "models" / "u2netp.onnx"
VARIANTS_DIR = REPO / ".bench" / "variants"
CALIBRATION_DIR = REPO / ".bench" / "calibration"
EXPORTS = {
    "float32": [],
    "float16": ["--fp16"],
    "int8-dynamic": ["--int8"],
    "int8-static": ["--int8", "--calibration", str(CALIBRATION_DIR)],
}
SIDE = 320


def export_variants(rebuild: bool, verify_on: Path) -> dict[str, Path]:
    from export_onnx import main as export

    write_calibration_photos(CALIBRATION_DIR)
    files = {"shipped": SHIPPED}
    for label, flags in EXPORTS.items():
        out = VARIANTS_DIR / f"u2netp-{label}.onnx"
        if rebuild or not out.exists():
            print(f"exporting {label} ...", flush=True)
            with contextlib.redirect_stdout(io.StringIO()) as log:
                status = export(["--arch", "u2netp", "--from-onnx", str(SHIPPED), "--out", str(out), "--images", str(verify_on), *flags])
            print("  " + log.getvalue().strip().replace("\n", "\n  "))
            if status:
                raise SystemExit(f"export of {label} failed")
        files[label] = out
    return files


def masker(model: SaliencyModel) -> Callable[[bytes], np.ndarray]:
    options = RemoveOptions(mask_only=True, refine=True)

    def mask(data: bytes) -> np.ndarray:
        png = remove_background(data, options, model).body
        return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0

    return mask


def interleaved_medians(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call, after one warm-up call each; one call of each per round."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            started = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in times.items()}


def model_tensor(model: SaliencyModel, photo: Path, batch: int) -> np.ndarray:
    from export_onnx import prepare_image

    x = np.repeat(prepare_image(photo, SIDE), batch, axis=0)
    return x.astype(np.float16 if model.info.precision == "float16" else np.float32)


def timed_run(model: SaliencyModel, x: np.ndarray) -> Callable[[], object]:
    """One run of the service's own session, without pre- or post-processing."""
    session, feed = model._session, {model.info.input_name: x}  # noqa: SLF001
    output = session.get_outputs()[0].name
    return lambda: session.run([output], feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "evaldata" / "dev")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds for latency and batching")
    parser.add_argument("--rebuild", action="store_true", help="export the variants again")
    args = parser.parse_args()

    files = export_variants(args.rebuild, args.data / "images")
    models = {label: SaliencyModel.load(path, intra_op_threads=1) for label, path in files.items()}
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs; onnxruntime intra-op threads: 1\n")

    items = evalset.load(args.data)
    scores, _ = evaluate({label: masker(model) for label, model in models.items()}, items, use_ignore=False)
    photo = sorted((args.data / "images").iterdir())[0]
    latency = interleaved_medians({label: timed_run(model, model_tensor(model, photo, 1)) for label, model in models.items()}, args.rounds)

    base = latency["shipped"]
    print(f"Quality on {len(items)} dev images (pipeline, refine on) and model latency at 1x3x{SIDE}x{SIDE} (median of {args.rounds}):\n")
    print("| variant | file MB | precision | MAE | IoU | edge MAE | latency ms | speed vs shipped |")
    print("|---|---|---|---|---|---|---|---|")
    for label, model in models.items():
        means = np.mean(scores[label], axis=0)
        size = files[label].stat().st_size / 1e6
        print(
            f"| {label} | {size:.1f} | {model.info.precision} | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} "
            f"| {latency[label] * 1000:.0f} | {base / latency[label]:.2f}x |"
        )

    print(f"\nBatching: model time per image at 1x3x{SIDE}x{SIDE} (median of {args.rounds} rounds):\n")
    print("| variant | batch 1 ms/img | batch 2 ms/img | batch 4 ms/img | batch 4 / batch 1 |")
    print("|---|---|---|---|---|")
    for label in ("float32", "int8-static"):
        model = models[label]
        runs = {batch: timed_run(model, model_tensor(model, photo, batch)) for batch in (1, 2, 4)}
        medians = interleaved_medians({str(batch): run for batch, run in runs.items()}, args.rounds)
        per_image = {int(batch): seconds / int(batch) for batch, seconds in medians.items()}
        print(
            f"| {label} | {per_image[1] * 1000:.0f} | {per_image[2] * 1000:.0f} | {per_image[4] * 1000:.0f} "
            f"| {per_image[4] / per_image[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
