"""Is understanding preserved? Put VGT-AE's tuned vision path back into (a copy of) its VLM, so the VLM's own
understanding metric can be run with the tuned encoder and compared with the original (paper Table 1: without
self-distillation the tuned tokens no longer make sense to the LLM)."""

from __future__ import annotations

import copy

from vgt.ae.model import VGTAutoencoder
from vgt.backbones.base import Backbone


def backbone_with_tuned_vision(backbone: Backbone, ae: VGTAutoencoder) -> Backbone:
    """A copy of `backbone` whose vision tower and projector carry `ae`'s tuned weights. The original backbone is
    left untouched. Backbones whose `vision` is a view of the full VLM (all HF backbones) share those modules
    with the VLM, so the copied VLM itself — whatever path its understanding metric takes — sees the tuned
    tower."""
    if ae.config.encoder != "vlm":
        raise ValueError("a pixel-encoder VGT-AE has no vision tower to put back into a VLM")
    tuned = copy.deepcopy(backbone)
    result = tuned.vision.load_state_dict(ae.vision.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the VGT-AE's vision path does not match the {getattr(backbone, 'name', 'given')} backbone: missing "
            f"{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]} (was it trained from another VLM?)"
        )
    return tuned
