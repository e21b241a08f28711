"""Known latents as decoding context (inpainting, outpainting, variations) for the QueryAR sampler.

VGT-AR is trained on random orders of all positions, so any set of known positions is a valid training prefix of
some order. The sampler builds that order: the known positions first (in the sampler's `order`: a random
permutation among the known, or raster), then the positions to generate (again random or raster). The known
positions are fed in the first forward pass as teacher-forced pairs q_0, e_0, q_1, e_1, ... exactly as training
feeds a prefix of the order (see `vgt.ar.sequence.decoding_layout(known=...)`); the unknown positions are then
decoded group by group as in plain generation. With guidance, the unconditional rows get the same context.
The context is part of decoding step 0, so a model's `decode_position_offset` (a quirk of the authors' decoder
after its first step, see `vgt.official`) does not shift it: it keeps its training positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vgt.ar.config import ORDERS
from vgt.ar.randomness import Generators, draw_rows

if TYPE_CHECKING:
    from vgt.ar.model import VGTForGeneration


def known_positions(known_latents: torch.Tensor, known_mask: torch.Tensor, batch: int,
                    grid: tuple[int, int], channels: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check and broadcast the context: latents [1 or B, C, h, w] and a mask [h, w] or [1 or B, h, w] (True = known)
    -> (raster latent tokens [B, N, C], known mask [B, N], known count K, the same for every row)."""
    h, w = grid
    if known_latents.dim() != 4 or tuple(known_latents.shape[1:]) != (channels, h, w) \
            or known_latents.shape[0] not in (1, batch):
        raise ValueError(f"known_latents must have shape [1 or {batch}, {channels}, {h}, {w}] (the latent grid being "
                         f"generated), got {tuple(known_latents.shape)}")
    mask = known_mask.bool()
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or tuple(mask.shape[1:]) != (h, w) or mask.shape[0] not in (1, batch):
        raise ValueError(f"known_mask must have shape [{h}, {w}] or [1 or {batch}, {h}, {w}], "
                         f"got {tuple(known_mask.shape)}")
    mask = mask.expand(batch, h, w).reshape(batch, h * w)
    counts = mask.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError(f"every row must know the same number of positions (they decode in lock step), got "
                         f"{counts.tolist()}")
    known = int(counts[0])
    if known == h * w:
        raise ValueError("every latent position is known: nothing to generate (the mask selects no position)")
    tokens = known_latents.expand(batch, -1, -1, -1).flatten(2).transpose(1, 2)
    return tokens, mask, known


def context_orders(known: torch.Tensor, order: str, generator: Generators, device: torch.device) -> torch.Tensor:
    """[B, N] orders with the known positions first: within each part a random permutation (one draw of N uniform
    keys per row, from the row's generator) or raster order."""
    if order not in ORDERS:
        raise ValueError(f"order {order!r} is unknown; choose one of {ORDERS}")
    batch, n = known.shape
    if order == "raster":
        keys = torch.arange(n, device=device, dtype=torch.float64).div(n).expand(batch, n)
    else:
        keys = draw_rows((n,), generator, batch, device, kind="rand").double()
    return (keys + (~known.to(device)).double()).argsort(dim=1, stable=True)


def context_tokens(model: VGTForGeneration, tokens: torch.Tensor, orders: torch.Tensor, known: int,
                   queries: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The teacher-forced embeddings [B, 2K, D] q_0, e_0, ..., q_{K-1}, e_{K-1} of the first K positions of `orders`,
    with latents taken from raster `tokens` [B, N, C]."""
    index = orders[:, :known]
    z = tokens.to(model.device).gather(1, index[..., None].expand(-1, -1, tokens.shape[2]))
    q = queries[index]
    e = model.latent_tokens(z, positions[index])
    return torch.stack([q, e.to(q.dtype)], dim=2).flatten(1, 2)
