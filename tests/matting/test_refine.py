from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from app.matting import Matte, RefineSettings, alpha_from_map, refine_matte
from app.matting.foreground import decontaminate, local_colours
from app.matting.refine import soft_zone
from app.model import SaliencyModel
from tests.images import REPO, photo

REAL_SET = REPO.parent / "shared" / "evaldata" / "real"

ORANGE = np.array([230, 120, 30])
BLUE = np.array([20, 60, 200])


def test_a_larger_photo_gets_the_same_matte_at_its_own_size(model: SaliencyModel) -> None:
    """The matte is solved at the working resolution and carried to full size on the edge pixels only."""
    small = np.asarray(photo())
    large = np.asarray(photo().resize((2040, 1320), Image.LANCZOS))
    alpha_small = refine_matte(small, model.predict(small)).alpha
    alpha_large = refine_matte(large, model.predict(large)).alpha
    assert alpha_large.shape == (1320, 2040)
    back = np.asarray(Image.fromarray(alpha_large).resize((680, 440), Image.BOX), dtype=np.int16)
    assert np.abs(back - alpha_small).mean() < 0.015 * 255


def test_refined_alpha_keeps_the_subject(model: SaliencyModel) -> None:
    rgb = np.asarray(photo())
    alpha = refine_matte(rgb, model.predict(rgb)).alpha
    assert alpha.dtype == np.uint8 and alpha.shape == (440, 680)
    assert alpha[200:260, 300:380].min() == 255 and alpha[:40, :40].max() == 0


def test_edge_colours_lose_the_old_background() -> None:
    """A known orange subject with a soft edge over blue: the edge must come out orange."""
    height, width = 60, 200
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[:, 120:] = 1.0
    alpha[:, 80:120] = np.linspace(0.0, 1.0, 40)[None, :]
    rgb = (alpha[:, :, None] * ORANGE + (1 - alpha[:, :, None]) * BLUE + 0.5).astype(np.uint8)
    alpha8 = (alpha * 255 + 0.5).astype(np.uint8)
    colours = local_colours(rgb.astype(np.float32) / 255, alpha, 45)
    edge = (alpha >= 0.3) & (alpha <= 0.9)
    unit = rgb.astype(np.float32) / 255
    cleaned = decontaminate(unit[edge], alpha[edge], colours[edge]).astype(int)
    before = np.abs(rgb[edge].astype(int) - ORANGE).max(axis=1).mean()
    after = np.abs(cleaned - ORANGE).max(axis=1).mean()
    assert before > 60 and after < 15, (before, after)
    opaque = alpha8 == 255
    assert np.array_equal(decontaminate(unit[opaque], alpha[opaque], colours[opaque]), rgb[opaque])


def test_foreground_puts_edge_colours_in_place_for_any_region() -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    alpha = np.full((4, 5), 255, dtype=np.uint8)
    edges = np.array([1, 7, 18])  # (0, 1), (1, 2), (3, 3)
    colours = np.array([[10, 10, 10], [20, 20, 20], [30, 30, 30]], dtype=np.uint8)
    matte = Matte(alpha, edges, colours)
    whole = matte.foreground(rgb, 0, 4, 0, 5)
    assert whole[0, 1, 0] == 10 and whole[1, 2, 0] == 20 and whole[3, 3, 0] == 30
    assert int(whole.sum()) == 3 * (10 + 20 + 30)
    crop = matte.foreground(rgb, 1, 4, 2, 4)  # rows 1-3, columns 2-3
    assert crop.shape == (3, 2, 3)
    assert crop[0, 0, 0] == 20 and crop[2, 1, 0] == 30 and int(crop.sum()) == 3 * (20 + 30)
    assert not rgb.any(), "the photo itself is never written"


def test_refined_cut_out_changes_only_edge_colours(model: SaliencyModel) -> None:
    rgb = np.asarray(photo())
    matte = refine_matte(rgb, model.predict(rgb))
    cleaned = matte.foreground(rgb, 0, rgb.shape[0], 0, rgb.shape[1])
    changed = (cleaned != rgb).any(axis=2)
    assert ((matte.alpha[changed] > 0) & (matte.alpha[changed] < 255)).mean() > 0.9
    assert (matte.alpha[changed] < 255).all(), "opaque pixels keep the photo's colour"
    assert (matte.alpha[~changed] > 0).mean() > 0.2, "the subject's body is left alone"


def _square_photo_and_blurred_map(blur: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """A hard-edged orange square on blue, and a model-like map of it: the right contour, blurred."""
    rgb = np.empty((640, 640, 3), np.uint8)
    rgb[:] = BLUE
    rgb[160:480, 160:480] = ORANGE
    truth = np.zeros((320, 320), np.float32)
    truth[80:240, 80:240] = 1.0
    return rgb, cv2.GaussianBlur(truth, (0, 0), blur)


def test_a_hard_edge_comes_out_crisper_than_the_stretched_map() -> None:
    rgb, prob = _square_photo_and_blurred_map()
    stretched = alpha_from_map(prob, 640, 640)
    refined = refine_matte(rgb, prob).alpha
    soft_before, soft_after = ((stretched > 0) & (stretched < 255)).sum(), ((refined > 0) & (refined < 255)).sum()
    assert soft_after < 0.5 * soft_before, (soft_before, soft_after)
    assert refined[200:440, 200:440].min() == 255 and refined[:100].max() == 0


def test_a_hard_edges_blur_is_no_soft_zone_but_a_wide_hedge_is() -> None:
    _, prob = _square_photo_and_blurred_map(blur=0.8)  # about the model's own on a hard edge
    prior = cv2.resize(prob, (224, 224), interpolation=cv2.INTER_AREA)
    assert not soft_zone(prior, RefineSettings())[70:154].any(), "along the edges (the corners' blur is wider)"
    hedge = np.zeros((224, 224), np.float32)
    hedge[:, 100:140] = np.linspace(1.0, 0.0, 40)[None, :]  # the model unsure over 40 px: fur, or hair
    hedge[:, :100] = 1.0
    band = soft_zone(hedge, RefineSettings())
    assert band[:, 105:135].all() and not band[:, :90].any() and not band[:, 150:].any()


@pytest.mark.parametrize("name", ["berkeley_187029_boy", "davis_026_breakdance-flare", "cocomval_giraffe03_000000112634"])
def test_refinement_keeps_the_models_decision_everywhere(model: SaliencyModel, name: str) -> None:
    """No holes in a shirt, no blobs of background: every pixel stays on the side of 0.5 the model chose."""
    path = next((REAL_SET / "images").glob(f"{name}.*"))
    rgb = np.asarray(Image.open(path).convert("RGB"))
    prob = model.predict(rgb)
    stretched, refined = alpha_from_map(prob, rgb.shape[1], rgb.shape[0]), refine_matte(rgb, prob).alpha
    assert np.array_equal(stretched >= 128, refined >= 128)
    assert not np.array_equal(stretched, refined), "and it did change the edges"
