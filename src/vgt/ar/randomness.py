"""Random draws of VGT-AR: noise, timesteps and generation orders, each from the caller's generator(s).

A seed gives the same numbers wherever the model runs (drawn on the generator's device, then moved), and with one
generator per row each image's randomness does not depend on which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vgt.ar.config import ORDERS


def draw(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, kind: str = "randn"):
    """A random tensor drawn on the generator's device (so a seed gives the same numbers wherever the model runs)
    and moved to `device`; with one generator per row (a list), row i comes from generator i."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([draw(shape[1:], g, device, kind) for g in generator])
    where = generator.device if generator is not None else device
    fn = torch.randn if kind == "randn" else torch.rand
    return fn(shape, generator=generator, device=where).to(device)


Generators = torch.Generator | Sequence[torch.Generator] | None


def draw_rows(shape: tuple[int, ...], generators: Generators, batch: int, device: torch.device,
              kind: str = "randn") -> torch.Tensor:
    """[batch, *shape] random rows: all from one generator, or row i from `generators[i]` (so that each image's
    randomness does not depend on which other images share its batch)."""
    if generators is None or isinstance(generators, torch.Generator):
        return draw((batch, *shape), generators, device, kind)
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for {batch} images; pass one generator or one per image")
    return torch.stack([draw(shape, g, device, kind) for g in generators])


def sample_timesteps(shape: tuple[int, ...], shift: float, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """Shifted logit-normal timesteps: tau = sigmoid(N(0, 1)), t = 1 - s*tau / (1 + (s-1)*tau). With data at t = 1,
    a shift s > 1 moves training towards the noisier end."""
    tau = torch.sigmoid(draw(shape, generator, device))
    return 1 - shift * tau / (1 + (shift - 1) * tau)


def generation_orders(batch: int, num_tokens: int, order: str, generator: Generators,
                      device: torch.device) -> torch.Tensor:
    """[B, N] permutations of the raster positions: one random permutation per row, or raster order."""
    if order not in ORDERS:
        raise ValueError(f"order {order!r} is unknown; choose one of {ORDERS}")
    if order == "raster":
        return torch.arange(num_tokens, device=device).expand(batch, num_tokens).clone()
    return draw_rows((num_tokens,), generator, batch, device, kind="rand").argsort(dim=1)
