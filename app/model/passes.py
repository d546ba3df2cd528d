"""How many looks the model takes at a photo: one, a mirrored one averaged in, a close-up.

U²-Net sees every photo squeezed to 320 x 320. A subject that fills a tenth of
the frame gets a few dozen model pixels across, and its outline is guessed at
that resolution; a second pass on a crop around it, at the model's full input
size, sees it several times larger. The crop's map replaces the first one inside
the crop: its contour is the sharper, and it still sees every subject the first
pass found, because the crop is the box around all of them, with a margin. Where
the first pass was surer of foreground (a second subject the close-up's saliency
played down), that is kept: subjects never vanish in the merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.model.session import SaliencyModel

_SURE = 0.5  # the first pass's foreground, whose box the close-up is taken around


@dataclass(frozen=True)
class QualityPlan:
    """The close-up's threshold is the real photos' (README, Quality): below 0.3 of the frame it
    sharpened small subjects, cars most; at 0.5 it also zoomed into clutter and lost there."""

    mirrored: bool = False  # average in a pass on the mirrored photo, for models it helps
    close_up: bool = True  # a second pass on a crop around a small subject
    close_up_below: float = 0.3  # ... taken when that crop is under this share of the photo's area
    margin: float = 0.2  # the crop's margin around the subjects' box, per side, as a share of the box


PLANS = {
    "fast": QualityPlan(close_up=False),
    "balanced": QualityPlan(),
    "best": QualityPlan(mirrored=True),  # with MODEL=u2netp, also the strongest loaded model: see ModelSet
}


def predict_map(rgb: np.ndarray, model: SaliencyModel, plan: QualityPlan, preview: np.ndarray | None = None) -> np.ndarray:
    """The foreground probability over the whole photo, 0..1 float32, at a resolution of its own.

    One pass gives the model's square map, which callers stretch to the photo. With a
    close-up the map has the photo's aspect and enough pixels for the crop's detail.
    ``preview`` is ``model.reduce(rgb)``, when the caller has made it already.
    """
    preview = model.reduce(rgb) if preview is None else preview
    mirrored = plan.mirrored and model.known is not None and model.known.mirrored_pass_helps
    first = _look(model, preview, mirrored)
    if not plan.close_up:
        return first
    box = close_up_box(first, rgb.shape[1], rgb.shape[0], plan)
    if box is None:
        return first
    left, top, right, bottom = box
    crop = np.ascontiguousarray(rgb[top:bottom, left:right])
    close = _look(model, model.reduce(crop), mirrored)
    return merge(first, close, box, rgb.shape[1], rgb.shape[0], model.info.input_width, model.info.input_height)


def close_up_box(prob: np.ndarray, width: int, height: int, plan: QualityPlan) -> tuple[int, int, int, int] | None:
    """The photo's pixels around every subject, with margin; None when that is most of the photo."""
    ys, xs = np.nonzero(prob >= _SURE)
    if ys.size == 0:
        return None
    map_height, map_width = prob.shape
    left, right = xs.min() * width / map_width, (xs.max() + 1) * width / map_width
    top, bottom = ys.min() * height / map_height, (ys.max() + 1) * height / map_height
    pad_x, pad_y = plan.margin * (right - left), plan.margin * (bottom - top)
    box = (
        max(0, int(left - pad_x)),
        max(0, int(top - pad_y)),
        min(width, int(np.ceil(right + pad_x))),
        min(height, int(np.ceil(bottom + pad_y))),
    )
    share = (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    return box if share < plan.close_up_below and box[2] - box[0] >= 8 and box[3] - box[1] >= 8 else None


def merge(
    first: np.ndarray, close: np.ndarray, box: tuple[int, int, int, int], width: int, height: int, side_x: int, side_y: int
) -> np.ndarray:
    """The first map stretched to the photo's aspect, the close-up's written into its box.

    Sized so the box keeps the close-up's own resolution (``side_x`` x ``side_y``), and never
    larger than the photo itself.
    """
    left, top, right, bottom = box
    scale = min(1.0, max(side_x / (right - left), side_y / (bottom - top)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    merged = cv2.resize(first, size, interpolation=cv2.INTER_LINEAR)
    x0, y0 = round(left * scale), round(top * scale)
    x1, y1 = max(x0 + 1, round(right * scale)), max(y0 + 1, round(bottom * scale))
    inner = cv2.resize(close, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA if close.shape[1] > x1 - x0 else cv2.INTER_LINEAR)
    np.maximum(inner, np.where(merged[y0:y1, x0:x1] >= _SURE, merged[y0:y1, x0:x1], 0.0), out=merged[y0:y1, x0:x1])
    return np.clip(merged, 0.0, 1.0)


def _look(model: SaliencyModel, preview: np.ndarray, mirrored: bool) -> np.ndarray:
    prob = model.predict(preview)
    if mirrored:
        prob = (prob + model.predict(np.ascontiguousarray(preview[:, ::-1]))[:, ::-1]) * np.float32(0.5)
    return prob
