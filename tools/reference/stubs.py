"""Import-time stand-ins that let the authors' VGT modules run on a CPU without their training stack.

Their model files import the xtuner/mmengine registries and runners, timm, peft, matplotlib, flash-attn and a
deleted module (`src.models.vgtae_internvl3`). None of these take part in the computations we record: the stand-ins
below provide just the names those imports ask for. Nothing here is taken from their code.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
from torch import nn


class ConfigDict(dict):
    """mmengine's ConfigDict: a dict whose keys are also attributes (their constructors use both)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


class Builder:
    """xtuner's BUILDER: a config dict with a callable `type` is built by calling it with the other keys."""

    @staticmethod
    def build(config):
        if not isinstance(config, dict):
            return config
        config = dict(config)
        factory = config.pop("type")
        return factory(**config)


class DropPath(nn.Identity):
    """timm's DropPath at rate 0 (inference): the identity."""

    def __init__(self, *args, **kwargs):
        super().__init__()


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _print_log(msg, *args, **kwargs):
    pass


class _Logger:
    @staticmethod
    def get_current_instance(*args, **kwargs):
        return _Logger()

    get_instance = get_current_instance

    def info(self, *args, **kwargs):
        pass

    warning = info


def _refuse(*args, **kwargs):
    raise RuntimeError("not available in the reference environment (a stand-in)")


def install(repo: Path) -> None:
    """Put their repository (and its `tokenizer/` folder, which their AE imports as `modeling`) on sys.path and
    register the stand-in modules."""
    import diffusers  # noqa: F401  (both probe for optional packages at import: let them see the real set)
    import transformers  # noqa: F401

    for path in (repo / "tokenizer", repo):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))

    _module("xtuner")
    _module("xtuner.registry", BUILDER=Builder())
    _module("xtuner.model")
    _module("xtuner.model.utils", guess_load_checkpoint=_refuse)
    _module("xtuner.utils", PROMPT_TEMPLATE={})
    _module("mmengine")
    _module("mmengine.model", BaseModel=nn.Module)
    _module("mmengine.logging", print_log=_print_log, MMLogger=_Logger)
    _module("mmengine.dist", is_main_process=lambda: True, get_rank=lambda: 0, get_world_size=lambda: 1)
    _module("mmengine.runner", load_checkpoint=_refuse)
    _module("mmengine.runner.checkpoint", load_checkpoint=_refuse)
    _module("mmengine.config", Config=ConfigDict, read_base=_refuse)
    _module("timm")
    _module("timm.layers", DropPath=DropPath, trunc_normal_=nn.init.trunc_normal_)
    _module("timm.models")
    _module("timm.models.layers", trunc_normal_=nn.init.trunc_normal_, DropPath=DropPath)
    _module("peft", LoraConfig=_refuse)
    _module("matplotlib")
    _module("matplotlib.pyplot")
    # REPA's DINOv3 extractor (timm) is only built when repa_loss_weight > 0.
    _module("src.models.dinov3_feature_extractor", create_dinov3_extractor=_refuse)
    # Deleted from their repository; only reached when vgt_ae.type == "vgt_pretrain" on the InternVL path.
    _module("src.models.vgtae_internvl3", VGTAE_InternVL3=_refuse)
    # Their `modeling.modules` package __init__ pulls in LPIPS/ConvNeXt losses (torchvision); the AE needs only
    # `modeling.modules.base_model`, so the package is registered without running that __init__.
    package = _module("modeling.modules")
    package.__path__ = [str(repo / "tokenizer" / "modeling" / "modules")]
    # `.cuda()` is never wanted here.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
