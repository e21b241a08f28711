"""DC-AE (diffusers `AutoencoderDC`) parts, built from an `AutoencoderDC` config dict.

VGT-AE keeps only DC-AE's decoder (and the pixel-VAE baseline also its encoder). Configs use `AutoencoderDC`'s own
keys, so a pretrained DC-AE folder's config.json can be used as is; `load_dcae_part` copies the weights of the
decoder or encoder out of such a folder.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderDC
from diffusers.models.autoencoders.autoencoder_dc import DCDownBlock2d, DCUpBlock2d, Decoder, Encoder
from torch import nn

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

DCAE_PRESETS: dict[str, dict[str, Any]] = {"f32c32-sana-1.1": DCAE_F32C32_SANA_1_1, "small-cpu": DCAE_SMALL_CPU}


def _full_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` completed with AutoencoderDC's defaults; unknown keys are an error, not silently dropped."""
    params = inspect.signature(AutoencoderDC.__init__).parameters
    known = {name: p.default for name, p in params.items() if name != "self"}
    unknown = sorted(k for k in config if k not in known and not k.startswith("_"))
    if unknown:
        raise ValueError(f"unknown AutoencoderDC config keys {unknown}; valid keys: {sorted(known)}")
    return {**known, **{k: v for k, v in config.items() if k in known}}


def build_dcae_decoder(config: dict[str, Any]) -> Decoder:
    """The decoder half of `AutoencoderDC(**config)`, built without allocating the encoder."""
    c = _full_config(config)
    return Decoder(
        in_channels=c["in_channels"],
        latent_channels=c["latent_channels"],
        attention_head_dim=c["attention_head_dim"],
        block_type=_tuple(c["decoder_block_types"]),
        block_out_channels=tuple(c["decoder_block_out_channels"]),
        layers_per_block=tuple(c["decoder_layers_per_block"]),
        qkv_multiscales=tuple(tuple(m) for m in c["decoder_qkv_multiscales"]),
        norm_type=_tuple(c["decoder_norm_types"]),
        act_fn=_tuple(c["decoder_act_fns"]),
        upsample_block_type=c["upsample_block_type"],
        in_shortcut=c["decoder_in_shortcut"],
        conv_act_fn=c["decoder_conv_act_fn"],
    )


def build_dcae_encoder(config: dict[str, Any]) -> Encoder:
    """The encoder half of `AutoencoderDC(**config)`, built without allocating the decoder."""
    c = _full_config(config)
    return Encoder(
        in_channels=c["in_channels"],
        latent_channels=c["latent_channels"],
        attention_head_dim=c["attention_head_dim"],
        block_type=_tuple(c["encoder_block_types"]),
        block_out_channels=tuple(c["encoder_block_out_channels"]),
        layers_per_block=tuple(c["encoder_layers_per_block"]),
        qkv_multiscales=tuple(tuple(m) for m in c["encoder_qkv_multiscales"]),
        downsample_block_type=c["downsample_block_type"],
        out_shortcut=c["encoder_out_shortcut"],
    )


def _tuple(value: str | list[str]) -> str | tuple[str, ...]:
    return value if isinstance(value, str) else tuple(value)


def decoder_stride(decoder: Decoder) -> int:
    """Pixels per latent along each axis: every `DCUpBlock2d` doubles the resolution."""
    return 2 ** sum(isinstance(m, DCUpBlock2d) for m in decoder.modules())


def encoder_stride(encoder: Encoder) -> int:
    """Pixels per latent along each axis: every `DCDownBlock2d` halves the resolution."""
    return 2 ** sum(isinstance(m, DCDownBlock2d) for m in encoder.modules())


def read_dcae_config(folder: str | Path) -> dict[str, Any]:
    """The `AutoencoderDC` config of a pretrained DC-AE folder (diffusers layout)."""
    config = AutoencoderDC.load_config(str(folder))
    return {k: v for k, v in config.items() if not k.startswith("_")}


def load_dcae_part(module: nn.Module, folder: str | Path, part: str) -> None:
    """Copy the `part` ("decoder" or "encoder") weights of a pretrained DC-AE folder into `module`, strictly."""
    if part not in ("decoder", "encoder"):
        raise ValueError(f"part must be 'decoder' or 'encoder', got {part!r}")
    pretrained = AutoencoderDC.from_pretrained(str(folder), torch_dtype=torch.float32)
    source = getattr(pretrained, part).state_dict()
    result = module.load_state_dict(source, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"DC-AE {part} in {folder} does not match the configured {part}: "
            f"missing keys {result.missing_keys[:10]}, unexpected keys {result.unexpected_keys[:10]} "
            f"(build the model from that folder's config.json)"
        )
