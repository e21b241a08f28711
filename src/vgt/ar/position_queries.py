"""Learnable position queries: how the language model is told *which* latent position comes next.

Two grids of shape [D, G, G] (G = 64 covers images up to 64 * stride pixels): a query grid Q and a position grid P.
For an h x w latent grid both are centre-cropped to h x w and flattened in raster order, so the same cell keeps
the same embedding at every resolution that contains it. The query token for position i is Q_i + P_i; the input
token that carries the latent z_i is W_in z_i + P_i.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def centre_crop_offsets(grid: int, height: int, width: int) -> tuple[int, int]:
    """Top-left corner of an h x w window centred in a grid x grid map (a clear error when it does not fit)."""
    if height < 1 or width < 1:
        raise ValueError(f"latent grid must be at least 1x1, got {height}x{width}")
    if height > grid or width > grid:
        raise ValueError(
            f"latent grid {height}x{width} is larger than the {grid}x{grid} query grid; "
            f"use a smaller image or a model trained with a larger max_grid"
        )
    return (grid - height) // 2, (grid - width) // 2


class PositionQueries(nn.Module):
    def __init__(self, hidden_size: int, max_grid: int):
        super().__init__()
        self.max_grid = max_grid
        self.query_grid = nn.Parameter(torch.empty(hidden_size, max_grid, max_grid))
        self.position_grid = nn.Parameter(torch.empty(hidden_size, max_grid, max_grid))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.query_grid, std=1.0 / math.sqrt(self.query_grid.shape[0]))
        nn.init.trunc_normal_(self.position_grid, std=0.02)

    @staticmethod
    def _crop(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
        top, left = centre_crop_offsets(grid.shape[-1], height, width)
        window = grid[:, top : top + height, left : left + width]
        return window.reshape(grid.shape[0], height * width).t()  # [h*w, D], raster order

    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries Q_i + P_i, positions P_i), each [h*w, D] in raster order."""
        positions = self._crop(self.position_grid, height, width)
        return self._crop(self.query_grid, height, width) + positions, positions
