"""The rule tables: official key names -> vgt's, for the VGT-AE (InternVL and Qwen2.5-VL encoders) and the VGT-AR
model (InternVL3 and Qwen2.5-VL language models). Facts: docs/official.md. Targets are named inside the module
that receives them: `VGTAutoencoder` keys, `llm.` + the language model's own keys, `VGTForGeneration` keys."""

from __future__ import annotations

import torch

from vgt.official.rules import Rule

W = r"(weight|bias)"
AE_PREFIX = "vgt_ae."

_TEACHER = Rule("ae-teacher", r"(teacher|teacher_mlp1)\..*", None,
                "frozen self-distillation teacher (training only)")
_AE_TAIL = [
    Rule("ae-bottleneck-blocks", rf"down_blocks\.(\d+)\.mlp\.([013])\.{W}", r"bottleneck.blocks.\1.mlp.\2.\3"),
    Rule("ae-to-latent", rf"down_mlp\.([013])\.{W}", r"bottleneck.to_latent.\1.\2"),
    Rule("ae-decoder", r"decoder\.(.+)", r"decoder.\1"),
    _TEACHER,
]

#: InternVL's own InternViT + mlp1 names -> HF-native `InternVLForConditionalGeneration` (as transformers'
#: convert_internvl_weights_to_hf.py renames them); the fused qkv is split into q, k, v.
INTERNVL_AE_RULES = [
    Rule("vit-cls", r"encoder\.embeddings\.class_embedding", "vision.vision_tower.embeddings.cls_token"),
    Rule("vit-position", r"encoder\.embeddings\.position_embedding",
         "vision.vision_tower.embeddings.position_embeddings"),
    Rule("vit-patch", rf"encoder\.embeddings\.patch_embedding\.{W}",
         r"vision.vision_tower.embeddings.patch_embeddings.projection.\1"),
    Rule("vit-qkv", rf"encoder\.encoder\.layers\.(\d+)\.attn\.qkv\.{W}",
         tuple(rf"vision.vision_tower.encoder.layer.\1.attention.{n}_proj.\2" for n in "qkv")),
    Rule("vit-attn-out", rf"encoder\.encoder\.layers\.(\d+)\.attn\.proj\.{W}",
         r"vision.vision_tower.encoder.layer.\1.attention.projection_layer.\2"),
    Rule("vit-qk-norm", rf"encoder\.encoder\.layers\.(\d+)\.attn\.([qk])_norm\.{W}",
         r"vision.vision_tower.encoder.layer.\1.attention.\2_norm.\3"),
    Rule("vit-norm1", rf"encoder\.encoder\.layers\.(\d+)\.norm1\.{W}",
         r"vision.vision_tower.encoder.layer.\1.layernorm_before.\2"),
    Rule("vit-norm2", rf"encoder\.encoder\.layers\.(\d+)\.norm2\.{W}",
         r"vision.vision_tower.encoder.layer.\1.layernorm_after.\2"),
    Rule("vit-layer-scale", r"encoder\.encoder\.layers\.(\d+)\.ls([12])",
         r"vision.vision_tower.encoder.layer.\1.lambda_\2"),
    Rule("vit-mlp", rf"encoder\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.{W}",
         r"vision.vision_tower.encoder.layer.\1.mlp.\2.\3"),
    Rule("projector-norm", rf"mlp1\.0\.{W}", r"vision.projector.layer_norm.\1"),
    Rule("projector-linear-1", rf"mlp1\.1\.{W}", r"vision.projector.linear_1.\1"),
    Rule("projector-linear-2", rf"mlp1\.3\.{W}", r"vision.projector.linear_2.\1"),
    *_AE_TAIL,
]

#: Qwen2.5-VL's visual tower already carries the HF names: only the prefix changes.
QWEN_AE_RULES = [Rule("qwen-visual", r"encoder\.(.+)", r"vision.visual.\1"), *_AE_TAIL]


def _squeeze_grid(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() != 4 or tensor.shape[0] != 1:
        raise ValueError(f"expected a [1, D, G, G] grid, got {tuple(tensor.shape)}")
    return tensor[0]


_GENERATOR_RULES = [
    Rule("query-grid", r"adaptive_metaquery\.max_metaquery", "queries.query_grid", transform=_squeeze_grid),
    Rule("position-grid", r"adaptive_metaquery\.pos_encoding\.grid_embed", "queries.position_grid",
         transform=_squeeze_grid),
    Rule("latent-projectors", rf"(image_in_projector|image_out_projector)\.{W}", r"\1.\2"),
    Rule("flow-head", r"image_head\.net\.(input_proj|time_embed|cond_embed|res_blocks|final_layer)\.(.+)",
         r"head.\1.\2"),
    Rule("repa-projector", r"image_head\.net\.repa_projector\..+", None, "REPA training loss only"),
    Rule("dinov3", r"dinov3_extractor\..+", None, "REPA teacher (training only)"),
]

INTERNVL_AR_RULES = [
    Rule("llm", r"lmm\.language_model\.model\.(.+)", r"llm.\1"),
    Rule("lm-head", r"lmm\.language_model\.lm_head\.weight", "lm_head.weight"),
    Rule("vlm-vision", r"lmm\.(vision_model|mlp1)\..+", None,
         "the VLM's frozen understanding path (the VLM folder's is kept)"),
    *_GENERATOR_RULES,
]

#: Qwen2.5-VL (transformers >= 4.52: `lmm.model.language_model.*`; older: `lmm.model.*`). The pruned language model
#: is registered twice (`lmm.language_model.*`): that copy is compared with the first and dropped.
QWEN_AR_RULES = [
    Rule("llm", r"lmm\.model\.language_model\.(.+)", r"llm.\1"),
    Rule("llm-old-layout", r"lmm\.model\.((?:embed_tokens|layers|norm)\..+)", r"llm.\1"),
    Rule("llm-duplicate", r"lmm\.language_model\.(.+)", r"duplicate.\1"),
    Rule("lm-head", r"lmm\.lm_head\.weight", "lm_head.weight"),
    Rule("vlm-vision", r"lmm\.(model\.)?visual\..+", None,
         "the VLM's frozen vision tower (the VLM folder's is kept)"),
    *_GENERATOR_RULES,
]
