"""Parse the background colours clients send: ``#rrggbb``, ``#rrggbbaa``, ``rgb`` or a CSS name."""

from __future__ import annotations

import re

from PIL import ImageColor

from app import errors

RGBA = tuple[int, int, int, int]
_BARE_HEX = re.compile(r"[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}")


def parse_color(text: str) -> RGBA:
    """A colour as RGBA; hex may come without ``#`` since ``#`` must be escaped in a URL."""
    value = text.strip()
    if value.lower() == "transparent":
        return (0, 0, 0, 0)
    candidates = [value]
    if _BARE_HEX.fullmatch(value):
        candidates.append("#" + value)
    for candidate in candidates:
        try:
            rgba = ImageColor.getcolor(candidate, "RGBA")
        except ValueError:
            continue
        if all(0 <= channel <= 255 for channel in rgba):  # Pillow passes rgb(999,0,0) and hsl(0,1000%,50%) through
            return rgba  # type: ignore[return-value]
    raise errors.invalid_option(
        f"bg={errors.quoted(text)} is not a colour: use hex like #ff8800 or #ff880080 (escape # as %23), or a CSS name like 'white'."
    )
