"""Fixed 2-D sine-cosine position codes: the starting point of learned position embeddings on a grid (the small
VLM's ViT patches, VGT-AR's latent positions), so that nearby cells start out alike."""

from __future__ import annotations

import torch


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """[height * width, dim] fixed 2-D sine-cosine position codes in raster order (half the channels per axis)."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine codes need a width divisible by 4, got {dim}")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                indexing="ij")
    angles = [axis.reshape(-1, 1) * frequencies for axis in (rows, cols)]
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1).float()
