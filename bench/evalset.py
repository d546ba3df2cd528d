"""An evaluation set with ground truth, scored exactly as ../shared/evaldata/real/reference.csv is.

    images/NAME.jpg|png   the photo
    masks/NAME.png        8-bit truth, 255 = foreground, soft values kept
    ignore/NAME.png       optional: 255 marks an unlabeled band (GrabCut's, 128 in the mask)
    manifest.csv          optional: name -> category; without it the set is one category, its folder's name

The three scores, per image, alpha and truth on 0..1 (the conventions reproduce reference.csv
to its rounding, see ``--check-reference``):
- MAE: mean |alpha - truth| over all pixels;
- IoU: of alpha > 0.5 against truth > 0.5 (on 8-bit values: >= 128, so GrabCut's 128 band is
  foreground); two empty masks agree perfectly, IoU 1;
- edge MAE: MAE within 8 px of the true boundary: the 3x3 morphological gradient of truth > 0.5
  (= > 127 on 0..255), dilated by a 17x17 square, with OpenCV's border (the image's own edge is
  no boundary); an image without a boundary scores 0.
``use_ignore`` leaves the ignore/ pixels out of all three (the band itself is still the full truth's).

    .venv/bin/python bench/evalset.py --check-reference    # rembg u2netp against reference.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "evaldata" / "real"

METRICS = ("MAE", "IoU", "edge MAE")
HIGHER_IS_BETTER = (False, True, False)
FORMATS = (".4f", ".3f", ".4f")
_GRADIENT = np.ones((3, 3), np.uint8)
_BAND = np.ones((17, 17), np.uint8)  # +-8 px

Scores = tuple[float, float, float]
Means = dict[str, tuple[int, Scores]]  # category (and "all") -> (images, mean of each score)


@dataclass(frozen=True, eq=False)  # eq=False: arrays don't compare as one bool; items hash by identity
class Item:
    """One photo as a client would send it, with the truth that scores what comes back."""

    name: str
    category: str
    data: bytes  # the encoded photo, as a client would send it
    truth: np.ndarray  # float32 0..1, H x W
    ignore: np.ndarray | None  # bool H x W: pixels the ``use_ignore`` scores leave out

    @cached_property
    def band(self) -> np.ndarray:
        """The edge band, once per item: every variant is scored on the same one."""
        return edge_band(self.truth)


def load(root: Path) -> list[Item]:
    """Every image with a mask, in name order, checked to be the mask's size."""
    categories: dict[str, str] | None = None
    if (root / "manifest.csv").exists():
        with (root / "manifest.csv").open(newline="") as manifest:
            categories = {row["name"]: row["category"] for row in csv.DictReader(manifest)}
    items = []
    for image in sorted((root / "images").iterdir()):
        mask = root / "masks" / f"{image.stem}.png"
        if not mask.exists():
            continue
        if categories is not None and image.stem not in categories:
            raise ValueError(f"{image.name} has a mask but no row in {root / 'manifest.csv'}")
        truth = _grey(mask.read_bytes())
        data = image.read_bytes()
        with Image.open(io.BytesIO(data)) as photo:
            if photo.size[::-1] != truth.shape:
                raise ValueError(f"{image.name} is {photo.size}, its mask {truth.shape[::-1]}")
        ignore_path = root / "ignore" / f"{image.stem}.png"
        ignore = _grey(ignore_path.read_bytes()) > 0.5 if ignore_path.exists() else None
        if ignore is not None and ignore.shape != truth.shape:
            raise ValueError(f"{ignore_path.name} is {ignore.shape[::-1]}, the mask {truth.shape[::-1]}")
        category = categories[image.stem] if categories is not None else root.name
        items.append(Item(image.stem, category, data, truth, ignore))
    return items


def decode_mask(data: bytes) -> np.ndarray:
    """A predicted mask as alpha in 0..1: its alpha channel if it has one (a cut-out), else its grey."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            return np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def edge_band(truth: np.ndarray) -> np.ndarray:
    """Pixels within 8 px of the boundary of truth > 0.5 (reference.csv's band)."""
    boundary = cv2.morphologyEx((truth > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, _GRADIENT)
    return cv2.dilate(boundary, _BAND) > 0


def score(alpha: np.ndarray, item: Item, use_ignore: bool = False) -> Scores:
    """MAE, IoU and edge MAE of one prediction (float 0..1, the truth's shape)."""
    if alpha.shape != item.truth.shape:
        raise ValueError(f"{item.name}: alpha is {alpha.shape}, the truth {item.truth.shape}")
    if alpha.size and not (alpha.min() >= 0.0 and alpha.max() <= 1.0 + 1e-6):
        raise ValueError(f"{item.name}: alpha must be on 0..1, not {alpha.min()}..{alpha.max()}")
    counted = ~item.ignore if use_ignore and item.ignore is not None else np.ones(item.truth.shape, bool)
    error = np.abs(alpha.astype(np.float32) - item.truth)
    predicted, actual = (alpha > 0.5) & counted, (item.truth > 0.5) & counted
    union = int((predicted | actual).sum())
    iou = float((predicted & actual).sum() / union) if union else 1.0
    band = item.band & counted
    edge = float(error[band].mean()) if band.any() else 0.0
    return float(error[counted].mean()), iou, edge


# ---------------------------------------------------------------- summaries


def category_means(scores: list[Scores], items: list[Item]) -> Means:
    """Per category in name order, then ``all``: the count and each score's mean over images."""
    groups: dict[str, list[Scores]] = {}
    for item, row in zip(items, scores, strict=True):
        groups.setdefault(item.category, []).append(row)
    groups = dict(sorted(groups.items()))
    groups["all"] = list(scores)
    return {name: (len(rows), _mean(rows)) for name, rows in groups.items()}


def summarise(scores: dict[str, list[Scores]], items: list[Item]) -> dict[str, Means]:
    """Per variant, its category means (``scores[variant][i]`` scores ``items[i]``)."""
    return {variant: category_means(rows, items) for variant, rows in scores.items()}


def _worse(index: int, mine: float, theirs: float) -> bool:
    return mine < theirs if HIGHER_IS_BETTER[index] else mine > theirs


def worse_categories(
    scores: dict[str, list[Scores]], items: list[Item], variant: str, than: str
) -> list[tuple[str, str]]:
    """(category, metric) wherever ``variant``'s mean is worse than ``than``'s: higher MAE or edge MAE, lower IoU."""
    mine, theirs = category_means(scores[variant], items), category_means(scores[than], items)
    return [
        (category, metric)
        for category, (_, means) in mine.items()
        for index, metric in enumerate(METRICS)
        if _worse(index, means[index], theirs[category][1][index])
    ]


def better_counts(scores: dict[str, list[Scores]], variant: str, anchor: str) -> tuple[int, ...]:
    """Per metric, on how many images ``variant`` is strictly better than ``anchor``."""
    pairs = list(zip(scores[variant], scores[anchor], strict=True))
    return tuple(sum(_worse(i, theirs[i], mine[i]) for mine, theirs in pairs) for i in range(len(METRICS)))


def markdown_tables(
    scores: dict[str, list[Scores]], items: list[Item], anchor: str, mark: tuple[str, str] | None = None
) -> str:
    """Per metric: the means (rows: categories and all; columns: variants), then the ratios to ``anchor``;
    last, the overall ratios and on how many images each variant beats the anchor.

    ``mark=(variant, than)`` adds a column naming the rows where ``variant`` is worse than ``than``.
    """
    summary = summarise(scores, items)
    variants, others = list(scores), [v for v in scores if v != anchor]
    rows = list(summary[anchor])
    worse = set(worse_categories(scores, items, *mark)) if mark else set()
    lines: list[str] = []
    for index, metric in enumerate(METRICS):
        better = "higher" if HIGHER_IS_BETTER[index] else "lower"
        extra = [f"{mark[0]} worse than {mark[1]}"] if mark else []
        lines += [f"**{metric}** (mean per image, {better} is better)", ""]
        lines += _header(["category", "n", *variants, *extra])
        for row in rows:
            cells = [format(summary[v][row][1][index], FORMATS[index]) for v in variants]
            flag = ["**worse**" if (row, metric) in worse else ""] if mark else []
            lines.append(_row([row, str(summary[anchor][row][0]), *cells, *flag]))
        if others:
            lines += ["", f"**{metric} / {anchor}** ({better} is better)", ""]
            lines += _header(["category", "n", *others])
            for row in rows:
                base = summary[anchor][row][1][index]
                cells = [_ratio(summary[v][row][1][index], base) for v in others]
                lines.append(_row([row, str(summary[anchor][row][0]), *cells]))
        lines.append("")
    if others:
        lines += [f"**Overall against {anchor}**: ratio of the means, and on how many images the variant is better", ""]
        lines += _header(["variant", *(f"{m} / {anchor}" for m in METRICS), *(f"better {m}" for m in METRICS)])
        for variant in others:
            means, anchored = summary[variant]["all"][1], summary[anchor]["all"][1]
            counts = [f"{n} of {len(items)}" for n in better_counts(scores, variant, anchor)]
            lines.append(_row([variant, *(_ratio(m, b) for m, b in zip(means, anchored, strict=True)), *counts]))
        lines.append("")
    return "\n".join(lines)


def _header(cells: list[str]) -> list[str]:
    return [_row(cells), "|" + "---|" * len(cells)]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "–"


def _mean(rows: list[Scores]) -> Scores:
    if not rows:
        return float("nan"), float("nan"), float("nan")
    mae, iou, edge = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
    return float(mae), float(iou), float(edge)


def _grey(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


# ---------------------------------------------------------------- --check-reference

REFERENCE_COLUMNS = ("mae", "iou", "edge_mae", "mae_ignore", "iou_ignore", "edge_mae_ignore")
TOLERANCE = (1e-4, 1e-3, 1e-3) * 2  # reference.csv rounds to 5, 4 and 5 decimals


def check_reference(root: Path = REAL) -> bool:
    """Run rembg u2netp (on the project's model file, never a download) and compare with reference.csv."""
    import os
    import socket

    import PIL

    sys.path.insert(0, str(REPO))
    from bench.latency import U2NET_HOME, prepare_rembg_home

    prepare_rembg_home("u2netp")
    os.environ["U2NET_HOME"] = str(U2NET_HOME)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("rembg tried the network: its model must be the local file")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    import rembg
    from rembg import new_session, remove

    with (root / "reference.csv").open(newline="") as file:
        reference = {row["name"]: [float(row[c]) for c in REFERENCE_COLUMNS] for row in csv.DictReader(file)}
    items = load(root)
    session = new_session("u2netp")
    plain: list[Scores] = []
    ignoring: list[Scores] = []
    worst = [(0.0, "")] * len(REFERENCE_COLUMNS)
    beyond = []
    for item in items:
        # bytes in, PNG out, as bench/quality.py calls it; reference.csv passed Image.open(bytes): the same mask
        alpha = decode_mask(remove(item.data, session=session, only_mask=True))
        plain.append(score(alpha, item))
        ignoring.append(score(alpha, item, use_ignore=True))
        deviations = [abs(o - r) for o, r in zip([*plain[-1], *ignoring[-1]], reference.pop(item.name), strict=True)]
        worst = [max(w, (d, item.name)) for w, d in zip(worst, deviations, strict=True)]
        if any(d > t for d, t in zip(deviations, TOLERANCE, strict=True)):
            beyond.append(item.name)
    if reference:
        raise SystemExit(f"reference.csv names images not in the set: {sorted(reference)}")
    print(f"{len(items)} images; rembg {rembg.__version__}, Pillow {PIL.__version__}\n")
    print("| column | max abs deviation | image | tolerance |\n|---|---|---|---|")
    for column, (deviation, name), tolerance in zip(REFERENCE_COLUMNS, worst, TOLERANCE, strict=True):
        print(f"| {column} | {deviation:.2g} | {name} | {tolerance:g} |")
    print(f"\n{len(beyond)} images beyond the tolerance{': ' + ', '.join(beyond) if beyond else ''}")
    for label, rows in (("rembg means", plain), ("rembg means, ignore/ left out", ignoring)):
        print(f"{label}: " + ", ".join(f"{m} {v:.5f}" for m, v in zip(METRICS, _mean(rows), strict=True)))
    ok = not beyond
    if beyond and int(PIL.__version__.split(".")[0]) >= 13:
        print(
            "\nreference.csv was made with Pillow 12 (12.3.0 reproduces it to its rounding). Pillow 13's LANCZOS"
            "\nresize to rembg's 320x320 input differs for some portrait sizes (321x481, 450x600), so those images"
            "\ndeviate; the scoring is not the cause."
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-reference", action="store_true", help="run rembg u2netp, compare with reference.csv")
    parser.add_argument("--data", type=Path, default=REAL, help="a set with a reference.csv")
    args = parser.parse_args()
    if not args.check_reference:
        parser.error("nothing to do: pass --check-reference")
    sys.exit(0 if check_reference(args.data) else 1)


if __name__ == "__main__":
    main()
