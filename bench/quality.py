"""Mask quality of our pipeline against rembg on the same u2netp weights, one run, side by side.

    .venv/bin/python bench/quality.py [--data ../shared/evaldata/dev] [--band 10]

For every image with a ground-truth alpha (``images/NAME.*`` and ``masks/NAME.png``) it
prints, for ours with refinement, ours without, and rembg (``remove(..., only_mask=True)``):
- MAE: mean absolute alpha error, alpha in 0..1;
- IoU: intersection over union of the masks thresholded at 0.5;
- maxF: the best F-measure over all thresholds, beta^2 = 0.3 (the salient-object literature's);
- edge MAE: MAE only within +-BAND px of the ground truth's edge, where cut-outs differ.
Then the means and the ratios ours / rembg (lower is better for both MAEs).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import U2NET_HOME, prepare_rembg_home  # noqa: E402

BETA2 = 0.3
Masker = Callable[[bytes], np.ndarray]  # image bytes -> alpha in 0..1


def mae(alpha: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(alpha - truth).mean())


def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    predicted, actual = alpha >= 0.5, truth >= 0.5
    union = (predicted | actual).sum()
    return float((predicted & actual).sum() / union) if union else 1.0


def max_f_measure(alpha: np.ndarray, truth: np.ndarray) -> float:
    """Best F-beta over 256 thresholds of the prediction against the binarised truth."""
    actual = truth >= 0.5
    levels = np.clip((alpha * 255.0).round(), 0, 255).astype(np.int64)
    positives = np.bincount(levels[actual], minlength=256)[::-1].cumsum()  # true positives at threshold >= t
    predicted = np.bincount(levels.ravel(), minlength=256)[::-1].cumsum()
    precision = positives / np.maximum(predicted, 1)
    recall = positives / max(int(actual.sum()), 1)
    f = (1 + BETA2) * precision * recall / np.maximum(BETA2 * precision + recall, 1e-12)
    return float(f.max())


def edge_band(truth: np.ndarray, band: int) -> np.ndarray:
    """Pixels within ``band`` px of the truth's 0.5 boundary, plus all of its soft pixels."""
    binary = (truth >= 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    ring = cv2.dilate(binary, kernel) != cv2.erode(binary, kernel)
    return ring | ((truth > 0.0) & (truth < 1.0))


def edge_mae(alpha: np.ndarray, truth: np.ndarray, band: int) -> float:
    region = edge_band(truth, band)
    return float(np.abs(alpha - truth)[region].mean())


def _decode_mask(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0


def our_masker(refine: bool) -> Masker:
    from app.model import load_model
    from app.pipeline import RemoveOptions, remove_background
    from app.settings import Settings

    model = load_model(Settings())
    options = RemoveOptions(mask_only=True, refine=refine)
    return lambda data: _decode_mask(remove_background(data, options, model).body)


def rembg_masker() -> Masker:
    prepare_rembg_home()
    os.environ["U2NET_HOME"] = str(U2NET_HOME)
    from rembg import new_session, remove

    session = new_session("u2netp")
    return lambda data: _decode_mask(remove(data, session=session, only_mask=True))


def dataset(root: Path) -> list[tuple[str, bytes, np.ndarray]]:
    items = []
    for image_path in sorted((root / "images").iterdir()):
        mask_path = root / "masks" / (image_path.stem + ".png")
        if mask_path.exists():
            truth = np.asarray(Image.open(mask_path).convert("L"), dtype=np.float32) / 255.0
            items.append((image_path.stem, image_path.read_bytes(), truth))
    return items


def evaluate(maskers: dict[str, Masker], items: list[tuple[str, bytes, np.ndarray]], band: int) -> dict[str, np.ndarray]:
    """Per masker, an (images x 4) array of MAE, IoU, maxF, edge MAE."""
    scores: dict[str, list[list[float]]] = {name: [] for name in maskers}
    for name, data, truth in items:
        for label, masker in maskers.items():
            alpha = masker(data)
            if alpha.shape != truth.shape:
                raise SystemExit(f"{label} returned {alpha.shape[::-1]} for {name}, expected {truth.shape[::-1]}")
            scores[label].append([mae(alpha, truth), iou(alpha, truth), max_f_measure(alpha, truth), edge_mae(alpha, truth, band)])
    return {label: np.array(rows) for label, rows in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "evaldata" / "dev")
    parser.add_argument("--band", type=int, default=10, help="half-width in px of the edge band")
    args = parser.parse_args()

    items = dataset(args.data)
    maskers = {"ours": our_masker(refine=True), "ours-norefine": our_masker(refine=False), "rembg": rembg_masker()}
    scores = evaluate(maskers, items, args.band)
    metrics = ("MAE", "IoU", "maxF", f"edgeMAE±{args.band}")
    print(f"{len(items)} images from {args.data}\n")
    print("| image | " + " | ".join(f"{label} {metric}" for metric in metrics for label in maskers) + " |")
    print("|---" * (1 + len(metrics) * len(maskers)) + "|")
    for row, (name, _, _) in enumerate(items):
        cells = [f"{scores[label][row, col]:.4f}" for col in range(len(metrics)) for label in maskers]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| mean | " + " | ".join(label for label in maskers) + " | ours / rembg |")
    print("|---" * (len(maskers) + 2) + "|")
    for col, metric in enumerate(metrics):
        means = {label: float(scores[label][:, col].mean()) for label in maskers}
        ratio = means["ours"] / means["rembg"] if means["rembg"] else float("nan")
        print(f"| {metric} | " + " | ".join(f"{means[label]:.4f}" for label in maskers) + f" | {ratio:.3f} |")


if __name__ == "__main__":
    main()
