"""Configuration of the VGT-AR generator (the parts that are not the backbone's language model).

The language model comes from the backbone, so its width is recorded here only to check that saved generator
weights fit the backbone they are loaded with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from vgt.io import read_json, write_json

SAMPLERS = ("sde", "euler", "heun")
ORDERS = ("random", "raster")
CFG_SCHEDULES = ("constant", "linear")
POSITION_INITS = ("sincos", "normal")


@dataclass
class FlowHeadConfig:
    """AdaLN residual MLP that turns a condition vector into one latent token by flow matching."""

    latent_channels: int = 32
    cond_dim: int = 896
    width: int = 1536
    depth: int = 12
    time_embed_dim: int = 256  # size of the sinusoidal timestep features
    #: t in [0, 1] is multiplied by this before its sinusoidal features (the authors' released heads use 1)
    timestep_scale: float = 1000.0


@dataclass
class SamplingConfig:
    """Defaults used by `VGTPipeline.__call__` when an argument is not given; `__post_init__` is the one check of
    the sampling arguments (the pipeline and `generate_latents` build one from what they are given)."""

    guidance_scale: float = 4.5
    cfg_schedule: str = "linear"
    num_inference_steps: int = 30
    sampler: str = "sde"
    sde_t_end: float = 0.96  # the SDE runs on linspace(0, sde_t_end, N) then takes one Euler step to t = 1
    temperature: float = 1.0  # scales the head sampler's Gaussian noise (1: the learned distribution)
    tokens_per_step: int = 1
    order: str = "random"
    grid_size: int = 16  # default latent grid (height = width = grid_size * AE stride)

    def __post_init__(self) -> None:
        for name in ("guidance_scale", "temperature", "sde_t_end"):
            if not isinstance(getattr(self, name), (int, float)) or not math.isfinite(getattr(self, name)):
                raise ValueError(f"sampling {name} must be a finite number, got {getattr(self, name)!r}")
        for name in ("num_inference_steps", "tokens_per_step", "grid_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"sampling {name} must be a whole number, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 disables guidance), got {self.guidance_scale}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} is unknown; choose one of {SAMPLERS}")
        if self.sampler == "sde" and self.num_inference_steps < 2:
            raise ValueError(f"num_inference_steps must be >= 2 for the SDE sampler, got {self.num_inference_steps}")
        if self.order not in ORDERS:
            raise ValueError(f"order {self.order!r} is unknown; choose one of {ORDERS}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule {self.cfg_schedule!r} is unknown; choose one of {CFG_SCHEDULES}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.sde_t_end < 1.0:
            raise ValueError(f"sde_t_end must lie in (0, 1), got {self.sde_t_end}")


@dataclass
class ARConfig:
    """VGT-AR: position grids, latent in/out projections, flow head, and the training objective's constants."""

    hidden_size: int = 896  # the backbone LLM's width (checked against the backbone at construction)
    latent_channels: int = 32
    max_grid: int = 64  # the learnable query/position grids are max_grid x max_grid, centre-cropped per image
    #: start of the position grid: 2-D sine-cosine codes ("sincos"), or trunc-normal 0.02 ("normal", the authors')
    position_init: str = "sincos"
    head: FlowHeadConfig = field(default_factory=FlowHeadConfig)
    timestep_shift: float = 1.4  # t = 1 - s*tau / (1 + (s-1)*tau), tau ~ sigmoid(N(0, 1)); data sits at t = 1
    uncond_prob: float = 0.1  # probability that a training caption is replaced by the unconditional prompt
    #: noise draws (timestep and noise) per latent token in the loss: the head trains on k noisy copies of each
    #: token under one pass of the language model (MAR's diffusion batch multiplier, 4 there)
    head_noise_samples: int = 1
    normalize_sampled_latents: bool = True  # per-token channel LayerNorm on every sampled latent (stage-2 AE)
    #: the image-start prefix: None = one learned vector (`image_start`, started from the VLM's own image-start
    #: token); a list = the language model's embeddings of these token ids, in order (the authors' `<img>`,
    #: tokenized: one id for InternVL3, several BPE pieces for Qwen2.5-VL)
    image_start_ids: list[int] | None = None
    #: the prompt text around the instruction ("Generate an image: {caption}"), with an `{instruction}` field;
    #: None = the tokenizer's chat template (which may add a system turn; the authors' models use none)
    prompt_template: str | None = None
    #: added to the rotary position of every token fed after the first decoding step. 0 = training positions; the
    #: authors' Qwen2.5-VL loop counts from the text length without its 3-slot `<img>` (-2 at k = 1), a
    #: train/inference mismatch that converted Qwen models keep so that they compute what the authors' code does
    decode_position_offset: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.head, dict):
            self.head = FlowHeadConfig(**self.head)
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        # a copy: the head config passed in (perhaps shared with another ARConfig) is left as it was
        self.head = dataclasses.replace(self.head, latent_channels=self.latent_channels, cond_dim=self.hidden_size)
        if not math.isfinite(self.timestep_shift):
            raise ValueError(f"timestep_shift must be a finite number, got {self.timestep_shift}")
        if not 0.0 <= self.uncond_prob < 1.0:
            raise ValueError(f"uncond_prob must lie in [0, 1), got {self.uncond_prob}")
        if isinstance(self.head_noise_samples, bool) or not isinstance(self.head_noise_samples, int) \
                or self.head_noise_samples < 1:
            raise ValueError(f"head_noise_samples must be a whole number >= 1, got {self.head_noise_samples!r}")
        if self.timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be positive, got {self.timestep_shift}")
        if self.image_start_ids is not None and not self.image_start_ids:
            raise ValueError("image_start_ids must hold at least one token id (or be None for a learned vector)")
        if self.prompt_template is not None and "{instruction}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain an {{instruction}} field, got {self.prompt_template!r}")
        if self.position_init not in POSITION_INITS:
            raise ValueError(f"position_init {self.position_init!r} is unknown; choose one of {POSITION_INITS}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ARConfig:
        """From a saved config.json; diffusers' bookkeeping keys (`_class_name`, ...) are skipped."""
        data = {k: v for k, v in data.items() if not k.startswith("_")}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ARConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ARConfig:
        return cls.from_dict(read_json(path))
