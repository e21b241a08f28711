"""An exported VGT-AE loaded for use, not training: the model and the frozen VLM it was built from."""

from __future__ import annotations

import os
from pathlib import Path


def load_frozen_autoencoder(model: str | os.PathLike, backbone_path: str | os.PathLike | None = None):
    """(VGT-AE, VLM) from an exported VGT-AE folder (RUN_DIR/model), both in eval mode without gradients. The AE
    loads from its own folder; the VLM is `backbone_path` (older exports recorded theirs, relative to the AE folder),
    None when not given: the evaluations that need the VLM itself say so."""
    from vgt.ae.config import AEConfig
    from vgt.ae.model import CONFIG_NAME, VGTAutoencoder
    from vgt.backbones.registry import load_frozen_backbone
    from vgt.io import read_json

    config_file = Path(model) / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{model} is not a VGT-AE folder (no {CONFIG_NAME}); pass RUN_DIR/model")
    values = read_json(config_file)
    config = AEConfig.from_dict(values)
    recorded = Path(model) / values["backbone_path"] if values.get("backbone_path") else None
    path = backbone_path or recorded
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"the VLM folder {str(path)!r} is missing; pass --backbone-path")
    backbone = load_frozen_backbone(config.backbone or "auto", path) if path and Path(path).is_dir() else None
    ae = VGTAutoencoder.from_pretrained(model, backbone=backbone).eval().requires_grad_(False)
    return ae, backbone
