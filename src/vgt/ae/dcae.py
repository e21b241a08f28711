"""DC-AE (diffusers `AutoencoderDC`) parts, built from an `AutoencoderDC` config dict.

VGT-AE keeps only DC-AE's decoder (and the pixel-VAE baseline also its encoder). Configs use `AutoencoderDC`'s own
keys, so a pretrained DC-AE folder's config.json can be used as is (named sizes: `vgt.presets.DCAE_PRESETS`);
`load_dcae_part` copies the weights of the decoder or encoder out of such a folder.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderDC
from diffusers.models.autoencoders.autoencoder_dc import DCDownBlock2d, DCUpBlock2d, Decoder, Encoder
from torch import nn


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
