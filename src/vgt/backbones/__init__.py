"""VLM backbones: what VGT needs from a vision-language model (see `base`), and loaders by name (`registry`)."""

from vgt.backbones.base import Backbone, DecoderOutput, TextDecoder, VisionEncoder
from vgt.backbones.registry import available_backbones, detect_backbone, load_backbone, register

__all__ = [
    "Backbone",
    "DecoderOutput",
    "TextDecoder",
    "VisionEncoder",
    "available_backbones",
    "detect_backbone",
    "load_backbone",
    "register",
]
