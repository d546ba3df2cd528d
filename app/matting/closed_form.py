"""Closed-form matting (Levin, Lischinski and Weiss, PAMI 2008) on the model's uncertain band.

Within every small window a matte is, to a good approximation, an affine
function of the colour (``alpha = a . I + b``). The matting Laplacian ``L``
measures how far a matte is from that; the matte we want minimises

    alpha' L alpha  +  sum_i lam_i (alpha_i - p_i)^2

over the unknown pixels, the others fixed at 0 or 1. ``p`` is the model's own
soft map and ``lam_i`` its confidence, so where the model is unsure the photo's
colours decide, and where it is sure they cannot overrule it.

``L`` is never built: applying it takes a handful of box filters (He, Sun and
Tang, "Fast matting using large kernel matting Laplacian matrices", CVPR 2010),
and the system is solved by Jacobi-preconditioned conjugate gradients on the
bounding box of the unknown band, at a resolution capped by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the distinct entries of a symmetric 3x3


def box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sum over each (2r+1)^2 window, counting only pixels inside the image."""
    size = 2 * radius + 1
    return cv2.boxFilter(values, -1, (size, size), normalize=False, borderType=cv2.BORDER_CONSTANT)


class MattingLaplacian:
    """``L`` of an H x W x 3 float32 image in 0..1, as an operator on H x W float32 arrays.

    Windows are clipped to the image; ``L`` is scaled by ``1 / (2r+1)^2`` so its
    size does not depend on the radius. It is symmetric positive semi-definite,
    and constant and colour-affine mattes are in its null space.
    """

    def __init__(self, image: np.ndarray, radius: int, eps: float) -> None:
        self.image, self.radius = image, radius
        height, width = image.shape[:2]
        self.inverse_count = 1.0 / box_sum(np.ones((height, width), np.float32), radius)
        self.window_scale = np.float32(1.0 / (2 * radius + 1) ** 2)
        self.windows_per_pixel = self.window_scale / self.inverse_count  # windows covering each pixel, scaled
        self.mean = box_sum(image, radius) * self.inverse_count[:, :, None]
        mean = [self.mean[:, :, c] for c in range(3)]
        covariance = {
            (i, j): box_sum(image[:, :, i] * image[:, :, j], radius) * self.inverse_count - mean[i] * mean[j]
            for i, j in _PAIRS
        }
        rr, rg, rb = covariance[0, 0] + eps, covariance[0, 1], covariance[0, 2]
        gg, gb, bb = covariance[1, 1] + eps, covariance[1, 2], covariance[2, 2] + eps
        cofactors = (gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb, rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg)
        determinant = rr * cofactors[0] + rg * cofactors[1] + rb * cofactors[2]
        self.inverse = [value / determinant for value in cofactors]  # (cov + eps I)^-1 per window, six entries
        self.diagonal = self._diagonal()

    def _solve_windows(self, vector: list[np.ndarray]) -> list[np.ndarray]:
        """``(cov + eps I)^-1 @ vector`` in every window."""
        d00, d01, d02, d11, d12, d22 = self.inverse
        x, y, z = vector
        return [d00 * x + d01 * y + d02 * z, d01 * x + d11 * y + d12 * z, d02 * x + d12 * y + d22 * z]

    def _diagonal(self) -> np.ndarray:
        """``L_ii``, for the preconditioner: the same sums as ``__call__`` with ``alpha = e_i``."""
        radius, image, inverse_count = self.radius, self.image, self.inverse_count
        mean = [self.mean[:, :, c] for c in range(3)]
        inverse_mean = self._solve_windows(mean)
        quadratic = sum(inverse_mean[c] * mean[c] for c in range(3))
        colour = [image[:, :, c] for c in range(3)]
        self_fit = box_sum(inverse_count * (1 + quadratic), radius)
        for (i, j), entry in zip(_PAIRS, self.inverse, strict=True):
            self_fit += (1 if i == j else 2) * box_sum(entry * inverse_count, radius) * colour[i] * colour[j]
        for c in range(3):
            self_fit -= 2 * box_sum(inverse_mean[c] * inverse_count, radius) * colour[c]
        return self.windows_per_pixel - self_fit * self.window_scale

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        """``L @ alpha``: each window's affine fit of ``alpha``, subtracted from ``alpha``, summed."""
        radius, image, inverse_count = self.radius, self.image, self.inverse_count
        mean_alpha = box_sum(alpha, radius) * inverse_count
        covariance = [
            box_sum(image[:, :, c] * alpha, radius) * inverse_count - self.mean[:, :, c] * mean_alpha for c in range(3)
        ]
        slope = self._solve_windows(covariance)
        offset = mean_alpha - sum(slope[c] * self.mean[:, :, c] for c in range(3))
        fit = sum(box_sum(slope[c], radius) * image[:, :, c] for c in range(3)) + box_sum(offset, radius)
        return self.windows_per_pixel * alpha - fit * self.window_scale


@dataclass(frozen=True)
class SolverSettings:
    radius: int = 2  # 5 x 5 windows; 3 x 3 scored worse on the dev set
    eps: float = 1e-4  # colour-line regulariser; Levin's 1e-7 fits JPEG noise, 1e-3 blurs the fur
    confidence: float = 3e-3  # weight of the model's map where it is sure (p near 0 or 1)
    confidence_floor: float = 1e-4  # ... and where it is not: keeps the system well posed
    tolerance: float = 3e-3  # relative residual at which conjugate gradients stop; 1e-3 gained 0.1 % MAE for 12 % more time
    max_iterations: int = 60


def solve_alpha(image: np.ndarray, prior: np.ndarray, unknown: np.ndarray, settings: SolverSettings = SolverSettings()) -> np.ndarray:
    """The matte of ``image`` (H x W x 3, 0..1) on the ``unknown`` pixels; elsewhere ``prior >= 0.5``.

    ``prior`` is the model's map (H x W, 0..1) at the image's resolution.
    """
    known = (prior >= 0.5).astype(np.float32)
    ys, xs = np.nonzero(unknown)
    if ys.size == 0:
        return known
    margin = 2 * settings.radius + 1  # windows reaching into the band see the known pixels around it
    top, bottom = max(0, ys.min() - margin), min(image.shape[0], ys.max() + margin + 1)
    left, right = max(0, xs.min() - margin), min(image.shape[1], xs.max() + margin + 1)
    box = np.s_[top:bottom, left:right]
    free = unknown[box].astype(np.float32)
    p = prior[box].astype(np.float32)
    weight = (settings.confidence * np.square(2.0 * p - 1.0) + settings.confidence_floor).astype(np.float32)
    laplacian = MattingLaplacian(image[box], settings.radius, settings.eps)

    def system(x: np.ndarray) -> np.ndarray:  # the normal equations restricted to the free pixels
        return free * (laplacian(x) + weight * x)

    fixed = known[box] * (1.0 - free)
    rhs = free * (weight * p - laplacian(fixed))
    preconditioner = 1.0 / (free * (laplacian.diagonal + weight) + (1.0 - free))
    x = p * free
    residual = rhs - system(x)
    z = residual * preconditioner
    direction = z.copy()
    rz = float(np.vdot(residual, z))
    stop = settings.tolerance * (float(np.linalg.norm(rhs)) + 1e-12)
    for _ in range(settings.max_iterations):
        product = system(direction)
        step = rz / float(np.vdot(direction, product))
        x += step * direction
        residual -= step * product
        if float(np.linalg.norm(residual)) < stop:
            break
        z = residual * preconditioner
        rz, previous = float(np.vdot(residual, z)), rz
        direction *= rz / previous
        direction += z
    alpha = known.copy()
    alpha[box] = fixed + free * x
    return np.clip(alpha, 0.0, 1.0)
