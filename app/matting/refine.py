"""Low-res model map -> full-resolution matte with photo-true edges and clean edge colours."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.matting.fields import UpsampledField
from app.matting.foreground import decontaminate, local_colours
from app.matting.closed_form import SolverSettings, solve_alpha, uncertain_band
from app.matting.guided import guided_coefficients
from app.matting.upsample import unit_to_uint8

_CHUNK = 1 << 18  # edge pixels sampled at once: bounds the temporaries (~10 MB)


@dataclass(frozen=True)
class RefineSettings:
    working_side: int = 224  # long side of the matting resolution: scored as well as the model's 320 at half the cost; 160 lost
    band: float = 6.0  # half-width of the unknown band around the map's 0.5 contour, in model pixels
    solver: SolverSettings = SolverSettings()
    carry_radius: int = 1  # window of the affine fit that carries alpha to full resolution, in working pixels
    carry_eps: float = 1e-4
    colour_radius: int = 2  # window of the local colour estimates, in working pixels


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
        if left == 0 and right == width:  # whole rows (no crop): flat indices need no unpacking
            out = region.copy()
            out.reshape(-1, 3)[self._edges[first:last] - top * width] = self._edge_colours[first:last]
            return out
        ys, xs = np.divmod(self._edges[first:last], width)
        inside = (xs >= left) & (xs < right)
        if not inside.any():
            return region
        out = region.copy()
        out[ys[inside] - top, xs[inside] - left] = self._edge_colours[first:last][inside]
        return out


def refine_matte(
    rgb: np.ndarray, prob: np.ndarray, settings: RefineSettings = RefineSettings(), preview: np.ndarray | None = None
) -> Matte:
    """Matte the model's uncertain band against the photo, then carry it to full size with clean colours.

    The model is sure of most of the picture; around its 0.5 contour it is not.
    That band is solved by closed-form matting at the working resolution, so the
    photo's colours, not the blurry upscaled map, decide the soft edge. Scaled up,
    that alpha is exact away from the edges (0 or 1); on the edge pixels, and
    only there, it is refitted as a local ``a . I + b`` and evaluated against the
    full-resolution photo, so edges follow its real detail, and their foreground
    colours are estimated in the same pass. ``preview``, a reduction of ``rgb`` of any
    aspect (the model's), spares reducing the full photo again for the working guide.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, settings.working_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    source = preview if preview is not None and preview.shape[0] >= size[1] and preview.shape[1] >= size[0] else rgb
    guide = cv2.resize(source, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1.0 / 255.0)
    prior = np.clip(cv2.resize(prob.astype(np.float32), size, interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    model_pixel = max(size) / max(prob.shape)  # working pixels per model pixel
    unknown = uncertain_band(prior, max(1, round(settings.band * model_pixel)))
    working_alpha = solve_alpha(guide, prior, unknown, settings.solver)
    coefficients = guided_coefficients(guide, working_alpha, settings.carry_radius, settings.carry_eps)
    colours = local_colours(guide, working_alpha, settings.colour_radius)

    alpha = cv2.resize(unit_to_uint8(working_alpha), (width, height), interpolation=cv2.INTER_LINEAR)
    edges = np.flatnonzero((alpha > 0) & (alpha < 255))
    field = UpsampledField(np.concatenate([coefficients, colours], axis=2), width, height)
    edge_colours = np.empty((edges.size, 3), dtype=np.uint8)
    flat_alpha, flat_rgb = alpha.reshape(-1), rgb.reshape(-1, 3)
    for start in range(0, edges.size, _CHUNK):
        chunk = edges[start : start + _CHUNK]
        sampled = field.at(*np.divmod(chunk, width))
        pixels = flat_rgb[chunk].astype(np.float32)
        pixels *= np.float32(1.0 / 255.0)
        chunk_alpha = np.einsum("nc,nc->n", sampled[:, :3], pixels)
        chunk_alpha += sampled[:, 3]
        np.clip(chunk_alpha, 0.0, 1.0, out=chunk_alpha)
        flat_alpha[chunk] = unit_to_uint8(chunk_alpha)
        edge_colours[start : start + _CHUNK] = decontaminate(pixels, chunk_alpha, sampled[:, 4:])
    return Matte(alpha, edges, edge_colours)
