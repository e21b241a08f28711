"""Tiny random components for tests and examples (diffusers' `get_dummy_components` pattern): CPU-sized backbones,
a DC-AE decoder, a VGT-AE and a whole pipeline, each built from a seed without touching the global RNG."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vgt.ae.model import VGTAutoencoder
from vgt.ar.config import ARConfig, FlowHeadConfig, SamplingConfig
from vgt.ar.model import VGTForGeneration
from vgt.backbones.base import Backbone
from vgt.pipeline import VGTPipeline
from vgt.presets import DCAE_SMALL_CPU, ae_preset
from vgt.vlm.model import tiny_internvl_backbone, tiny_qwen2_5_vl_backbone

__all__ = ["TINY_CAPTIONS", "TINY_DCAE", "fill_zero_parameters", "random_images", "tiny_ae", "tiny_generator",
           "tiny_internvl_backbone", "tiny_pipeline", "tiny_qwen2_5_vl_backbone"]

#: the words the tiny pipeline's tokenizer knows
TINY_CAPTIONS = ("a red circle", "a blue square")

#: a DC-AE decoder small enough for unit tests: stride 4 (3 levels), 8 latent channels
TINY_DCAE = {
    **DCAE_SMALL_CPU, "attention_head_dim": 8, "latent_channels": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [8, 16, 32], "decoder_block_out_channels": [8, 16, 32],
    "encoder_layers_per_block": [1, 1, 1], "decoder_layers_per_block": [1, 1, 1],
    "encoder_qkv_multiscales": [[], [], [5]], "decoder_qkv_multiscales": [[], [], [5]],
}


def random_images(batch: int = 2, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """[batch, 3, height, width] uniform images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g) * 2 - 1


def tiny_ae(backbone: Backbone, seed: int = 0, **overrides) -> VGTAutoencoder:
    """A random VGT-AE on `backbone`'s vision path with the tiny DC-AE decoder (8 latent channels)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VGTAutoencoder.from_backbone(backbone, ae_preset("small-cpu", **{"latent_channels": 8,
                                                                              "dcae": TINY_DCAE, **overrides}))


def fill_zero_parameters(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Give zero-initialised parameters (the flow head's output layers) random values, so that outputs depend on
    the inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.abs().sum() == 0:
                param.copy_(torch.randn(param.shape, generator=g) * scale)


def tiny_generator(backbone: Backbone, ae: VGTAutoencoder, seed: int = 0, head_width: int = 32,
                   max_grid: int = 6, grid_size: int = 4) -> VGTForGeneration:
    """A random VGT-AR around `backbone`'s language model: a 2-block head, a `max_grid` query grid, a
    `grid_size` default grid and 4 head steps."""
    config = ARConfig(hidden_size=backbone.text.hidden_size, latent_channels=ae.latent_channels, max_grid=max_grid,
                      head=FlowHeadConfig(width=head_width, depth=2),
                      normalize_sampled_latents=ae.config.channel_norm,
                      sampling=SamplingConfig(grid_size=grid_size, num_inference_steps=4))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VGTForGeneration(config, backbone, ae=ae)


def tiny_pipeline(seed: int = 0, head_width: int = 32, words: Sequence[str] = TINY_CAPTIONS) -> VGTPipeline:
    """Random tiny InternVL (stride 8, 32 px) + a random stage-2 VGT-AE + a VGT-AR with a 4x4 default grid (6x6
    at most), its progress bar off."""
    backbone = tiny_internvl_backbone(image_size=32, words=list(words))
    ae = tiny_ae(backbone, seed, channel_norm=True)
    pipe = VGTPipeline.from_generator(tiny_generator(backbone, ae, seed, head_width=head_width))
    pipe.set_progress_bar_config(disable=True)
    return pipe
