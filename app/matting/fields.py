"""A low-resolution float map read back at full resolution, one band of rows at a time.

Refinement works at a capped working resolution; its per-pixel coefficients
are then needed at the photo's size. Upsampling them whole would make
full-size float arrays (768 MB for four channels at 48 MP), so bands are
interpolated on demand with the same pixel-centre mapping as ``cv2.resize``.
"""

from __future__ import annotations

import cv2
import numpy as np


class UpsampledField:
    def __init__(self, values: np.ndarray, width: int, height: int) -> None:
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.width, self.height = width, height
        low_height, low_width = values.shape[:2]
        self._map_x = ((np.arange(width, dtype=np.float32) + 0.5) * (low_width / width) - 0.5)[None, :]
        self._scale_y = low_height / height

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows ``top:bottom`` at full resolution: (rows, width) or (rows, width, channels)."""
        if self.values.shape[:2] == (self.height, self.width):
            return self.values[top:bottom]
        map_y = ((np.arange(top, bottom, dtype=np.float32) + 0.5) * self._scale_y - 0.5)[:, None]
        map_x = np.broadcast_to(self._map_x, (bottom - top, self.width))
        map_y = np.broadcast_to(map_y, (bottom - top, self.width))
        return cv2.remap(self.values, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear samples at full-resolution pixels ``(ys, xs)``: N or N x channels.

        Refinement only changes pixels on the subject's edge, a few per cent of a
        photo, so it samples there instead of upsampling whole bands.
        """
        low_height, low_width = self.values.shape[:2]
        fy = np.clip((ys.astype(np.float32) + 0.5) * self._scale_y - 0.5, 0, low_height - 1)
        fx = np.clip((xs.astype(np.float32) + 0.5) * (low_width / self.width) - 0.5, 0, low_width - 1)
        floor_y, floor_x = np.floor(fy), np.floor(fx)
        wy, wx = fy - floor_y, fx - floor_x  # float32: int64 arithmetic would promote to float64
        y0, x0 = floor_y.astype(np.intp), floor_x.astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, low_height - 1), np.minimum(x0 + 1, low_width - 1)
        if self.values.ndim == 3:
            wy, wx = wy[:, None], wx[:, None]
        top = self.values[y0, x0] * (1 - wx) + self.values[y0, x1] * wx
        bottom = self.values[y1, x0] * (1 - wx) + self.values[y1, x1] * wx
        return top * (1 - wy) + bottom * wy
