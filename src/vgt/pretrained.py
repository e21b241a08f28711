"""Where the default model lives: the one shipped inside the package, or `$VGT_MODEL`.

`vgt generate` and `VGTPipeline.from_pretrained()` without a model use `default_model_dir()`: `$VGT_MODEL` when
set, else `vgt/assets/vgt-shapes/` (the result of `vgt recipe shapes`, packed with `vgt recipe pack`, see
`vgt.packing`).
"""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the default model folder, overriding the shipped one
DEFAULT_MODEL_ENV = "VGT_MODEL"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
SHIPPED_MODEL = "vgt-shapes"
#: the file that marks a pipeline folder (diffusers' layout)
PIPELINE_FILE = "model_index.json"
#: the marker of the older vgt layout, which `vgt convert pipeline` converts
LEGACY_PIPELINE_FILE = "pipeline.json"


def shipped_model_dir() -> Path:
    """Where the package keeps its default model (it may be absent in a build without it)."""
    return ASSETS_DIR / SHIPPED_MODEL


def check_pipeline_folder(path: Path) -> None:
    """A clear error unless `path` is a pipeline folder; a folder of the older layout is told how to convert."""
    if (path / PIPELINE_FILE).is_file():
        return
    if (path / LEGACY_PIPELINE_FILE).is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is a VGT pipeline folder of the older layout ({LEGACY_PIPELINE_FILE}); convert it once "
            f"into the diffusers layout with `vgt convert pipeline {path} NEW_DIR` (Python: "
            "vgt.legacy.convert_legacy_pipeline(OLD, NEW)) and load NEW_DIR"
        )
    raise FileNotFoundError(
        f"{str(path)!r} is not a VGT pipeline folder (no {PIPELINE_FILE}); expected the folder written by "
        "VGTPipeline.save_pretrained or `vgt train ar --export`"
    )


def default_model_dir() -> Path:
    """The model used when none is given: `$VGT_MODEL`, else the one shipped with the package."""
    path = Path(os.environ.get(DEFAULT_MODEL_ENV) or shipped_model_dir())
    if (path / LEGACY_PIPELINE_FILE).is_file() and not (path / PIPELINE_FILE).is_file():
        check_pipeline_folder(path)
    if not (path / PIPELINE_FILE).is_file():
        raise FileNotFoundError(
            f"no VGT model at {str(path)!r}; pass --model DIR (a folder written by VGTPipeline.save_pretrained or "
            f"`vgt train ar --export DIR`) or set ${DEFAULT_MODEL_ENV}. To build the default model: "
            f"`vgt recipe shapes --out runs/shapes` then `vgt recipe pack --model runs/shapes/ar/model`"
        )
    return path


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """`model` as a checked pipeline folder; None means `default_model_dir()`."""
    if model is None:
        return default_model_dir()
    path = Path(model)
    check_pipeline_folder(path)
    return path
