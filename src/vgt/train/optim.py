"""AdamW with the usual parameter groups, and the warmup + cosine learning-rate schedule.

The schedule is a pure function of the step, so resuming needs no scheduler state and every process agrees on
the learning rate without communication.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vgt.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to `lr` over `warmup_steps`, then cosine
    decay reaching `min_lr` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def _multiplier(name: str, multipliers: dict[str, float]) -> float:
    """The factor of the longest prefix of `name` in `multipliers` (1.0 when none matches)."""
    best = max((p for p in multipliers if name.startswith(p)), key=len, default=None)
    return 1.0 if best is None else multipliers[best]


def param_groups(model: nn.Module, weight_decay: float, lr_multipliers: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by (weight decay, lr factor).

    No weight decay on 1-D parameters (biases, norm scales) or on names listed by an optional
    `model.no_weight_decay()`; every other trainable tensor decays. `lr_multipliers` maps parameter-name
    prefixes to factors on the scheduled rate (e.g. {"encoder.": 0.5}).
    """
    unused = [p for p in lr_multipliers if not any(n.startswith(p) for n, _ in model.named_parameters())]
    if unused:
        raise ValueError(f"lr multiplier prefix(es) {unused} match no parameter of {type(model).__name__}")
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if param.ndim < 2 or name in skip else weight_decay
        mult = _multiplier(name, lr_multipliers)
        group = groups.setdefault((decay, mult), {"params": [], "names": [], "weight_decay": decay, "lr_mult": mult})
        group["params"].append(param)
        group["names"].append(name)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all have requires_grad=False)")
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups`; fp32 master weights are required for every trainable parameter."""
    low = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if low:
        raise ValueError(
            f"trainable parameters must be fp32 master weights (use --precision for autocast); "
            f"found {len(low)} non-fp32, e.g. {low[:3]}. Call model.float() before training."
        )
    groups = param_groups(model, cfg.weight_decay, cfg.lr_multipliers)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """Apply the schedule for `step` to every group (times its factor); returns the base rate."""
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return lr
