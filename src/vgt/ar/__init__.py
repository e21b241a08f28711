"""VGT-AR: a VLM's language model tuned to generate VGT-AE latents with position queries and a flow head."""

from vgt.ar.config import ARConfig, FlowHeadConfig, SamplingConfig
from vgt.ar.model import VGTForGeneration

__all__ = ["ARConfig", "FlowHeadConfig", "SamplingConfig", "VGTForGeneration"]
