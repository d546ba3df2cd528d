"""API keys and the rate limit, on both APIs: ours answers in its shape, /v1.0 in remove.bg's; probes and the page stay open."""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.api.auth import KeyRing
from app.model import SaliencyModel
from app.ratelimit import RateLimiter
from app.settings import Settings
from tests.conftest import LiveServer, serving
from tests.images import dev_images, photo, to_bytes

SMALL = to_bytes(photo().resize((170, 110)), "JPEG", quality=90)
KEYS = ("first-key-0123456789", "second-key-0123456789")


@pytest.fixture(scope="module")
def keyed_server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=2, api_keys=KEYS), model) as live:
        yield live


@pytest.fixture(scope="module")
def limited_server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=2, api_keys=KEYS, rate_limit_per_minute=2), model) as live:
        yield live


_LOOPBACK_HOSTS = itertools.count(10)


def from_new_client() -> httpx.Client:
    """A client on an address of its own (127.0.0.x): wrong keys it sends are not charged to other tests."""
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{next(_LOOPBACK_HOSTS)}")
    return httpx.Client(transport=transport, timeout=60)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def remove(
    server: LiveServer, headers: dict[str, str], body: bytes = SMALL, client: httpx.Client | None = None
) -> httpx.Response:
    post = client.post if client else httpx.post
    return post(server.url + "/remove?mask=true", content=body, headers=headers, timeout=60)


def removebg(
    server: LiveServer, headers: dict[str, str], data: dict[str, str] | None = None, client: httpx.Client | None = None
) -> httpx.Response:
    files = {"image_file": ("p.jpg", SMALL, "image/jpeg")}
    post = client.post if client else httpx.post
    url = server.url + "/v1.0/removebg"
    return post(url, data=data or {"channels": "alpha"}, files=files, headers=headers, timeout=60)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Api-Key": KEYS[0]},
        {"x-api-key": KEYS[1]},
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"Authorization": basic("anyone", KEYS[1])},
    ],
    ids=["x-api-key", "second-key", "bearer", "basic"],
)
def test_a_valid_key_opens_both_apis(keyed_server: LiveServer, headers: dict[str, str]) -> None:
    assert remove(keyed_server, headers).status_code == 200
    assert removebg(keyed_server, headers).status_code == 200
    assert httpx.get(keyed_server.url + "/v1.0/account", headers=headers).status_code == 200


def test_our_api_says_401_without_a_key_and_challenges_browsers(keyed_server: LiveServer) -> None:
    response = remove(keyed_server, {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith('Basic realm="bgremove"')


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Api-Key": "wrong"},
        {"X-Api-Key": KEYS[0] + "-but-longer"},
        {"Authorization": "Bearer first"},
        {"Authorization": f"Token {KEYS[0]}"},
    ],
)
def test_our_api_says_403_for_a_wrong_key(keyed_server: LiveServer, headers: dict[str, str]) -> None:
    with from_new_client() as client:
        response = remove(keyed_server, headers, client=client)
    expected = (
        401 if headers.get("Authorization", "").startswith("Token") else 403
    )  # an unknown scheme is no key at all
    assert response.status_code == expected
    assert response.json()["error"]["code"] == ("unauthorized" if expected == 401 else "forbidden")


def test_a_wrong_password_from_a_browser_is_challenged_again(keyed_server: LiveServer) -> None:
    with from_new_client() as client:
        response = remove(keyed_server, {"Authorization": basic("me", "wrong")}, client=client)
    assert response.status_code == 401 and "www-authenticate" in response.headers


@pytest.mark.parametrize(
    "headers", [{}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer nope"}], ids=["none", "wrong", "wrong-bearer"]
)
def test_remove_bg_api_says_403_auth_failed_as_remove_bg_does(
    keyed_server: LiveServer, headers: dict[str, str]
) -> None:
    with from_new_client() as client:
        account = client.get(keyed_server.url + "/v1.0/account", headers=headers)
        responses = (removebg(keyed_server, headers, client=client), account)
    for response in responses:
        assert response.status_code == 403
        (error,) = response.json()["errors"]
        assert error["code"] == "auth_failed" and error["title"]


def test_the_key_is_checked_before_the_upload_is_read(keyed_server: LiveServer) -> None:
    response = httpx.post(keyed_server.url + "/remove", content=b"\xff\xd8\xff" + bytes(40 * 1024 * 1024), timeout=60)
    assert response.status_code == 401  # not 413: nothing was read


def test_probes_the_page_and_the_schema_stay_open(keyed_server: LiveServer) -> None:
    for path in ("/healthz", "/metrics", "/", "/openapi.json"):
        assert httpx.get(keyed_server.url + path).status_code == 200, path


def test_with_keys_no_page_on_the_origin_loads_a_third_party_script(keyed_server: LiveServer, server: LiveServer) -> None:
    """The browser holds the Basic key for this origin: Swagger UI and ReDoc come from a CDN, so they are off."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = httpx.get(keyed_server.url + path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    page = httpx.get(keyed_server.url + "/").text
    assert re.findall(r"<script[^>]*\bsrc=", page) == [] and "cdn" not in page.lower()
    assert "cdn.jsdelivr.net" in httpx.get(server.url + "/docs").text, "without keys the docs stay, as they were"


def test_with_keys_the_open_probe_shows_no_file_system_path(keyed_server: LiveServer, server: LiveServer) -> None:
    keyed, open_ = httpx.get(keyed_server.url + "/healthz").json(), httpx.get(server.url + "/healthz").json()
    assert "path" not in keyed["model"] and all("path" not in model for model in keyed["models"])
    assert keyed["model"]["sha256"] == open_["model"]["sha256"]
    assert open_["model"]["path"].endswith("u2netp.onnx"), "without keys the path stays, for operators"


def test_the_rate_limit_spends_one_token_an_image_and_says_so(limited_server: LiveServer) -> None:
    key = {"X-Api-Key": KEYS[0]}
    first = remove(limited_server, key)
    assert first.status_code == 200
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("2", "1")
    assert int(first.headers["x-ratelimit-reset"]) > 1_600_000_000  # Unix time, as remove.bg sends it
    bad = remove(limited_server, key, body=b"not an image")  # refused images count too, and say so
    assert bad.status_code == 415 and bad.headers["x-ratelimit-remaining"] == "0"

    ours = remove(limited_server, key)
    assert ours.status_code == 429
    assert ours.json()["error"]["code"] == "rate_limited"
    assert int(ours.headers["retry-after"]) >= 1 and ours.headers["x-ratelimit-remaining"] == "0"
    theirs = removebg(limited_server, key)
    assert theirs.status_code == 429 and theirs.json()["errors"][0]["code"] == "rate_limit_exceeded"
    assert int(theirs.headers["retry-after"]) >= 1 and theirs.headers["x-ratelimit-limit"] == "2"

    other_key = removebg(limited_server, {"X-Api-Key": KEYS[1]})  # every key has its own bucket
    assert other_key.status_code == 200 and other_key.headers["x-ratelimit-remaining"] == "1"
    account = httpx.get(limited_server.url + "/v1.0/account", headers=key)  # costs no image
    assert account.status_code == 200


def test_the_token_bucket_refills_smoothly() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0], wall=lambda: 1_700_000_000.0)
    assert all(limiter.take("a").allowed for _ in range(60))
    refused = limiter.take("a")
    assert not refused.allowed and refused.retry_after_s == 1 and refused.reset_at == 1_700_000_060
    now[0] += 1.0
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    assert limiter.take("b").remaining == 59


def test_keys_are_matched_exactly() -> None:
    ring = KeyRing(("alpha", "beta"))
    assert (ring.match("alpha"), ring.match("beta"), ring.match("alph"), ring.match("alphaa"), ring.match("")) == (
        0,
        1,
        None,
        None,
        None,
    )
    assert not KeyRing(()).required


def test_the_web_page_asks_the_browser_for_the_key_and_works(keyed_server: LiveServer) -> None:
    """The page sends no key itself: our 401 challenges, the browser asks once (here: Playwright answers)."""
    from tests.api.test_web import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; `make test` as root installs it")
    from playwright.sync_api import sync_playwright

    source: Path = dev_images()[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(http_credentials={"username": "me", "password": KEYS[1]})
        page = context.new_page()
        page.goto(keyed_server.url + "/")
        page.set_input_files("#file", str(source))
        page.wait_for_selector("#download[aria-disabled='false']", timeout=60_000)
        shown = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
        browser.close()
    assert shown == list(Image.open(source).size)
