"""VGT-AE: a VLM's own vision path as the encoder of an autoencoder whose decoder is DC-AE's.

images [-1, 1] -> vision tower + projector (a trainable copy of `backbone.vision`) -> visual tokens [B, h*w, D]
-> bottleneck -> latents [B, C, h, w] -> (per-token channel LayerNorm) -> (training-only noise) -> DC-AE decoder
-> resize to the encoder's pixel grid -> images [-1, 1].

The pixel-VAE baseline (`encoder="pixel"`) swaps the vision path + bottleneck for DC-AE's conv encoder and keeps
everything after the latents the same.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vgt.ae.bottleneck import Bottleneck, add_latent_noise, normalize_latents
from vgt.ae.config import AEConfig
from vgt.ae.dcae import build_dcae_decoder, decoder_stride, load_dcae_part, read_dcae_config
from vgt.ae.pixel_encoder import PixelEncoder
from vgt.backbones.base import Backbone, VisionEncoder, grid_for_stride
from vgt.io import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
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
    return isinstance(config, dict) and {"encoder", "dcae"} <= set(config) and (directory / WEIGHTS_NAME).is_file()


class VGTAutoencoder(nn.Module):
    """The autoencoder. Build it with `from_backbone` (training from a VLM) or `from_pretrained` (an exported
    model); `encode(x).latent`, `decode(z).sample` and `forward(x)` follow diffusers' autoencoders."""

    def __init__(self, config: AEConfig, vision: VisionEncoder | None = None):
        super().__init__()
        self.config = config
        if config.encoder == "vlm":
            if vision is None:
                raise ValueError("a VLM-encoder VGT-AE needs the VLM's vision path: use VGTAutoencoder.from_backbone")
            self.vision = copy.deepcopy(vision).requires_grad_(True)
            if config.projector_width not in (None, self.vision.out_dim):
                self.vision.resize_projector(config.projector_width)
            self.bottleneck = Bottleneck(self.vision.out_dim, config.latent_channels, config.bottleneck_blocks,
                                         config.bottleneck_norm_eps)
            self.stride: int = vision.stride
        else:
            self.pixel_encoder = PixelEncoder(config.dcae, config.stride)
            self.stride = config.stride
        if config.stride not in (None, self.stride):
            raise ValueError(f"config stride {config.stride} differs from the vision path's stride {self.stride}")
        config.stride = self.stride
        self.decoder = build_dcae_decoder(config.dcae)
        self.decoder_stride = decoder_stride(self.decoder)

    # ------------------------------------------------------------------ construction and persistence

    @classmethod
    def from_backbone(
        cls, backbone: Backbone | None, config: AEConfig, dcae_path: str | Path | None = None
    ) -> VGTAutoencoder:
        """A fresh autoencoder around a copy of `backbone.vision` (None for the pixel encoder). With `dcae_path`,
        the decoder (and the pixel encoder) start from a pretrained DC-AE folder, whose config replaces
        `config.dcae` (and sets `latent_channels`)."""
        if dcae_path is not None:
            config.dcae = read_dcae_config(dcae_path)
            config.latent_channels = config.dcae.get("latent_channels", config.latent_channels)
            config.__post_init__()
        if config.encoder == "vlm":
            if backbone is None:
                raise ValueError("the vlm encoder needs a backbone (load one with vgt.backbones.load_backbone)")
            config.backbone = getattr(backbone, "name", None) or config.backbone
        model = cls(config, backbone.vision if backbone is not None and config.encoder == "vlm" else None)
        if dcae_path is not None:
            load_dcae_part(model.decoder, dcae_path, "decoder")
            if config.encoder == "pixel":
                load_dcae_part(model.pixel_encoder.encoder, dcae_path, "encoder")
        return model

    def save_pretrained(self, directory: str | Path, backbone_path: str | None = None,
                        overwrite: bool = False) -> None:
        """config.json + model.safetensors, written atomically. The frozen teacher is not part of the model.
        `backbone_path` replaces the recorded VLM folder; a relative one is read relative to `directory`. An
        existing folder is replaced only when it holds a VGT-AE (or nothing), or with `overwrite`."""
        from vgt.io import atomic_directory

        config = self.config.to_dict()
        if backbone_path is not None:
            config["backbone_path"] = backbone_path
        with atomic_directory(directory, overwrite, ours=is_ae_folder) as staging:
            (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, backbone: Backbone | None = None, backbone_path: str | Path | None = None
    ) -> VGTAutoencoder:
        """Load an exported model. A VLM-encoder model rebuilds its vision path from `backbone` (pass the loaded
        VLM to avoid loading it twice), else from `backbone_path`, else from the path recorded in its config."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{str(directory)!r} is not a VGT-AE folder: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(written by `vgt train ae` or VGTAutoencoder.save_pretrained)"
            )
        config = AEConfig.from_dict(read_json(directory / CONFIG_NAME))
        vision = None
        if config.encoder == "vlm":
            if backbone is None:
                from vgt.backbones.registry import load_backbone

                recorded = config.backbone_path and directory / config.backbone_path  # relative: to this folder
                path = backbone_path or recorded
                if path is None or not Path(path).is_dir():
                    raise FileNotFoundError(
                        f"the VGT-AE in {str(directory)!r} rebuilds its vision path from its VLM, but the VLM folder "
                        f"{str(path)!r} is missing; pass backbone_path= (CLI: --backbone-path)"
                    )
                backbone = load_backbone(config.backbone or "auto", path)
            vision = backbone.vision
        model = cls(config, vision)
        model.load_weights(directory / WEIGHTS_NAME)
        return model

    def load_weights(self, path: str | Path) -> None:
        """Strict load of a safetensors state dict: any missing, unexpected or mis-shaped key is an error naming it."""
        from vgt.train.checkpoint import load_weights

        load_weights(self, path)

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

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> AEOutput:
        """Reconstruct `images`. In training mode the latents get the configured noise (drawn from `generator`)."""
        encoded = self.encode(images)
        latent = encoded.latent
        if self.training:
            latent = add_latent_noise(latent, self.config.noise_gamma, generator)
        return AEOutput(sample=self.decode(latent).sample, latent=encoded.latent, tokens=encoded.tokens)
