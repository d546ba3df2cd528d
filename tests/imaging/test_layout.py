"""The remove.bg layout's amplifiers: a background photo's and a drop shadow's work is bounded by the canvas.

Memory is measured with tracemalloc, which sees numpy's arrays and OpenCV's outputs (both allocate through
numpy): a background cover-scaled whole, as before, allocated 2.2 GB for a 1x3000 strip behind 500x500.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from app.imaging import layout
from app.imaging.encode import foreground_box
from app.imaging.layout import SHADOW_BLUR, SHADOW_OFFSET, SHADOW_OPACITY, Layer, cover, drop_shadow, over_photo
from app.model import SaliencyModel
from app.pipeline import MatteOptions, matte_photo
from tests.images import large_photo_bytes

STRIP = (40, 90, 160)


def traced_peak(work: Callable[[], object]) -> int:
    """The most bytes numpy (and OpenCV, through numpy) held at once while ``work`` ran, beyond what was held before."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def blank(width: int, height: int) -> Layer:
    return Layer(np.full((height, width, 3), 255, np.uint8), np.zeros((height, width), np.uint8))


@pytest.mark.parametrize(
    ("source", "canvas"),
    [
        ((1, 3000), (500, 500)),
        ((1, 60_000), (500, 500)),  # was a 500 (OpenCV could not allocate 45 GB)
        ((60_000, 1), (500, 500)),
        ((1, 3000), (5000, 10)),  # the part seen is 1/500 of a source pixel high
        ((3, 2), (640, 480)),
        ((4000, 3000), (300, 700)),
    ],
)
def test_a_background_of_any_aspect_costs_the_canvas_pixels(source: tuple[int, int], canvas: tuple[int, int]) -> None:
    picture = np.full((source[1], source[0], 3), STRIP, np.uint8)
    layer = blank(*canvas)
    result: list[Layer] = []
    peak = traced_peak(lambda: result.append(over_photo(layer, picture)))
    (laid,) = result
    assert laid.rgb.shape == (canvas[1], canvas[0], 3) and laid.rgb.dtype == np.uint8
    assert (laid.alpha == 255).all() and (laid.rgb == STRIP).all()
    canvas_pixels = canvas[0] * canvas[1]
    assert peak < 32 * canvas_pixels + picture.nbytes + (1 << 20), f"{peak:,} bytes for a {canvas} canvas"


def test_cover_crops_the_centre_and_scales_it_as_a_whole_resize_would() -> None:
    """Against cv2.resize of the whole picture where its crop falls on whole pixels: the same pixels."""
    rng = np.random.default_rng(7)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (100, 160, 3), np.uint8), (0, 0), 2)
    enlarged = cv2.resize(picture, (320, 200), interpolation=cv2.INTER_CUBIC)[20:180]
    assert np.abs(cover(picture, 320, 160).astype(int) - enlarged).max() <= 1
    assert np.array_equal(cover(picture, 160, 60), picture[20:80])  # as wide: a plain crop
    shrunk = cv2.resize(picture, (80, 50), interpolation=cv2.INTER_AREA)[:, 10:70]
    assert np.abs(cover(picture, 60, 50).astype(int) - shrunk).max() <= 1


def test_a_photo_background_is_composed_in_integers_as_the_float_formula_says() -> None:
    rng = np.random.default_rng(3)
    layer = Layer(rng.integers(0, 256, (64, 96, 3), np.uint8), rng.integers(0, 256, (64, 96), np.uint8))
    picture = rng.integers(0, 256, (64, 96, 3), np.uint8)
    alpha = layer.alpha[:, :, None] / 255.0
    expected = np.floor(picture + (layer.rgb.astype(float) - picture) * alpha + 0.5)
    assert np.abs(over_photo(layer, picture).rgb - expected).max() <= 1


def full_size_shadow(layer: Layer, subject: tuple[int, int, int, int]) -> Layer:
    """The drop shadow as it was made before: shifted and blurred at full size, on whole float canvases."""
    width, height = subject[2] - subject[0], subject[3] - subject[1]
    sigma = max(1.0, SHADOW_BLUR * min(width, height))
    shift = np.float32([[1, 0, SHADOW_OFFSET[0] * width], [0, 1, SHADOW_OFFSET[1] * height]])
    shadow = cv2.warpAffine(layer.alpha, shift, (layer.width, layer.height), flags=cv2.INTER_LINEAR)
    shadow = cv2.GaussianBlur(shadow.astype(np.float32) * np.float32(SHADOW_OPACITY / 255.0), (0, 0), sigma)
    alpha = layer.alpha.astype(np.float32) / 255.0
    out_alpha = alpha + shadow * (1.0 - alpha)
    rgb = layer.rgb.astype(np.float32) * (alpha / np.maximum(out_alpha, 1e-6))[:, :, None]
    return Layer(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), np.clip(out_alpha * 255 + 0.5, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def cut_out(model: SaliencyModel) -> Layer:
    """A real photo's cut-out at 2 MP: its shadow's sigma is about 30 pixels, shrunk 7 times."""
    return matte_photo(large_photo_bytes(2.0), MatteOptions(), model).layer


def test_the_shadow_made_small_looks_as_the_full_size_one(cut_out: Layer) -> None:
    box = foreground_box(cut_out.alpha)
    assert box is not None
    made, reference = drop_shadow(cut_out, box), full_size_shadow(cut_out, box)
    alpha_diff = np.abs(made.alpha.astype(int) - reference.alpha)
    rgb_diff = np.abs(made.rgb.astype(int) - reference.rgb)
    assert alpha_diff.mean() < 0.05 and alpha_diff.max() <= 1, (alpha_diff.mean(), alpha_diff.max())
    assert rgb_diff.mean() < 0.05 and rgb_diff.max() <= 2, (rgb_diff.mean(), rgb_diff.max())
    assert (made.alpha.astype(int) - cut_out.alpha).max() > 50, "there is a shadow at all"


def test_the_shadow_is_blurred_at_a_reduced_resolution_with_a_small_kernel(
    cut_out: Layer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its cost by construction: the blur sees a picture shrunk by the sigma's share, and a sigma of a few pixels."""
    blurs: list[tuple[tuple[int, ...], float]] = []
    real_blur = cv2.GaussianBlur

    def recording_blur(src: np.ndarray, ksize: tuple[int, int], sigma_x: float, **kwargs: float) -> np.ndarray:
        blurs.append((src.shape, max(sigma_x, kwargs.get("sigmaY", 0.0))))
        return real_blur(src, ksize, sigma_x, **kwargs)

    monkeypatch.setattr(layout.cv2, "GaussianBlur", recording_blur)
    box = foreground_box(cut_out.alpha)
    assert box is not None
    sigma = SHADOW_BLUR * min(box[2] - box[0], box[3] - box[1])
    drop_shadow(cut_out, box)
    ((shape, used_sigma),) = blurs
    shrink = math.floor(sigma / layout.SHADOW_WORK_SIGMA)
    assert shrink >= 4
    assert shape[0] * shape[1] <= math.ceil(cut_out.width / shrink) * math.ceil(cut_out.height / shrink)
    assert used_sigma < 2 * layout.SHADOW_WORK_SIGMA


@pytest.mark.parametrize("box", [(1000, 500, 3000, 2500), (1900, 1400, 2000, 1480)])  # shrunk 15 times; not at all
def test_the_shadow_of_a_large_canvas_holds_no_whole_float_canvas(box: tuple[int, int, int, int]) -> None:
    """A 12 MP canvas: the shadow's own arrays and temporaries stay near the output's size (4 bytes a pixel)."""
    width, height = 4000, 3000
    layer = blank(width, height)
    layer.alpha[box[1] : box[3], box[0] : box[2]] = 255
    layer.alpha[box[1] : box[3], box[0]] = 128
    peak = traced_peak(lambda: drop_shadow(layer, box))
    assert peak < 6 * width * height + 64 * layout.BAND_PIXELS, f"{peak:,} bytes"


def test_a_small_subject_on_a_large_canvas_is_shadowed_in_its_window_as_on_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its sigma is 2.4 pixels, too small to shrink: the blur sees only the window it can reach, with the same result."""
    layer = blank(2000, 1500)
    box = (900, 700, 1000, 780)
    layer.alpha[700:780, 900:1000] = 255
    reference = full_size_shadow(layer, box)
    blurred: list[tuple[int, ...]] = []
    real_blur = cv2.GaussianBlur
    monkeypatch.setattr(
        layout.cv2,
        "GaussianBlur",
        lambda src, *args, **kwargs: (blurred.append(src.shape), real_blur(src, *args, **kwargs))[1],
    )
    made = drop_shadow(layer, box)
    ((height, width),) = blurred
    assert width * height < 200 * 200
    assert np.abs(made.alpha.astype(int) - reference.alpha).max() <= 1
    assert np.abs(made.rgb.astype(int) - reference.rgb).max() <= 1
