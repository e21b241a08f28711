"""The pixel-VAE baseline's encoder: DC-AE's convolutional encoder, no VLM.

The paper's convergence claim compares VGT latents against a pixel autoencoder's latents. For the comparison to be
fair the baseline produces the same latent shape on the same grid as VGT-AE. DC-AE's stride is a power of two
(32 for f32c32) while the VLM's is not (28), so the image is first resized to the DC-AE pixel grid — the mirror
image of what the decoder side does (decode at stride 32, resize to stride 28).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vgt.ae.dcae import build_dcae_encoder, encoder_stride


class PixelEncoder(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> latents [B, C, H/stride, W/stride] through DC-AE's encoder."""

    def __init__(self, dcae_config: dict[str, Any], stride: int):
        super().__init__()
        self.encoder = build_dcae_encoder(dcae_config)
        self.stride = stride
        self.dcae_stride = encoder_stride(self.encoder)

    def forward(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        size = (h * self.dcae_stride, w * self.dcae_stride)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return self.encoder(images)
