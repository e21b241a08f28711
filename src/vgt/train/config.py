"""Training hyper-parameters shared by every stage: `TrainConfig`.

Stage-specific knobs live in the stage's own config (`AEStageConfig`, `ARStageConfig`); the named schedules of every
stage and every model size are in `vgt.presets` (as in DiT), the CLI flags that set a `TrainConfig` in
`vgt.train.flags`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

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
