"""Latent cache: encode a data set once with a (frozen) autoencoder, then train VGT-AR from the stored latents.

A cache directory holds tar shards in the WebDataset layout — `KEY.latent.npy` (one latent [C, h, w]) and
`KEY.txt` (its caption) — plus `index.json` describing it. `vgt.data.readers.LatentCacheSource` reads it like any
other source (partitioned shards, skip-and-count on damage, exact resume) and serves {"latent": [C, h, w],
"caption": str}.
The random crop of each image is drawn once, when the cache is written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vgt.data.sources import IndexedSource, Sample, Skipped, Source, readable
from vgt.io import check_replaceable, staging_directory

INDEX_FILE = "index.json"
DTYPES = {"float32": np.float32, "float16": np.float16}


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(data))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@torch.inference_mode()
def write_latent_cache(
    source: Source,
    encode: Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | os.PathLike,
    num_samples: int | None = None,
    batch_size: int = 32,
    shard_size: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Encode `source` (one pass, or its first `num_samples` readable samples) with `encode(images [B,3,H,W] in
    [-1,1]) -> latents [B,C,h,w]` and write the cache to `out_dir`. The directory appears complete or not at all.
    Unreadable samples are skipped and their number recorded in index.json. Returns the cache directory."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    if dtype not in DTYPES:
        raise ValueError(f"latent dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if num_samples is None and isinstance(source, IndexedSource) and source.num_items() is None:
        raise ValueError(f"{type(source).__name__} is endless: pass num_samples (CLI: --num-samples)")
    check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(out, "partial")

    shards: list[str] = []
    tar: tarfile.TarFile | None = None
    written = skipped = 0
    shape = None
    items = readable(source.stream(0, 1, seed, repeat=False), source.label())
    bar = tqdm(total=num_samples, desc=f"cache latents -> {out}", unit="img")
    exhausted = False
    try:
        while not exhausted and (num_samples is None or written < num_samples):
            want = batch_size if num_samples is None else min(batch_size, num_samples - written)
            batch: list[Sample] = []
            while len(batch) < want:
                try:
                    _, item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                if isinstance(item, Skipped):
                    skipped += 1
                else:
                    batch.append(item)
            if not batch:
                break
            images = torch.stack([s["image"] for s in batch]).to(device)
            latents = encode(images).float().cpu().numpy().astype(DTYPES[dtype])
            if latents.ndim != 4 or latents.shape[0] != len(batch):
                raise ValueError(f"encode returned shape {latents.shape}; expected [{len(batch)}, C, h, w]")
            shape = shape or list(latents.shape[1:])
            for latent, sample in zip(latents, batch, strict=True):
                if written % shard_size == 0:
                    if tar is not None:
                        tar.close()
                    shards.append(f"latents-{len(shards):06d}.tar")
                    tar = tarfile.open(staging / shards[-1], "w")
                key = f"{written:09d}"
                _add_member(tar, f"{key}.latent.npy", _npy_bytes(latent))
                _add_member(tar, f"{key}.txt", sample["caption"].encode("utf-8"))
                written += 1
            bar.update(len(batch))
        if tar is not None:
            tar.close()
        if written == 0:
            raise ValueError(f"no readable samples to cache ({skipped} skipped)")
        index = {"num_samples": written, "skipped": skipped, "latent_shape": shape, "dtype": dtype,
                 "shards": shards, "shard_size": shard_size, "seed": seed, "encoder": description,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return out


