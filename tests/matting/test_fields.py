import cv2
import numpy as np

from app.matting.fields import UpsampledField


def test_samples_match_opencv_bilinear_resize() -> None:
    low = np.random.default_rng(0).random((37, 53, 4), dtype=np.float32)
    field = UpsampledField(low, 400, 290)
    ys, xs = np.nonzero(np.ones((290, 400), dtype=bool))
    expected = cv2.resize(low, (400, 290), interpolation=cv2.INTER_LINEAR)
    assert np.abs(field.at(ys, xs).reshape(290, 400, 4) - expected).max() < 1e-4
    assert field.at(ys[:5], xs[:5]).dtype == np.float32
