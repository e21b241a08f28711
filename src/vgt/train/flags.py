"""The training flags every `vgt train ...` command shares (`add_train_args`) and the `TrainConfig` they give
(`config_from_args`), so a user learns the training options once. Kept apart from `vgt.train.config` so the named
schedules (`vgt.presets`) can build on `TrainConfig` and the flags can pick one of them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int
from vgt.train.config import PRECISIONS, TrainConfig


def _parse_multiplier(text: str) -> tuple[str, float]:
    prefix, sep, value = text.rpartition("=")
    try:
        if not sep or not prefix:
            raise ValueError
        return prefix, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PREFIX=FACTOR such as encoder=0.5, got {text!r}") from None


def add_train_args(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """The shared training flags; `default_preset` names the stage's own schedule in the help. Unset flags keep
    the preset's value (see `config_from_args`)."""
    g = parser.add_argument_group("training")
    g.add_argument("--preset", default=argparse.SUPPRESS,
                   help=f"named training schedule (vgt.presets.TRAIN_PRESETS; default: {default_preset}); the "
                        "flags below change single values of it")
    g.add_argument("--run-dir", required=True, help="run directory: checkpoints, metrics.jsonl, config")
    g.add_argument("--max-steps", dest="steps", type=positive_int, help="optimizer steps of the run")
    g.add_argument("--batch-size", type=positive_int, help="global batch per optimizer step (all processes together)")
    g.add_argument("--grad-accum", type=positive_int, help="gradient accumulation micro-steps per optimizer step")
    g.add_argument("--lr", type=finite_float, help="peak learning rate")
    g.add_argument("--min-lr", type=finite_float, help="learning rate at the end of the cosine decay")
    g.add_argument("--warmup-steps", type=non_negative_int, help="linear warmup steps")
    g.add_argument("--weight-decay", type=finite_float, help="AdamW weight decay (never on biases, norms, 1-D params)")
    g.add_argument("--betas", type=finite_float, nargs=2, metavar=("B1", "B2"), help="AdamW betas")
    g.add_argument("--grad-clip", type=finite_float, help="max gradient norm (0 disables)")
    g.add_argument("--precision", choices=PRECISIONS, help="autocast dtype; master weights stay fp32")
    g.add_argument("--ema-decay", type=finite_float, help="EMA decay (0 disables EMA)")
    g.add_argument("--ema-start", type=non_negative_int, help="step from which the EMA averages (before: copies)")
    g.add_argument("--log-every", type=positive_int, help="steps between metric lines")
    g.add_argument("--save-every", type=non_negative_int, help="steps between checkpoints (0: only at the end)")
    g.add_argument("--eval-every", type=non_negative_int, help="steps between sampling/eval hooks (0 disables)")
    g.add_argument("--keep-last", type=positive_int, help="checkpoints to keep")
    g.add_argument("--seed", type=non_negative_int, help="seed for data order, augmentation and training noise")
    g.add_argument(
        "--resume", help="'auto' (latest checkpoint in --run-dir), 'never', or a checkpoint directory"
    )
    g.add_argument("--allow-config-change", action="store_true", default=None,
                   help="resume although --lr, --seed, --data, --precision, ... differ from the run's config.json")
    g.add_argument("--num-workers", type=non_negative_int, help="data loader workers per process")
    g.add_argument(
        "--lr-mult", type=_parse_multiplier, action="append", metavar="PREFIX=FACTOR",
        help="learning-rate factor for parameters whose name starts with PREFIX (repeatable)",
    )


def config_from_args(args: argparse.Namespace, default_preset: str) -> TrainConfig:
    """The named preset (`--preset`, else the stage's `default_preset`), with every training flag the user set
    replacing its value: TrainConfig defaults < preset < flags."""
    from vgt.presets import train_preset

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name != "lr_multipliers" and getattr(args, f.name, None) is not None}
    if args.lr_mult:
        values["lr_multipliers"] = dict(args.lr_mult)
    values["run_dir"] = str(Path(args.run_dir))
    return train_preset(getattr(args, "preset", None) or default_preset, **values)
