"""Exponential moving average of model weights.

Before `start` the average simply tracks the weights (a copy); from `start` on, after every optimizer step,
ema = decay * ema + (1 - decay) * weights. The average is kept in fp32 beside the model, covers every floating
parameter and buffer (frozen parts are copied through), and can be swapped into the model for evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, start: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.start = start
        self.shadow: dict[str, torch.Tensor] = {
            name: t.detach().clone().float() for name, t in model.state_dict().items() if t.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step `step` (0-based)."""
        state = model.state_dict()
        if step < self.start:
            for name, avg in self.shadow.items():
                avg.copy_(state[name])
            return
        for name, avg in self.shadow.items():
            avg.lerp_(state[name].float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like `model.state_dict()` (non-float buffers are absent)."""
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, avg in self.shadow.items():
            avg.copy_(state[name])

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into `model` (e.g. for sampling); restores them on exit."""
        state = model.state_dict()
        backup = {name: state[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, avg in self.shadow.items():
                state[name].copy_(avg)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    state[name].copy_(saved)
