"""vgt: Visual Generation Tuning — turn a pretrained vision-language model into a text-to-image generator.

`from vgt import VGTPipeline` (and `VGTAutoencoder`, `VGTForGeneration`) import lazily, so `import vgt` and the
CLI's `--help` stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"VGTPipeline": "vgt.pipeline", "VGTPipelineOutput": "vgt.pipeline", "VGTAutoencoder": "vgt.ae.model",
         "VGTForGeneration": "vgt.ar.model"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vgt' has no attribute {name!r}")
