"""Qwen2.5-VL through HF `Qwen2_5_VLForConditionalGeneration`.

Visual tokens: the whole vision tower including its 2x2 patch merger. The tower takes flattened patches in the
Qwen image processor's order (each 2x2 merge block contiguous, blocks in raster order, every patch repeated over
the 2 temporal slots of a still image), runs windowed attention internally, and un-permutes its windows before
returning, so the merger output is in raster order of the merged grid. Stride = patch 14 x merge 2 = 28.

For generation the LLM gets 1-D position ids broadcast to the three mRoPE sections (temporal, height, width):
text-style positions for every token, as VGT does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from vgt.backbones.hf import (
    HFBackbone,
    HFTextDecoder,
    NormalizingVisionEncoder,
    architecture_dict,
    read_backbone_file,
)
from vgt.backbones.registry import register, register_vision

#: merged-token grid side at the default resolution (16 x 28 = 448 px, as in the paper)
DEFAULT_GRID = 16


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """[B, C, H, W] normalized pixels -> [B * H/p * W/p, C * temporal * p * p] in the Qwen processor's order."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.reshape(b, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # [B, gh/m, gw/m, m, m, C, p, p]
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)  # still image: repeat over time
    return x.reshape(b * gh * gw, c * temporal * patch * patch)


@register_vision("qwen2_5_vl")
class Qwen2_5_VLVisionEncoder(NormalizingVisionEncoder):
    """Qwen2.5-VL vision tower + merger: a view of a HF model's module (`from_model`), or built from a saved spec
    (`from_spec`, for a VGT-AE loaded on its own)."""

    def __init__(self, config: Qwen2_5_VLVisionConfig, visual: nn.Module, mean: list[float], std: list[float],
                 image_size: int | None = None):
        stride = config.patch_size * config.spatial_merge_size
        super().__init__(stride=stride, out_dim=config.out_hidden_size, image_size=image_size or DEFAULT_GRID * stride,
                         mean=mean, std=std)
        self.patch_size = config.patch_size
        self.merge = config.spatial_merge_size
        self.temporal_patch_size = config.temporal_patch_size
        self._config = config
        self.visual = visual

    @classmethod
    def from_model(cls, model: Qwen2_5_VLForConditionalGeneration, mean: list[float], std: list[float],
                   image_size: int | None = None):
        return cls(model.config.vision_config, model.model.visual, mean, std, image_size)

    def spec(self) -> dict:
        return {"family": "qwen2_5_vl", "config": architecture_dict(self._config), "image_size": self.image_size,
                "image_mean": self.mean_std[0], "image_std": self.mean_std[1]}

    @classmethod
    def from_spec(cls, spec: dict) -> Qwen2_5_VLVisionEncoder:
        config = Qwen2_5_VLVisionConfig.from_dict(spec["config"])
        visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(config)
        return cls(config, visual, spec["image_mean"], spec["image_std"], spec.get("image_size"))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.normalize(images)
        b, _, height, width = pixels.shape
        flat = patchify(pixels, self.patch_size, self.merge, self.temporal_patch_size)
        grid_thw = torch.tensor([[1, height // self.patch_size, width // self.patch_size]] * b, device=flat.device)
        merged = self.visual(flat.to(self.visual.dtype), grid_thw=grid_thw).pooler_output
        return merged.reshape(b, -1, merged.shape[-1])


class Qwen2_5_VLTextDecoder(HFTextDecoder):
    def prepare_position_ids(self, position_ids: torch.Tensor | None) -> torch.Tensor | None:
        if position_ids is None:
            return None
        return position_ids.unsqueeze(0).expand(3, -1, -1)  # same 1-D position in all three mRoPE sections


@register("qwen2_5_vl")
class Qwen2_5_VLBackbone(HFBackbone):
    """Qwen2.5-VL in the HF format (e.g. a local copy of Qwen2.5-VL-3B-Instruct)."""

    name = "qwen2_5_vl"
    vision_class = Qwen2_5_VLVisionEncoder
    model_class = Qwen2_5_VLForConditionalGeneration
    model_type = "qwen2_5_vl"
    image_start_token = "<|vision_start|>"
    default_image_mean = OPENAI_CLIP_MEAN
    default_image_std = OPENAI_CLIP_STD

    def __init__(self, model: Qwen2_5_VLForConditionalGeneration, tokenizer, image_mean=None, image_std=None,
                 image_size: int | None = None):
        super().__init__(model, tokenizer, image_mean, image_std)
        self.set_views(
            Qwen2_5_VLVisionEncoder.from_model(model, self.image_mean, self.image_std, image_size),
            Qwen2_5_VLTextDecoder(model.model.language_model))

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32, **kwargs):
        kwargs.setdefault("image_size", read_backbone_file(directory).get("image_size"))
        return super().from_pretrained(directory, dtype=dtype, **kwargs)
