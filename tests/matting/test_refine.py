from __future__ import annotations

import numpy as np

from app.matting import Matte, RefineSettings, refine_matte
from app.matting.fields import UpsampledField
from app.matting.foreground import local_colours
from app.model import SaliencyModel
from tests.images import photo

ORANGE = np.array([230, 120, 30])
BLUE = np.array([20, 60, 200])


def test_working_resolution_path_matches_full_resolution(model: SaliencyModel) -> None:
    rgb = np.asarray(photo().resize((1360, 880)))
    prob = model.predict(rgb)
    direct = refine_matte(rgb, prob, RefineSettings(working_side=4096)).alpha
    capped = refine_matte(rgb, prob, RefineSettings(working_side=680)).alpha
    assert capped.shape == direct.shape == (880, 1360)
    assert np.abs(capped.astype(int) - direct.astype(int)).mean() < 0.02 * 255


def test_refined_alpha_keeps_the_subject(model: SaliencyModel) -> None:
    rgb = np.asarray(photo())
    alpha = refine_matte(rgb, model.predict(rgb)).alpha
    assert alpha.dtype == np.uint8 and alpha.shape == (440, 680)
    assert alpha[200:260, 300:380].min() == 255 and alpha[:40, :40].max() == 0


def test_edge_colours_lose_the_old_background() -> None:
    """A known orange subject with a soft edge over blue: the edge must come out orange."""
    height, width = 60, 200
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[:, 120:] = 1.0
    alpha[:, 80:120] = np.linspace(0.0, 1.0, 40)[None, :]
    rgb = (alpha[:, :, None] * ORANGE + (1 - alpha[:, :, None]) * BLUE + 0.5).astype(np.uint8)
    alpha8 = (alpha * 255 + 0.5).astype(np.uint8)
    colours = UpsampledField(local_colours(rgb.astype(np.float32) / 255, alpha, 45), width, height)
    cleaned = Matte(alpha8, colours).foreground(rgb, 0, height, 0, width).astype(int)
    edge = (alpha >= 0.3) & (alpha <= 0.9)
    before = np.abs(rgb[edge].astype(int) - ORANGE).max(axis=1).mean()
    after = np.abs(cleaned[edge] - ORANGE).max(axis=1).mean()
    assert before > 60 and after < 15, (before, after)
    assert np.array_equal(cleaned[alpha8 == 255], rgb[alpha8 == 255]), "opaque pixels keep their colour"
