"""The model's passes: one look, or a close-up of small subjects merged back (app/model/passes.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from app.model import ModelSet, SaliencyModel
from app.model.passes import PLANS, QualityPlan, close_up_box, merge, predict_map
from tests.images import dev_images, dev_mask, photo

SPOTS = ((450, 350), (1000, 400))  # where two small lemurs sit on a 1600 x 900 photo


def _two_small_subjects() -> tuple[np.ndarray, np.ndarray]:
    """Two 200 px lemurs, each cut out by its exact alpha, on a noisy plain backdrop."""
    path = next(p for p in dev_images() if "beach" in p.name)
    rgb, alpha = np.asarray(Image.open(path).convert("RGB")), dev_mask(path)
    ys, xs = np.nonzero(alpha > 0.5)
    subject, cover = rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = 200 / max(subject.shape[:2])
    subject = cv2.resize(subject, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cover = cv2.resize(cover, (subject.shape[1], subject.shape[0]), interpolation=cv2.INTER_AREA)[..., None]
    noise = np.random.default_rng(0).integers(0, 40, (900, 1600, 3))
    backdrop = cv2.GaussianBlur((np.array([120, 140, 110]) + noise).astype(np.uint8), (0, 0), 3)
    truth = np.zeros((900, 1600), np.float32)
    height, width = subject.shape[:2]
    for x, y in SPOTS:
        below = backdrop[y : y + height, x : x + width].astype(np.float32)
        backdrop[y : y + height, x : x + width] = (cover * subject + (1 - cover) * below).astype(np.uint8)
        truth[y : y + height, x : x + width] = cover[..., 0]
    return backdrop, truth


def _iou(prob: np.ndarray, truth: np.ndarray) -> float:
    predicted, actual = cv2.resize(prob, truth.shape[::-1]) > 0.5, truth > 0.5
    return float((predicted & actual).sum() / (predicted | actual).sum())


@pytest.mark.parametrize("name", ["u2net-int8", "u2netp"])
def test_a_close_up_sharpens_small_subjects_and_keeps_them_all(models: ModelSet, name: str) -> None:
    model = models.models[name]
    rgb, truth = _two_small_subjects()
    one, closer = predict_map(rgb, model, PLANS["fast"]), predict_map(rgb, model, PLANS["balanced"])
    assert one.shape == (320, 320), "one look: the model's own square map"
    assert closer.shape[1] / closer.shape[0] == pytest.approx(1600 / 900, rel=0.01) and closer.shape[1] > 320
    for x, y in SPOTS:  # both subjects survive the merge
        spot = cv2.resize(closer, (1600, 900))[y : y + 200, x : x + 200]
        assert spot[truth[y : y + 200, x : x + 200] > 0.5].mean() > 0.9, (x, y)
    assert _iou(closer, truth) > _iou(one, truth) + 0.004


def test_no_close_up_of_a_subject_that_fills_the_frame(model: SaliencyModel) -> None:
    rgb = np.asarray(photo())
    prob = model.predict(rgb)
    assert close_up_box(prob, rgb.shape[1], rgb.shape[0], PLANS["balanced"]) is None
    assert predict_map(rgb, model, PLANS["balanced"]).shape == (320, 320)
    assert close_up_box(np.zeros((320, 320), np.float32), 1000, 800, QualityPlan()) is None, "nothing found: no crop"


def test_the_box_holds_every_subject_with_its_margin() -> None:
    prob = np.zeros((100, 100), np.float32)
    prob[10:20, 10:20] = prob[30:40, 50:60] = 1.0
    box = close_up_box(prob, 1000, 1000, QualityPlan(close_up_below=0.5, margin=0.2))
    assert box == (0, 40, 700, 460)  # x 100..600 and y 100..400, grown by a fifth of 500 and of 300 a side


def test_merge_keeps_what_the_first_look_was_sure_of() -> None:
    first = np.zeros((32, 32), np.float32)
    first[8:12, 8:12] = first[20:24, 20:24] = 0.9  # two subjects
    close = np.zeros((32, 32), np.float32)
    close[0:8, 0:8] = 1.0  # the close-up sees the first, sharper, and plays the second down
    merged = merge(first, close, (32, 32, 96, 96), 128, 128, 32, 32)
    assert merged.shape == (64, 64)  # the 64 px box keeps the close-up's 32 px: half the photo's 128
    assert merged[16:20, 16:20].min() == 1.0, "the close-up's map inside its box"
    assert merged[42:46, 42:46].min() >= 0.85, "the second subject kept from the first look"
    assert merged[0:14, 0:14].max() == 0.0
