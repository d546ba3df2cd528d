"""What do remove.bg's layout amplifiers cost? A background photo cover-scaled to the output, and the drop shadow.

    .venv/bin/python bench/layout_amplifiers.py [--cases plain-24,background-24,shadow-24,shadow-60,thin-1x3000]

Each case runs once in a fresh process (``remove_background_as_removebg`` with ``size=full`` and the u2netp model),
so its peak RSS (``ru_maxrss``) is its own: the ``plain`` case is the same photo with neither, the baseline the
others add to. ``compose_ms`` is the layout stage alone (crop, shadow, background), the rest is decode, model and
encode. The photos are bench/load.py's (.bench/images, made from the shared dev photo on first use).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = {
    # name: (photo megapixels, background, add_shadow); a background "WxH" is a flat PNG of that size
    "plain-24": (24.0, None, False),
    "background-24": (24.0, "photo", False),
    "shadow-24": (24.0, None, True),
    "shadow-60": (59.5, None, True),
    "thin-1x3000": (0.25, "1x3000", False),
    "thin-1x60000": (0.25, "1x60000", False),
}


def _background(kind: str | None) -> bytes | None:
    if kind is None:
        return None
    if kind == "photo":
        from bench.latency import make_image

        return make_image(2.0).read_bytes()
    import numpy as np
    from PIL import Image

    width, height = (int(side) for side in kind.split("x"))
    buffer = BytesIO()
    Image.fromarray(np.full((height, width, 3), (40, 90, 160), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def run_one(name: str) -> dict[str, object]:
    """The case in this process: call once, report its time and this process's peak RSS."""
    from app.compat.removebg import remove_background_as_removebg
    from app.compat.removebg_options import RemoveBgOptions
    from app.model import load_model
    from app.settings import Settings
    from bench.latency import make_image

    megapixels, background, shadow = CASES[name]
    photo = make_image(megapixels).read_bytes()
    backdrop = _background(background)
    model = load_model(Settings(model="u2netp"))
    options = RemoveBgOptions(size="full", add_shadow=shadow)
    started = time.perf_counter()
    try:
        result = remove_background_as_removebg(photo, backdrop, options, model, refine=True)
        outcome: dict[str, object] = {"size": f"{result.width}x{result.height}", **result.timings_ms}
    except Exception as error:  # noqa: BLE001 - the bench reports whatever a case ends in
        outcome = {"error": f"{type(error).__name__}: {str(error)[:80]}"}
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": name, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb), **outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's case
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    for name in args.cases.split(","):
        child = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=False)
        lines = child.stdout.strip().splitlines()
        print(lines[-1] if lines else json.dumps({"case": name, "crashed": child.stderr[-300:]}), flush=True)


if __name__ == "__main__":
    main()
