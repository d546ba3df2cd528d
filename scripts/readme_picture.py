"""Make the README's before/after picture with the project's own pipeline.

    .venv/bin/python scripts/readme_picture.py PHOTO... [--out docs/before-after.jpg]

Each photo becomes a row: the original, then its cut-out on a checkerboard.
The committed picture uses scikit-image's public-domain sample photos
(``astronaut.png``, NASA; ``chelsea.png``, CC0), taken from its PyPI wheel.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.model import load_model  # noqa: E402
from app.pipeline import RemoveOptions, remove_background  # noqa: E402
from app.settings import Settings  # noqa: E402

ROW_HEIGHT = 360
GAP = 8


def checkerboard(width: int, height: int, cell: int = 12) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width]
    light = ((ys // cell + xs // cell) % 2 == 0)
    return Image.fromarray(np.where(light, 255, 207).astype(np.uint8)).convert("RGBA")


def row(photo: Path, model: object) -> Image.Image:
    original = Image.open(photo).convert("RGB")
    cutout = Image.open(io.BytesIO(remove_background(photo.read_bytes(), RemoveOptions(), model).body))
    size = (round(original.width * ROW_HEIGHT / original.height), ROW_HEIGHT)
    original, cutout = original.resize(size, Image.LANCZOS), cutout.resize(size, Image.LANCZOS)
    on_checker = Image.alpha_composite(checkerboard(*size), cutout).convert("RGB")
    strip = Image.new("RGB", (2 * size[0] + GAP, ROW_HEIGHT), "white")
    strip.paste(original, (0, 0))
    strip.paste(on_checker, (size[0] + GAP, 0))
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/before-after.jpg"))
    args = parser.parse_args()
    model = load_model(Settings())
    rows = [row(photo, model) for photo in args.photos]
    width = max(strip.width for strip in rows)
    picture = Image.new("RGB", (width, len(rows) * ROW_HEIGHT + (len(rows) - 1) * GAP), "white")
    for index, strip in enumerate(rows):
        picture.paste(strip, ((width - strip.width) // 2, index * (ROW_HEIGHT + GAP)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out, quality=85, optimize=True)
    print(f"{args.out}: {picture.width}x{picture.height}, {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
