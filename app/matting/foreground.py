"""Colour decontamination: give semi-transparent edge pixels the foreground's own colour.

A hair-edge pixel of a photo is ``I = alpha F + (1 - alpha) B``: keep ``I`` and
the cut-out carries a fringe of the old background. One step of blur-fusion
(Forte and Pitie, "Approximate fast foreground colour estimation", ICIP 2021)
estimates local foreground and background colours ``F^``, ``B^`` with box
filters, then ``F = F^ + alpha (I - alpha F^ - (1 - alpha) B^)``. The local
colours are smooth, so they come from the working resolution and are sampled
at the full-resolution edge pixels only, like the guided filter's coefficients.
"""

from __future__ import annotations

import numpy as np

from app.matting.guided import box_mean
from app.matting.upsample import unit_to_uint8

_TINY = 1e-6
_SURE = 0.95  # alpha from which a pixel counts as surely foreground (and 1 - this, background)
_FALLBACK = 1e-3  # weight of the soft pixels, so an estimate exists even far from sure ones


def local_colours(colour: np.ndarray, alpha: np.ndarray, radius: int) -> np.ndarray:
    """``F^`` and ``B^`` as H x W x 6 (foreground RGB, background RGB), 0..1 float32.

    Each is a local mean over the pixels that are surely foreground (alpha near 1)
    or surely background (near 0): averaging the soft pixels themselves would put
    the very mixture we want to remove into the estimate. Where no sure pixel is in
    reach, the alpha-weighted mean takes over.
    """
    sure_f = (alpha >= _SURE).astype(np.float32) + _FALLBACK * alpha
    sure_b = (alpha <= 1.0 - _SURE).astype(np.float32) + _FALLBACK * (1.0 - alpha)
    estimates = []
    for weight in (sure_f, sure_b):
        total = np.maximum(box_mean(weight, radius), _TINY)[:, :, None]
        estimates.append(box_mean(colour * weight[:, :, None], radius) / total)
    return np.concatenate(estimates, axis=2)


def decontaminate(image: np.ndarray, alpha: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Foreground colours (N x 3 uint8) of N edge pixels.

    ``image`` is their colour, N x 3 float32 in 0..1, and is overwritten: at a
    million edge pixels each temporary is 12 MB, so the arithmetic runs in place.
    ``alpha`` is N float32 in 0..1; ``colours`` N x 6 from ``local_colours``.
    """
    a = alpha[:, None]
    foreground, background = colours[:, :3], colours[:, 3:]
    # F^ + a (I - a F^ - (1 - a) B^)  ==  F^ + a ((I - B^) - a (F^ - B^))
    image -= background
    image -= a * (foreground - background)
    image *= a
    image += foreground
    return unit_to_uint8(image)
