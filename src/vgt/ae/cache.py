"""The latent-cache stage: encode a data set once with an exported VGT-AE, so VGT-AR trains without running it.

`vgt.data.latents.write_latent_cache` writes the shards for any encoder; this is the stage around it: it loads the
AE, picks the resolution it was trained at, and refuses to write the cache over its own inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def cache_latents(ae_dir: str | os.PathLike, data: Sequence[str], out: str | os.PathLike,
                  backbone_path: str | os.PathLike | None = None, size: int | None = None,
                  num_samples: int | None = None, data_weights: Sequence[float] | None = None, batch_size: int = 32,
                  shard_size: int = 1000, seed: int = 0, dtype: str = "float32", device: str = "cpu",
                  overwrite: bool = False) -> Path:
    """Encode `data` (specs as for training; its first `num_samples` readable samples, required for endless
    sources) at `size` px (default: the AE's training resolution) with the VGT-AE in `ae_dir`, and write the
    cache to `out` (atomically). `backbone_path`: the VLM folder when the AE's recorded one moved."""
    import torch

    from vgt.ae.model import VGTAutoencoder
    from vgt.data.latents import write_latent_cache
    from vgt.data.readers import build_source
    from vgt.devices import resolve_device
    from vgt.io import check_replaceable

    target = resolve_device(device)
    # the cache may not replace (or be written into) the model or the data it is made from
    inputs = [ae_dir, *(spec.partition(":")[2] for spec in data if ":" in spec and not spec.startswith("shapes"))]
    check_replaceable(out, overwrite, protect=[p for p in inputs if p])
    ae = VGTAutoencoder.from_pretrained(ae_dir, backbone_path=backbone_path).to(target).eval()
    size = size or ae.config.image_size
    if size is None:
        raise ValueError(f"{ae_dir} records no training resolution; pass the image size (--size)")
    ae.grid_size(size, size)  # a clear error when the size does not fit the stride
    source = build_source(list(data), size, data_weights)

    def encode(images: torch.Tensor) -> torch.Tensor:
        return ae.encode(images).latent

    return write_latent_cache(source, encode, out, num_samples=num_samples, batch_size=batch_size,
                              shard_size=shard_size, seed=seed, device=target, dtype=dtype,
                              description=f"VGT-AE {ae_dir} at {size}px", overwrite=overwrite)
