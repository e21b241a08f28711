"""Parts shared by the backbones built on Hugging Face `transformers` VLM classes.

A backbone is a *view* of one HF model: `vision` and `text` are small modules that hold references to the HF
submodules (not copies), so tuning them tunes the HF model and `save_pretrained` writes the tuned weights in the
standard HF folder layout, loadable by `transformers` alone.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from torch import nn

from vgt.backbones.base import (
    GENERATION_INSTRUCTION,
    UNCONDITIONAL_INSTRUCTION,
    Backbone,
    DecoderOutput,
    TextDecoder,
    VisionEncoder,
)
from vgt.io import atomic_directory, holds

#: file written next to the HF files: which vgt backbone the folder holds and how its images are normalized
BACKBONE_FILE = "vgt_backbone.json"


def read_model_type(directory: str | Path) -> str:
    """The `model_type` of the HF config in a folder, with a clear error when the folder is not a HF model."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"backbone folder {str(directory)!r} does not exist (expected a local HF model folder)")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} holds no config.json: not a Hugging Face model folder. Point to the folder that "
            "`save_pretrained` wrote (config.json, model.safetensors, tokenizer files)."
        )
    return json.loads(config_file.read_text()).get("model_type", "<missing>")


def read_backbone_file(directory: str | Path) -> dict:
    path = Path(directory) / BACKBONE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def image_normalization(directory: str | Path, default_mean: list[float], default_std: list[float]):
    """Mean/std the VLM was trained with: our own record, else the folder's HF image-processor config, else the
    architecture's published default. Stated, never guessed from data."""
    for name in (BACKBONE_FILE, "preprocessor_config.json"):
        path = Path(directory) / name
        if path.is_file():
            config = json.loads(path.read_text())
            if "image_mean" in config and "image_std" in config:
                return list(config["image_mean"]), list(config["image_std"])
    return list(default_mean), list(default_std)


def strict_from_pretrained(model_class, directory: str | Path, dtype: torch.dtype) -> nn.Module:
    """`from_pretrained` that fails on missing, unexpected or mismatched weights instead of warning."""
    from safetensors import SafetensorError

    from vgt.train.checkpoint import check_finite

    try:
        model, info = model_class.from_pretrained(str(directory), dtype=dtype, output_loading_info=True)
    except (SafetensorError, OSError, EOFError) as err:
        raise ValueError(f"cannot read the weights in {str(directory)!r} ({err}); the files are truncated or corrupt"
                         ) from None
    check_finite(model.state_dict(), f"the weights in {str(directory)!r}")
    problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        report = "; ".join(f"{k} ({len(v)}): {', '.join(map(str, v[:8]))}{' ...' if len(v) > 8 else ''}"
                           for k, v in problems.items())
        raise ValueError(f"weights in {str(directory)!r} do not match {model_class.__name__}: {report}")
    return model


#: HF config entries that describe where and how a model was saved (or a classifier's labels), not its architecture
_NOT_ARCHITECTURE = ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype", "id2label",
                     "label2id")


def architecture_dict(config) -> dict:
    """A HF config as a dict of its architecture only (no provenance, no storage dtype), in every sub-config: what
    a vision spec stores, so that the same architecture always gives the same spec."""

    def strip(values):
        if isinstance(values, dict):
            return {k: strip(v) for k, v in values.items() if k not in _NOT_ARCHITECTURE}
        return values

    return strip(config.to_dict())


class NormalizingVisionEncoder(VisionEncoder):
    """Maps the [-1, 1] input contract to the VLM's own pixel normalization; subclasses encode normalized pixels."""

    def __init__(self, stride: int, out_dim: int, image_size: int, mean: list[float], std: list[float]):
        super().__init__()
        self.stride = stride
        self.out_dim = out_dim
        #: the resolution the VLM was trained at (a multiple of `stride`)
        self.image_size = image_size
        #: the pixel normalization as numbers (the buffers below may sit on the meta device)
        self.mean_std = (list(mean), list(std))
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        self.grid_size(images.shape[2], images.shape[3])
        mean, std = self.image_mean.to(images.device), self.image_std.to(images.device)
        return ((images.to(mean.dtype) + 1) / 2 - mean) / std


class HFTextDecoder(TextDecoder):
    """The LLM body of a HF VLM (`embed_tokens`, layers, final norm; no LM head)."""

    def __init__(self, language_model: nn.Module):
        super().__init__()
        self.language_model = language_model
        self.hidden_size = language_model.config.hidden_size
        # transformers renamed `past_key_values` to `cache`; accept whichever this version uses
        self._cache_arg = "cache" if "cache" in inspect.signature(language_model.forward).parameters else (
            "past_key_values")

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.embed_tokens(input_ids)

    def prepare_position_ids(self, position_ids: torch.Tensor | None) -> torch.Tensor | None:
        return position_ids

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
    ) -> DecoderOutput:
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=self.prepare_position_ids(position_ids),
            use_cache=use_cache,
            **{self._cache_arg: past_key_values},
        )
        cache = getattr(out, self._cache_arg, None) if use_cache else None
        return DecoderOutput(last_hidden_state=out.last_hidden_state, past_key_values=cache)


class HFBackbone(Backbone):
    """A HF `...ForConditionalGeneration` model and its tokenizer. Subclasses set the class attributes and
    build `self.vision` / `self.text` as views of `self.model` with `set_views`.

    The views are plain attributes, not registered submodules, so every weight appears once in `state_dict()`
    and `parameters()` (under `model.`); moving or freezing the backbone moves or freezes what they hold."""

    model_class: type
    #: its vision path's class (`from_model(model, mean, std)`, `from_spec(spec)`)
    vision_class: type
    model_type: str
    #: the token that opens an image in this VLM's prompts (used by VGT-AR as the image-start embedding)
    image_start_token: str
    default_image_mean: list[float]
    default_image_std: list[float]

    def __init__(self, model: nn.Module, tokenizer, image_mean: list[float] | None = None,
                 image_std: list[float] | None = None):
        super().__init__()
        if model.config.model_type != self.model_type:
            raise ValueError(f"{type(self).__name__} wraps {self.model_type!r} models, got {model.config.model_type!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.image_mean = list(image_mean or self.default_image_mean)
        self.image_std = list(image_std or self.default_image_std)
        if tokenizer.convert_tokens_to_ids(self.image_start_token) in (None, tokenizer.unk_token_id):
            raise ValueError(f"the tokenizer has no {self.image_start_token!r} token, which {self.name} prompts use")
        self.image_start_token_id: int = tokenizer.convert_tokens_to_ids(self.image_start_token)

    def set_views(self, vision: VisionEncoder, text: TextDecoder) -> None:
        object.__setattr__(self, "vision", vision)
        object.__setattr__(self, "text", text)

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def chat_prompt(self, instruction: str) -> str:
        """The user turn holding `instruction`, followed by the assistant header, in the VLM's chat template."""
        if self.tokenizer.chat_template is None:
            raise ValueError(f"the {self.name} tokenizer has no chat template; save one with the tokenizer")
        try:
            messages = [{"role": "user", "content": instruction}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # templates written for processors expect a list of typed content parts
            messages = [{"role": "user", "content": [{"type": "text", "text": instruction}]}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generation_prompts(self, captions: list[str | None]) -> dict[str, torch.Tensor]:
        texts = [self.chat_prompt(UNCONDITIONAL_INSTRUCTION if c is None else GENERATION_INSTRUCTION.format(caption=c))
                 for c in captions]
        return right_padded(self.tokenizer, texts)

    def save_pretrained(self, directory: str | Path, overwrite: bool = False) -> None:
        """The HF folder (model, tokenizer, vgt_backbone.json), atomically; an existing folder is replaced only when
        vgt wrote it (or it is empty), or with `overwrite`."""
        with atomic_directory(directory, overwrite, ours=holds(BACKBONE_FILE)) as staging:
            self.model.save_pretrained(staging)
            self.tokenizer.save_pretrained(staging)
            record = {"backbone": self.name, "image_mean": self.image_mean, "image_std": self.image_std,
                      "image_size": self.vision.image_size}
            (staging / BACKBONE_FILE).write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32, **kwargs) -> HFBackbone:
        from transformers import AutoTokenizer

        model_type = read_model_type(directory)
        if model_type != cls.model_type:
            raise ValueError(
                f"{str(directory)!r} holds a {model_type!r} model, not {cls.model_type!r} as the {cls.name!r} "
                f"backbone needs; use the matching backbone name (or 'auto')"
            )
        model = strict_from_pretrained(cls.model_class, directory, dtype)
        tokenizer_dir = Path(directory)
        beside = tokenizer_dir.parent / "tokenizer"
        if not (tokenizer_dir / "tokenizer_config.json").is_file() and (beside / "tokenizer_config.json").is_file():
            tokenizer_dir = beside  # the vlm/ folder of a pipeline: its tokenizer is saved beside it
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        mean, std = image_normalization(directory, cls.default_image_mean, cls.default_image_std)
        return cls(model, tokenizer, image_mean=mean, image_std=std, **kwargs)


def right_padded(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """Tokenize already-templated texts (no extra special tokens) into right-padded [B, L] tensors."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
    batch = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}
