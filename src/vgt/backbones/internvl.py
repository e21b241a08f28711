"""InternVL (InternVL3 and the small VLM pretrained here) through HF `InternVLForConditionalGeneration`.

Visual tokens: InternViT last layer -> drop CLS -> patch grid -> pixel-shuffle 0.5 (2x2 space-to-channel) ->
`multi_modal_projector` (LayerNorm -> Linear -> GELU -> Linear). Stride = patch size x 2 (28 for InternVL3).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import InternVLConfig, InternVLForConditionalGeneration
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector, InternVLVisionModel

from vgt.backbones.hf import HFBackbone, HFTextDecoder, NormalizingVisionEncoder, architecture_dict
from vgt.backbones.registry import register, register_vision


def pixel_shuffle(features: torch.Tensor, merge: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, H/m, W/m, m*m*C], channel index = (row offset * m + column offset) * C + c:
    the layout InternVL's projector was trained on."""
    b, h, w, c = features.shape
    features = features.reshape(b, h // merge, merge, w // merge, merge, c).permute(0, 1, 3, 2, 4, 5)
    return features.reshape(b, h // merge, w // merge, merge * merge * c)


@register_vision("internvl")
class InternVLVisionEncoder(NormalizingVisionEncoder):
    """InternViT + pixel shuffle + projector: views of a HF model's modules (`from_model`), or modules built from a
    saved spec (`from_spec`, for a VGT-AE loaded on its own)."""

    def __init__(self, config: InternVLConfig, vision_tower: nn.Module, projector: nn.Module, mean: list[float],
                 std: list[float]):
        if config.vision_feature_layer != -1 or config.vision_feature_select_strategy != "default":
            raise ValueError(
                "VGT uses the last vision layer without CLS (vision_feature_layer=-1, vision_feature_select_strategy="
                f"'default'); this config has {config.vision_feature_layer!r} / "
                f"{config.vision_feature_select_strategy!r}"
            )
        self_merge = round(1 / config.downsample_ratio)
        patch = config.vision_config.patch_size[0]
        super().__init__(
            stride=patch * self_merge,
            out_dim=config.text_config.hidden_size,
            image_size=config.vision_config.image_size[0],
            mean=mean,
            std=std,
        )
        self.patch_size = patch
        self.merge = self_merge
        self._config = config
        self.vision_tower: nn.Module = vision_tower
        self.projector: nn.Module = projector

    @classmethod
    def from_model(cls, model: InternVLForConditionalGeneration, mean: list[float], std: list[float]):
        return cls(model.config, model.model.vision_tower, model.model.multi_modal_projector, mean, std)

    def spec(self) -> dict:
        """What `from_spec` needs: the VLM config without its language model (only the projector's width)."""
        config = architecture_dict(self._config)
        config["text_config"] = {"model_type": config["text_config"]["model_type"], "hidden_size": self.out_dim}
        return {"family": "internvl", "config": config, "image_mean": self.mean_std[0],
                "image_std": self.mean_std[1]}

    @classmethod
    def from_spec(cls, spec: dict) -> InternVLVisionEncoder:
        config = InternVLConfig.from_dict(spec["config"])
        tower = InternVLVisionModel._from_config(config.vision_config)
        return cls(config, tower, InternVLMultiModalProjector(config), spec["image_mean"], spec["image_std"])

    def resize_projector(self, width: int) -> None:
        """New `linear_1` / `linear_2` (LayerNorm -> Linear(4C -> width) -> GELU -> Linear(width -> width))."""
        old = self.projector.linear_1
        self.projector.linear_1 = nn.Linear(old.in_features, width, device=old.weight.device, dtype=old.weight.dtype)
        self.projector.linear_2 = nn.Linear(width, width, device=old.weight.device, dtype=old.weight.dtype)
        self.out_dim = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.normalize(images)
        b, _, height, width = pixels.shape
        weight_dtype = self.projector.linear_1.weight.dtype
        patches = self.vision_tower(pixel_values=pixels.to(weight_dtype)).last_hidden_state[:, 1:]  # drop CLS
        grid = patches.reshape(b, height // self.patch_size, width // self.patch_size, patches.shape[-1])
        merged = pixel_shuffle(grid, self.merge)
        return self.projector(merged.reshape(b, -1, merged.shape[-1]))


@register("internvl")
class InternVLBackbone(HFBackbone):
    """InternVL3 in the HF-native format (e.g. a local copy of InternVL3-1B-hf)."""

    name = "internvl"
    vision_class = InternVLVisionEncoder
    model_class = InternVLForConditionalGeneration
    model_type = "internvl"
    image_start_token = "<img>"
    default_image_mean = IMAGENET_DEFAULT_MEAN
    default_image_std = IMAGENET_DEFAULT_STD

    def __init__(self, model: InternVLForConditionalGeneration, tokenizer, image_mean=None, image_std=None):
        super().__init__(model, tokenizer, image_mean, image_std)
        self.set_views(
            InternVLVisionEncoder.from_model(model, self.image_mean, self.image_std),
            HFTextDecoder(model.model.language_model))
