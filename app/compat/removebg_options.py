"""remove.bg's v1.0 request parameters, read from the strings clients send into typed options.

Parameters arrive as form fields or JSON values, so everything here starts as
text. An empty value counts as absent (some clients send every field); unknown
fields are ignored, as remove.bg does. A bad value is an ``invalid_option``
naming the parameter and quoting no more than the start of the value; the
router answers it as remove.bg's 400. Every number is finite and bounded
before it is used, so no value, however many digits it has, overflows later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from app import errors
from app.errors import quoted
from app.imaging.color import RGBA, parse_color
from app.imaging.layout import BoxSpec, Length

# Largest output per size, in pixels; None: the photo's own size (up to MAX_PIXELS).
SIZES: dict[str, int | None] = {
    "preview": 250_000,
    "small": 250_000,
    "regular": 250_000,
    "medium": 1_500_000,
    "hd": 4_000_000,
    "full": None,
    "4k": None,
    "auto": None,
}
TYPES = (
    "auto",
    "person",
    "product",
    "animal",
    "car",
    "car_interior",
    "car_part",
    "transportation",
    "graphics",
    "other",
)
TYPE_LEVELS = ("none", "latest", "1", "2")
FORMATS = ("auto", "png", "jpg", "webp", "zip")
CHANNELS = ("rgba", "alpha")
MAX_MARGIN_PX = 500  # remove.bg's cap on each side of crop_margin ...
MAX_MARGIN_PERCENT = 50.0  # ... or 50 % of the subject's size
UNCLASSIFIED_TYPE = "other"  # we do not classify subjects: what type=auto reports
NAMES = frozenset(
    {
        "size",
        "type",
        "type_level",
        "format",
        "channels",
        "bg_color",
        "crop",
        "crop_margin",
        "scale",
        "position",
        "roi",
        "semitransparency",
        "add_shadow",
    }
)  # the parameters read here; any other field is someone else's (the image sources) or ignored
MAX_PARAMETER_BYTES = 256  # longest value of any parameter here; the longest real one, a roi, needs about 40
MAX_LENGTH_VALUE = 1e9  # a length in px or % beyond any picture's side: larger is a mistake, not a bigger crop

_LENGTH = re.compile(r"(-?\d+(?:\.\d+)?)(px|%)?", re.IGNORECASE)
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

Margins = tuple[Length, Length, Length, Length]  # top, right, bottom, left


@dataclass(frozen=True)
class RemoveBgOptions:
    size: str = "preview"
    type: str = "auto"
    format: str = "auto"
    channels: str = "rgba"
    bg_color: RGBA | None = None
    crop: bool = False
    crop_margin: Margins = (Length(0), Length(0), Length(0), Length(0))
    scale: float | None = None  # fraction of the canvas; None: "original"
    position: tuple[float, float] | None = None  # fractions of the free room; None: "original"
    roi: BoxSpec | None = None
    semitransparency: bool = True  # accepted; our mattes have no see-through regions to treat differently
    add_shadow: bool = False

    @property
    def max_pixels(self) -> int | None:
        return SIZES[self.size]

    @property
    def reported_type(self) -> str:
        """What ``X-Type`` says: the type asked for, or ``other`` for ``auto``, since we do not classify."""
        return UNCLASSIFIED_TYPE if self.type == "auto" else self.type


def parse_options(fields: Mapping[str, str]) -> RemoveBgOptions:
    """Typed options from remove.bg's parameters; defaults as remove.bg's."""
    for name, value in fields.items():
        if name in NAMES and len(value) > MAX_PARAMETER_BYTES:
            raise invalid(name, f"{quoted(value)} is longer than {MAX_PARAMETER_BYTES} characters.")
    given = {name: value.strip() for name, value in fields.items() if value.strip()}
    scale = _scale(given["scale"]) if "scale" in given else None
    position = _position(given["position"]) if "position" in given else None
    if scale is not None and "position" not in given:
        position = (0.5, 0.5)  # remove.bg: scaling the subject implies position=center
    _choice(given, "type_level", TYPE_LEVELS, "none")  # checked, then ignored: one model, one level
    return RemoveBgOptions(
        size=_choice(given, "size", tuple(SIZES), "preview"),
        type=_choice(given, "type", TYPES, "auto"),
        format=_choice(given, "format", FORMATS, "auto", aliases={"jpeg": "jpg"}),
        channels=_choice(given, "channels", CHANNELS, "rgba"),
        bg_color=_colour(given["bg_color"]) if "bg_color" in given else None,
        crop=_bool(given, "crop", False),
        crop_margin=_margins(given["crop_margin"]) if "crop_margin" in given else RemoveBgOptions.crop_margin,
        scale=scale,
        position=position,
        roi=_roi(given["roi"]) if "roi" in given else None,
        semitransparency=_bool(given, "semitransparency", True),
        add_shadow=_bool(given, "add_shadow", False),
    )


def invalid(name: str, detail: str) -> errors.ApiError:
    return errors.invalid_option(f"Invalid value for {name}: {detail}")


def _choice(
    given: Mapping[str, str], name: str, choices: tuple[str, ...], default: str, aliases: dict[str, str] | None = None
) -> str:
    value = given.get(name, default).lower()
    value = (aliases or {}).get(value, value)
    if value not in choices:
        raise invalid(name, f"{quoted(given[name])} is not one of {', '.join(choices)}.")
    return value


def _bool(given: Mapping[str, str], name: str, default: bool) -> bool:
    value = given.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise invalid(name, f"{quoted(value)} is not true or false.")


def _colour(text: str) -> RGBA:
    try:
        return parse_color(text)
    except errors.ApiError:
        pass
    raise invalid(
        "bg_color",
        f"{quoted(text)} is not a colour: use hex like 81d4fa, fff or 81d4fa77 (with or without #), "
        "or a name like green.",
    )


def _length(name: str, token: str, default_percent: bool = False) -> Length:
    match = _LENGTH.fullmatch(token)
    if match is None:
        raise invalid(name, f"{quoted(token)} is not a length like 30px or 10%.")
    value = float(match.group(1))
    if not math.isfinite(value) or abs(value) > MAX_LENGTH_VALUE:
        raise invalid(name, f"{quoted(token)} is beyond {MAX_LENGTH_VALUE:,.0f}.")
    unit = (match.group(2) or "").lower()
    percent = unit == "%" or (not unit and default_percent)
    return Length(value, percent=percent)


def _tokens(text: str) -> list[str]:
    return text.replace(",", " ").split()


def _margins(text: str) -> Margins:
    """1, 2, 3 or 4 values in CSS's order; each side capped at 500 px or 50 % as remove.bg caps it."""
    lengths = [_length("crop_margin", token) for token in _tokens(text)]
    if not 1 <= len(lengths) <= 4:
        raise invalid("crop_margin", "give one, two or four values (top, right, bottom, left).")
    if any(length.value < 0 for length in lengths):
        raise invalid("crop_margin", "margins cannot be negative.")
    capped = [
        Length(min(length.value, MAX_MARGIN_PERCENT if length.percent else MAX_MARGIN_PX), length.percent)
        for length in lengths
    ]
    while len(capped) < 4:  # CSS: top [right [bottom [left]]], the missing ones mirror the given
        capped.append(capped[{1: 0, 2: 0, 3: 1}[len(capped)]])
    return capped[0], capped[1], capped[2], capped[3]


def _scale(text: str) -> float | None:
    if text.lower() == "original":
        return None
    length = _length("scale", text, default_percent=True)
    if not length.percent or not 10 <= length.value <= 100:
        raise invalid("scale", f"{quoted(text)}: use original or a value from 10% to 100%.")
    return length.value / 100.0


def _position(text: str) -> tuple[float, float] | None:
    lowered = text.lower()
    if lowered == "original":
        return None
    if lowered == "center":
        return 0.5, 0.5
    lengths = [_length("position", token, default_percent=True) for token in _tokens(text)]
    if len(lengths) not in (1, 2) or any(not length.percent or not 0 <= length.value <= 100 for length in lengths):
        raise invalid(
            "position",
            f"{quoted(text)}: use original, center, or one or two values from 0% to 100% (horizontal, vertical).",
        )
    horizontal = lengths[0].value / 100.0
    vertical = lengths[-1].value / 100.0
    return horizontal, vertical


def _roi(text: str) -> BoxSpec:
    lengths = [_length("roi", token) for token in _tokens(text)]
    if len(lengths) != 4 or any(length.value < 0 for length in lengths):
        raise invalid("roi", f"{quoted(text)}: use four non-negative values x1 y1 x2 y2, each in px or %.")
    return BoxSpec(*lengths)
