"""VGT-AE: a VLM's own vision path as the encoder of an autoencoder whose decoder is DC-AE's.

images [-1, 1] -> vision tower + projector (a trainable copy of `backbone.vision`) -> visual tokens [B, h*w, D]
-> bottleneck -> latents [B, C, h, w] -> (per-token channel LayerNorm) -> (training-only noise) -> DC-AE decoder
-> resize to the encoder's pixel grid -> images [-1, 1].

The pixel-VAE baseline (`encoder="pixel"`) swaps the vision path + bottleneck for DC-AE's conv encoder and keeps
everything after the latents the same.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from vgt.ae.bottleneck import Bottleneck, add_latent_noise, normalize_latents
from vgt.ae.config import AEConfig
from vgt.ae.dcae import build_dcae_decoder, decoder_stride, load_dcae_part, read_dcae_config
from vgt.ae.pixel_encoder import PixelEncoder
from vgt.backbones.base import Backbone, VisionEncoder, grid_for_stride
from vgt.loading import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    TypedConfigModel,
    load_component,
    read_component_config,
    resolve_folder,
    weights_file,
)

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ModelMixin", "VGTAutoencoder"]  # ModelMixin: diffusers' loader looks here

#: how far outside [-1, 1] an input may stray (resampling overshoot) before it counts as the wrong range
RANGE_TOLERANCE = 1e-2


@dataclass
class AEEncoderOutput:
    #: [B, C, h, w]; channel-normalized when the config says so, never noised
    latent: torch.Tensor
    #: [B, h*w, D] projector output of the vision path (None for the pixel encoder): the self-distillation target
    tokens: torch.Tensor | None = None


@dataclass
class AEDecoderOutput:
    #: [B, 3, H, W] images in [-1, 1] (not clamped)
    sample: torch.Tensor


@dataclass
class AEOutput:
    sample: torch.Tensor
    latent: torch.Tensor
    tokens: torch.Tensor | None = None


def is_ae_folder(directory: Path) -> bool:
    """Whether `directory` holds a VGT-AE written by `save_pretrained` (so replacing it loses nothing foreign)."""
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"encoder", "dcae"} <= set(config) and weights_file(directory) is not None


def legacy_vision_spec(directory: Path, values: dict[str, Any], backbone: Backbone | None,
                       backbone_path: str | Path | None) -> dict:
    """The vision spec of an AE exported before configs held one: from the loaded `backbone`, else from the VLM
    folder (`backbone_path`, else the one its config recorded, relative to `directory`); only the VLM's config
    is read, not its weights."""
    width = values.get("projector_width")
    if backbone is not None:
        spec = backbone.vision.spec()
    else:
        spec = _vlm_folder_spec(directory, values, backbone_path)
    if width is not None and spec["family"] == "internvl":  # the AE's own, narrower projector
        spec["config"]["text_config"]["hidden_size"] = width
    return spec


def _vlm_folder_spec(directory: Path, values: dict[str, Any], backbone_path: str | Path | None) -> dict:
    recorded = values.get("backbone_path") and directory / values["backbone_path"]
    path = backbone_path or recorded
    if path is None or not Path(path).is_dir():
        raise FileNotFoundError(
            f"the VGT-AE in {str(directory)!r} was exported by an older vgt and rebuilds its vision path from its "
            f"VLM, but the VLM folder {str(path)!r} is missing; pass backbone_path= (CLI: --backbone-path)"
        )
    from vgt.backbones.registry import vision_spec_from_folder

    return vision_spec_from_folder(values.get("backbone") or "auto", path)


class VGTAutoencoder(TypedConfigModel):
    """The autoencoder, a diffusers model built from its config alone (`VGTAutoencoder(config)`; the vision path
    comes from `config.vision`). Build a fresh one with `from_backbone` (training from a VLM), an exported one with
    `from_pretrained`; `encode(x).latent`, `decode(z).sample` and `forward(x)` follow diffusers' autoencoders.
    `config` is the typed `AEConfig` (diffusers' config.json is written from it)."""

    config_class = AEConfig

    def __init__(self, config: AEConfig, vision: VisionEncoder | None = None):
        """`vision`: an already built vision path to use instead of building one from `config.vision`
        (`from_backbone` passes its copy of the VLM's)."""
        super().__init__()
        self._settings = config
        if config.encoder == "vlm":
            if config.vision is None:
                raise ValueError("a VLM-encoder VGT-AE needs its vision spec (config.vision): build it with "
                                 "VGTAutoencoder.from_backbone(backbone, config)")
            if vision is None:
                from vgt.backbones.registry import build_vision_encoder

                vision = build_vision_encoder(config.vision)
            self.vision = vision
            self.bottleneck = Bottleneck(self.vision.out_dim, config.latent_channels, config.bottleneck_blocks,
                                         config.bottleneck_norm_eps)
            self.stride: int = self.vision.stride
        else:
            self.pixel_encoder = PixelEncoder(config.dcae, config.stride)
            self.stride = config.stride
        if config.stride not in (None, self.stride):
            raise ValueError(f"config stride {config.stride} differs from the vision path's stride {self.stride}")
        self.decoder = build_dcae_decoder(config.dcae)
        self.decoder_stride = decoder_stride(self.decoder)

    # ------------------------------------------------------------------ construction and persistence

    @classmethod
    def from_backbone(
        cls, backbone: Backbone | None, config: AEConfig, dcae_path: str | Path | None = None
    ) -> VGTAutoencoder:
        """A fresh autoencoder whose vision path starts as a copy of `backbone.vision` (None for the pixel
        encoder). With `dcae_path`, the decoder (and the pixel encoder) start from a pretrained DC-AE folder, whose
        config replaces `config.dcae` (and sets `latent_channels`). `config` itself is not changed: the model gets
        a completed copy (backbone name, vision spec, stride)."""
        changes: dict[str, Any] = {}
        if dcae_path is not None:
            dcae = read_dcae_config(dcae_path)
            changes.update(dcae=dcae, latent_channels=dcae.get("latent_channels", config.latent_channels))
        vision = None
        if config.encoder == "vlm":
            if backbone is None:
                raise ValueError("the vlm encoder needs a backbone (load one with vgt.backbones.load_backbone)")
            vision = copy.deepcopy(backbone.vision).requires_grad_(True)
            if config.projector_width not in (None, vision.out_dim):
                vision.resize_projector(config.projector_width)
            changes.update(backbone=getattr(backbone, "name", None) or config.backbone, vision=vision.spec(),
                           stride=vision.stride)
        model = cls(dataclasses.replace(config, **changes), vision)
        if dcae_path is not None:
            load_dcae_part(model.decoder, dcae_path, "decoder")
            if config.encoder == "pixel":
                load_dcae_part(model.pixel_encoder.encoder, dcae_path, "encoder")
        return model

    def save_pretrained(self, directory: str | Path, overwrite: bool = False, **kwargs: Any) -> None:
        """config.json + diffusion_pytorch_model.safetensors (diffusers' layout), written atomically. An existing
        folder is replaced only when it holds a VGT-AE (or nothing), or with `overwrite`."""
        from vgt.io import atomic_directory

        with atomic_directory(directory, overwrite, ours=is_ae_folder) as staging:
            super().save_pretrained(staging, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, subfolder: str | None = None,
                        torch_dtype: torch.dtype | None = None,
                        backbone: Backbone | None = None, backbone_path: str | Path | None = None,
                        config_changes: dict[str, Any] | None = None, **kwargs: Any) -> VGTAutoencoder:
        """Load an exported model (a local folder or a Hub repository id, with `subfolder` e.g. "ae"), strictly:
        any missing, unexpected or mis-shaped weight is an error. Models exported by older vgt versions, whose
        config points at their VLM instead of describing the vision path, take it from `backbone` (the loaded
        VLM), `backbone_path`, or the recorded VLM folder. `config_changes` sets `AEConfig` fields that do not
        shape the weights (a training stage's `channel_norm`, `image_size`) before the model is built."""
        from vgt.loading import check_loading_kwargs

        check_loading_kwargs(kwargs, "a VGT-AE")
        folder = resolve_folder(directory, subfolder, **kwargs)
        values = read_component_config(folder, "VGT-AE", "`vgt train ae` or VGTAutoencoder.save_pretrained")
        if values.get("encoder", "vlm") == "vlm" and values.get("vision") is None:
            values = {**values, "vision": legacy_vision_spec(folder, values, backbone, backbone_path)}
        config = dataclasses.replace(AEConfig.from_dict(values), **(config_changes or {}))
        return load_component(lambda: cls(config), folder, torch_dtype)

    # ------------------------------------------------------------------ geometry

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent grid for an image size; a clear error when the size is not a multiple of the stride."""
        return grid_for_stride(height, width, self.stride, "VGT-AE")

    def image_size(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Pixel size decoded from a latent grid."""
        return grid[0] * self.stride, grid[1] * self.stride

    def _check_images(self, images: torch.Tensor) -> tuple[int, int]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        low, high = images.min().item(), images.max().item()
        if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"images must be in [-1, 1] (got values in [{low:.3g}, {high:.3g}]); map [0, 1] images with x*2-1 "
                "and [0, 255] images with x/127.5-1"
            )
        return self.grid_size(images.shape[2], images.shape[3])

    # ------------------------------------------------------------------ the model

    normalize_latents = staticmethod(normalize_latents)

    @apply_forward_hook
    def encode(self, images: torch.Tensor, return_dict: bool = True) -> AEEncoderOutput | tuple[torch.Tensor]:
        """Images in [-1, 1] -> latents [B, C, h, w] (deterministic; noise is added only in `forward` while
        training)."""
        grid = self._check_images(images)
        tokens = None
        if self.config.encoder == "vlm":
            tokens = self.vision(images)
            latent = self.bottleneck(tokens.to(self.bottleneck.to_latent[1].weight.dtype), grid)
        else:
            latent = self.pixel_encoder(images, grid)
        if self.config.channel_norm:
            latent = normalize_latents(latent)
        if not return_dict:
            return (latent,)
        return AEEncoderOutput(latent=latent, tokens=tokens)

    @apply_forward_hook
    def decode(self, latent: torch.Tensor, return_dict: bool = True) -> AEDecoderOutput | tuple[torch.Tensor]:
        """Latents [B, C, h, w] -> images [B, 3, h*stride, w*stride] in [-1, 1]. DC-AE decodes at its own stride;
        when that differs from the encoder's, the output is resized bilinearly to the encoder's pixel grid."""
        if latent.dim() != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [B, {self.latent_channels}, h, w], got shape {tuple(latent.shape)}")
        sample = self.decoder(latent)
        size = self.image_size(tuple(latent.shape[-2:]))
        if tuple(sample.shape[-2:]) != size:
            sample = F.interpolate(sample, size=size, mode="bilinear", align_corners=False)
        if not return_dict:
            return (sample,)
        return AEDecoderOutput(sample=sample)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                noise_gamma: float = 0.0) -> AEOutput:
        """Reconstruct `images`. In training mode the latents get the stage-2 noise z + a * eps, a ~ U[0,
        noise_gamma] per sample (drawn from `generator`); `noise_gamma` is a training setting, not the model's."""
        if noise_gamma < 0:
            raise ValueError(f"noise_gamma must be >= 0 (got {noise_gamma})")
        encoded = self.encode(images)
        latent = encoded.latent
        if self.training:
            latent = add_latent_noise(latent, noise_gamma, generator)
        return AEOutput(sample=self.decode(latent).sample, latent=encoded.latent, tokens=encoded.tokens)
