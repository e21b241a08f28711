"""The training engine shared by every stage (small VLM, VGT-AE, VGT-AR). See docs/training.md."""

from vgt.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_weights,
    load_state_strict,
    load_weights,
)
from vgt.train.config import PRESETS, TrainConfig, add_train_args, config_from_args, preset
from vgt.train.ema import EMA
from vgt.train.engine import Hook, HookContext, NonFiniteLossError, StepContext, Trainer, TrainResult, train
from vgt.train.logging import read_metrics
from vgt.train.optim import build_optimizer, lr_at, param_groups

__all__ = [
    "EMA", "PRESETS", "Hook", "HookContext", "NonFiniteLossError", "StepContext", "TrainConfig", "TrainResult",
    "Trainer", "add_train_args", "build_optimizer", "config_from_args", "latest_checkpoint", "list_checkpoints",
    "load_checkpoint_weights", "load_state_strict", "load_weights", "lr_at", "param_groups", "preset",
    "read_metrics", "train",
]
