"""The flow-matching head: an AdaLN residual MLP that maps (noisy latent token, time, condition) to a velocity.

It models one latent token at a time given the language model's hidden state at that token's query, so the
language model only has to say *what* goes there, not produce the 32 numbers in one shot (MAR / NextStep-1 style).
Timestep and condition enter every block through adaptive LayerNorm (shift, scale, gate). The modulation layers
and the output layer start at zero, so a fresh head predicts zero velocity and each block starts as identity.
Module names follow the authors' checkpoint layout so that converted weights map one to one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vgt.ar.config import FlowHeadConfig


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1], scaled by `scale` first (1000 keeps neighbouring steps distinguishable;
    the authors' heads use 1)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * scale)[..., None] * freqs
    features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        features = torch.cat([features, torch.zeros_like(features[..., :1])], dim=-1)
    return features


class Modulation(NamedTuple):
    """adaLN parameters of one block: h -> h * scale + shift (`scale` already holds the 1 +), then the gate of the
    residual branch (None for the final layer)."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor | None = None


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, feature_dim: int, scale: float = 1000.0):
        super().__init__()
        self.feature_dim = feature_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(feature_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.feature_dim, scale=self.scale).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class ResBlock(nn.Module):
    """x + gate * MLP(LN(x) * (1 + scale) + shift), with (shift, scale, gate) computed from the conditioning."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def modulation(self, activated: torch.Tensor) -> Modulation:
        """From SiLU(y) (the first op of `adaLN_modulation`, computed once and shared by all layers)."""
        linear = self.adaLN_modulation[1]
        shift, scale, gate = F.linear(activated, linear.weight, linear.bias).chunk(3, dim=-1)
        return Modulation(shift, 1 + scale, gate)

    def forward(self, x: torch.Tensor, modulation: Modulation) -> torch.Tensor:
        # functional calls: the sampler runs this ~1,000 times per image on a few rows, where module calls cost more
        # than the arithmetic
        ln, fc1, fc2 = self.in_ln, self.mlp[0], self.mlp[2]
        h = torch.addcmul(modulation.shift, F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps),
                          modulation.scale)
        return torch.addcmul(x, modulation.gate, F.linear(F.silu(F.linear(h, fc1.weight, fc1.bias)), fc2.weight,
                                                          fc2.bias))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_channels)

    def modulation(self, activated: torch.Tensor) -> Modulation:
        linear = self.adaLN_modulation[1]
        shift, scale = F.linear(activated, linear.weight, linear.bias).chunk(2, dim=-1)
        return Modulation(shift, 1 + scale)

    def forward(self, x: torch.Tensor, modulation: Modulation) -> torch.Tensor:
        h = torch.addcmul(modulation.shift, F.layer_norm(x, self.norm_final.normalized_shape, eps=self.norm_final.eps),
                          modulation.scale)
        return F.linear(h, self.linear.weight, self.linear.bias)


#: rows (steps x condition rows) of adaLN modulations `StepModulations` computes in one go: enough for matmuls near
#: the peak, few enough that the five [rows, 3 W] results stay in cache (at 16 images x 16 tokens x 20 steps the
#: whole grid at once is 140 MB, and writing it out cost more than the matmuls)
STEP_MODULATION_ROWS = 1024


class FlowHead(nn.Module):
    """velocity = head(x_t [.., C], t [..], condition [.., D]); data at t = 1, noise at t = 0."""

    def __init__(self, config: FlowHeadConfig):
        super().__init__()
        self.config = config
        self.input_proj = nn.Linear(config.latent_channels, config.width)
        self.time_embed = TimestepEmbedder(config.width, config.time_embed_dim, config.timestep_scale)
        self.cond_embed = nn.Linear(config.cond_dim, config.width)
        self.res_blocks = nn.ModuleList(ResBlock(config.width) for _ in range(config.depth))
        self.final_layer = FinalLayer(config.width, config.latent_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for block in self.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[1].weight)
            nn.init.zeros_(block.adaLN_modulation[1].bias)
        for layer in (self.final_layer.adaLN_modulation[1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def modulations(self, y: torch.Tensor) -> list[Modulation]:
        """adaLN parameters of every block (and the final layer) for the conditioning y = time + condition."""
        activated = F.silu(y)
        return [block.modulation(activated) for block in self.res_blocks] + [self.final_layer.modulation(activated)]

    def step_modulations(self, times: Sequence[float], condition: torch.Tensor,
                         max_rows: int = STEP_MODULATION_ROWS) -> StepModulations:
        """`modulations` at each time of a sampler's grid for rows whose condition [.., cond_dim] stays fixed:
        everything but the noisy token's own path, computed before the head evaluations that need it."""
        return StepModulations(self, times, condition, max_rows)

    def velocity(self, x_t: torch.Tensor, modulations: Sequence[Modulation]) -> torch.Tensor:
        """The noisy token's path through the blocks, given their modulations (`modulations`/`step_modulations`)."""
        x = F.linear(x_t.to(self.input_proj.weight.dtype), self.input_proj.weight, self.input_proj.bias)
        for block, modulation in zip(self.res_blocks, modulations[:-1], strict=True):
            x = block(x, modulation)
        return self.final_layer(x, modulations[-1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        dtype = self.input_proj.weight.dtype
        return self.velocity(x_t, self.modulations(self.time_embed(t) + self.cond_embed(condition.to(dtype))))


class StepModulations:
    """The adaLN modulations of a head for fixed condition rows at each time of a sampler's grid, `[t]` -> one list
    per time (as `FlowHead.modulations`). The condition projection and the time embeddings of the whole grid are
    computed once (the time embedding once per step, not per row: all rows share t); the modulations, which depend
    on both (SiLU(time + condition) does not split), a chunk of consecutive grid times at a time, one batched matmul
    per layer and chunk, chunks of at most `max_rows` rows (at least one step)."""

    def __init__(self, head: FlowHead, times: Sequence[float], condition: torch.Tensor, max_rows: int):
        dtype = head.input_proj.weight.dtype
        t = torch.tensor(list(times), device=condition.device)
        self.head = head
        self.time = head.time_embed(t).reshape(len(t), *[1] * (condition.dim() - 1), -1)  # [S, 1.., W]
        self.condition = head.cond_embed(condition.to(dtype))  # [.., W]
        self.step_of = {float(time): i for i, time in enumerate(times)}
        self.chunk = max(1, max_rows // max(1, self.condition[..., 0].numel()))
        self.start, self.current = -1, []

    def __getitem__(self, t: float) -> list[Modulation]:
        step = self.step_of[t]
        if not self.start <= step < self.start + len(self.current):
            self.start = step - step % self.chunk
            time = self.time[self.start : self.start + self.chunk]
            per_layer = self.head.modulations(time + self.condition)  # fields [steps, .., W]
            fields = [[f.unbind(0) if f is not None else [None] * len(time) for f in m] for m in per_layer]
            self.current = [[Modulation(*(f[i] for f in m)) for m in fields] for i in range(len(time))]
        return self.current[step - self.start]
