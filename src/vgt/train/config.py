"""Training hyper-parameters shared by every stage: `TrainConfig`, the named schedules of every stage
(`TRAIN_PRESETS`, the one home of training schedules), and the CLI flags that set them.

Every `vgt train ...` command uses the same flags (`add_train_args`) and turns them into a `TrainConfig`
(`config_from_args`), so a user learns the training options once. Stage-specific knobs live in the stage's own
config (`AEStageConfig`, `ARStageConfig`); model sizes live beside their models (`AE_PRESETS`, `ar_preset`,
`SMALL_VLM_PRESETS`, `DCAE_PRESETS`), as in DiT.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """One training run. `batch_size` is the global batch per optimizer step (all processes, all
    accumulation micro-steps together), so the same config means the same optimization on 1 or N processes."""

    run_dir: str = "runs/default"
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    precision: str = "fp32"  # autocast dtype; master weights always stay fp32
    ema_decay: float = 0.0  # 0 disables EMA
    ema_start: int = 0  # steps before this copy the weights instead of averaging them
    log_every: int = 10
    save_every: int = 500
    eval_every: int = 0  # period of the stage's hooks (sampling, evaluation); 0 disables them
    keep_last: int = 3
    seed: int = 0
    resume: str = "auto"  # "auto" (latest checkpoint in run_dir, if any), "never", or a checkpoint directory
    num_workers: int = 0  # data loader worker processes per training process
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr factor
    allow_config_change: bool = False  # resume although settings differ from the run's config.json

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        problems = []
        numbers = {"lr": self.lr, "min_lr": self.min_lr, "weight_decay": self.weight_decay, "eps": self.eps,
                   "grad_clip": self.grad_clip, "ema_decay": self.ema_decay, "betas": self.betas,
                   **{f"lr_multipliers[{k!r}]": v for k, v in self.lr_multipliers.items()}}
        for name, value in numbers.items():
            if not all(math.isfinite(v) for v in (value if isinstance(value, tuple) else (value,))):
                problems.append(f"{name} must be finite (got {value})")
        if not self.lr > 0 or self.min_lr < 0 or self.eps <= 0 or self.grad_clip < 0:
            problems.append(f"lr must be > 0, min_lr >= 0, eps > 0 and grad_clip >= 0 (got lr {self.lr}, min_lr "
                            f"{self.min_lr}, eps {self.eps}, grad_clip {self.grad_clip})")
        if not all(0.0 <= b < 1.0 for b in self.betas) or len(self.betas) != 2:
            problems.append(f"betas must be two numbers in [0, 1) (got {self.betas})")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("warmup_steps", "save_every", "eval_every", "ema_start", "num_workers", "weight_decay"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1) (got {self.ema_decay})")
        if self.min_lr > self.lr:
            problems.append(f"min_lr {self.min_lr} is above lr {self.lr}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def micro_batch_size(self, num_processes: int) -> int:
        """Samples per process per forward pass; a clear error when the global batch does not split evenly."""
        per_step = num_processes * self.grad_accum
        if self.batch_size % per_step:
            raise ValueError(
                f"global batch {self.batch_size} does not split over {num_processes} process(es) x "
                f"{self.grad_accum} accumulation step(s); use a batch size divisible by {per_step}"
            )
        return self.batch_size // per_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The training schedules of every stage, in one place (the model sizes live beside their models, as in DiT):
# a named schedule is a whole TrainConfig, and a run is `dataclasses.replace(TRAIN_PRESETS[name], **what the user
# set)`, nothing in between. Full-scale values follow SPEC.md sections 2-3; the CPU ones size each stage for a
# 2-core machine (docs/recipe.md).
TRAIN_PRESETS: dict[str, TrainConfig] = {
    # `vgt train toy`: a few hundred CPU steps on a tiny model: fast feedback, no EMA.
    "toy": TrainConfig(steps=200, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=20, log_every=10, save_every=100,
                       eval_every=100),
    # the small VLM (`vgt train vlm --vlm-preset small`): bf16 autocast is 1.9x the fp32 throughput on CPU, so
    # 2,400 steps fit the 30-minute budget of two cores
    "vlm-small": TrainConfig(steps=2400, batch_size=32, lr=1e-3, min_lr=5e-5, warmup_steps=100, weight_decay=0.05,
                             grad_clip=1.0, precision="bf16", log_every=10, save_every=200, eval_every=400),
    # `--vlm-preset toy`: a seconds-long smoke test
    "vlm-toy": TrainConfig(steps=40, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=5, weight_decay=0.0,
                           grad_clip=1.0, log_every=5, save_every=20, eval_every=0),
    # VGT-AE at CPU scale (`vgt train ae --scale cpu`), stage 1 and stage 2
    "ae-stage1-cpu": TrainConfig(steps=600, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=30, weight_decay=1e-4,
                           log_every=20, save_every=200, eval_every=100),
    "ae-stage2-cpu": TrainConfig(steps=300, batch_size=8, lr=3e-4, min_lr=3e-5, warmup_steps=10, weight_decay=1e-4,
                           log_every=20, save_every=100, eval_every=100),
    # VGT-AE stage 1: 3e-4 -> 1e-4, 3k warmup, wd 1e-4, clip 1.0, encoder at 0.5x lr.
    "ae-stage1": TrainConfig(steps=100_000, batch_size=128, lr=3e-4, min_lr=1e-4, warmup_steps=3000,
                             weight_decay=1e-4, betas=(0.9, 0.95), grad_clip=1.0, precision="bf16", save_every=5000,
                             eval_every=5000),
    # VGT-AE stage 2: 1e-4 -> 1e-5.
    "ae-stage2": TrainConfig(steps=100_000, batch_size=128, lr=1e-4, min_lr=1e-5, warmup_steps=3000,
                             weight_decay=1e-4, betas=(0.9, 0.95), grad_clip=1.0, precision="bf16", save_every=5000,
                             eval_every=5000),
    # VGT-AR with the cpu-small generator, sized for a 2-core CPU
    "ar-cpu": TrainConfig(steps=1500, batch_size=16, lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.05,
                          ema_decay=0.999, ema_start=200, save_every=250, log_every=25, precision="fp32"),
    # VGT-AR pretraining: 2e-4 cosine, ~1% warmup, wd 0.05, EMA 0.9999 from 10k steps.
    "ar-pretrain": TrainConfig(steps=100_000, batch_size=256, lr=2e-4, min_lr=2e-5, warmup_steps=1000,
                               weight_decay=0.05, betas=(0.9, 0.95), grad_clip=1.0, precision="bf16",
                               ema_decay=0.9999, ema_start=10_000, save_every=5000, eval_every=5000),
    # VGT-AR SFT: 5k steps at 5e-5; EMA averages from the start (the released code never did).
    "ar-sft": TrainConfig(steps=5000, batch_size=256, lr=5e-5, min_lr=5e-6, warmup_steps=50, weight_decay=0.05,
                          betas=(0.9, 0.95), grad_clip=1.0, precision="bf16", ema_decay=0.9998, ema_start=0,
                          save_every=1000, eval_every=1000),
}


def preset(name: str, **overrides) -> TrainConfig:
    """The training schedule `name` with some fields replaced."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown training preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    return dataclasses.replace(TRAIN_PRESETS[name], **overrides)


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
    g.add_argument("--preset", default=argparse.SUPPRESS, choices=sorted(TRAIN_PRESETS),
                   help=f"named training schedule (vgt.train.config.TRAIN_PRESETS; default: {default_preset}); the "
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
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name != "lr_multipliers" and getattr(args, f.name, None) is not None}
    if args.lr_mult:
        values["lr_multipliers"] = dict(args.lr_mult)
    values["run_dir"] = str(Path(args.run_dir))
    return preset(getattr(args, "preset", None) or default_preset, **values)
