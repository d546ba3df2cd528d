"""The pipeline end to end on real photos (its quality floors are in tests/test_quality.py)."""

from __future__ import annotations

import numpy as np
import pytest

from app.model import SaliencyModel
from app.pipeline import RemoveOptions, remove_background
from tests.images import decode, photo_bytes


def test_crop_shrinks_to_the_subject(model: SaliencyModel) -> None:
    full = remove_background(photo_bytes(), RemoveOptions(), model)
    cropped = remove_background(photo_bytes(), RemoveOptions(crop=True), model)
    assert (full.width, full.height) == (680, 440)
    assert cropped.width < full.width and cropped.height <= full.height
    alpha = np.asarray(decode(cropped.body))[..., 3]
    assert alpha[:, 0].max() > 8 or alpha[:, -1].max() > 8 or alpha[0].max() > 8


@pytest.mark.parametrize(
    ("options", "mode"),
    [
        (RemoveOptions(), "RGBA"),
        (RemoveOptions(format="webp"), "RGBA"),
        (RemoveOptions(format="jpeg"), "RGB"),
        (RemoveOptions(background=(255, 0, 0, 255)), "RGB"),
        (RemoveOptions(background=(255, 0, 0, 128)), "RGBA"),
        (RemoveOptions(mask_only=True), "L"),
    ],
)
def test_output_modes(model: SaliencyModel, options: RemoveOptions, mode: str) -> None:
    result = remove_background(photo_bytes(), options, model)
    image = decode(result.body)
    assert image.mode == mode and image.size == (680, 440)
    assert set(result.timings_ms) == {"decode", "model", "matte", "encode"}


