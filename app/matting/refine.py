"""Low-res model map -> full-resolution matte with photo-true edges and clean edge colours."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.matting.fields import UpsampledField
from app.matting.foreground import decontaminate, local_colours
from app.matting.guided import apply_coefficients, guided_coefficients
from app.matting.upsample import unit_to_uint8

_CHUNK = 1 << 18  # edge pixels sampled at once: bounds the temporaries (~10 MB)


@dataclass(frozen=True)
class RefineSettings:
    working_side: int = 640  # long side of the working resolution (twice the model's): bounds the cost at any size
    contrast: float = 4.0  # the map is steepened about 0.5 before filtering: the photo, not the blur, sets the edge
    radius: float = 2.0  # guided filter window radius, in model pixels (one = photo side / 320)
    eps: float = 1e-2  # guided filter regulariser
    colour_radius: float = 2.0  # window of the local colour estimates, in model pixels


class Matte:
    """Full-resolution alpha, and the decontaminated colours of its edge pixels.

    The edge pixels are kept as sorted flat indices with their colours, so a band
    of the cut-out finds its own by binary search instead of rescanning alpha.
    """

    def __init__(self, alpha: np.ndarray, edges: np.ndarray | None = None, edge_colours: np.ndarray | None = None) -> None:
        self.alpha = alpha
        self._edges = edges  # flat indices into alpha, ascending
        self._edge_colours = edge_colours  # N x 3 uint8

    def foreground(self, rgb: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """The photo's colours in that region, with the old background taken out of the edges."""
        region = rgb[top:bottom, left:right]
        if self._edges is None or self._edge_colours is None:
            return region
        width = self.alpha.shape[1]
        first, last = np.searchsorted(self._edges, (top * width, bottom * width))
        ys, xs = np.divmod(self._edges[first:last], width)
        inside = (xs >= left) & (xs < right)
        if not inside.any():
            return region
        out = region.copy()
        out[ys[inside] - top, xs[inside] - left] = self._edge_colours[first:last][inside]
        return out


def refine_matte(rgb: np.ndarray, prob: np.ndarray, settings: RefineSettings = RefineSettings()) -> Matte:
    """Guided-filter the model's map against the photo, then estimate edge colours.

    The filter runs at the working resolution; its alpha, scaled up, is exact away
    from the edges (0 or 1). On the edge pixels, and only there, the fitted
    ``a . I + b`` is evaluated against the full-resolution photo, so edges follow
    its real detail, and their foreground colours are solved in the same pass.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, settings.working_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    guide = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
    coarse = cv2.resize(prob.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    coarse = np.clip((coarse - 0.5) * settings.contrast + 0.5, 0.0, 1.0)
    model_pixel = max(size) / max(prob.shape)  # working pixels per model pixel
    coefficients = guided_coefficients(guide, coarse, max(1, round(settings.radius * model_pixel)), settings.eps)
    working_alpha = np.clip(apply_coefficients(coefficients, guide), 0.0, 1.0)
    colours = local_colours(guide, working_alpha, max(1, round(settings.colour_radius * model_pixel)))

    alpha = cv2.resize(unit_to_uint8(working_alpha), (width, height), interpolation=cv2.INTER_LINEAR)
    edges = np.flatnonzero((alpha > 0) & (alpha < 255))
    field = UpsampledField(np.concatenate([coefficients, colours], axis=2), width, height)
    edge_colours = np.empty((edges.size, 3), dtype=np.uint8)
    flat_alpha, flat_rgb = alpha.reshape(-1), rgb.reshape(-1, 3)
    for start in range(0, edges.size, _CHUNK):
        chunk = edges[start : start + _CHUNK]
        sampled = field.at(*np.divmod(chunk, width))
        pixels = flat_rgb[chunk]
        chunk_alpha = unit_to_uint8(np.einsum("nc,nc->n", sampled[:, :3], pixels * np.float32(1.0 / 255.0)) + sampled[:, 3])
        flat_alpha[chunk] = chunk_alpha
        edge_colours[start : start + _CHUNK] = decontaminate(pixels, chunk_alpha, sampled[:, 4:])
    return Matte(alpha, edges, edge_colours)
