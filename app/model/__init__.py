"""The saliency model: an onnxruntime session over a U²-Net-family ONNX file."""

from app.model.session import ModelError, ModelInfo, SaliencyModel

__all__ = ["ModelError", "ModelInfo", "SaliencyModel"]
