"""Strict persistence for vgt's diffusers models (`VGTAutoencoder`, `VGTForGeneration`).

A component folder is diffusers': `config.json` (the model's typed config plus diffusers' `_class_name` /
`_diffusers_version`) and `diffusion_pytorch_model.safetensors`. diffusers' own `ModelMixin.from_pretrained` only
warns about missing or unexpected weights; these models load through `load_component` instead, which builds the
model from its config and loads the weights with vgt's strict checks (`vgt.train.checkpoint.load_state_strict`):
a missing, unexpected, mis-shaped or non-finite tensor is an error naming it. Weights written by older vgt versions
as `model.safetensors` load too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import FrozenDict
from torch import nn

from vgt.io import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: the weights file name of vgt's pipeline.json folders (before the diffusers layout)
LEGACY_WEIGHTS_NAME = "model.safetensors"


class TypedConfigModel(ModelMixin, ConfigMixin):
    """A diffusers model whose `config` is a typed vgt dataclass (`config_class`, set in `__init__` as
    `self._settings`): what diffusers' `save_config` writes is that config as it is now, and `from_config` builds
    the model from one."""

    config_name = CONFIG_NAME
    config_class: type

    @property
    def config(self):
        return self._settings

    @property
    def _internal_dict(self) -> FrozenDict:
        return FrozenDict(self._settings.to_dict())

    @classmethod
    def from_config(cls, config=None, **kwargs: Any):
        """diffusers' `from_config`: a model with fresh weights from a typed config or a saved config dict (e.g.
        `cls.load_config(folder)`), `kwargs` overriding its entries."""
        if isinstance(config, cls.config_class):
            return cls(dataclasses.replace(config, **kwargs))
        return cls(cls.config_class.from_dict({**(config or {}), **kwargs}))


def resolve_folder(path: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any) -> Path:
    """A local folder (`path[/subfolder]`), or the files of a Hub repository id downloaded into the cache."""
    local = Path(path) / (subfolder or "")
    if Path(path).exists() or str(path).count("/") != 1 or str(path).startswith((".", "/", "~")):
        return local
    from huggingface_hub import snapshot_download

    keep = {k: v for k, v in hub_kwargs.items() if k in ("revision", "cache_dir", "token", "local_files_only")}
    try:
        folder = Path(snapshot_download(str(path), allow_patterns=[f"{subfolder}/*"] if subfolder else None, **keep))
    except Exception as err:  # offline, unknown repository, no access
        raise FileNotFoundError(f"{str(path)!r} is neither a local folder nor a Hub repository that can be downloaded "
                                f"({type(err).__name__}: {err})") from None
    return folder / (subfolder or "")


def weights_file(folder: Path) -> Path | None:
    for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
        if (folder / name).is_file():
            return folder / name
    return None


def read_component_config(folder: Path, what: str, written_by: str) -> dict:
    """The config.json of a component folder, with a clear error when the folder is not one."""
    if not (folder / CONFIG_NAME).is_file() or weights_file(folder) is None:
        raise FileNotFoundError(
            f"{str(folder)!r} is not a {what} folder: expected {CONFIG_NAME} and {WEIGHTS_NAME} (written by "
            f"{written_by})"
        )
    return read_json(folder / CONFIG_NAME)


def load_component(build: Callable[[], nn.Module], folder: Path, torch_dtype: torch.dtype | None = None,
                   loaded_elsewhere: tuple[str, ...] = ()) -> nn.Module:
    """`build()` the model (its random initialisation leaves the global RNG untouched), load the folder's weights
    strictly, and cast to `torch_dtype` (default float32, as diffusers)."""
    from vgt.train.checkpoint import load_state_strict, read_weights

    with torch.random.fork_rng(devices=[]):
        model = build()
    path = weights_file(folder)
    load_state_strict(model, read_weights(path), str(path), loaded_elsewhere=loaded_elsewhere)
    return nn.Module.to(model, torch_dtype or torch.float32).eval()  # (diffusers' `to` warns on any dtype)


def check_loading_kwargs(kwargs: dict[str, Any], what: str) -> None:
    """diffusers' pipeline loader passes its loading options to every component; refuse the ones these models
    cannot honour instead of ignoring them."""
    unsupported = {k: v for k, v in kwargs.items() if k in ("device_map", "quantization_config", "variant")
                   and v is not None}
    if unsupported:
        raise ValueError(f"{what} cannot be loaded with {sorted(unsupported)}; load it without them and move it with "
                         ".to(device)")
