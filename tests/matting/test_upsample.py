from __future__ import annotations

import numpy as np

from app.matting import alpha_from_map, combine_alpha


def test_map_is_scaled_to_the_photo_in_uint8() -> None:
    prob = np.zeros((320, 320), dtype=np.float32)
    prob[80:240, 80:240] = 1.0
    alpha = alpha_from_map(prob, 1000, 500)
    assert alpha.shape == (500, 1000) and alpha.dtype == np.uint8
    assert alpha[250, 500] == 255 and alpha[10, 10] == 0


def test_small_photos_are_shrunk() -> None:
    alpha = alpha_from_map(np.full((320, 320), 0.5, dtype=np.float32), 50, 30)
    assert alpha.shape == (30, 50) and int(alpha[15, 25]) in (127, 128)


def test_existing_alpha_multiplies() -> None:
    predicted = np.array([[255, 255, 128, 0]], dtype=np.uint8)
    existing = np.array([[255, 0, 128, 255]], dtype=np.uint8)
    assert combine_alpha(predicted, existing).tolist() == [[255, 0, 64, 0]]
    assert combine_alpha(predicted, None) is predicted
