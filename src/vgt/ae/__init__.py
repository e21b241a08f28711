"""VGT-AE: a VLM's own vision path as a compact, decodable latent space (encoder + bottleneck + DC-AE decoder),
its two training stages, reconstruction metrics, and the pixel-VAE baseline."""

from vgt.ae.bottleneck import normalize_latents
from vgt.ae.config import AEConfig, AEStageConfig
from vgt.ae.model import AEDecoderOutput, AEEncoderOutput, AEOutput, VGTAutoencoder

__all__ = [
    "AEConfig", "AEDecoderOutput", "AEEncoderOutput", "AEOutput", "AEStageConfig", "VGTAutoencoder",
    "normalize_latents",
]
