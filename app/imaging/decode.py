"""Turn uploaded bytes into 8-bit RGB pixels (plus the input's own alpha, if any).

The format is sniffed from the first bytes and Pillow is told to use only
that decoder; the pixel limit is checked on the header, before a single
pixel is decoded, so a decompression bomb or a lying header costs nothing.

Complete RGB and gray JPEGs, nearly every large photo, are decoded by OpenCV
straight into one RGB array: Pillow would hold them at 4 bytes a pixel and
then copy them twice more on the way to numpy (9.5 bytes a pixel at peak).

HEIC/HEIF, what phones save, goes to libheif (pillow-heif) directly, without
Pillow in between: its container gives the upright size before any HEVC is
decoded, and libheif turns the pixels upright itself (irot/imir), so EXIF
orientation, which the HEIF spec says to ignore, is never applied on top.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from io import BytesIO
from types import ModuleType

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from app import errors
from app.imaging import bounds

# Pillow format names by magic bytes; order matters only for readability.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
SUPPORTED_FORMATS = (
    ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
    + (("AVIF",) if features.check("avif") else ())
    + (("HEIF",) if importlib.util.find_spec("pillow_heif") else ())
)
# ISO-BMFF ftyp brands: HEVC-coded HEIF (stills, sequences, multi-layer), AV1-coded AVIF,
# and the codec-neutral HEIF brands, which the compatible brands then tell apart.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_GENERIC_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_FTYP_MAX = 4096  # real ftyp boxes are a few dozen bytes; a huge declared size is not read on
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_BAND_ROWS = 256
_EXIF_ORIENTATION = 0x0112
_JPEG_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {  # EXIF orientation -> what displays it upright
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


@dataclass(frozen=True)
class DecodedImage:
    """An oriented image as the pipeline wants it: contiguous ``uint8`` arrays."""

    rgb: np.ndarray  # H x W x 3
    alpha: np.ndarray | None  # H x W, only when the input had real transparency
    source_format: str
    icc_profile: bytes | None  # only one that looks like a profile and is at most bounds.MAX_ICC_BYTES
    dropped_metadata: tuple[str, ...] = ()  # what the input carried that the output will not: ("icc",)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def sniff_format(data: bytes) -> str:
    """The Pillow format name the bytes really are, whatever the client said."""
    if not data:
        raise errors.empty_input()
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        iso_format = _iso_media_format(data)
        if iso_format in SUPPORTED_FORMATS:
            return iso_format
        raise errors.unsupported_format(
            "This ISO media file is not an image this service reads (" + ", ".join(SUPPORTED_FORMATS) + ")."
        )
    head = data[:512].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in data[:4096].lower():
        raise errors.unsupported_format("SVG is a vector format; send a raster image (JPEG, PNG, WebP, ...).")
    raise errors.unsupported_format(
        "The bytes are not an image format this service reads (" + ", ".join(SUPPORTED_FORMATS) + ")."
    )


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode, orient and normalise an image; every failure is an ``ApiError``."""
    image = _decode_pixels(data, max_pixels)
    icc_profile, dropped = bounds.usable_icc_profile(image.icc_profile)
    if not dropped:
        return image
    return replace(image, icc_profile=icc_profile, dropped_metadata=("icc",))


def _decode_pixels(data: bytes, max_pixels: int) -> DecodedImage:
    source_format = sniff_format(data)
    if source_format == "JPEG":
        bounds.check_jpeg(data)  # before Pillow, which parses every marker up to the first scan in Python
    elif source_format == "PNG":
        bounds.check_png(data)
    try:
        if source_format == "HEIF":
            return _decode_heif(data, max_pixels)
        image = Image.open(BytesIO(data), formats=[source_format])
        width, height = image.size
        if width * height > max_pixels:
            raise errors.too_many_pixels(width, height, max_pixels)
        if width < 1 or height < 1:
            raise errors.unreadable_image("the image has no pixels")
        bounds.check_sides(width, height)
        if source_format == "TIFF":
            bounds.check_tiff(image, len(data))
        if source_format == "JPEG" and image.mode in ("RGB", "L") and _ends_after_last_scan(data):
            rgb = _decode_jpeg(data, _orientation(image))
            if rgb is not None:
                return DecodedImage(rgb=rgb, alpha=None, source_format=source_format, icc_profile=image.info.get("icc_profile"))
        image.load()  # animated images and multi-page TIFFs stop at the first frame
        image = _oriented(image)
        icc_profile = image.info.get("icc_profile") if image.mode != "CMYK" else None
        rgb, alpha = _to_rgb_and_alpha(image)  # some modes (LAB, HSV TIFFs) Pillow cannot convert
    except Image.DecompressionBombError:
        raise errors.ApiError(413, "image_too_large", "The image header declares far too many pixels.") from None
    except errors.ApiError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        raise errors.unreadable_image(_short(exc)) from None
    return DecodedImage(rgb=rgb, alpha=alpha, source_format=source_format, icc_profile=icc_profile)


def _iso_media_format(data: bytes) -> str | None:
    """An ISO-BMFF file's image format by its ftyp box's major and compatible brands, if it is one."""
    declared = int.from_bytes(data[:4], "big")
    end = min(declared if declared >= 16 else 16, len(data), _FTYP_MAX)
    major = data[8:12]
    brands = {major} | {data[at : at + 4] for at in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEVC_BRANDS:
        return "HEIF"
    if major in _GENERIC_HEIF_BRANDS:  # Pillow's AVIF reader takes these majors too and checks the rest
        return "AVIF" if brands & _AVIF_BRANDS else "HEIF"
    return None  # MP4, QuickTime, Canon's CR3, JPEG 2000 in ISO boxes, ...


@functools.cache
def _pillow_heif() -> ModuleType:
    """pillow-heif on the first HEIF upload, not at start-up (about 10 ms of imports)."""
    import pillow_heif

    return pillow_heif


def _decode_heif(data: bytes, max_pixels: int) -> DecodedImage:
    try:
        container = _pillow_heif().open_heif(data, convert_hdr_to_8bit=True)  # boxes only: no pixel yet
        image = container[container.primary_index]
        width, height = image.size  # the upright size: ispe with irot applied
        if width * height > max_pixels:
            raise errors.too_many_pixels(width, height, max_pixels)
        if width < 1 or height < 1:
            raise errors.unreadable_image("the image has no pixels")
        bounds.check_sides(width, height)
        icc_profile = image.info.get("icc_profile") or None
        if image.mode in ("RGB", "RGBA"):  # 8-bit, 10 and 12-bit already scaled down by libheif
            pixels = np.asarray(image)  # decodes here, upright, into one read-only bytes object
            if pixels.shape[0] * pixels.shape[1] > max_pixels:  # libheif may correct the header's size
                raise errors.too_many_pixels(pixels.shape[1], pixels.shape[0], max_pixels)
            if image.mode == "RGBA" and pixels[:, :, 3].min() < 255:
                return DecodedImage(
                    rgb=np.ascontiguousarray(pixels[:, :, :3]),
                    alpha=np.ascontiguousarray(pixels[:, :, 3]),
                    source_format="HEIF",
                    icc_profile=icc_profile,
                )
            return DecodedImage(rgb=pixels[:, :, :3].copy(), alpha=None, source_format="HEIF", icc_profile=icc_profile)
        rgb, alpha = _to_rgb_and_alpha(image.to_pillow())  # monochrome, premultiplied alpha
    except RuntimeError as exc:  # libheif's "other" errors, such as a codec it was built without
        raise errors.unreadable_image(_short(exc)) from None
    return DecodedImage(rgb=rgb, alpha=alpha, source_format="HEIF", icc_profile=icc_profile)


def _ends_after_last_scan(data: bytes) -> bool:
    """An end-of-image marker after the last scan; OpenCV would grey-fill a truncated file
    silently, so anything else goes to Pillow, which refuses it."""
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


def _decode_jpeg(data: bytes, orientation: int) -> np.ndarray | None:
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _JPEG_FLAGS)
    if pixels is None or pixels.ndim != 3:
        return None
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):  # OpenCV before 4.10 decodes to BGR only
        cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=pixels)
    turn = _ORIENT.get(orientation)
    return np.ascontiguousarray(turn(pixels)) if turn else pixels


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF means "as stored"
        return 1


def _oriented(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation in place (the copying form duplicates even upright photos);
    a broken EXIF block is ignored, not fatal."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - malformed EXIF must not reject a decodable photo
        pass
    return image


def _to_rgb_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        gray = _gray_to_uint8(np.asarray(image), image.mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None
    if _has_transparency(image):
        rgba = _as_array(image.convert("RGBA"))
        alpha = rgba[:, :, 3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[:, :, :3]), None
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(alpha)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return _as_array(image), None


def _as_array(image: Image.Image) -> np.ndarray:
    """``np.asarray(image)`` band by band: the one-shot form goes through ``tobytes()``,
    which holds the pixels twice more while it joins its chunks."""
    width, height = image.size
    first = np.asarray(image.crop((0, 0, width, min(_BAND_ROWS, height))))
    out = np.empty((height, *first.shape[1:]), dtype=first.dtype)
    out[: first.shape[0]] = first
    for top in range(_BAND_ROWS, height, _BAND_ROWS):
        out[top : top + _BAND_ROWS] = np.asarray(image.crop((0, top, width, min(top + _BAND_ROWS, height))))
    return out


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _gray_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit and float grayscale to 0..255 instead of clipping it."""
    if mode == "F":
        peak = float(np.nanmax(values)) if values.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(np.nan_to_num(values) * scale + 0.5, 0, 255).astype(np.uint8)
    values = values.astype(np.int32, copy=False)
    if mode == "I" and values.max(initial=0) <= 255:
        return np.clip(values, 0, 255).astype(np.uint8)
    return ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
