"""Write scikit-image's bundled sample photos into a folder, as calibration input for ``export_onnx.py --int8``.

    python scripts/calibration_photos.py DIR

The photos are files inside the scikit-image package (no download): a person, a
cat, a motorcycle on a street, a man with a camera. None of them is in the dev
set, so a model calibrated on them is scored fairly there. Your own typical
photos calibrate better for your own kind of pictures: pass their folder to
``--calibration`` instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PHOTOS = ("astronaut", "chelsea", "motorcycle_left", "camera")


def write_calibration_photos(folder: Path) -> Path:
    import skimage.data  # the export extra

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        target = folder / f"{name}.png"
        if not target.exists():
            with Image.open(Path(skimage.data.__file__).parent / f"{name}.png") as photo:
                photo.convert("RGB").save(target)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    print(write_calibration_photos(Path(sys.argv[1])))
