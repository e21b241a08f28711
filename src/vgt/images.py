"""vgt's one image format and its edges: [3, H, W] float32 tensors in [-1, 1] <-> PIL, grids, PNG files.

Every room that shows or stores images (the pipeline, the training hooks, the AE and generation commands) goes
through these few functions, so a picture is converted, tiled and saved the same way everywhere; PNGs are written
atomically (`vgt.io.atomic_file`), so a reader never sees half an image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit and 32-bit grayscale (PIL modes I;16*, I, F) are scaled to 8 bits first: PIL's own
    conversion clips them, so a 16-bit PNG would come out white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = array * 255.0 if array.size and array.max() <= 1.0 else array
    else:
        return image if image.mode == "RGB" else image.convert("RGB")
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> [3, H, W] float32 in [-1, 1]."""
    array = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] tensor in [-1, 1] -> PIL RGB image (values outside the range are clipped)."""
    array = image.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def batch_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> B PIL images."""
    return [to_pil(image) for image in images]


def image_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile equally sized images row-major, `columns` wide (default: as square as possible); the cells of a
    last row left short are white. diffusers' `make_image_grid` does the tiling, which wants a full grid."""
    from diffusers.utils import make_image_grid

    if not images:
        raise ValueError("no images to tile")
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    blank = Image.new("RGB", images[0].size, "white")
    return make_image_grid([*images, *[blank] * (rows * columns - len(images))], rows=rows, cols=columns)


def side_by_side(originals: torch.Tensor, reconstructions: torch.Tensor, pairs_per_row: int = 4) -> Image.Image:
    """A grid of (original | reconstruction) pairs from [B, 3, H, W] tensors in [-1, 1]."""
    tiles = [t for pair in zip(batch_to_pil(originals), batch_to_pil(reconstructions), strict=True) for t in pair]
    return image_grid(tiles, columns=2 * min(pairs_per_row, len(originals)))


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write `image` as a PNG at `path`, atomically (parent folders are created)."""
    from vgt.io import atomic_file

    with atomic_file(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
