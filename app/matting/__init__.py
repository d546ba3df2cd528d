"""From the model's low-resolution map to a full-resolution alpha matte."""

from app.matting.refine import Matte, RefineSettings, refine_matte
from app.matting.upsample import alpha_from_map, combine_alpha

__all__ = ["Matte", "RefineSettings", "alpha_from_map", "combine_alpha", "refine_matte"]
