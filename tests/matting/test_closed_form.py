"""The matting Laplacian's algebra, and the solver recovering a known matte from a fat, blurry prior."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.matting.closed_form import MattingLaplacian, SolverSettings, solve_alpha

ORANGE = np.array([0.9, 0.47, 0.12], dtype=np.float32)
BLUE = np.array([0.08, 0.24, 0.78], dtype=np.float32)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((40, 50, 3), dtype=np.float32)


@pytest.fixture
def laplacian(image: np.ndarray) -> MattingLaplacian:
    return MattingLaplacian(image, radius=2, eps=1e-3)



def _band(prior: np.ndarray, half_width: int) -> np.ndarray:
    """Pixels within ``half_width`` of the map's 0.5 contour, either side: a trimap's unknown."""
    inside = (prior >= 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * half_width + 1, 2 * half_width + 1))
    return cv2.dilate(inside, kernel) != cv2.erode(inside, kernel)

def test_it_is_symmetric_and_positive_semidefinite(laplacian: MattingLaplacian) -> None:
    rng = np.random.default_rng(1)
    x, y = (rng.standard_normal((40, 50)).astype(np.float32) for _ in range(2))
    assert np.vdot(laplacian(x), y) == pytest.approx(np.vdot(x, laplacian(y)), rel=1e-3)
    assert np.vdot(laplacian(x), x) > 0


def test_constant_and_colour_affine_mattes_cost_nothing(image: np.ndarray) -> None:
    laplacian = MattingLaplacian(image, radius=2, eps=1e-9)  # eps -> 0: affine mattes are exactly free
    assert np.abs(laplacian(np.full((40, 50), 0.7, np.float32))).max() < 1e-4
    affine = (image @ np.array([0.3, -0.2, 0.5], np.float32) + 0.1).astype(np.float32)
    assert np.abs(laplacian(affine)).max() < 1e-3
    assert np.abs(laplacian(np.random.default_rng(2).random((40, 50), dtype=np.float32))).max() > 0.05


def test_its_diagonal_matches_the_operator(laplacian: MattingLaplacian) -> None:
    for y, x in ((0, 0), (0, 25), (20, 25), (39, 49), (1, 48)):
        unit = np.zeros((40, 50), np.float32)
        unit[y, x] = 1.0
        assert laplacian.diagonal[y, x] == pytest.approx(laplacian(unit)[y, x], rel=1e-4, abs=1e-6)


def test_the_band_straddles_the_contour() -> None:
    prior = np.zeros((30, 30), np.float32)
    prior[:, 15:] = 1.0
    band = _band(prior, 3)
    assert band[:, 12:18].all() and not band[:, :11].any() and not band[:, 19:].any()


def test_a_known_soft_matte_is_recovered_from_a_fat_blurry_prior() -> None:
    """Two flat colours mixed by a soft disc: the colours alone determine alpha, the prior only locates it."""
    ys, xs = np.mgrid[0:80, 0:80].astype(np.float32)
    distance = np.hypot(ys - 40, xs - 40)
    truth = np.clip((22.0 - distance) / 6.0, 0.0, 1.0)  # a disc with a 6 px soft rim
    photo = truth[:, :, None] * ORANGE + (1 - truth[:, :, None]) * BLUE
    prior = np.clip((25.0 - distance) / 10.0 + 0.5, 0.0, 1.0)  # 6 px too fat and blurrier: like the model's map

    alpha = solve_alpha(photo.astype(np.float32), prior, _band(prior, 8))

    rim = (distance > 14) & (distance < 30)
    assert np.abs(prior - truth)[rim].mean() > 0.35
    assert np.abs(alpha - truth)[rim].mean() < 0.06
    assert alpha.dtype == np.float32 and alpha.min() >= 0 and alpha.max() <= 1


def test_nothing_unknown_leaves_the_thresholded_prior() -> None:
    prior = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    alpha = solve_alpha(np.zeros((10, 10, 3), np.float32), prior, np.zeros((10, 10), bool))
    assert np.array_equal(alpha, (prior >= 0.5).astype(np.float32))
