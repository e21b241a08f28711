"""What VGT needs from a vision-language model, and nothing more.

A `Backbone` bundles three parts of a pretrained VLM:
- `vision`: a `VisionEncoder` — vision tower + the VLM's own projector/merger, last layer. Images in [-1, 1]
  (the input contract; normalization to the VLM's mean/std happens inside) -> visual tokens [B, h*w, D] in
  raster order, exactly the tokens the VLM's LLM would see. VGT-AE trains a copy of it.
- `text`: a `TextDecoder` — the language model body (no LM head): `inputs_embeds`, attention mask, position ids,
  KV cache -> last hidden states. VGT-AR fine-tunes it.
- `tokenizer` + chat template, used to build "Generate an image: {caption}" prompts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

GENERATION_INSTRUCTION = "Generate an image: {caption}"
UNCONDITIONAL_INSTRUCTION = "Generate an image."


def grid_for_stride(height: int, width: int, stride: int, what: str) -> tuple[int, int]:
    """Grid of `stride`-pixel cells covering an image, or an error naming the nearest valid size."""
    if height % stride or width % stride:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the {what} stride {stride}; resize or crop to e.g. "
            f"{max(1, round(height / stride)) * stride}x{max(1, round(width / stride)) * stride}"
        )
    return height // stride, width // stride


class VisionEncoder(nn.Module, ABC):
    """Vision tower + projector. `forward(images)` maps [B, 3, H, W] in [-1, 1] to [B, h*w, out_dim]."""

    #: pixels per visual token along each axis (patch size x merge factor; 28 for InternVL3 / Qwen2.5-VL)
    stride: int
    #: width of the visual tokens (the LLM hidden size for InternVL3 / Qwen2.5-VL)
    out_dim: int

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid for an image size; a clear error when the size does not fit the stride."""
        return grid_for_stride(height, width, self.stride, "encoder")

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor: ...

    def spec(self) -> dict:
        """Everything needed to rebuild this path without its VLM (`vgt.backbones.registry.build_vision_encoder`)."""
        raise ValueError(f"the {type(self).__name__} vision path cannot be saved without its VLM")

    def resize_projector(self, width: int) -> None:
        """Give this (copied) vision path a freshly initialised projector emitting `width`-wide tokens."""
        raise ValueError(f"the {type(self).__name__} vision path has no projector whose width can be changed")


@dataclass
class DecoderOutput:
    last_hidden_state: torch.Tensor
    past_key_values: object | None = None


class TextDecoder(nn.Module, ABC):
    """Language model body. Position ids are 1-D per row ([B, L]); backbones with special schemes (Qwen2.5-VL's
    mRoPE) broadcast them internally."""

    hidden_size: int

    @abstractmethod
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
    ) -> DecoderOutput: ...


class Backbone(nn.Module, ABC):
    """A loaded VLM seen through VGT's needs. Subclasses register themselves in `vgt.backbones.registry`."""

    name: str
    vision: VisionEncoder
    text: TextDecoder
    tokenizer: object  # a transformers PreTrainedTokenizerBase

    @abstractmethod
    def generation_prompts(self, captions: list[str | None]) -> dict[str, torch.Tensor]:
        """Tokenize chat prompts "Generate an image: {caption}" (None -> the unconditional prompt), ending with the
        assistant header. Returns right-padded `input_ids` and `attention_mask` [B, L]."""

    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> Backbone: ...
