"""Backbones by name: `load_backbone("internvl" | "qwen2_5_vl" | "tiny" | "auto", path)`."""

from __future__ import annotations

import importlib
from pathlib import Path

from vgt.backbones.base import Backbone, VisionEncoder

_BACKBONES: dict[str, type[Backbone]] = {}
#: vision-path classes by family, each with `from_spec(spec)` (a spec is what `VisionEncoder.spec()` returns)
_VISION: dict[str, type[VisionEncoder]] = {}
#: modules whose import registers the built-in backbones (imported lazily: they pull in transformers)
_BUILTIN_MODULES = ("vgt.backbones.internvl", "vgt.backbones.qwen2_5_vl", "vgt.vlm.model")


def register(name: str):
    """Class decorator: make a `Backbone` subclass loadable as `load_backbone(name, path)`."""

    def wrap(cls: type[Backbone]) -> type[Backbone]:
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ValueError(f"backbone name {name!r} is already registered by {_BACKBONES[name].__name__}")
        _BACKBONES[name] = cls
        return cls

    return wrap


def register_vision(family: str):
    """Class decorator: make a vision path buildable from its saved spec (`build_vision_encoder`)."""

    def wrap(cls: type[VisionEncoder]) -> type[VisionEncoder]:
        _VISION[family] = cls
        return cls

    return wrap


def build_vision_encoder(spec: dict) -> VisionEncoder:
    """A vision path (random weights) built from `spec` alone, with the transformers classes of its family."""
    available_backbones()
    family = spec.get("family") if isinstance(spec, dict) else None
    if family not in _VISION:
        raise ValueError(f"vision spec family {family!r} is unknown; choose one of {sorted(_VISION)}")
    return _VISION[family].from_spec(spec)


def vision_spec_from_folder(name: str, path: str | Path) -> dict:
    """The vision spec of a saved VLM folder, from its configs alone (no weights are read)."""
    import torch
    from transformers import AutoConfig

    names = available_backbones()
    if name == "auto":
        name = detect_backbone(path)
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(names + ['auto'])}")
    cls = _BACKBONES[name]
    config = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        model = cls.model_class(config)
    from vgt.backbones.hf import image_normalization, read_backbone_file

    mean, std = image_normalization(path, cls.default_image_mean, cls.default_image_std)
    extra = {"image_size": read_backbone_file(path).get("image_size")} if name == "qwen2_5_vl" else {}
    return cls.vision_class.from_model(model, mean, std, **extra).spec()


def backbone_for_model(model, tokenizer, name: str | None = None) -> Backbone:
    """A backbone view of a loaded transformers VLM: `name` when it is registered for the model's type, else the
    first backbone registered for it (e.g. "internvl" for an InternVL model)."""
    model_type = model.config.model_type
    names = [n for n in available_backbones() if getattr(_BACKBONES[n], "model_type", None) == model_type]
    if not names:
        raise ValueError(f"no vgt backbone wraps {model_type!r} models (supported: {', '.join(available_backbones())})")
    return _BACKBONES[name if name in names else names[0]](model, tokenizer)


def available_backbones() -> list[str]:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return sorted(_BACKBONES)


def detect_backbone(path: str | Path) -> str:
    """The backbone name for a folder: the one vgt recorded when saving it, else from the HF `model_type`."""
    from vgt.backbones.hf import read_backbone_file, read_model_type

    model_type = read_model_type(path)
    recorded = read_backbone_file(path).get("backbone")
    if recorded:
        return recorded
    names = [n for n in available_backbones() if getattr(_BACKBONES[n], "model_type", None) == model_type]
    if not names:
        raise ValueError(
            f"{str(path)!r} holds a {model_type!r} model, which no vgt backbone supports "
            f"(supported: {', '.join(available_backbones())})"
        )
    return names[0]


def load_backbone(name: str, path: str | Path, **kwargs) -> Backbone:
    """Load a backbone from a local folder. `name="auto"` picks the backbone from the folder's contents."""
    names = available_backbones()
    if name == "auto":
        name = detect_backbone(path)
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(names + ['auto'])}")
    return _BACKBONES[name].from_pretrained(path, **kwargs)


def load_frozen_backbone(name: str, path: str | Path) -> Backbone:
    """`load_backbone` in eval mode with no gradients: a teacher or a feature network, never trained."""
    backbone = load_backbone(name, path)
    backbone.requires_grad_(False)
    return backbone.eval()
