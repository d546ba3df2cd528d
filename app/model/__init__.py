"""The saliency model: an onnxruntime session over a U²-Net-family ONNX file."""

from app.model.loader import load_model
from app.model.session import ModelError, ModelInfo, SaliencyModel

__all__ = ["ModelError", "ModelInfo", "SaliencyModel", "load_model"]
