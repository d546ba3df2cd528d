"""``GET /``: the page itself, and a real browser (Debian's chromium, driven by Playwright) using it."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import LiveServer
from tests.images import dev_images

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Without these, chromium phones home at start-up and this closed network refuses it, many times over.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_page_is_self_contained_and_its_csp_admits_exactly_its_inline_code(client: httpx.Client) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything from elsewhere"
    policy = response.headers["content-security-policy"]
    for tag in ("script", "style"):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy


def test_the_page_is_not_part_of_the_api_schema(client: httpx.Client) -> None:
    assert "/" not in client.get("/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root")
        pytest.skip(f"{CHROMIUM} is missing; `make test` as root installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server: LiveServer) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(server.url + "/")
    page.problems = problems
    yield page
    context.close()


def test_a_dropped_photo_comes_back_cut_out_at_its_size_and_downloads(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = dev_images()[0]
    width, height = Image.open(source).size

    page.set_input_files("#file", str(source))
    page.wait_for_selector("#download[aria-disabled='false']", timeout=60_000)

    shown = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert shown == [width, height]
    assert page.is_visible("#before") and page.is_visible("#divider")
    with page.expect_download() as pending:
        page.click("#download")
    download = pending.value
    assert download.suggested_filename == f"{source.stem}-cutout.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    cutout = Image.open(saved)
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == (width, height)
    assert cutout.getchannel("A").getextrema() == (0, 255)
    assert page.problems == []  # no script errors, no CSP violations


def test_an_option_change_reruns_the_photo(page) -> None:  # type: ignore[no-untyped-def]
    page.set_input_files("#file", str(dev_images()[1]))
    page.wait_for_selector("#download[aria-disabled='false']", timeout=60_000)

    page.select_option("#quality", "fast")
    page.select_option("#format", "jpeg")
    page.check("#crop")
    page.wait_for_selector("#download[download$='-cutout.jpg'][aria-disabled='false']", timeout=60_000)

    assert page.eval_on_selector("#compare", "figure => figure.classList.contains('single')")  # cropped: no divider
    width = page.eval_on_selector("#after", "img => img.naturalWidth")
    assert 0 < width < Image.open(dev_images()[1]).width
    assert page.problems == []


def test_a_photo_dropped_on_the_page_is_cut_out(page) -> None:  # type: ignore[no-untyped-def]
    source = dev_images()[2]
    transfer = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", { type: "image/jpeg" }));
            return transfer;
        }""",
        list(source.read_bytes()),
    )

    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#download[download='dropped-cutout.png'][aria-disabled='false']", timeout=60_000)

    shown = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert shown == list(Image.open(source).size)


def test_an_unreadable_file_shows_the_api_message(page) -> None:  # type: ignore[no-untyped-def]
    page.set_input_files("#file", str(dev_images()[0]))
    page.wait_for_selector("#download[aria-disabled='false']", timeout=60_000)

    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo at all"}])

    error = page.wait_for_selector("#error:not(:empty)", timeout=30_000)

    assert "The bytes are not an image format this service reads" in error.inner_text()
    assert page.get_attribute("#result", "hidden") is not None


def test_the_divider_moves_by_keyboard(page) -> None:  # type: ignore[no-untyped-def]
    page.set_input_files("#file", str(dev_images()[0]))
    page.wait_for_selector("#download[aria-disabled='false']", timeout=60_000)

    page.focus("#divider")
    for _ in range(10):
        page.keyboard.press("ArrowRight")

    split = page.eval_on_selector("#compare", "figure => figure.style.getPropertyValue('--split')")
    assert split == "60%"


def test_the_page_fits_a_phone_screen(browser, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url + "/")

    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.is_visible("text=Choose a photo")
    context.close()
