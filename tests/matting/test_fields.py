import cv2
import numpy as np

from app.matting.fields import UpsampledField


def test_samples_match_opencv_bilinear_resize() -> None:
    yy, xx = np.mgrid[0:37, 0:53].astype(np.float32)
    low = np.dstack([np.sin(xx / 7) + np.cos(yy / 5) * c for c in range(1, 7)]).astype(np.float32)  # smooth, 6 channels
    field = UpsampledField(low, 400, 290)
    ys, xs = np.nonzero(np.ones((290, 400), dtype=bool))
    expected = cv2.resize(low, (400, 290), interpolation=cv2.INTER_LINEAR)
    sampled = field.at(ys, xs)
    assert sampled.shape == (290 * 400, 6) and sampled.dtype == np.float32
    # remap weighs neighbours in 1/32 steps: errors stay far below 1 % of the field's range
    assert np.abs(sampled.reshape(290, 400, 6) - expected).max() < 0.005 * float(low.max() - low.min())
    assert np.array_equal(field.at(ys[:5], xs[:5]), sampled[:5])
