"""remove.bg's parameters, parsed: every value and edge the HTTP tests do not each pay a model run for."""

from __future__ import annotations

import pytest

from app.compat.removebg_options import SIZES, TYPES, RemoveBgOptions, parse_options
from app.errors import ApiError
from app.imaging.layout import BoxSpec, Length


def test_defaults_are_remove_bg_defaults() -> None:
    options = parse_options({})
    assert options == RemoveBgOptions()
    assert (options.size, options.max_pixels, options.format, options.channels) == ("preview", 250_000, "auto", "rgba")
    assert options.reported_type == "other" and options.semitransparency and not options.crop and not options.add_shadow


def test_empty_values_count_as_absent() -> None:
    assert parse_options({"size": "", "bg_color": " ", "scale": "", "crop": ""}) == RemoveBgOptions()


@pytest.mark.parametrize(
    ("size", "pixels"),
    [
        ("preview", 250_000),
        ("small", 250_000),
        ("regular", 250_000),
        ("medium", 1_500_000),
        ("hd", 4_000_000),
        ("full", None),
        ("4k", None),
        ("AUTO", None),
    ],
)
def test_sizes(size: str, pixels: int | None) -> None:
    assert parse_options({"size": size}).max_pixels == pixels


@pytest.mark.parametrize("kind", TYPES)
def test_every_remove_bg_type_is_echoed_except_auto(kind: str) -> None:
    assert parse_options({"type": kind}).reported_type == ("other" if kind == "auto" else kind)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [("png", "png"), ("JPG", "jpg"), ("jpeg", "jpg"), ("webp", "webp"), ("zip", "zip"), ("auto", "auto")],
)
def test_formats(given: str, parsed: str) -> None:
    assert parse_options({"format": given}).format == parsed


@pytest.mark.parametrize(
    ("colour", "rgba"),
    [
        ("fff", (255, 255, 255, 255)),
        ("#81d4fa", (129, 212, 250, 255)),
        ("81d4fa77", (129, 212, 250, 119)),
        ("f008", (255, 0, 0, 136)),
        ("green", (0, 128, 0, 255)),
    ],
)
def test_bg_colours(colour: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_options({"bg_color": colour}).bg_color == rgba


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("true", True), ("TRUE", True), ("1", True), ("on", True), ("false", False), ("0", False), ("no", False)],
)
def test_booleans(value: str, parsed: bool) -> None:
    options = parse_options({"crop": value, "add_shadow": value, "semitransparency": value})
    assert options.crop == options.add_shadow == options.semitransparency == parsed


px, pc = Length, (lambda value: Length(value, percent=True))


@pytest.mark.parametrize(
    ("margin", "sides"),
    [
        ("0", (px(0),) * 4),
        ("30px", (px(30),) * 4),
        ("12", (px(12),) * 4),
        ("10%", (pc(10),) * 4),
        ("10px 20%", (px(10), pc(20), px(10), pc(20))),
        ("1px 2px 3px", (px(1), px(2), px(3), px(2))),
        ("1px, 2px, 3px, 4px", (px(1), px(2), px(3), px(4))),
        ("500px", (px(500),) * 4),
        ("501px", (px(500),) * 4),
        ("50%", (pc(50),) * 4),
        ("50.5%", (pc(50),) * 4),
        ("1.5px", (px(1.5),) * 4),
    ],
)
def test_crop_margin(margin: str, sides: tuple[Length, ...]) -> None:
    assert parse_options({"crop_margin": margin}).crop_margin == sides


@pytest.mark.parametrize(
    ("scale", "parsed", "position"),
    [("original", None, None), ("10%", 0.1, (0.5, 0.5)), ("100%", 1.0, (0.5, 0.5)), ("55", 0.55, (0.5, 0.5))],
)
def test_scale_implies_center(scale: str, parsed: float | None, position: tuple[float, float] | None) -> None:
    options = parse_options({"scale": scale})
    assert options.scale == parsed and options.position == position


@pytest.mark.parametrize(
    ("position", "parsed"),
    [
        ("original", None),
        ("center", (0.5, 0.5)),
        ("0%", (0.0, 0.0)),
        ("100%", (1.0, 1.0)),
        ("25% 75%", (0.25, 0.75)),
        ("10 90", (0.1, 0.9)),
    ],
)
def test_position(position: str, parsed: tuple[float, float] | None) -> None:
    assert parse_options({"position": position}).position == parsed


def test_an_explicit_position_wins_over_the_implied_center() -> None:
    assert parse_options({"scale": "50%", "position": "original"}).position is None


def test_roi_in_pixels_percent_or_both_resolves_against_the_photo() -> None:
    roi = parse_options({"roi": "0 10px 50% 100%"}).roi
    assert roi == BoxSpec(px(0), px(10), pc(50), pc(100))
    assert roi.resolve(400, 200) == (0, 10, 200, 200)
    assert parse_options({"roi": "0 0 9999px 9999px"}).roi.resolve(400, 200) == (0, 0, 400, 200)  # clipped to the photo


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("size", "huge"),
        ("type", "spaceship"),
        ("type_level", "3"),
        ("format", "gif"),
        ("channels", "rgb"),
        ("bg_color", "notacolour"),
        ("bg_color", "12345"),
        ("crop", "maybe"),
        ("add_shadow", "2"),
        ("semitransparency", "x"),
        ("crop_margin", "-5px"),
        ("crop_margin", "ten"),
        ("crop_margin", "1px 2px 3px 4px 5px"),
        ("crop_margin", "5em"),
        ("scale", "9%"),
        ("scale", "101%"),
        ("scale", "0.5"),
        ("scale", "half"),
        ("scale", "50px"),
        ("position", "-1%"),
        ("position", "101%"),
        ("position", "left"),
        ("position", "1% 2% 3%"),
        ("position", "5px"),
        ("roi", "1 2 3"),
        ("roi", "-1 0 10 10"),
        ("roi", "a b c d"),
    ],
)
def test_bad_values_name_their_parameter(name: str, value: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_options({name: value})
    assert raised.value.code == "invalid_option" and name in raised.value.message


def test_an_empty_region_is_refused_when_resolved() -> None:
    with pytest.raises(ApiError, match="empty"):
        parse_options({"roi": "50% 0% 40% 100%"}).roi.resolve(100, 100)


def test_every_size_has_a_limit_entry() -> None:
    assert set(SIZES) == {"preview", "small", "regular", "medium", "hd", "full", "4k", "auto"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("roi", "0 0 " + "9" * 309 + " 10"),  # float("9" * 309) is inf: once a 500 from round()
        ("roi", "0 0 " + "9" * 200 + " 10"),  # finite, but beyond any picture
        ("roi", "0 0 " + "9" * 200 + "% 10"),  # a percent that overflows once multiplied by the width
        ("crop_margin", "9" * 250),
        ("position", "9" * 250 + "%"),
        ("scale", "1e999"),
        ("scale", "nan"),
        ("crop_margin", "inf"),
        ("crop_margin", "1" * 40_000),  # over the length cap: refused unparsed
        ("bg_color", "rgb(999,0,0)"),  # Pillow passes channels past 255 through
        ("bg_color", "hsl(0,1000%,50%)"),
    ],
)
def test_huge_or_non_finite_numbers_are_invalid_not_an_overflow(name: str, value: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_options({name: value})
    assert raised.value.code == "invalid_option" and name in raised.value.message
    assert len(raised.value.message) < 300, "the message quotes only the start of the value"


def test_a_length_up_to_the_bound_is_still_a_length() -> None:
    assert parse_options({"roi": "0 0 1000000000 10"}).roi.resolve(400, 200) == (0, 0, 400, 10)
