"""VGT-AR: a VLM's language model tuned to generate VGT-AE latents with position queries and a flow head."""

from vgt.ar.config import AR_PRESETS, ARConfig, FlowHeadConfig, SamplingConfig, ar_preset
from vgt.ar.model import VGTForGeneration

__all__ = ["AR_PRESETS", "ARConfig", "FlowHeadConfig", "SamplingConfig", "VGTForGeneration", "ar_preset"]
