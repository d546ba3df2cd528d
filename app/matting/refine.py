"""Low-res model map -> full-resolution matte with photo-true edges and clean edge colours."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.matting.fields import UpsampledField
from app.matting.foreground import decontaminate, local_colours
from app.matting.guided import apply_coefficients, guided_coefficients
from app.matting.upsample import unit_to_uint8

_BAND_ROWS = 256


@dataclass(frozen=True)
class RefineSettings:
    working_side: int = 1024  # long side of the working resolution; bounds the cost at any photo size
    contrast: float = 4.0  # the map is steepened about 0.5 before filtering: the photo, not the blur, sets the edge
    radius: float = 2.0  # guided filter window radius, in model pixels (one = photo side / 320)
    eps: float = 1e-2  # guided filter regulariser
    colour_radius: float = 2.0  # window of the local colour estimates, in model pixels


class Matte:
    """Full-resolution alpha, and the local colours that decontaminate its edge pixels."""

    def __init__(self, alpha: np.ndarray, colours: UpsampledField | None = None) -> None:
        self.alpha = alpha
        self._colours = colours

    def foreground(self, rgb: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """The photo's colours in that region, with the old background taken out of the edges."""
        region = rgb[top:bottom, left:right]
        if self._colours is None:
            return region
        alpha = self.alpha[top:bottom, left:right]
        ys, xs = _edge_pixels(alpha)
        if ys.size == 0:
            return region
        out = region.copy()
        out[ys, xs] = decontaminate(region[ys, xs], alpha[ys, xs], self._colours.at(ys + top, xs + left))
        return out


def refine_matte(rgb: np.ndarray, prob: np.ndarray, settings: RefineSettings = RefineSettings()) -> Matte:
    """Guided-filter the model's map against the photo, then estimate edge colours.

    The filter runs at the working resolution; its alpha, scaled up, is exact away
    from the edges (0 or 1), and on the edge pixels the fitted ``a . I + b`` is
    evaluated against the full-resolution photo, so edges follow its real detail.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, settings.working_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    guide = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
    coarse = cv2.resize(prob.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    coarse = np.clip((coarse - 0.5) * settings.contrast + 0.5, 0.0, 1.0)
    model_pixel = max(size) / max(prob.shape)  # working pixels per model pixel
    radius = max(1, round(settings.radius * model_pixel))
    coefficients = guided_coefficients(guide, coarse, radius, settings.eps)
    working_alpha = np.clip(apply_coefficients(coefficients, guide), 0.0, 1.0)

    alpha = unit_to_uint8(working_alpha)
    if size != (width, height):
        alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
        field = UpsampledField(coefficients, width, height)
        for top in range(0, height, _BAND_ROWS):
            band = alpha[top : top + _BAND_ROWS]
            ys, xs = _edge_pixels(band)
            if ys.size:
                a = field.at(ys + top, xs)
                colour = rgb[ys + top, xs].astype(np.float32) * (1.0 / 255.0)
                band[ys, xs] = unit_to_uint8(np.einsum("nc,nc->n", a[:, :3], colour) + a[:, 3])

    colour_radius = max(1, round(settings.colour_radius * model_pixel))
    colours = UpsampledField(local_colours(guide, working_alpha, colour_radius), width, height)
    return Matte(alpha, colours)


def _edge_pixels(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero((alpha > 0) & (alpha < 255))
