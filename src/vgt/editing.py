"""Editing with QueryAR: inpainting, outpainting and variations as known-latent context, no extra training.

The image is encoded by the VGT-AE (`ae.encode(x).latent`); the latent positions to keep are fed to the sampler as
context (`vgt.ar.context`) and the others are generated, guided by the prompt.

- Mask (diffusers' convention): white = regenerate, black = keep; pixels >= 128 count as white. A latent token
  (one stride x stride cell) is regenerated when more than `mask_threshold` of its pixels are white; the default
  0 regenerates every token the mask touches, so nothing of a masked object survives in a kept token.
- `strength`: the fraction of the candidate tokens that is regenerated, picked at random from the generator (one
  draw per image): the masked tokens with `mask_image`, every token without it (a variation of the image). 1 (the
  default with a mask) regenerates the whole masked region.
- Output: like diffusers' inpainting pipelines, the decoded image of all tokens, i.e. the AE's reconstruction
  outside the mask. `paste_back=True` copies the input's own pixels outside the (pixel) mask instead.
- Outpainting: `outpaint_canvas` places an image into a bigger canvas and returns the mask of the outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vgt.ar.randomness import Generators, draw_rows
from vgt.images import to_tensor

IMAGE_MODES = ("RGB", "RGBA", "L")
MASK_MODES = ("L", "1", "RGB", "RGBA")
DEFAULT_VARIATION_STRENGTH = 0.5


def image_tensor(image: Image.Image | np.ndarray, stride: int) -> torch.Tensor:
    """An RGB image (PIL, or a uint8 [H, W, 3] array) -> [1, 3, H, W] in [-1, 1]; its sides must be multiples of
    the AE stride."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image array must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image or a uint8 [H, W, 3] array, got {type(image).__name__}")
    if image.mode not in IMAGE_MODES:
        raise ValueError(f"image mode {image.mode!r} is not supported ({', '.join(IMAGE_MODES)}); "
                         "convert it first: image.convert('RGB')")
    width, height = image.size
    if width % stride or height % stride:
        fit = (max(1, round(width / stride)) * stride, max(1, round(height / stride)) * stride)
        raise ValueError(f"the image is {width}x{height} px; its sides must be multiples of the AE stride {stride}: "
                         f"resize or crop it, e.g. image.resize({fit})")
    return to_tensor(image)[None]


def mask_array(mask_image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask as a bool [H, W] array (True = regenerate); `size` (width, height) must be the image's."""
    if isinstance(mask_image, Image.Image):
        if mask_image.mode not in MASK_MODES:
            raise ValueError(f"mask mode {mask_image.mode!r} is not supported ({', '.join(MASK_MODES)}); "
                             "convert it first: mask.convert('L')")
        array = np.asarray(mask_image.convert("L")) >= 128
    elif isinstance(mask_image, np.ndarray):
        if mask_image.ndim != 2:
            raise ValueError(f"a mask array must be [H, W], got shape {list(mask_image.shape)}")
        array = mask_image >= (128 if mask_image.dtype == np.uint8 else 0.5)
    else:
        raise TypeError(f"mask_image must be a PIL image or an [H, W] array, got {type(mask_image).__name__}")
    if (array.shape[1], array.shape[0]) != tuple(size):
        raise ValueError(f"mask_image is {array.shape[1]}x{array.shape[0]} px but the image is {size[0]}x{size[1]}; "
                         "pass a mask of the image's size")
    return array


def regenerated_tokens(mask: np.ndarray, stride: int, mask_threshold: float = 0.0) -> torch.Tensor:
    """Bool [h, w] latent grid of a pixel mask (True = regenerate): a token is regenerated when more than
    `mask_threshold` of its stride x stride pixels are masked."""
    if not 0.0 <= mask_threshold < 1.0:
        raise ValueError(f"mask_threshold must lie in [0, 1), got {mask_threshold}")
    pixels = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    return F.avg_pool2d(pixels, stride)[0, 0] > mask_threshold


def random_subset(candidates: torch.Tensor, strength: float, batch: int, generator: Generators) -> torch.Tensor:
    """Bool [B, h, w]: round(strength * count) of the candidate tokens [h, w] per image, at random."""
    count = int(candidates.sum())
    chosen = round(strength * count)
    if chosen == count:
        return candidates.expand(batch, -1, -1)
    keys = draw_rows(tuple(candidates.shape), generator, batch, torch.device("cpu"), kind="rand")
    keys = keys.masked_fill(~candidates, 2.0).flatten(1)  # non-candidates sort last
    picked = torch.zeros_like(keys, dtype=torch.bool)
    picked.scatter_(1, keys.argsort(dim=1, stable=True)[:, :chosen], True)
    return picked.view(batch, *candidates.shape)


@dataclass
class EditContext:
    """What the sampler needs for an edit, and what the output needs for paste-back."""

    image: torch.Tensor  # [1, 3, H, W] in [-1, 1]
    latents: torch.Tensor  # [1, C, h, w], the AE's latents of `image`
    known: torch.Tensor  # [B, h, w] bool, True = fed as context
    pixel_mask: torch.Tensor | None  # [H, W] bool, True = regenerate (None for a variation without a mask)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.image.shape[2], self.image.shape[3]

    def paste_back(self, images: torch.Tensor) -> torch.Tensor:
        """The input's pixels outside the mask, the generated ones inside ([B, 3, H, W] in [-1, 1])."""
        if self.pixel_mask is None:
            raise ValueError("paste_back needs a mask_image (a variation has no region to keep)")
        keep = ~self.pixel_mask.to(images.device)
        return torch.where(keep, self.image.to(images), images)


@torch.no_grad()
def prepare_edit(ae, image, mask_image=None, strength: float | None = None, batch: int = 1,
                 generator: Generators = None, mask_threshold: float = 0.0) -> EditContext:
    """Encode `image` and choose the known tokens for `batch` images (see the module docstring)."""
    if image is None:
        raise ValueError("mask_image (and strength) need an image: pass image=... as well")
    stride = ae.stride
    x = image_tensor(image, stride)
    pixel_mask = None
    if mask_image is None:
        strength = DEFAULT_VARIATION_STRENGTH if strength is None else strength
        candidates = torch.ones(x.shape[2] // stride, x.shape[3] // stride, dtype=torch.bool)
    else:
        strength = 1.0 if strength is None else strength
        pixel_mask = torch.from_numpy(mask_array(mask_image, (x.shape[3], x.shape[2])))
        if not pixel_mask.any():
            raise ValueError("mask_image selects no pixel: nothing to generate (white = regenerate, black = keep); "
                             "paint the region to regenerate white")
        candidates = regenerated_tokens(pixel_mask.numpy(), stride, mask_threshold)
        if not candidates.any():
            raise ValueError(f"the mask covers no latent token by more than mask_threshold={mask_threshold}; "
                             "lower mask_threshold or paint a larger region")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1] (the fraction of tokens regenerated), got {strength}")
    regenerate = random_subset(candidates, strength, batch, generator)
    if not bool(regenerate.flatten(1).any(1).all()):
        raise ValueError(f"strength={strength} regenerates no token; raise strength")
    if bool(regenerate.all()):
        raise ValueError("every latent token would be regenerated, so nothing of the image is kept: "
                         + ("the mask covers the whole image (keep a region black)" if mask_image is not None
                            else "lower strength below 1") + ", or drop image/mask_image for plain generation")
    dtype = next(ae.parameters()).dtype
    latents = ae.encode(x.to(ae_device(ae), dtype)).latent.float()
    return EditContext(image=x, latents=latents, known=~regenerate, pixel_mask=pixel_mask)


def ae_device(ae) -> torch.device:
    return next(ae.parameters()).device


def outpaint_canvas(image: Image.Image, size: tuple[int, int], offset: tuple[int, int] | None = None,
                    fill: tuple[int, int, int] = (128, 128, 128)) -> tuple[Image.Image, Image.Image]:
    """`image` placed at `offset` (left, top; default: centred) on a `size` (width, height) canvas of `fill`, and
    the outpainting mask (white outside the image)."""
    width, height = size
    w, h = image.size
    if offset is None:
        offset = ((width - w) // 2, (height - h) // 2)
    left, top = offset
    if left < 0 or top < 0 or left + w > width or top + h > height:
        raise ValueError(f"a {w}x{h} image at offset {offset} does not fit a {width}x{height} canvas; "
                         "use a larger canvas or another offset")
    if (w, h) == (width, height):
        raise ValueError(f"the canvas {width}x{height} is the image's size: nothing to outpaint; use a larger one")
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(image.convert("RGB"), (left, top))
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (left, top, left + w, top + h))
    return canvas, mask
