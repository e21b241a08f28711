"""Image preprocessing for training: a seeded random square crop along the long side, then a resize.

This is the authors' recipe: keep the full short side, pick where the square sits along the long side at random,
resize to the training resolution. Output tensors are [3, H, W] float32 in [-1, 1], the one image format of vgt.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from vgt.images import to_rgb, to_tensor


def random_square_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The largest square of `image`, placed uniformly at random along the long side."""
    width, height = image.size
    side = min(width, height)
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return image.crop((left, top, left + side, top + side))


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
