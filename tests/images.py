"""Test images made in code, plus readers for the shared dev set."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEV_SET = REPO.parent / "shared" / "evaldata" / "dev"


def dev_images() -> list[Path]:
    return sorted((DEV_SET / "images").glob("*.jpg"))


def dev_mask(image_path: Path) -> np.ndarray:
    """Ground-truth alpha in 0..1 for a dev-set image."""
    mask = Image.open(DEV_SET / "masks" / (image_path.stem + ".png")).convert("L")
    return np.asarray(mask, dtype=np.float32) / 255.0


def photo_bytes(name: str = "lemur_original") -> bytes:
    return (DEV_SET / "images" / f"{name}.jpg").read_bytes()


def photo(name: str = "lemur_original") -> Image.Image:
    return Image.open(BytesIO(photo_bytes(name))).convert("RGB")


def to_bytes(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def large_photo_bytes(megapixels: float) -> bytes:
    """A real photo upscaled to ``megapixels``, as JPEG: big work for the pipeline."""
    image = photo()
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    return to_bytes(image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR), "JPEG", quality=85)


def decode(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height``: a decompression bomb's header."""
    import struct
    import zlib

    data = bytearray(to_bytes(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """The dev photo (680x440) stored unrotated, with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return to_bytes(photo(), "JPEG", quality=90, exif=exif.tobytes())


def heif_bytes(image: Image.Image, orientation: int = 1, quality: int = 90, **params: object) -> bytes:
    """``image`` as HEIC, through libheif's own HEVC encoder. An ``orientation`` other than 1 is
    written as a phone writes it: the pixels as they are, irot/imir boxes and an EXIF tag."""
    import pillow_heif

    container = pillow_heif.from_pillow(Image.fromarray(np.asarray(image)))  # no EXIF: no pre-rotation
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        container[0].info["exif"] = exif.tobytes()  # the encoder writes irot/imir from this tag
    buffer = BytesIO()
    container.save(buffer, quality=quality, **params)
    return buffer.getvalue()


def tricky_inputs() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """Inputs in every awkward Pillow mode, each with the (width, height) the output must have."""
    import cv2

    base = photo().resize((340, 220))
    size = base.size
    gray16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgb16 = (np.asarray(base, dtype=np.uint16) * 257)[:, :, ::-1].copy()
    ok, rgb16_png = cv2.imencode(".png", rgb16)
    assert ok
    half_alpha = Image.new("L", size, 255)
    half_alpha.paste(0, (0, 0, size[0] // 2, size[1]))
    rgba = base.copy()
    rgba.putalpha(half_alpha)
    la = base.convert("L")
    la.putalpha(half_alpha)
    palette = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    frames = [base, Image.new("RGB", size, (255, 0, 0)), Image.new("RGB", size, (0, 0, 255))]
    animated = BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "cmyk_jpeg": (to_bytes(base.convert("CMYK"), "JPEG", quality=90), size),
        "gray16_png": (to_bytes(Image.fromarray(gray16), "PNG"), size),
        "rgb16_png": (rgb16_png.tobytes(), size),
        "palette_transparency_png": (to_bytes(palette, "PNG", transparency=0), size),
        "la_png": (to_bytes(la, "PNG"), size),
        "bilevel_png": (to_bytes(base.convert("1"), "PNG"), size),
        "rgba_png": (to_bytes(rgba, "PNG"), size),
        "animated_gif": (animated.getvalue(), size),
        "webp": (to_bytes(base, "WEBP", quality=90), size),
        "bmp": (to_bytes(base, "BMP"), size),
        "tiff": (to_bytes(base, "TIFF"), size),
        "exif_rotated_jpeg": (exif_rotated_jpeg(6), (440, 680)),
    }
