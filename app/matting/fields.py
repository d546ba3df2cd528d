"""A low-resolution float map read back at chosen full-resolution pixels.

Refinement works at a capped working resolution; its per-pixel coefficients
are then needed at the photo's size. Upsampling them whole would make
full-size float arrays (768 MB for four channels at 48 MP), so they are
interpolated only where asked, with the same pixel-centre mapping as
``cv2.resize``'s bilinear filter.
"""

from __future__ import annotations

import numpy as np


class UpsampledField:
    def __init__(self, values: np.ndarray, width: int, height: int) -> None:
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.width, self.height = width, height
        low_height, low_width = values.shape[:2]
        self._scale_x = low_width / width
        self._scale_y = low_height / height

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear samples at full-resolution pixels ``(ys, xs)``: N or N x channels.

        Refinement only changes pixels on the subject's edge, a few per cent of a
        photo, so it samples there instead of upsampling whole bands.
        """
        low_height, low_width = self.values.shape[:2]
        fy = np.clip((ys.astype(np.float32) + 0.5) * self._scale_y - 0.5, 0, low_height - 1)
        fx = np.clip((xs.astype(np.float32) + 0.5) * self._scale_x - 0.5, 0, low_width - 1)
        floor_y, floor_x = np.floor(fy), np.floor(fx)
        wy, wx = fy - floor_y, fx - floor_x  # float32: int64 arithmetic would promote to float64
        y0, x0 = floor_y.astype(np.intp), floor_x.astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, low_height - 1), np.minimum(x0 + 1, low_width - 1)
        if self.values.ndim == 3:
            wy, wx = wy[:, None], wx[:, None]
        top = self.values[y0, x0] * (1 - wx) + self.values[y0, x1] * wx
        bottom = self.values[y1, x0] * (1 - wx) + self.values[y1, x1] * wx
        return top * (1 - wy) + bottom * wy
