"""Converting pipeline folders of the older vgt layout (`pipeline.json`) into the diffusers layout.

    OLD/pipeline.json                     ->  NEW/model_index.json
    OLD/backbone/ (HF model + tokenizer)  ->  NEW/vlm/ (model files) + NEW/tokenizer/ (tokenizer files)
    OLD/ae/ config.json, model.safetensors       ->  NEW/ae/ config.json, diffusion_pytorch_model.safetensors
    OLD/generator/ config.json, model.safetensors ->  NEW/generator/ (same renaming)

The weight files are copied byte for byte (so a packed float16 model stays packed and generates the same images);
the AE config gains the vision spec read from the VLM's config (it no longer points at `../backbone`) and drops
the training-only `noise_gamma`. The result is loaded once, strictly, before it replaces anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vgt.io import read_json, write_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")
#: vgt's own record in the old backbone folder (backbone name, pixel normalization): now part of the AE config
BACKBONE_RECORD = "vgt_backbone.json"


def _component_config(values: dict, class_name: str) -> dict:
    import diffusers

    return {"_class_name": class_name, "_diffusers_version": diffusers.__version__, **values}


def convert_legacy_pipeline(old: str | os.PathLike, new: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the diffusers-layout copy of the old-layout pipeline folder `old` into `new` (atomically; an existing
    `new` is replaced only when it is a pipeline folder, or with `overwrite`). Returns `new`."""
    from transformers import AutoConfig, AutoTokenizer

    from vgt.ae.config import AEConfig
    from vgt.ar.config import ARConfig
    from vgt.backbones.registry import vision_spec_from_folder
    from vgt.io import atomic_directory, holds
    from vgt.loading import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME
    from vgt.pipeline import AE_DIR, GENERATOR_DIR, MODEL_INDEX, TOKENIZER_DIR, VLM_DIR, VGTPipeline
    from vgt.pretrained import LEGACY_PIPELINE_FILE

    old, new = Path(old), Path(new)
    if not (old / LEGACY_PIPELINE_FILE).is_file():
        raise FileNotFoundError(f"{str(old)!r} is not an old-layout VGT pipeline folder (no {LEGACY_PIPELINE_FILE})")
    record = read_json(old / LEGACY_PIPELINE_FILE)
    if record.get("format") != "vgt-pipeline":
        raise ValueError(f"{str(old / LEGACY_PIPELINE_FILE)!r} is not a vgt-pipeline record: {record}")
    backbone_dir = old / "backbone"
    ae_values = read_json(old / AE_DIR / "config.json")
    name = record.get("backbone") or ae_values.get("backbone") or "auto"
    with atomic_directory(new, overwrite, ours=holds(MODEL_INDEX), protect=[old]) as staging:
        (staging / VLM_DIR).mkdir()
        (staging / TOKENIZER_DIR).mkdir()
        for path in sorted(p for p in backbone_dir.iterdir() if p.is_file() and p.name != BACKBONE_RECORD):
            target = TOKENIZER_DIR if path.name in TOKENIZER_FILES else VLM_DIR
            shutil.copy2(path, staging / target / path.name)
        for component in (AE_DIR, GENERATOR_DIR):
            (staging / component).mkdir()
            shutil.copy2(old / component / LEGACY_WEIGHTS_NAME, staging / component / WEIGHTS_NAME)
        if ae_values.get("encoder", "vlm") == "vlm" and ae_values.get("vision") is None:
            ae_values = {**ae_values, "vision": vision_spec_from_folder(name, backbone_dir)}
        ae_config = AEConfig.from_dict(ae_values)
        write_json(staging / AE_DIR / "config.json", _component_config(ae_config.to_dict(), "VGTAutoencoder"))
        generator = ARConfig.load(old / GENERATOR_DIR / "config.json")
        write_json(staging / GENERATOR_DIR / "config.json", _component_config(generator.to_dict(),
                                                                                "VGTForGeneration"))
        vlm_class = AutoConfig.from_pretrained(str(backbone_dir)).architectures[0]
        tokenizer_class = type(AutoTokenizer.from_pretrained(str(backbone_dir))).__name__
        import diffusers

        write_json(staging / MODEL_INDEX, {
            "_class_name": VGTPipeline.__name__, "_diffusers_version": diffusers.__version__,
            AE_DIR: ["vgt.ae.model", "VGTAutoencoder"], GENERATOR_DIR: ["vgt.ar.model", "VGTForGeneration"],
            TOKENIZER_DIR: ["transformers", tokenizer_class], VLM_DIR: ["transformers", vlm_class],
        })
        VGTPipeline.from_pretrained(staging)  # refuse to write a folder that does not load
    return new
