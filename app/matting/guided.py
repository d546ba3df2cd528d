"""The colour guided filter's fit (He, Sun and Tang): alpha as a local affine function of colour.

The matte is solved at a capped working resolution. Fitted there as
``alpha = a . I + b`` in every window, its smooth ``a`` and ``b`` can be scaled
up and evaluated against the full-resolution photo ("fast guided filter"), so
the full-size edges follow the photo's own detail at O(N) cost.
"""

from __future__ import annotations

import cv2
import numpy as np


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(values, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Per-pixel ``(a_r, a_g, a_b, b)`` (H x W x 4, float32) such that ``source ~ a . guide + b``.

    ``guide`` is H x W x 3 float32 in 0..1, ``source`` H x W float32; ``eps`` is the
    regulariser: larger keeps the mask smoother where the photo has little contrast.
    """
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(source, radius)
    cov_ip = box_mean(guide * source[:, :, None], radius) - mean_i * mean_p[:, :, None]
    # the 3x3 colour covariance of each window, as its six distinct entries
    rr, rg, rb, gg, gb, bb = (
        box_mean(guide[:, :, i] * guide[:, :, j], radius) - mean_i[:, :, i] * mean_i[:, :, j]
        for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    )
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    # a = inverse(covariance + eps I) @ cov_ip, by cofactors
    c00, c01, c02 = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    c11, c12, c22 = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * c00 + rg * c01 + rb * c02
    x, y, z = cov_ip[:, :, 0], cov_ip[:, :, 1], cov_ip[:, :, 2]
    coefficients = np.empty((*source.shape, 4), dtype=np.float32)
    coefficients[:, :, 0] = (c00 * x + c01 * y + c02 * z) / det
    coefficients[:, :, 1] = (c01 * x + c11 * y + c12 * z) / det
    coefficients[:, :, 2] = (c02 * x + c12 * y + c22 * z) / det
    coefficients[:, :, 3] = mean_p - np.einsum("hwc,hwc->hw", coefficients[:, :, :3], mean_i)
    return box_mean(coefficients, radius)

