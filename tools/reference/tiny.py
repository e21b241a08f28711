"""Tiny model sizes, tokenizers and seeded weights for the reference fixtures (all made here)."""

from __future__ import annotations

import string
import zlib

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

LLM = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
           rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=256, vocab_size=192)
VISION_WIDTH = 16
QUERY_GRID = 8  # max_size of their AdaptiveMetaQuery: an 8x8 grid, centre-cropped to the latent grid
HEAD = dict(dim=32, layers=2)
LATENT = 32

# A DC-AE with the real block types at a few thousand parameters (upsampling x2, then resized to 28 px/latent).
DCAE = {
    "in_channels": 3,
    "latent_channels": LATENT,
    "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [8, 32],
    "decoder_block_out_channels": [8, 32],
    "encoder_layers_per_block": [1, 1],
    "decoder_layers_per_block": [1, 1],
    "encoder_qkv_multiscales": [[], [5]],
    "decoder_qkv_multiscales": [[], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 1.0,
}

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIALS = {
    "internvl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"],
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"],
}

# Words merged left to right into whole tokens (earlier words' merges take precedence); anything else falls back
# to single characters. The generation caption's words come first so that each is one token.
WORDS = ["grass", "cube", "red", "on", "Generate", "an", "user", "assistant", "system", "You", "are", "helpful",
         "green", "blue", "ball", "small"]


def build_tokenizer(kind: str) -> Tokenizer:
    """Whitespace-split BPE over printable ASCII. `image:` is merged from the right, so `image:` is one token while
    the unconditional prompt's `image.` stays six characters: 'Generate an image: a red cube on grass' and
    'Generate an image.' then have the same length (an unpadded CFG pair). `<img>` (not special on the Qwen path)
    encodes to `<`, `img`, `>`, as with the real Qwen2 tokenizer."""
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        if token not in vocab:
            vocab[token] = len(vocab)

    for ch in string.printable[:94]:
        add(ch)

    def merge(a: str, b: str) -> None:
        add(a + b)
        if (a, b) not in merges:
            merges.append((a, b))

    for word in WORDS:
        for i in range(2, len(word) + 1):
            merge(word[: i - 1], word[i - 1])
    target = "image:"
    for i in range(len(target) - 2, -1, -1):
        merge(target[i], target[i + 1 :])
    merge("m", "g")
    merge("i", "mg")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS[kind]])
    if tokenizer.get_vocab_size() > LLM["vocab_size"]:
        raise ValueError("tokenizer vocabulary larger than the tiny LLM's")
    return tokenizer


def seeded_weight(tag: str, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A reproducible bf16 tensor for one state-dict entry: its seed depends only on (tag, key), never on the
    order in which tensors are made. Scales keep activations O(1): norm scales near 1, weights ~1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{tag}/{key}".encode()))
    x = torch.randn(shape, generator=generator)
    name = key.rsplit(".", 1)[-1]
    if len(shape) == 1 and name in ("weight", "ls1", "ls2", "lambda_1", "lambda_2"):
        x = 1.0 + 0.1 * x  # norm / layer-scale weights
    elif len(shape) == 1:
        x = 0.05 * x  # biases
    elif "max_metaquery" in key:
        x = x / shape[1] ** 0.5
    elif "grid_embed" in key or "embed_tokens" in key or ("embedding" in key and "patch_embedding" not in key):
        x = 0.5 * x
    else:
        fan_in = x[0].numel()
        x = x / fan_in ** 0.5
    return x.to(torch.bfloat16)
