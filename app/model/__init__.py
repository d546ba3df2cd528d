"""The saliency model: an onnxruntime session over a U²-Net-family ONNX file."""

from app.model.loader import ModelSet, load_model, load_models
from app.model.session import ModelError, ModelInfo, SaliencyModel

__all__ = ["ModelError", "ModelInfo", "ModelSet", "SaliencyModel", "load_model", "load_models"]
