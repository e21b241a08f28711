"""The released architectures at full size: HF configs of their base VLMs (with the checkpoints' layer counts) and
the key/shape tables of the released files (docs/official.md), so that conversion can be checked on the meta
device without downloading anything.

- "internvl3-1.6b": InternVL3-2B's language model (D 1536, 28 layers, k/v 256, vocab 151674) + InternViT-300M
  (24 x 1024); its AE is built on InternVL3-1B (projector 896 wide). Head 1536 x 12.
- "internvl3-0.6b": the same shape on InternVL3-1B's language model (D 896, 24 layers, k/v 128); no weights
  were released.
- "qwen2.5-vl-2b": Qwen2.5-VL-3B's language model pruned to the checkpoint's 18 of 36 layers (D 2048, k/v 256,
  vocab 151936) + its vision tower (32 x 1280, merger to 2048).
"""

from __future__ import annotations

from transformers import InternVLConfig, Qwen2_5_VLConfig

RELEASES = ("internvl3-1.6b", "internvl3-0.6b", "qwen2.5-vl-2b")
HEAD_WIDTH, HEAD_DEPTH, GRID, LATENT = 1536, 12, 64, 32
_LLM = {  # hidden, layers, heads, kv heads, intermediate, vocab
    "internvl3-1.6b": (1536, 28, 12, 2, 8960, 151674),
    "internvl3-0.6b": (896, 24, 14, 2, 4864, 151674),
    "qwen2.5-vl-2b": (2048, 36, 16, 2, 11008, 151936),
}
QWEN_CHECKPOINT_LAYERS = 18  # layer_ratio 0.5
INTERNVL_AE_WIDTH = 896  # the released InternVL AE is built on InternVL3-1B


def _text_config(release: str, model_type: str) -> dict:
    hidden, layers, heads, kv, intermediate, vocab = _LLM[release]
    return dict(model_type=model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=intermediate, vocab_size=vocab, rms_norm_eps=1e-6,
                max_position_embeddings=32768, tie_word_embeddings=release == "qwen2.5-vl-2b")


def base_vlm_config(release: str):
    """The HF-native config of the base VLM a release was tuned from (full layer count)."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; choose one of {RELEASES}")
    if release.startswith("internvl3"):
        vision = dict(model_type="internvl_vision", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      intermediate_size=4096, image_size=[448, 448], patch_size=[14, 14], attention_bias=True,
                      norm_type="layer_norm", layer_norm_eps=1e-6, use_mean_pooling=True)
        return InternVLConfig(vision_config=vision, text_config=_text_config(release, "qwen2"),
                              image_token_id=151667, downsample_ratio=0.5, vision_feature_layer=-1)
    vision = dict(model_type="qwen2_5_vl_vision", depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420,
                  out_hidden_size=2048, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31])
    return Qwen2_5_VLConfig(vision_config=vision, text_config=_text_config(release, "qwen2_5_vl_text"),
                            tie_word_embeddings=True)


def checkpoint_layers(release: str) -> int:
    return QWEN_CHECKPOINT_LAYERS if release == "qwen2.5-vl-2b" else _LLM[release][1]


def official_ae_shapes(release: str, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released VGT-AE state dict (without the DC-AE decoder's `decoder.*`)."""
    shapes: dict[str, tuple[int, ...]] = {}
    if release.startswith("internvl3"):
        width = INTERNVL_AE_WIDTH
        shapes.update({"encoder.embeddings.class_embedding": (1, 1, 1024),
                       "encoder.embeddings.position_embedding": (1, 1025, 1024),
                       "encoder.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
                       "encoder.embeddings.patch_embedding.bias": (1024,)})
        for i in range(24):
            p = f"encoder.encoder.layers.{i}."
            shapes.update({p + "attn.qkv.weight": (3072, 1024), p + "attn.qkv.bias": (3072,),
                           p + "attn.proj.weight": (1024, 1024), p + "attn.proj.bias": (1024,),
                           p + "ls1": (1024,), p + "ls2": (1024,), p + "mlp.fc1.weight": (4096, 1024),
                           p + "mlp.fc1.bias": (4096,), p + "mlp.fc2.weight": (1024, 4096),
                           p + "mlp.fc2.bias": (1024,)})
            for norm in ("norm1", "norm2"):
                shapes.update({p + f"{norm}.weight": (1024,), p + f"{norm}.bias": (1024,)})
        shapes.update({"mlp1.0.weight": (4096,), "mlp1.0.bias": (4096,), "mlp1.1.weight": (width, 4096),
                       "mlp1.1.bias": (width,), "mlp1.3.weight": (width, width), "mlp1.3.bias": (width,)})
    else:
        width = 2048
        shapes["encoder.patch_embed.proj.weight"] = (1280, 3, 2, 14, 14)
        for i in range(32):
            p = f"encoder.blocks.{i}."
            shapes.update({p + "norm1.weight": (1280,), p + "norm2.weight": (1280,),
                           p + "attn.qkv.weight": (3840, 1280), p + "attn.qkv.bias": (3840,),
                           p + "attn.proj.weight": (1280, 1280), p + "attn.proj.bias": (1280,),
                           p + "mlp.gate_proj.weight": (3420, 1280), p + "mlp.gate_proj.bias": (3420,),
                           p + "mlp.up_proj.weight": (3420, 1280), p + "mlp.up_proj.bias": (3420,),
                           p + "mlp.down_proj.weight": (1280, 3420), p + "mlp.down_proj.bias": (1280,)})
        shapes.update({"encoder.merger.ln_q.weight": (1280,), "encoder.merger.mlp.0.weight": (5120, 5120),
                       "encoder.merger.mlp.0.bias": (5120,), "encoder.merger.mlp.2.weight": (2048, 5120),
                       "encoder.merger.mlp.2.bias": (2048,)})
    for i in range(3):
        p = f"down_blocks.{i}.mlp."
        shapes.update({p + "0.weight": (width,), p + "0.bias": (width,), p + "1.weight": (width, width),
                       p + "1.bias": (width,), p + "3.weight": (width, width), p + "3.bias": (width,)})
    shapes.update({"down_mlp.0.weight": (width,), "down_mlp.0.bias": (width,), "down_mlp.1.weight": (LATENT, width),
                   "down_mlp.1.bias": (LATENT,), "down_mlp.3.weight": (LATENT, LATENT), "down_mlp.3.bias": (LATENT,)})
    return {prefix + k: v for k, v in shapes.items()}


def official_ar_shapes(release: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released AR checkpoint's model dict (after `module.`), without `vgt_ae.*`."""
    hidden, _, heads, kv, intermediate, vocab = _LLM[release]
    kv_width = hidden // heads * kv
    qwen = release == "qwen2.5-vl-2b"
    llm_prefixes = ["lmm.model.language_model.", "lmm.language_model."] if qwen else ["lmm.language_model.model."]
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix in llm_prefixes:
        shapes[prefix + "embed_tokens.weight"] = (vocab, hidden)
        shapes[prefix + "norm.weight"] = (hidden,)
        for i in range(checkpoint_layers(release)):
            p = f"{prefix}layers.{i}."
            shapes.update({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.q_proj.bias": (hidden,),
                           p + "self_attn.k_proj.weight": (kv_width, hidden), p + "self_attn.k_proj.bias": (kv_width,),
                           p + "self_attn.v_proj.weight": (kv_width, hidden), p + "self_attn.v_proj.bias": (kv_width,),
                           p + "self_attn.o_proj.weight": (hidden, hidden),
                           p + "mlp.gate_proj.weight": (intermediate, hidden),
                           p + "mlp.up_proj.weight": (intermediate, hidden),
                           p + "mlp.down_proj.weight": (hidden, intermediate),
                           p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)})
    shapes["lmm.lm_head.weight" if qwen else "lmm.language_model.lm_head.weight"] = (vocab, hidden)
    w = HEAD_WIDTH
    shapes.update({"adaptive_metaquery.max_metaquery": (1, hidden, GRID, GRID),
                   "adaptive_metaquery.pos_encoding.grid_embed": (1, hidden, GRID, GRID),
                   "image_in_projector.weight": (hidden, LATENT), "image_in_projector.bias": (hidden,),
                   "image_out_projector.weight": (hidden, hidden), "image_out_projector.bias": (hidden,),
                   "image_head.net.input_proj.weight": (w, LATENT), "image_head.net.input_proj.bias": (w,),
                   "image_head.net.time_embed.mlp.0.weight": (w, 256), "image_head.net.time_embed.mlp.0.bias": (w,),
                   "image_head.net.time_embed.mlp.2.weight": (w, w), "image_head.net.time_embed.mlp.2.bias": (w,),
                   "image_head.net.cond_embed.weight": (w, hidden), "image_head.net.cond_embed.bias": (w,),
                   "image_head.net.final_layer.adaLN_modulation.1.weight": (2 * w, w),
                   "image_head.net.final_layer.adaLN_modulation.1.bias": (2 * w,),
                   "image_head.net.final_layer.linear.weight": (LATENT, w),
                   "image_head.net.final_layer.linear.bias": (LATENT,)})
    for i in range(HEAD_DEPTH):
        p = f"image_head.net.res_blocks.{i}."
        shapes.update({p + "in_ln.weight": (w,), p + "in_ln.bias": (w,), p + "mlp.0.weight": (w, w),
                       p + "mlp.0.bias": (w,), p + "mlp.2.weight": (w, w), p + "mlp.2.bias": (w,),
                       p + "adaLN_modulation.1.weight": (3 * w, w), p + "adaLN_modulation.1.bias": (3 * w,)})
    return shapes


def random_release_pipeline(release: str, seed: int = 0):
    """A released architecture at full size with random weights (for benchmarks; nothing is downloaded): base VLM,
    VGT-AE with the DC-AE f32c32 decoder, generator configured as `vgt convert official` configures it."""
    import torch

    from vgt.ae.config import AEConfig
    from vgt.ae.model import VGTAutoencoder
    from vgt.ar.config import ARConfig, FlowHeadConfig, SamplingConfig
    from vgt.ar.model import VGTForGeneration
    from vgt.backbones.internvl import InternVLBackbone
    from vgt.backbones.qwen2_5_vl import Qwen2_5_VLBackbone
    from vgt.official.convert import OFFICIAL_IMAGE_START, OFFICIAL_PROMPT_TEMPLATE, OFFICIAL_SAMPLING
    from vgt.pipeline import VGTPipeline
    from vgt.presets import DCAE_F32C32_SANA_1_1
    from vgt.vlm.model import build_word_tokenizer

    qwen = release.startswith("qwen")
    torch.manual_seed(seed)
    config = base_vlm_config(release)
    config.text_config.num_hidden_layers = checkpoint_layers(release)
    if getattr(config.text_config, "layer_types", None):
        config.text_config.layer_types = config.text_config.layer_types[: checkpoint_layers(release)]
    cls = Qwen2_5_VLBackbone if qwen else InternVLBackbone
    backbone = cls(cls.model_class(config).eval(), build_word_tokenizer([OFFICIAL_IMAGE_START]))
    ae = VGTAutoencoder.from_backbone(backbone, AEConfig(
        encoder="vlm", backbone=backbone.name, bottleneck_norm_eps=1e-6, channel_norm=True,
        projector_width=None if qwen else INTERNVL_AE_WIDTH, dcae=dict(DCAE_F32C32_SANA_1_1), image_size=448))
    ids = backbone.tokenizer.encode(OFFICIAL_IMAGE_START, add_special_tokens=True)
    generator = ARConfig(hidden_size=backbone.text.hidden_size, max_grid=GRID, position_init="normal",
                         head=FlowHeadConfig(width=HEAD_WIDTH, depth=HEAD_DEPTH, timestep_scale=1.0),
                         image_start_ids=ids, prompt_template=OFFICIAL_PROMPT_TEMPLATE,
                         sampling=SamplingConfig(**OFFICIAL_SAMPLING))
    return VGTPipeline.from_generator(VGTForGeneration(generator, backbone, ae=ae), ae)
