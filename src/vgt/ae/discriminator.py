"""PatchGAN-style discriminator for VGT-AE's adversarial loss: conv layers with anti-aliased (blur-pool)
downsampling, GroupNorm and LeakyReLU, ending in a map of real/fake logits (one per receptive-field patch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class BlurPool(nn.Module):
    """Stride-2 downsampling with a fixed [1, 2, 1] x [1, 2, 1] binomial filter: low-pass before subsampling, so
    the discriminator cannot latch onto aliasing patterns."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


def _group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


@dataclass
class DiscriminatorConfig:
    base_channels: int = 64
    num_downsamples: int = 3
    max_channels: int = 512


class PatchDiscriminator(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> logits [B, 1, H / 2**n, W / 2**n]."""

    def __init__(self, config: DiscriminatorConfig | None = None, in_channels: int = 3):
        super().__init__()
        config = config or DiscriminatorConfig()
        c = config.base_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(config.num_downsamples):
            c_out = min(2 * c, config.max_channels)
            layers += [nn.Conv2d(c, c_out, 3, padding=1), BlurPool(c_out), _group_norm(c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers += [nn.Conv2d(c, c, 3, padding=1), _group_norm(c), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
