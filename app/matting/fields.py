"""A low-resolution float map read back at chosen full-resolution pixels.

Refinement works at a capped working resolution; its per-pixel coefficients
are then needed at the photo's size. Upsampling them whole would make
full-size float arrays (768 MB for four channels at 48 MP), so they are
interpolated only where asked, with the same pixel-centre mapping as
``cv2.resize``'s bilinear filter (and its 1/32-pixel weights).
"""

from __future__ import annotations

import cv2
import numpy as np

_MAP_COLUMNS = 1024  # remap's maps must stay under 32767 a side


class UpsampledField:
    def __init__(self, values: np.ndarray, width: int, height: int) -> None:
        values = values if values.ndim == 3 else values[:, :, None]
        # cv2.remap interpolates at most four channels at once
        self._groups = [np.ascontiguousarray(values[:, :, c : c + 4], dtype=np.float32) for c in range(0, values.shape[2], 4)]
        self._scale_x = values.shape[1] / width
        self._scale_y = values.shape[0] / height

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear samples (N x channels) at the full-resolution pixels ``(ys, xs)``.

        Refinement only changes pixels on the subject's edge, a few per cent of a
        photo, so it samples there instead of upsampling whole bands. The points
        are laid out as a small image of coordinates for ``cv2.remap``, 3-4x
        faster than gathering the four neighbours in numpy.
        """
        count = ys.size
        rows = max(1, -(-count // _MAP_COLUMNS))
        padding = rows * _MAP_COLUMNS - count
        map_x = np.pad((xs.astype(np.float32) + 0.5) * self._scale_x - 0.5, (0, padding)).reshape(rows, _MAP_COLUMNS)
        map_y = np.pad((ys.astype(np.float32) + 0.5) * self._scale_y - 0.5, (0, padding)).reshape(rows, _MAP_COLUMNS)
        samples = [
            cv2.remap(group, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(rows * _MAP_COLUMNS, -1)
            for group in self._groups
        ]
        return np.concatenate(samples, axis=1)[:count]
