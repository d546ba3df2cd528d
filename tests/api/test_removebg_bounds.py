"""remove.bg's layout amplifiers over real HTTP: thin backgrounds and the drop shadow at size=full answer 200.

A 1x3000 background (99 bytes) behind a 500x500 photo cost 2 GB, a 1x60000 one a 500: the part seen is now
cropped before it is scaled (tests/imaging/test_layout.py bounds the memory). The shadow is made at a reduced
resolution; here it only has to come out of a large photo at full size as a shadow.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import decode, large_photo_bytes, photo, to_bytes

PHOTO = to_bytes(photo().resize((500, 500)), "JPEG", quality=90)
STRIP = (40, 90, 160)


def post(client: httpx.Client, image: bytes, data: dict[str, str], background: bytes | None = None) -> httpx.Response:
    files = {"image_file": ("photo.jpg", image, "image/jpeg")}
    if background is not None:
        files["bg_image_file"] = ("bg.png", background, "image/png")
    return client.post("/v1.0/removebg", data=data, files=files)


@pytest.mark.parametrize("size", [(1, 3000), (1, 60_000), (60_000, 1), (2, 1)])
def test_a_background_of_any_aspect_is_cover_scaled_at_full_size(client: httpx.Client, size: tuple[int, int]) -> None:
    background = to_bytes(Image.new("RGB", size, STRIP), "PNG")
    assert len(background) < 1024
    response = post(client, PHOTO, {"size": "full", "format": "png"}, background)
    assert response.status_code == 200, response.text
    pixels = np.asarray(decode(response.content).convert("RGB")).astype(int)
    assert pixels.shape == (500, 500, 3)
    for corner in (pixels[1, 1], pixels[1, -2], pixels[-2, 1], pixels[-2, -2]):
        assert np.abs(corner - STRIP).max() <= 2, corner
    assert client.get("/healthz").status_code == 200


def test_a_shadow_at_full_size_of_a_large_photo_is_a_shadow(client: httpx.Client) -> None:
    image = large_photo_bytes(6.0)
    plain = post(client, image, {"size": "full", "format": "png", "bg_color": "white"})
    shaded = post(client, image, {"size": "full", "format": "png", "bg_color": "white", "add_shadow": "true"})
    assert plain.status_code == 200 and shaded.status_code == 200, shaded.text
    darker = (np.asarray(decode(plain.content)).astype(int) - np.asarray(decode(shaded.content))).sum(axis=2)
    assert darker.shape[0] * darker.shape[1] > 5_000_000
    assert darker.max() > 30 and darker.min() >= -3, "a shadow only darkens"
    assert (darker > 10).mean() > 0.01, "and it is a soft one, wider than an edge"
