"""Low-res model map -> full-resolution matte: crisp where the edge is hard, matted where it is soft.

Most real photos' edges are hard: a shirt against a wall, a car against the
road. There the map, stretched from the model's 320 pixels to the photo's, is
only blurred by the stretch, and the best edge is the map's own contour made
crisp again. Hair, fur and motion blur are soft: there the model hedges over a
wide band, and the photo's colours, not the stretched map, should decide the
alpha. So the model's own uncertainty draws the unknown band: the pixels where
its map is neither near 0 nor near 1, kept only where that soft zone is wider
than a hard edge's blur (a morphological opening). The band follows the
subject's scale by construction: a small subject's soft zone is small too.

One rule keeps the refinement from ever undoing the model: a pixel keeps the
side of 0.5 the model put it on. Matting may soften a sure pixel's alpha toward
the fur's true value, but it cannot punch a hole in a shirt, or add a blob of
background, which on real photos it otherwise does wherever subject and
background share colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.matting.closed_form import SolverSettings, solve_alpha
from app.matting.fields import UpsampledField
from app.matting.foreground import decontaminate, local_colours
from app.matting.guided import guided_coefficients
from app.matting.upsample import alpha_from_map, unit_to_uint8

_CHUNK = 1 << 18  # edge pixels sampled at once: bounds the temporaries (~10 MB)
_HALF = 128  # uint8 alpha from which a pixel is foreground (alpha > 0.5)


@dataclass(frozen=True)
class RefineSettings:
    """Chosen on the 86 real photos of ../shared/evaldata/real, held against the lemur set (README)."""

    working_side: int = 224  # long side of the matting resolution; 448 and 640 scored no better
    unsure: float = 0.05  # map values within this of 0 or 1 count as sure; 0.02 and 0.15 scored worse
    soft_width: int = 1  # radius (working pixels) of the opening that tells a soft zone from a hard edge's blur
    grow: int = 1  # the unknown band is the soft zone grown by this many working pixels
    hard_gain: float = 3.0  # a hard edge's slope is the stretched map's times this (1.5-5 all scored within 2 %)
    soft_gain: float = 1.5  # the matted alpha's, around 0.5: mattes come out slightly too soft
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


def steepen(values: np.ndarray, gain: float) -> np.ndarray:
    """``(v - 0.5) * gain + 0.5``, clipped to 0..1: a blurred edge made crisp on the same contour."""
    return np.clip((values - 0.5) * gain + 0.5, 0.0, 1.0)


def soft_zone(prior: np.ndarray, settings: RefineSettings) -> np.ndarray:
    """The unknown band (bool, working resolution): where the map hedges over more than a blur's width."""
    unsure = ((prior > settings.unsure) & (prior < 1.0 - settings.unsure)).astype(np.uint8)
    wide = cv2.morphologyEx(unsure, cv2.MORPH_OPEN, _disk(settings.soft_width))
    return cv2.dilate(wide, _disk(settings.grow)) > 0


def refine_matte(
    rgb: np.ndarray, prob: np.ndarray, settings: RefineSettings = RefineSettings(), preview: np.ndarray | None = None
) -> Matte:
    """The photo's matte from the model's map (any size or aspect), with clean edge colours.

    Away from the soft zone the alpha is the stretched map made crisp. In it, closed-form
    matting at the working resolution solves the alpha from the photo's colours; that
    alpha is refitted as a local ``a . I + b`` and evaluated against the full-resolution
    photo, so soft edges follow its real detail at any size. The foreground colours of
    every partly transparent pixel are estimated in the same pass. ``preview``, a
    reduction of ``rgb`` (the model's), spares reducing the full photo again for the guide.
    """
    height, width = rgb.shape[:2]
    stretched = alpha_from_map(prob, width, height)
    alpha = cv2.LUT(stretched, _gain_table(settings.hard_gain))

    scale = min(1.0, settings.working_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    source = preview if preview is not None and preview.shape[0] >= size[1] and preview.shape[1] >= size[0] else rgb
    guide = cv2.resize(source, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1.0 / 255.0)
    prior = np.clip(cv2.resize(prob.astype(np.float32), size, interpolation=_interpolation(prob, size)), 0.0, 1.0)
    unknown = soft_zone(prior, settings)
    working_alpha = solve_alpha(guide, prior, unknown, settings.solver)
    field = UpsampledField(
        np.concatenate([guided_coefficients(guide, working_alpha, settings.carry_radius, settings.carry_eps),
                        local_colours(guide, working_alpha, settings.colour_radius)], axis=2),
        width,
        height,
    )
    flat_alpha, flat_rgb, flat_stretched = alpha.reshape(-1), rgb.reshape(-1, 3), stretched.reshape(-1)
    if unknown.any():
        band = cv2.resize(unknown.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        for chunk in _chunks(np.flatnonzero(band)):
            sampled = field.at(*np.divmod(chunk, width))
            carried = np.einsum("nc,nc->n", sampled[:, :3], flat_rgb[chunk].astype(np.float32) * np.float32(1.0 / 255.0))
            carried += sampled[:, 3]
            matted = unit_to_uint8(steepen(carried, settings.soft_gain))
            model_says_foreground = flat_stretched[chunk] >= _HALF
            flat_alpha[chunk] = np.where(
                model_says_foreground, np.maximum(matted, _HALF), np.minimum(matted, _HALF - 1)
            )
    edges = np.flatnonzero((alpha > 0) & (alpha < 255))
    edge_colours = np.empty((edges.size, 3), dtype=np.uint8)
    for start, chunk in zip(range(0, edges.size, _CHUNK), _chunks(edges), strict=True):
        sampled = field.at(*np.divmod(chunk, width))
        pixels = flat_rgb[chunk].astype(np.float32)
        pixels *= np.float32(1.0 / 255.0)
        chunk_alpha = flat_alpha[chunk].astype(np.float32) * np.float32(1.0 / 255.0)
        edge_colours[start : start + _CHUNK] = decontaminate(pixels, chunk_alpha, sampled[:, 4:])
    return Matte(alpha, edges, edge_colours)


def _interpolation(values: np.ndarray, size: tuple[int, int]) -> int:
    return cv2.INTER_AREA if values.shape[1] > size[0] and values.shape[0] > size[1] else cv2.INTER_LINEAR


def _chunks(indices: np.ndarray) -> list[np.ndarray]:
    return [indices[start : start + _CHUNK] for start in range(0, indices.size, _CHUNK)]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _gain_table(gain: float) -> np.ndarray:
    return unit_to_uint8(steepen(np.arange(256, dtype=np.float32) / 255.0, gain))
