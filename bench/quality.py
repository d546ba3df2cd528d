"""Mask quality of every variant of ours and of rembg, on the real photos and the lemur set, one run.

    .venv/bin/python bench/quality.py [--data ../shared/evaldata/real ../shared/evaldata/dev]
                                      [--variants NAME ...] [--ignore] [--csv FILE]

The real set (86 photos with ground truth, 8 categories) is what the matting is tuned
on; the lemur set (8 composites of one lemur with exact soft alpha) is the fur check.
For each set it prints, per category and overall: MAE, IoU at 0.5 and the MAE within
8 px of the true edge, as the real set's reference.csv defines them (bench/evalset.py),
then the ratios against rembg with u2netp, the anchor. ``--ignore`` leaves GrabCut's
unlabeled boundary band (``ignore/``) out of all three. Every variant sees the same bytes:
the pipeline's ``remove_background`` with ``mask_only``, and rembg's ``remove`` with
``only_mask``, each on the very same model file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import evalset  # noqa: E402
from latency import U2NET_HOME, prepare_rembg_home  # noqa: E402

Masker = Callable[[bytes], np.ndarray]  # image bytes -> alpha in 0..1
ANCHOR = "rembg u2netp"
# name: (model, quality, refine) for ours, or the rembg model for rembg
VARIANTS: dict[str, tuple[str, str, bool] | str] = {
    ANCHOR: "u2netp",
    "rembg u2net": "u2net",
    "u2netp fast refine=false": ("u2netp", "fast", False),
    "u2netp default": ("u2netp", "balanced", True),
    "u2netp best": ("u2netp", "best", True),
    "u2net fast refine=false": ("u2net", "fast", False),
    "u2net balanced": ("u2net", "balanced", True),
    "u2net-int8 fast refine=false": ("u2net-int8", "fast", False),
    "u2net-int8 refine=false": ("u2net-int8", "balanced", False),
    "u2net-int8 fast": ("u2net-int8", "fast", True),
    "u2net-int8 default": ("u2net-int8", "balanced", True),
    "u2net-int8 best": ("u2net-int8", "best", True),
}
# Where the refinement's rule is checked: the default against itself unrefined.
REFINE_CHECK = ("u2net-int8 default", "u2net-int8 refine=false")
DEFAULT_DATA = (REPO.parent / "shared" / "evaldata" / "real", REPO.parent / "shared" / "evaldata" / "dev")


def our_masker(model_name: str, quality: str, refine: bool) -> Masker:
    from app.model import load_model
    from app.pipeline import RemoveOptions, remove_background
    from app.settings import Settings

    model = _cached_model(model_name, load_model, Settings)
    options = RemoveOptions(mask_only=True, refine=refine, quality=quality)
    return lambda data: evalset.decode_mask(remove_background(data, options, model).body)


_MODELS: dict[str, object] = {}


def _cached_model(name: str, load_model: Callable[..., object], settings_type: Callable[..., object]) -> object:
    """One session per model file for all its variants, as the service shares it."""
    if name not in _MODELS:
        _MODELS[name] = load_model(settings_type(model=name))
    return _MODELS[name]


def rembg_masker(model_name: str) -> Masker:
    prepare_rembg_home(model_name)
    os.environ["U2NET_HOME"] = str(U2NET_HOME)
    from rembg import new_session, remove

    session = new_session(model_name)
    return lambda data: evalset.decode_mask(remove(data, session=session, only_mask=True))


def masker(name: str) -> Masker:
    spec = VARIANTS[name]
    return rembg_masker(spec) if isinstance(spec, str) else our_masker(*spec)


def evaluate(maskers: dict[str, Masker], items: list[evalset.Item], use_ignore: bool) -> tuple[dict[str, list[tuple[float, float, float]]], dict[str, float]]:
    """Per variant, the three scores of each item in order, and its seconds per image."""
    scores: dict[str, list[tuple[float, float, float]]] = {name: [] for name in maskers}
    seconds = dict.fromkeys(maskers, 0.0)
    for item in items:
        for name, run in maskers.items():
            started = time.perf_counter()
            alpha = run(item.data)
            seconds[name] += time.perf_counter() - started
            if alpha.shape != item.truth.shape:
                raise SystemExit(f"{name} returned {alpha.shape[::-1]} for {item.name}, expected {item.truth.shape[::-1]}")
            scores[name].append(evalset.score(alpha, item, use_ignore))
    return scores, {name: total / max(1, len(items)) for name, total in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME")
    parser.add_argument("--ignore", action="store_true", help="leave the GrabCut images' unlabeled band (ignore/) out")
    parser.add_argument("--csv", type=Path, help="also write every per-image score here")
    args = parser.parse_args()

    names = list(dict.fromkeys([ANCHOR, *args.variants]))
    maskers = {name: masker(name) for name in names}
    rows = ["set,name,category,variant,mae,iou,edge_mae"]
    for root in args.data:
        items = evalset.load(root)
        scores, seconds = evaluate(maskers, items, args.ignore)
        print(f"## {root.name}: {len(items)} images{' (ignore/ bands left out)' if args.ignore else ''}\n")
        mark = REFINE_CHECK if all(name in scores for name in REFINE_CHECK) else None
        print(evalset.markdown_tables(scores, items, anchor=ANCHOR, mark=mark))
        print("\n| variant | seconds per image (this machine, one thread pool of the pipeline) |\n|---|---|")
        for name in names:
            print(f"| {name} | {seconds[name]:.3f} |")
        print()
        rows += [
            f"{root.name},{item.name},{item.category},{name},{mae:.5f},{iou:.4f},{edge:.5f}"
            for name in names
            for item, (mae, iou, edge) in zip(items, scores[name], strict=True)
        ]
    if args.csv:
        args.csv.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
