"""VGT-AE configuration: the model (`AEConfig`, stored in an exported model's config.json) and the training
stage (`AEStageConfig`: loss weights, regularisers, encoder freezing). Named presets: `vgt.presets`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ENCODERS = ("vlm", "pixel")
#: config keys of older exports: the training-only `noise_gamma` (now an argument of `VGTAutoencoder.forward`) and
#: `backbone_path` (the VLM folder the vision path was rebuilt from, before the config held `vision`)
LEGACY_KEYS = ("noise_gamma", "backbone_path")


@dataclass
class AEConfig:
    """The autoencoder's architecture. `encoder="vlm"` tunes a copy of a VLM's vision path (tower + projector);
    `encoder="pixel"` is the pixel-VAE baseline (DC-AE's conv encoder) on the same latent grid."""

    encoder: str = "vlm"
    #: registry name of the VLM (`vgt.backbones.registry`), vlm encoder only
    backbone: str | None = None
    #: what builds the vision path without the VLM (`VisionEncoder.spec()`: family, HF vision config, projector
    #: width, pixel normalization); set by `VGTAutoencoder.from_backbone`, vlm encoder only
    vision: dict[str, Any] | None = None
    #: pixels per latent along each axis; the vlm encoder takes it from the backbone, the pixel encoder needs it
    stride: int | None = None
    latent_channels: int = 32
    bottleneck_blocks: int = 3
    #: LayerNorm eps of the bottleneck's residual blocks (the authors' released AEs use 1e-6)
    bottleneck_norm_eps: float = 1e-5
    #: width of the AE's own copy of the VLM projector, when it differs from the backbone's (the released
    #: InternVL3-1.6B generator pairs InternVL3-2B's language model with an AE built on InternVL3-1B: 896 wide)
    projector_width: int | None = None
    #: per-token channel LayerNorm on the latents (stage 2 and later)
    channel_norm: bool = False
    #: `AutoencoderDC` config (diffusers keys) of the pixel decoder (and of the pixel baseline's encoder); missing
    #: keys take AutoencoderDC's defaults. Named sizes: `vgt.presets.DCAE_PRESETS`
    dcae: dict[str, Any] = field(default_factory=dict)
    #: square resolution the model was trained at (the default size for evaluation); any multiple of the stride works
    image_size: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.encoder not in ENCODERS:
            problems.append(f"encoder {self.encoder!r} is not one of {ENCODERS}")
        if self.encoder == "pixel" and not self.stride:
            problems.append("the pixel encoder needs `stride` (use the VLM's stride for a fair comparison)")
        if self.dcae.get("latent_channels", 32) != self.latent_channels:
            problems.append(
                f"latent_channels {self.latent_channels} differs from the DC-AE decoder's "
                f"{self.dcae.get('latent_channels', 32)}; set both to the same value"
            )
        if problems:
            raise ValueError("invalid VGT-AE config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AEConfig:
        """From a saved config.json: diffusers' bookkeeping keys (`_class_name`, ...) and the keys older versions
        wrote (`LEGACY_KEYS`) are skipped; any other unknown key is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if not k.startswith("_") and k not in LEGACY_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown VGT-AE config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)


PERCEPTUAL_NETWORKS = ("none", "vision")


@dataclass
class AEStageConfig:
    """What one VGT-AE training stage optimizes. Optimizer settings (lr, schedule, clipping, precision) are the
    training engine's `TrainConfig`."""

    stage: int = 1
    channel_norm: bool = False
    noise_gamma: float = 0.0
    reconstruction_weight: float = 1.0
    #: frozen feature network of the perceptual loss: "vision" = the original VLM vision path, "none" = off
    perceptual: str = "none"
    perceptual_weight: float = 1.0
    #: self-distillation towards the frozen original encoder + projector (vlm encoder only)
    distill_weight: float = 1.0
    #: hinge GAN generator weight (0 disables the GAN)
    gan_weight: float = 0.1
    gan_start: int = 30_000
    lecam_weight: float = 0.001
    discriminator_lr: float = 1e-4
    #: stage 2: freeze the vision path (paper) instead of training it at `encoder_lr_mult` (released code)
    freeze_encoder: bool = False
    encoder_lr_mult: float = 0.5
    image_size: int = 448

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in (1, 2):
            problems.append(f"stage must be 1 or 2 (got {self.stage})")
        if self.perceptual not in PERCEPTUAL_NETWORKS:
            problems.append(f"perceptual {self.perceptual!r} is not one of {PERCEPTUAL_NETWORKS}")
        for name in ("reconstruction_weight", "perceptual_weight", "distill_weight", "gan_weight", "lecam_weight",
                     "noise_gamma", "gan_start", "encoder_lr_mult"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if problems:
            raise ValueError("invalid VGT-AE stage config: " + "; ".join(problems))

    def model_settings(self) -> dict[str, Any]:
        """The `AEConfig` fields this stage fixes: the model it trains is built with them (and its export records
        them)."""
        return {"channel_norm": self.channel_norm, "image_size": self.image_size}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
