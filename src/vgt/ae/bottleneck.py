"""The bottleneck from the VLM's visual tokens (width D) down to the decoder's latent channels, and the latent
regularisers of stage 2 (per-token channel LayerNorm, per-sample noise)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LATENT_NORM_EPS = 1e-6


class ResidualMLPBlock(nn.Module):
    """x + Linear(GELU(Linear(LN(x)))) at constant width: refines the visual tokens before the channel squeeze."""

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(width, eps=eps), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class Bottleneck(nn.Module):
    """Visual tokens [B, h*w, D] -> latents [B, C, h, w]. Deterministic (no KL term): the compactness comes from C
    and the stage-2 regularisers, not from sampling."""

    def __init__(self, width: int, latent_channels: int = 32, num_blocks: int = 3, block_eps: float = 1e-5):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualMLPBlock(width, block_eps) for _ in range(num_blocks)))
        self.to_latent = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, latent_channels),
            nn.GELU(),
            nn.Linear(latent_channels, latent_channels),
        )

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        if tokens.shape[1] != h * w:
            raise ValueError(f"got {tokens.shape[1]} visual tokens for a {h}x{w} grid")
        z = self.to_latent(self.blocks(tokens))  # [B, h*w, C]
        return z.transpose(1, 2).unflatten(2, (h, w))


def normalize_latents(z: torch.Tensor) -> torch.Tensor:
    """Per-token channel LayerNorm without affine: each spatial position's C channels get zero mean and unit
    variance. Used on every latent once stage 2 is on — by the encoder, and by the AR sampler on each sampled
    latent before it is fed back or decoded. Accepts [B, C, h, w] (channels first) latents."""
    if z.dim() != 4:
        raise ValueError(f"expected latents [B, C, h, w], got shape {tuple(z.shape)}")
    return F.layer_norm(z.movedim(1, -1), (z.shape[1],), eps=LATENT_NORM_EPS).movedim(-1, 1)


def add_latent_noise(z: torch.Tensor, gamma: float,
                     generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """z + a * eps with a ~ U[0, gamma] drawn once per sample and eps ~ N(0, I): makes the decoder robust to the
    small errors an AR generator makes in latent space. `generator`: one, or one per sample."""
    if gamma <= 0:
        return z
    if isinstance(generator, (list, tuple)):
        return torch.cat([add_latent_noise(z[i : i + 1], gamma, g) for i, g in enumerate(generator)])
    device = generator.device if generator is not None else z.device  # draw where the generator lives
    a = torch.rand(z.shape[0], 1, 1, 1, generator=generator, device=device) * gamma
    eps = torch.randn(z.shape, generator=generator, device=device)
    return z + (a * eps).to(z)
