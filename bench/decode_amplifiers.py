"""What do the decode and encode amplifiers cost? Small hostile files that once took seconds and hundreds of MB.

    .venv/bin/python bench/decode_amplifiers.py [--cases scans-5000,comments-5m,...]

Each case runs once in a fresh process; ``rss_mb`` is its peak RSS during the one call (VmHWM, reset just before it)
less the RSS at that moment: the imports, the model and the input itself are not counted. The decode cases
call ``decode_image`` as the service does (MAX_PIXELS 60 M); ``webp-60mp`` encodes a 60 MP cut-out as WebP, and
``icc-10mb`` cuts out a 32x24 JPEG carrying a 10 MB profile and reports the PNG's size. The inputs are made by
tests/imaging/hostile.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.imaging import bounds  # after the path: run as a script
from tests.imaging import hostile

CASES: dict[str, tuple[Callable[[], object], str]] = {
    # name: (what makes the input, with tests/imaging/hostile.py, and what is done with it)
    "scans-5000": (lambda: hostile.progressive_jpeg_with_scans(4096, 5000), "decode"),
    "scans-at-cap-60mp": (lambda: hostile.progressive_jpeg_with_scans(7744, bounds.JPEG_MAX_SCANS), "decode"),
    "comments-5m": (lambda: hostile.jpeg_with_comments(5_000_000), "decode"),
    "app-segments-460": (lambda: hostile.jpeg_with_app_segments(460), "decode"),
    "tiff-huge-tile": (lambda: hostile.tiff_with_huge_tile(16, 16384), "decode"),
    "png-1x60m": (lambda: hostile.png(1, 60_000_000), "decode"),
    "png-chunks-2m": (lambda: hostile.png_with_chunks(2_000_000), "decode"),
    "png-ztxt-64": (lambda: hostile.png_with_ztxt(64), "decode"),
    "webp-60mp": (lambda: (9472, 6336), "webp"),
    "webp-20000-wide": (lambda: (20000, 3000), "webp"),
    "icc-10mb": (lambda: hostile.jpeg_with_icc(hostile.icc_profile(10_000_000)), "remove"),
    "icc-17mb-webp-to-jpeg": (lambda: hostile.webp_with_icc(hostile.icc_profile(17_000_000)), "remove-jpeg"),
}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    """The RSS now, with the peak (VmHWM) reset to it: what comes after is measured on its own."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def run_one(name: str) -> dict[str, object]:
    """The case in this process: make the input, then time the one call and measure its peak RSS."""
    import numpy as np

    from app.errors import ApiError
    from app.imaging.decode import decode_image
    from app.imaging.encode import Cutout, EncoderSettings, encode

    make, stage = CASES[name]
    made = make()
    report: dict[str, object] = {"case": name}
    if isinstance(made, bytes):
        report["input_bytes"] = len(made)
    before = _rss_mb()
    started = time.perf_counter()
    try:
        if stage == "decode":
            image = decode_image(made, 60_000_000)
            report["outcome"] = f"decoded {image.width}x{image.height}"
        elif stage == "webp":
            width, height = made
            rgb, alpha = np.full((height, width, 3), 100, np.uint8), np.full((height, width), 255, np.uint8)
            rgb[::7] = 30  # some detail to code
            before, started = _rss_mb(), time.perf_counter()
            report["outcome"] = f"{len(encode(Cutout(rgb, alpha), 'webp', EncoderSettings())):,} bytes of WebP"
        else:
            from app.model import load_model
            from app.pipeline import RemoveOptions, remove_background
            from app.settings import Settings

            model = load_model(Settings(model="u2netp"))
            before, started = _rss_mb(), time.perf_counter()
            fmt = "jpeg" if stage == "remove-jpeg" else "png"
            result = remove_background(made, RemoveOptions(format=fmt), model)
            dropped = ",".join(getattr(result, "dropped_metadata", ()))
            report["outcome"] = f"{len(result.body):,} bytes of {fmt}" + (f", dropped {dropped}" if dropped else "")
    except ApiError as error:
        report["outcome"] = f"{error.status} {error.code}"
    except Exception as error:  # noqa: BLE001 - what the service would have turned into a 500
        report["outcome"] = f"500 {type(error).__name__}: {str(error)[:60]}"
    report["seconds"] = round(time.perf_counter() - started, 2)
    report["rss_mb"] = round(_status_mb("VmHWM") - before)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    for name in args.cases.split(","):
        done = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=False)
        print(done.stdout.strip() or json.dumps({"case": name, "error": done.stderr.strip()[-300:]}), flush=True)


if __name__ == "__main__":
    main()
