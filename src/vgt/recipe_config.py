"""What the ShapesWorld recipe (`vgt.recipe`) trains and for how long: `RecipeConfig`. Named recipes:
`vgt.presets.RECIPES`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


def _has_type(value: object, annotation: str) -> bool:
    """Whether `value` fits a simple annotation such as "int", "float | None" (floats finite; bools are not ints)."""
    kinds = {k.strip() for k in annotation.split("|")}
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool(kinds & {"int", "float"})
    if isinstance(value, float):
        return "float" in kinds and math.isfinite(value)
    return isinstance(value, str) and "str" in kinds or not kinds <= {"int", "float", "str", "bool", "None"}


@dataclass(frozen=True)
class RecipeConfig:
    """What the recipe trains and for how long. Everything not listed here is the stage's own default (see
    `vgt train vlm|ae|ar --help`): the recipe sizes the stages, it does not re-tune them."""

    name: str
    #: small-VLM architecture preset (`vgt.presets.SMALL_VLM_PRESETS`); sets the resolution and stride
    vlm_preset: str = "small"
    vlm_steps: int = 2400
    vlm_batch_size: int = 32
    #: VGT-AE (and VGT-AR) training resolution: a multiple of the VLM's stride
    image_size: int = 128
    #: VGT-AE stage lengths and batch; None keeps `vgt train ae`'s CPU defaults (600 + 300 steps, batch 8)
    ae1_steps: int | None = None
    ae2_steps: int | None = None
    ae_batch_size: int | None = None
    #: VGT-AE pixel decoder (`vgt.presets.DCAE_PRESETS`); None keeps the AE preset's (stride 16)
    ae_decoder: str | None = None
    #: stage-2 latent noise a ~ U[0, gamma]
    noise_gamma: float = 0.1
    #: samples encoded once into the latent cache that VGT-AR trains on
    cache_samples: int = 64_000
    ar_steps: int = 4000
    ar_batch_size: int = 32
    ar_lr: float = 1e-3
    #: noise draws per latent token in the VGT-AR loss (`--head-noise-samples`; None keeps the stage's 1). Four
    #: measured 0.240 vs 0.112 at 2000 steps (docs/recipe.md, experiment 4); with them 4000 steps beat one draw's
    #: 8000 (0.218 vs 0.183, experiment 6)
    ar_head_noise_samples: int | None = 4
    #: autocast of the VGT-AR stage (fp32 master weights either way); bf16 measured 2.2x faster per step on a CPU
    #: with fast bf16 matmuls, 1.5x slower on one whose bf16 matmuls run at half the fp32 speed (docs/recipe.md)
    ar_precision: str = "bf16"
    #: VGT-AR weight EMA (exported and evaluated): decay, averaging from `ar_ema_start_fraction` of the steps on
    #: (before that it copies the weights), so the exported model does not lag far behind a short run
    ar_ema_decay: float = 0.998
    ar_ema_start_fraction: float = 0.5
    #: default sampling temperature of the exported model; 0.7 measured better than 1 on ShapesEval (docs/sampling.md)
    ar_sampling_temperature: float = 0.7
    #: steps between VGT-AR sample grids of `SAMPLE_PROMPTS` (0: none)
    ar_sample_every: int = 1000
    #: ShapesEval after training: prompts per category (None: the full set, ~30 min more on 2 cores; the shipped
    #: model's full score comes from `vgt eval model`) and images per prompt
    eval_prompts_per_category: int | None = 20
    eval_images_per_prompt: int = 4
    #: steps between the stages' evaluation hooks (held-out understanding, reconstructions, samples); None keeps
    #: each stage's own default, 0 turns them off
    eval_every: int | None = None
    #: steps between metric lines of the training stages; None keeps each stage's own default
    log_every: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        wrong = [f"{f.name} must be {f.type} (got {getattr(self, f.name)!r})" for f in dataclasses.fields(self)
                 if not _has_type(getattr(self, f.name), str(f.type))]
        if wrong:
            raise ValueError("invalid recipe config: " + "; ".join(wrong))
        problems = [f"{f.name} must be >= 1 (got {getattr(self, f.name)})" for f in dataclasses.fields(self)
                    if f.name.endswith(("_steps", "_batch_size", "_samples", "_per_prompt"))
                    and getattr(self, f.name) is not None and getattr(self, f.name) < 1]
        if not 0 <= self.ar_ema_decay < 1 or not 0 <= self.ar_ema_start_fraction <= 1:
            problems.append(f"ar_ema_decay must lie in [0, 1) and ar_ema_start_fraction in [0, 1] (got "
                            f"{self.ar_ema_decay}, {self.ar_ema_start_fraction})")
        if self.ar_sample_every < 0:
            problems.append(f"ar_sample_every must be >= 0 (got {self.ar_sample_every})")
        if self.eval_every is not None and self.eval_every < 0:
            problems.append(f"eval_every must be >= 0 or None (got {self.eval_every})")
        if self.log_every is not None and self.log_every < 1:
            problems.append(f"log_every must be >= 1 or None (got {self.log_every})")
        if self.eval_prompts_per_category is not None and self.eval_prompts_per_category < 1:
            problems.append(f"eval_prompts_per_category must be >= 1 or None (got {self.eval_prompts_per_category})")
        if self.ar_precision not in ("fp32", "bf16", "fp16"):
            problems.append(f"ar_precision must be fp32, bf16 or fp16 (got {self.ar_precision!r})")
        if self.ar_sampling_temperature < 0:
            problems.append(f"ar_sampling_temperature must be >= 0 (got {self.ar_sampling_temperature})")
        if self.noise_gamma < 0:
            problems.append(f"noise_gamma must be >= 0 (got {self.noise_gamma})")
        if problems:
            raise ValueError(f"invalid recipe {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
