"""Quality floors on the real photos (what the matting is tuned on) and on the lemur set (the fur check).

Scored as ../shared/evaldata/real/reference.csv defines it (bench/evalset.py); the figures
each floor keeps a margin to are bench/quality.py's, in the README's Quality section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.imaging.decode import decode_image
from app.matting import alpha_from_map, refine_matte
from app.model import ModelSet, SaliencyModel
from app.model.passes import PLANS, predict_map
from app.pipeline import RemoveOptions, remove_background
from bench import evalset
from tests.images import REPO

pytestmark = pytest.mark.timeout(1800)  # 86 photos: about a minute idle, far more on a busy laptop

REAL = REPO.parent / "shared" / "evaldata" / "real"
LEMUR = REPO.parent / "shared" / "evaldata" / "dev"
# rembg 2.0.86 with u2netp on the real set: MAE 0.0391, IoU 0.817, edge MAE 0.1526; lemur MAE 0.0302.
# Ours by default (u2net-int8, balanced, refined): 0.0303, 0.853, 0.1176; lemur MAE 0.0287.
DEFAULT_FLOORS = {"MAE": 0.0315, "IoU": 0.845, "edge MAE": 0.1215}
LEMUR_MAE_CEILING = {"u2net-int8": 0.0300, "u2netp": 0.0245}  # measured 0.0287 and 0.0233
# The one category x measure where refinement is not better: the 9 cars' edge MAE, 0.1630 against
# 0.1626, all of it a car in its own tyre smoke (+0.033). Held to that, not let grow.
EDGE_SLACK = 0.001

Scored = tuple[list[evalset.Item], list[evalset.Scores], list[evalset.Scores]]


def _mattes(model: SaliencyModel, root: Path) -> Scored:
    """Each photo's default map once, then refined and unrefined: the scores of both."""
    items, refined, plain = evalset.load(root), [], []
    for item in items:
        rgb = decode_image(item.data, 60_000_000).rgb
        prob = predict_map(rgb, model, PLANS["balanced"])
        refined.append(evalset.score(refine_matte(rgb, prob, preview=model.reduce(rgb)).alpha / 255.0, item))
        plain.append(evalset.score(alpha_from_map(prob, rgb.shape[1], rgb.shape[0]) / 255.0, item))
    return items, refined, plain


@pytest.fixture(scope="module")
def real_scores(models: ModelSet) -> Scored:
    return _mattes(models.models["u2net-int8"], REAL)


def test_the_default_beats_its_floors_on_the_real_photos(real_scores: Scored) -> None:
    items, refined, _ = real_scores
    assert len(items) == 86
    means = evalset.category_means(refined, items)["all"][1]
    assert means[0] <= DEFAULT_FLOORS["MAE"] and means[2] <= DEFAULT_FLOORS["edge MAE"], means
    assert means[1] >= DEFAULT_FLOORS["IoU"], means


def test_refinement_is_never_worse_than_none_in_any_category(real_scores: Scored) -> None:
    items, refined, plain = real_scores
    scored = {"refined": refined, "plain": plain}
    worse = evalset.worse_categories(scored, items, "refined", than="plain")
    assert [metric for _, metric in worse if metric != "edge MAE"] == [], worse
    refined_means, plain_means = evalset.category_means(refined, items), evalset.category_means(plain, items)
    for category, _ in worse:
        assert refined_means[category][1][2] <= plain_means[category][1][2] + EDGE_SLACK, category
    assert [row[1] for row in refined] == [row[1] for row in plain], "no pixel changes sides of 0.5: IoU is the model's"
    assert np.mean(refined, axis=0)[0] < 0.97 * np.mean(plain, axis=0)[0], "and better overall"


@pytest.mark.parametrize("name", ["u2net-int8", "u2netp"])
def test_refinement_still_helps_the_lemurs_fur(models: ModelSet, name: str) -> None:
    _, refined, plain = _mattes(models.models[name], LEMUR)
    refined_mae, plain_mae = float(np.mean([r[0] for r in refined])), float(np.mean([p[0] for p in plain]))
    assert refined_mae <= LEMUR_MAE_CEILING[name] and refined_mae < plain_mae, (refined_mae, plain_mae)


def test_the_pipeline_gives_exactly_what_the_floors_measure(models: ModelSet) -> None:
    item = evalset.load(REAL)[0]
    model = models.models["u2net-int8"]
    body = remove_background(item.data, RemoveOptions(mask_only=True), model).body
    rgb = decode_image(item.data, 60_000_000).rgb
    expected = refine_matte(rgb, predict_map(rgb, model, PLANS["balanced"]), preview=model.reduce(rgb)).alpha
    assert np.abs(evalset.decode_mask(body) * 255 - expected).max() <= 1
