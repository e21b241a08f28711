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

from vgt.ar.config import POSITION_INITS
from vgt.position_codes import sincos_2d


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
    def __init__(self, hidden_size: int, max_grid: int, position_init: str = "sincos"):
        super().__init__()
        if position_init not in POSITION_INITS:
            raise ValueError(f"position_init {position_init!r} is unknown; choose one of {POSITION_INITS}")
        self.max_grid = max_grid
        self.position_init = position_init
        self.query_grid = nn.Parameter(torch.empty(hidden_size, max_grid, max_grid))
        self.position_grid = nn.Parameter(torch.empty(hidden_size, max_grid, max_grid))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random queries. Positions start from 2-D sine-cosine codes at unit amplitude (about the norm of a freshly
        projected latent token), so that neighbouring cells look alike from the first step; the authors' start,
        trunc-normal 0.02, is `position_init="normal"` (on ShapesWorld it delayed VGT-AR's use of neighbouring
        tokens by 1,000 to over 3,000 steps, docs/sampling.md)."""
        hidden = self.query_grid.shape[0]
        nn.init.normal_(self.query_grid, std=1.0 / math.sqrt(hidden))
        if self.position_init == "normal":
            nn.init.trunc_normal_(self.position_grid, std=0.02)
        else:
            codes = sincos_2d(self.max_grid, self.max_grid, hidden)
            self.position_grid.copy_(codes.t().reshape(hidden, self.max_grid, self.max_grid))

    @staticmethod
    def _crop(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
        top, left = centre_crop_offsets(grid.shape[-1], height, width)
        window = grid[:, top : top + height, left : left + width]
        return window.reshape(grid.shape[0], height * width).t()  # [h*w, D], raster order

    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries Q_i + P_i, positions P_i), each [h*w, D] in raster order."""
        positions = self._crop(self.position_grid, height, width)
        return self._crop(self.query_grid, height, width) + positions, positions
