"""The contract: published remove.bg client libraries from PyPI, pointed at us by their endpoint URL alone.

Each library keeps remove.bg's URL in a module-level constant; the test changes
that and nothing else, calls the library as its README does, and checks the
cut-out it saved. Installed by the ``dev`` extra (pyproject.toml).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import LiveServer
from tests.images import photo, to_bytes

SOURCE_SIZE = (340, 220)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(to_bytes(photo().resize(SOURCE_SIZE), "JPEG", quality=90))
    return path


def assert_cutout(path: Path, size: tuple[int, int] = SOURCE_SIZE) -> None:
    cutout = Image.open(path)
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == size
    assert cutout.getchannel("A").getextrema() == (0, 255), "a cut-out has transparency and an opaque subject"


def test_remove_bg_api(server: LiveServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """remove-bg-api: reads the balance from /v1.0/account, then subtracts int(X-Credits-Charged)."""
    import remove_bg_api

    monkeypatch.setattr(remove_bg_api, "API_URL", server.url + "/v1.0")
    client = remove_bg_api.RemoveBg("any-key")
    before = client.account.balance()
    saved = client.remove_bg_file(str(source), out_path=str(tmp_path / "cut.png"), size="preview", raw=False)
    assert_cutout(Path(saved))
    assert client.account.balance() == before and client.account.free_api_calls() > 0


def test_removebg(server: LiveServer, source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """removebg: saves next to the input as <name>_no_bg.png; its default size "regular" is 0.25 MP."""
    from removebg import removebg as module

    monkeypatch.setattr(module, "API_ENDPOINT", server.url + "/v1.0/removebg")
    module.RemoveBg("any-key", str(source.parent / "errors.log")).remove_background_from_img_file(str(source))
    assert_cutout(Path(str(source) + "_no_bg.png"))


def test_rembgpy(server: LiveServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rembgpy: urlencoded, with every parameter remove.bg has (roi "0 0 100% 100%", type_level, semitransparency ...).

    Its file method is shadowed by its URL method of the same name (a bug of 1.0.1), so base64 it is.
    """
    from rembgpy import bg as module

    monkeypatch.setattr(module, "base_url", server.url + "/v1.0/removebg")
    target = tmp_path / "rembgpy.png"
    encoded = base64.b64encode(source.read_bytes()).decode()
    result = module.RemBg("any-key", str(tmp_path / "errors.log")).remove_b64(
        encoded, size="auto", format="png", nfn=str(target)
    )
    assert result == "[*] Process finished."
    assert_cutout(target)
