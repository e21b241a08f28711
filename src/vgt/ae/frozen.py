"""An exported VGT-AE loaded for use, not training: the model and the frozen VLM it was built from."""

from __future__ import annotations

import os
from pathlib import Path


def load_frozen_autoencoder(model: str | os.PathLike, backbone_path: str | os.PathLike | None = None):
    """(VGT-AE, VLM) from an exported VGT-AE folder (RUN_DIR/model), both in eval mode without gradients. The VLM
    is the one recorded in the AE's config (a relative path is relative to the AE folder), or `backbone_path` when
    it moved; None for a pixel AE without one."""
    from vgt.ae.config import AEConfig
    from vgt.ae.model import CONFIG_NAME, VGTAutoencoder
    from vgt.backbones.registry import load_frozen_backbone
    from vgt.io import read_json

    config_file = Path(model) / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{model} is not a VGT-AE folder (no {CONFIG_NAME}); pass RUN_DIR/model")
    config = AEConfig.from_dict(read_json(config_file))
    recorded = Path(model) / config.backbone_path if config.backbone_path else None
    path = backbone_path or recorded
    if config.encoder == "vlm" and (path is None or not Path(path).is_dir()):
        raise FileNotFoundError(f"the VGT-AE's VLM folder {str(path)!r} is missing; pass --backbone-path")
    backbone = load_frozen_backbone(config.backbone or "auto", path) if path and Path(path).is_dir() else None
    ae = VGTAutoencoder.from_pretrained(model, backbone=backbone).eval().requires_grad_(False)
    return ae, backbone
