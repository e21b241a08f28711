"""Image preprocessing for training: a seeded random square crop along the long side, then a resize.

This is the authors' recipe: keep the full short side, pick where the square sits along the long side at random,
resize to the training resolution. Output tensors are [3, H, W] float32 in [-1, 1], the one image format of vgt.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def random_square_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The largest square of `image`, placed uniformly at random along the long side."""
    width, height = image.size
    side = min(width, height)
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return image.crop((left, top, left + side, top + side))


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


def prepare_image(image: Image.Image, resolution: int, rng: np.random.Generator) -> torch.Tensor:
    """Training preprocessing: RGB, random square crop of the long side, bicubic resize, [-1, 1] tensor."""
    image = random_square_crop(to_rgb(image), rng)
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return to_tensor(image)


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes fully (so a truncated file fails here, not later)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
