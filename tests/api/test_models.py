"""``model=`` and ``quality=`` on POST /remove: two catalogue models served by one process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from app.model import ModelSet
from app.settings import Settings
from tests.conftest import serving
from tests.images import decode, photo_bytes

JPEG = photo_bytes()


@pytest.fixture(scope="module")
def both(models: ModelSet) -> Iterator[httpx.Client]:
    with serving(Settings(workers=2), models) as live, httpx.Client(base_url=live.url, timeout=120) as http:
        yield http


def _mask(client: httpx.Client, query: str) -> np.ndarray:
    response = client.post(f"/remove?mask=true&{query}", content=JPEG)
    assert response.status_code == 200, response.text
    return np.asarray(decode(response.content), dtype=np.int16)


def test_healthz_lists_the_loaded_models(both: httpx.Client) -> None:
    body = both.get("/healthz").json()
    assert body["default_model"] == "u2net-int8" and body["model"]["name"] == "u2net-int8"
    assert body["model"]["precision"] == "int8" and body["models"][1]["precision"] == "float32"
    assert [model["name"] for model in body["models"]] == ["u2net-int8", "u2netp"]
    assert body["models"][1]["sha256"].startswith("309c8469")


def test_each_model_answers_on_its_own_weights(both: httpx.Client) -> None:
    default, strong, fast = _mask(both, ""), _mask(both, "model=u2net-int8"), _mask(both, "model=u2netp")
    assert np.array_equal(default, strong), "the default is u2net-int8"
    assert np.abs(strong - fast).mean() > 0.5, "u2netp's mask must differ from u2net's"
    for mask in (strong, fast):  # both find the subject of the test photo
        assert mask[200:260, 300:380].min() == 255 and mask[:40, :40].max() == 0


def test_a_model_that_is_not_loaded_is_a_clear_422(both: httpx.Client) -> None:
    response = both.post("/remove?model=u2net_human_seg", content=JPEG)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_option" and "u2net_human_seg" in error["message"] and "u2netp" in error["message"]
    assert both.post("/remove?mask=true", content=JPEG).status_code == 200, "and the service goes on"


@pytest.mark.parametrize("quality", ["fast", "balanced", "best"])
def test_every_quality_gives_the_photos_size(both: httpx.Client, quality: str) -> None:
    mask = _mask(both, f"quality={quality}&model=u2netp")
    assert mask.shape == (440, 680) and mask[200:260, 300:380].min() == 255


def test_best_takes_the_strongest_loaded_model(models: ModelSet) -> None:
    fast_default = ModelSet(models.models, "u2netp")
    assert fast_default.for_request(None, "best") is models.models["u2net-int8"]
    assert fast_default.for_request(None, "balanced") is models.models["u2netp"]
    assert fast_default.for_request("u2netp", "best") is models.models["u2netp"], "a named model wins"
    assert fast_default.for_request("nope", "fast") is None


def test_an_unknown_quality_is_a_422(both: httpx.Client) -> None:
    response = both.post("/remove?quality=ultra", content=JPEG)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_option"
