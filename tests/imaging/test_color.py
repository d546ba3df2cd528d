from __future__ import annotations

import pytest

from app.errors import ApiError
from app.imaging.color import parse_color


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("#ff8800", (255, 136, 0, 255)),
        ("ff8800", (255, 136, 0, 255)),
        ("#ff880080", (255, 136, 0, 128)),
        ("FF880080", (255, 136, 0, 128)),
        ("#abc", (170, 187, 204, 255)),
        ("white", (255, 255, 255, 255)),
        ("RebeccaPurple", (102, 51, 153, 255)),
        ("transparent", (0, 0, 0, 0)),
    ],
)
def test_colours(text: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_color(text) == rgba


@pytest.mark.parametrize("text", ["", "nocolour", "#12345", "#gggggg", "rgb(1,2)", "rgb(999,0,0)", "hsl(0,1000%,50%)"])
def test_bad_colours_are_422(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_color(text)
    assert caught.value.status == 422


def test_a_long_bad_colour_is_quoted_by_its_start_only() -> None:
    with pytest.raises(ApiError) as caught:
        parse_color("x" * 100_000)
    assert len(caught.value.message) < 300
