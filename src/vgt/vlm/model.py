"""The small VLM built here: its architecture presets, its word-level tokenizer (built offline with `tokenizers`),
and the small HF configs it shares with the random-weight test backbones (`tiny_internvl_config`,
`tiny_qwen2_5_vl_config`, `tiny_internvl_backbone`, `tiny_qwen2_5_vl_backbone`).

The small VLM is an `InternVLForConditionalGeneration` like InternVL3, only smaller, so the InternVL adapter serves
it unchanged; it is registered under the backbone name "tiny" (the name saved in existing model folders'
`backbone/vgt_backbone.json`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from vgt.backbones.base import GENERATION_INSTRUCTION, UNCONDITIONAL_INSTRUCTION
from vgt.backbones.internvl import InternVLBackbone
from vgt.backbones.registry import register
from vgt.position_codes import sincos_2d

PAD_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
#: InternVL image markers: <img> (IMG_CONTEXT x tokens) </img>; Qwen2.5-VL's equivalents for its tiny test config
IMAGE_START, IMAGE_END, IMAGE_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
QWEN_IMAGE_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, TURN_START, TURN_END, IMAGE_START, IMAGE_END, IMAGE_CONTEXT, *QWEN_IMAGE_TOKENS)

#: amplitude of the initial ViT position codes: about the spread of the initial patch embeddings
POSITION_CODE_SCALE = 0.5

#: the user instruction of the understanding task (image -> full scene caption)
DESCRIBE_INSTRUCTION = "Describe the image."

#: ChatML, the format of InternVL3's and Qwen2.5-VL's own templates; content may be a string or typed parts
CHAT_TEMPLATE = (
    "{%- for message in messages %}" + TURN_START + "{{ message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{ message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}{%- if part['type'] == 'text' %}{{ part['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}" + TURN_END + "\n{% endfor %}"
    "{%- if add_generation_prompt %}" + TURN_START + "assistant\n{% endif %}"
)

# A piece is a word with its leading space, one punctuation mark, or a run of whitespace, so decoding is plain
# concatenation and text round-trips exactly.
_PIECES = Regex(r" ?[A-Za-z0-9_]+| ?[^\sA-Za-z0-9_]|\s+")


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every piece of `texts` (with and without a leading space), the
    chat roles and instructions, and the chat/image special tokens, with the ChatML chat template."""
    pre_tokenizer = pre_tokenizers.Split(_PIECES, behavior="isolated")
    corpus = [*texts, "system user assistant\n", GENERATION_INSTRUCTION.format(caption=""),
              UNCONDITIONAL_INSTRUCTION, DESCRIBE_INSTRUCTION]
    pieces: set[str] = set()
    for text in corpus:
        for piece, _ in pre_tokenizer.pre_tokenize_str(text):
            pieces.add(piece)
            if piece.strip() == piece and piece.isalnum():
                pieces.add(" " + piece)
            elif piece.startswith(" ") and piece.strip():
                pieces.add(piece[1:])
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *sorted(pieces - set(SPECIAL_TOKENS))])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, eos_token=TURN_END,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_internvl_config(tokenizer, image_size: int = 32, patch_size: int = 4, vision_width: int = 32,
                         vision_layers: int = 2, vision_heads: int = 2, text_width: int = 32, text_layers: int = 2,
                         text_heads: int = 2, kv_heads: int | None = None) -> InternVLConfig:
    """An InternVL3-architecture config (InternViT + pixel shuffle + MLP projector + Qwen2 LLM), scaled down."""
    if image_size % (2 * patch_size):
        raise ValueError(f"image_size {image_size} must be a multiple of the stride {2 * patch_size}")
    vision = dict(
        model_type="internvl_vision", hidden_size=vision_width, num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads, intermediate_size=4 * vision_width, image_size=image_size,
        patch_size=patch_size, use_mean_pooling=True, norm_type="layer_norm",
    )
    text = dict(
        model_type="qwen2", vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width,
        num_hidden_layers=text_layers, num_attention_heads=text_heads, num_key_value_heads=kv_heads or text_heads,
        max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(TURN_START), eos_token_id=tokenizer.eos_token_id,
    )
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT),
        image_seq_length=(image_size // (2 * patch_size)) ** 2, downsample_ratio=0.5, tie_word_embeddings=True,
    )


def tiny_qwen2_5_vl_config(tokenizer, patch_size: int = 4, window_tokens: int = 2, vision_width: int = 32,
                           vision_layers: int = 2, full_attention_layers: tuple[int, ...] = (1,),
                           text_width: int = 32, text_layers: int = 2, heads: int = 2) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL-architecture config (windowed ViT + 2x2 merger + mRoPE LLM), scaled down. `window_tokens`
    is the attention window side in merged tokens."""
    head_dim = text_width // heads
    quarter = head_dim // 4  # mRoPE sections (temporal, height, width) split head_dim / 2 rotary frequencies
    vision = dict(
        model_type="qwen2_5_vl_vision", depth=vision_layers, hidden_size=vision_width, num_heads=heads,
        intermediate_size=2 * vision_width, patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2,
        window_size=window_tokens * 2 * patch_size, out_hidden_size=text_width,
        fullatt_block_indexes=list(full_attention_layers),
    )
    text = dict(
        model_type="qwen2_5_vl_text", vocab_size=len(tokenizer), hidden_size=text_width,
        intermediate_size=4 * text_width, num_hidden_layers=text_layers, num_attention_heads=heads,
        num_key_value_heads=heads, max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(TURN_START), eos_token_id=tokenizer.eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]},
    )
    return Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(QWEN_IMAGE_TOKENS[2]),
        vision_start_token_id=tokenizer.convert_tokens_to_ids(QWEN_IMAGE_TOKENS[0]),
        vision_end_token_id=tokenizer.convert_tokens_to_ids(QWEN_IMAGE_TOKENS[1]),
        video_token_id=tokenizer.unk_token_id,
    )


def seeded_model(model_class, config, seed: int):
    """Build a model with random weights drawn from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config).eval()


def tiny_internvl_backbone(image_size: int = 32, seed: int = 0, words: Iterable[str] = (), **config_kwargs):
    """A random InternVL-architecture backbone for CPU tests (stride 8 by default)."""
    tokenizer = build_word_tokenizer(words)
    config = tiny_internvl_config(tokenizer, image_size=image_size, **config_kwargs)
    return InternVLBackbone(seeded_model(InternVLForConditionalGeneration, config, seed), tokenizer)


def tiny_qwen2_5_vl_backbone(seed: int = 0, words: Iterable[str] = (), **config_kwargs):
    """A random Qwen2.5-VL-architecture backbone for CPU tests (stride 8 by default)."""
    from vgt.backbones.qwen2_5_vl import Qwen2_5_VLBackbone

    tokenizer = build_word_tokenizer(words)
    config = tiny_qwen2_5_vl_config(tokenizer, **config_kwargs)
    return Qwen2_5_VLBackbone(seeded_model(Qwen2_5_VLForConditionalGeneration, config, seed), tokenizer)


@register("tiny")  # the registry name that model folders record; kept so they load
class SmallVLMBackbone(InternVLBackbone):
    """The small VLM pretrained here for understanding: InternVL architecture with the word-level tokenizer."""

    name = "tiny"


@dataclass(frozen=True)
class SmallVLMConfig:
    """Architecture of the small VLM pretrained here (InternVL layout: InternViT -> pixel shuffle -> MLP -> Qwen2)."""

    image_size: int = 128
    patch_size: int = 8  # stride = 2 x patch: 16 px, an 8 x 8 token grid at 128 px
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    kv_heads: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def shapes_tokenizer() -> PreTrainedTokenizerFast:
    """The small VLM's tokenizer: every ShapesWorld word plus the chat and instruction words."""
    from vgt.data.shapes import vocabulary_words

    return build_word_tokenizer([" ".join(vocabulary_words())])


def build_small_vlm(config: SmallVLMConfig, seed: int = 0) -> SmallVLMBackbone:
    """A freshly initialized small VLM (random weights from `seed`) with the ShapesWorld tokenizer.

    The ViT's learned position embeddings start from 2-D sine-cosine codes instead of HF's zeros, so locations
    are visible from the first step (captions name where each object is); they are trained like any weight."""
    tokenizer = shapes_tokenizer()
    hf_config = tiny_internvl_config(
        tokenizer, image_size=config.image_size, patch_size=config.patch_size, vision_width=config.vision_width,
        vision_layers=config.vision_layers, vision_heads=config.vision_heads, text_width=config.text_width,
        text_layers=config.text_layers, text_heads=config.text_heads, kv_heads=config.kv_heads,
    )
    model = seeded_model(InternVLForConditionalGeneration, hf_config, seed)
    side = config.image_size // config.patch_size
    with torch.no_grad():
        codes = model.model.vision_tower.embeddings.position_embeddings
        codes[0, 1:] = POSITION_CODE_SCALE * sincos_2d(side, side, config.vision_width)
    return SmallVLMBackbone(model, tokenizer)
