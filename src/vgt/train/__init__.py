"""The training engine shared by every stage (small VLM, VGT-AE, VGT-AR). See docs/training.md.

Names are imported on first use, so `vgt.train.flags` (the CLI flags) loads without torch or accelerate and
`vgt --help` stays fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "vgt.train.checkpoint": ["latest_checkpoint", "list_checkpoints", "load_checkpoint_weights", "load_state_strict",
                             "load_weights"],
    "vgt.train.config": ["TrainConfig"],
    "vgt.train.ema": ["EMA"],
    "vgt.train.engine": ["Hook", "HookContext", "NonFiniteLossError", "StepContext", "Trainer", "TrainResult",
                         "train"],
    "vgt.train.flags": ["add_train_args", "config_from_args"],
    "vgt.train.logging": ["read_metrics"],
    "vgt.train.optim": ["build_optimizer", "lr_at", "param_groups"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'vgt.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
