"""Prompts against a word-level vocabulary: a word the model never saw would silently become `<unk>`."""

from __future__ import annotations

SHOWN_WORDS = 80


def unknown_words(tokenizer, text: str) -> list[str]:
    """The pieces of `text` the tokenizer maps to its unknown token (byte-level BPE tokenizers have none)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not text:
        return []
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [text[a:b].strip() for token, (a, b) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True)
            if token == unk]


def vocabulary_words(tokenizer) -> list[str]:
    special = set(getattr(tokenizer, "all_special_tokens", []))
    return sorted({t.strip() for t in tokenizer.get_vocab() if t not in special and t.strip().isalnum()})


def check_prompt(tokenizer, prompt: str, what: str = "prompt") -> str:
    """`prompt`, lower-cased when that is what makes it known (a lower-case vocabulary); a ValueError naming the
    words outside the vocabulary, and the vocabulary, otherwise."""
    unknown = unknown_words(tokenizer, prompt)
    if not unknown:
        return prompt
    lowered = prompt.lower()
    unknown_lowered = unknown_words(tokenizer, lowered)
    if not unknown_lowered:
        return lowered
    words = vocabulary_words(tokenizer)
    shown = ", ".join(words[:SHOWN_WORDS]) + (" ..." if len(words) > SHOWN_WORDS else "")
    raise ValueError(f"{what} {prompt!r}: {', '.join(map(repr, dict.fromkeys(unknown_lowered)))} not in this model's "
                     f"vocabulary of {len(words)} words, so the model would read them as unknown; use its words: "
                     f"{shown}")
