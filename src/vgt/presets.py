"""Every named preset, in one place (as in DiT): model sizes and training schedules, each a registry from a name to
a typed config.

- `AE_PRESETS` (`AEConfig`), `DCAE_PRESETS` (diffusers `AutoencoderDC` configs), `AE_STAGE_PRESETS`
  (`AEStageConfig`) and `AE_SCALE_PRESETS` (the fresh model of `vgt train ae --scale S --encoder E`);
- `AR_PRESETS`: the generator architectures, each building an `ARConfig` for the backbone's `hidden_size`, and
  `AR_TRAIN_PRESETS` (the schedule each trains with by default);
- `SMALL_VLM_PRESETS` (`SmallVLMConfig`), `TRAIN_PRESETS` (`TrainConfig`) and `RECIPES` (`RecipeConfig`).

A run is a preset with the user's changes (`ae_preset("small-cpu", latent_channels=8)`, `dataclasses.replace`
underneath); the lookups name the valid choices when a name is unknown. This module imports the config modules;
they never import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from vgt.ae.config import AEConfig, AEStageConfig
from vgt.ar.config import ARConfig, FlowHeadConfig, SamplingConfig
from vgt.recipe_config import RecipeConfig
from vgt.train.config import TrainConfig
from vgt.vlm.model import SmallVLMConfig


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} preset {name!r}; choose one of {', '.join(registry)}")
    return registry[name]


# ---------------------------------------------------------------------------------------------- VGT-AE

# DC-AE f32c32 as used by SANA 1.1 ("dc-ae-f32c32-sana-1.1"): ~159M decoder parameters, stride 32.
DCAE_F32C32_SANA_1_1: dict[str, Any] = {
    "in_channels": 3,
    "latent_channels": 32,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    "decoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
    "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}

# A CPU-sized DC-AE with the same block types, stride 16 (5 levels): thin at full resolution (where CPU time goes),
# wider and deeper at the latent resolutions; ~3.5M decoder parameters.
DCAE_SMALL_CPU: dict[str, Any] = {
    "in_channels": 3,
    "latent_channels": 32,
    "attention_head_dim": 16,
    "encoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 2,
    "decoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 2,
    "encoder_block_out_channels": [16, 32, 64, 128, 256],
    "decoder_block_out_channels": [16, 32, 64, 128, 256],
    "encoder_layers_per_block": [1, 1, 1, 2, 2],
    "decoder_layers_per_block": [1, 1, 1, 2, 2],
    "encoder_qkv_multiscales": [[], [], [], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
}



def _one_level_more(dcae: dict[str, Any]) -> dict[str, Any]:
    """`dcae` with a copy of its coarsest level added at the end, in encoder and decoder: twice the stride."""
    levels = ("block_types", "block_out_channels", "layers_per_block", "qkv_multiscales")
    return {**dcae, **{f"{part}_{key}": [*dcae[f"{part}_{key}"], dcae[f"{part}_{key}"][-1]]
                       for part in ("encoder", "decoder") for key in levels}}


# The same at stride 32 (6 levels, the extra one at the coarsest grid, where it is cheap): for the small VLM's
# 32-px latent grid ("small-s32": 4 x 4 latents at 128 px).
DCAE_SMALL_CPU_F32: dict[str, Any] = _one_level_more(DCAE_SMALL_CPU)

DCAE_PRESETS: dict[str, dict[str, Any]] = {
    "f32c32-sana-1.1": DCAE_F32C32_SANA_1_1, "small-cpu": DCAE_SMALL_CPU, "small-cpu-f32": DCAE_SMALL_CPU_F32,
}

AE_PRESETS: dict[str, AEConfig] = {
    # Authors' full scale: InternVL3 (or Qwen2.5-VL) vision path (stride 28) + DC-AE f32c32 (SANA 1.1) decoder.
    "internvl3-f32c32": AEConfig(encoder="vlm", dcae=DCAE_F32C32_SANA_1_1),
    # The baseline of the convergence comparison: DC-AE f32c32 encoder+decoder on the same 28-px latent grid.
    "pixel-f32c32": AEConfig(encoder="pixel", stride=28, dcae=DCAE_F32C32_SANA_1_1),
    # CPU scale: the small VLM's vision path + a ~1.5M-parameter DC-AE decoder.
    "small-cpu": AEConfig(encoder="vlm", dcae=DCAE_SMALL_CPU),
    # its pixel baseline, on the small VLM's 16-px latent grid unless `stride` is given
    "pixel-small-cpu": AEConfig(encoder="pixel", stride=16, dcae=DCAE_SMALL_CPU),
}

#: the model-size preset (`AE_PRESETS`) of a fresh VGT-AE, per scale and encoder
AE_SCALE_PRESETS: dict[tuple[str, str], str] = {
    ("cpu", "vlm"): "small-cpu", ("cpu", "pixel"): "pixel-small-cpu",
    ("full", "vlm"): "internvl3-f32c32", ("full", "pixel"): "pixel-f32c32",
}

AE_STAGE_PRESETS: dict[str, AEStageConfig] = {
    # Released config, stage 1: GAN from 30k steps; stage 2: channel LN + noise 0.1, distill 0.1, GAN from 10k.
    "full-stage1": AEStageConfig(stage=1, distill_weight=1.0, gan_weight=0.1, gan_start=30_000, image_size=448),
    "full-stage2": AEStageConfig(
        stage=2, channel_norm=True, noise_gamma=0.1, distill_weight=0.1, gan_weight=0.1, gan_start=10_000,
        image_size=448,
    ),
    # CPU scale: no GAN by default (too few steps for it to help), same regularisers.
    "cpu-stage1": AEStageConfig(stage=1, distill_weight=1.0, gan_weight=0.0, image_size=128, discriminator_lr=2e-4),
    "cpu-stage2": AEStageConfig(stage=2, channel_norm=True, noise_gamma=0.1, distill_weight=0.1, gan_weight=0.0,
                                image_size=128, discriminator_lr=2e-4),
}


def ae_preset(name: str, **changes: Any) -> AEConfig:
    """The VGT-AE architecture `name` with some fields changed (its DC-AE config copied, so changing it is safe)."""
    base = _lookup(AE_PRESETS, name, "VGT-AE")
    return dataclasses.replace(base, **{"dcae": dict(base.dcae), **changes})


def ae_stage_preset(name: str, **changes: Any) -> AEStageConfig:
    return dataclasses.replace(_lookup(AE_STAGE_PRESETS, name, "VGT-AE stage"), **changes)


# ---------------------------------------------------------------------------------------------- VGT-AR

def _cpu_small(hidden_size: int, latent_channels: int) -> ARConfig:
    # a head small enough to train on a laptop CPU (ShapesWorld; the small VLM's 8x8 grid at 128 px, grids up to
    # 16x16)
    return ARConfig(hidden_size=hidden_size, latent_channels=latent_channels, max_grid=16,
                    head=FlowHeadConfig(width=256, depth=4),
                    sampling=SamplingConfig(grid_size=8, num_inference_steps=20))


def _authors_head(hidden_size: int, latent_channels: int) -> ARConfig:
    # the authors' head (width 1536, 12 blocks, ~150M parameters)
    return ARConfig(hidden_size=hidden_size, latent_channels=latent_channels, max_grid=64,
                    head=FlowHeadConfig(width=1536, depth=12))


#: generator architectures, each built for the backbone's width: `AR_PRESETS[name](hidden_size, latent_channels)`;
#: "vgt-0.6b" / "vgt-1.6b" put the authors' head on the InternVL3-1B / InternVL3-2B class language models (the two
#: differ only in the backbone)
AR_PRESETS: dict[str, Callable[[int, int], ARConfig]] = {
    "cpu-small": _cpu_small, "vgt-0.6b": _authors_head, "vgt-1.6b": _authors_head,
}


#: the training schedule (`TRAIN_PRESETS`) of each generator size unless one is named (`vgt train ar`)
AR_TRAIN_PRESETS: dict[str, str] = {"cpu-small": "ar-cpu", "vgt-0.6b": "ar-pretrain", "vgt-1.6b": "ar-pretrain"}


def ar_preset(name: str, hidden_size: int, latent_channels: int = 32) -> ARConfig:
    """The generator architecture `name` on a language model `hidden_size` wide."""
    return _lookup(AR_PRESETS, name, "VGT-AR")(hidden_size, latent_channels)


# ---------------------------------------------------------------------------------------------- small VLM

SMALL_VLM_PRESETS: dict[str, SmallVLMConfig] = {
    # the shipped small VLM: 128 px images, stride 16
    "small": SmallVLMConfig(),
    # the same at stride 32: 16 x 16-px patches, a 4 x 4 token grid at 128 px (a quarter of the tokens)
    "small-s32": SmallVLMConfig(patch_size=16),
    # the small VLM at 64 px: stride 16, a 4 x 4 token grid (the same pixels per token as "small")
    "small-64": SmallVLMConfig(image_size=64),
    # a seconds-long CPU smoke test: 32 px images, stride 8
    "toy": SmallVLMConfig(image_size=32, patch_size=4, vision_width=32, vision_layers=2, vision_heads=2,
                          text_width=64, text_layers=2, text_heads=2, kv_heads=1),
}


def small_vlm_preset(name: str) -> SmallVLMConfig:
    return _lookup(SMALL_VLM_PRESETS, name, "small-VLM")


# ---------------------------------------------------------------------------------------------- training schedules

# A named schedule is a whole TrainConfig, and a run is `dataclasses.replace(TRAIN_PRESETS[name], **what the user
# set)`, nothing in between. Full-scale values follow SPEC.md sections 2-3; the CPU ones size each stage for a
# 2-core machine (docs/recipe.md).
_VLM_SMALL = TrainConfig(steps=2400, batch_size=32, lr=1e-3, min_lr=5e-5, warmup_steps=100, weight_decay=0.05,
                         grad_clip=1.0, precision="bf16", log_every=10, save_every=200, eval_every=400)
_VLM_SMALL_FP32 = dataclasses.replace(_VLM_SMALL, precision="fp32")
TRAIN_PRESETS: dict[str, TrainConfig] = {
    # `vgt train toy`: a few hundred CPU steps on a tiny model: fast feedback, no EMA.
    "toy": TrainConfig(steps=200, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=20, log_every=10, save_every=100,
                       eval_every=100),
    # the small VLM (`vgt train vlm --vlm-preset small`): bf16 autocast is 1.9x the fp32 throughput on a CPU with
    # fast bf16 matmuls, so 2,400 steps fit the 30-minute budget of two cores there
    "vlm-small": _VLM_SMALL,
    # `--vlm-preset small-s32` and `small-64`: a quarter of the image tokens, in fp32 (faster than bf16 on CPUs
    # whose bf16 matmuls are slow); tried for a cheaper recipe (docs/recipe.md)
    "vlm-small-s32": _VLM_SMALL_FP32,
    "vlm-small-64": _VLM_SMALL_FP32,
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


def train_preset(name: str, **changes: Any) -> TrainConfig:
    """The training schedule `name` with some fields replaced."""
    return dataclasses.replace(_lookup(TRAIN_PRESETS, name, "training"), **changes)


# ---------------------------------------------------------------------------------------------- the recipe

RECIPES: dict[str, RecipeConfig] = {
    # The shipped model's recipe (the field defaults): 128 px, stride 16 (8 x 8 latents), VGT-AR 4000 steps with 4
    # noise draws per token. Measured on a 2-core CPU with fast bf16 (2026-12-02): VLM 34.3 min, VGT-AE 10.3,
    # latent cache 7.0, VGT-AR 61.7 (0.93 s/step), eval 3.0: 116 min in all
    "full": RecipeConfig(name="full"),
    # CI: 32 px toy VLM (4 x 4 latents), tens of steps per stage. Checks that everything runs and losses fall.
    "quick": RecipeConfig(
        name="quick", vlm_preset="toy", vlm_steps=40, vlm_batch_size=8, image_size=32, ae1_steps=30, ae2_steps=30,
        ae_batch_size=8, cache_samples=256, ar_steps=40, ar_batch_size=8, ar_lr=2e-3, eval_prompts_per_category=1,
        eval_images_per_prompt=1, eval_every=0, log_every=5, ar_sample_every=0,
    ),
}


def recipe_preset(name: str, **changes: Any) -> RecipeConfig:
    """A named recipe with some fields replaced (e.g. `recipe_preset("full", ar_steps=5000)`)."""
    return dataclasses.replace(_lookup(RECIPES, name, "recipe"), **changes)
