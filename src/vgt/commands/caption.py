"""`vgt caption IMAGE...`: caption images with a VLM (greedy decoding), e.g. the small VLM of `vgt train vlm`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import positive_int


def _load_image(path: str, size: int):
    """A square center crop of the image, resized to the VLM's resolution, as [1, 3, size, size] in [-1, 1]."""
    from PIL import Image

    from vgt.images import to_rgb, to_tensor

    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path!r} does not exist")
    image = to_rgb(Image.open(path))
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return to_tensor(image)[None]


def caption(args: argparse.Namespace) -> int:
    import torch

    from vgt.backbones import load_backbone
    from vgt.vlm.understanding import generate_captions

    backbone = load_backbone(args.backbone, args.model).eval()
    size = backbone.vision.image_size
    images = torch.cat([_load_image(path, size) for path in args.images])
    for path, text in zip(args.images, generate_captions(backbone, images, args.max_new_tokens), strict=True):
        print(f"{path}\t{text}" if len(args.images) > 1 else text)
    return 0


def add_commands(tree) -> None:
    p = tree.command("caption", caption, "Caption images with a VLM (greedy decoding).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", required=True, help="VLM folder (e.g. the output of `vgt train vlm`)")
    p.add_argument("--backbone", default="auto", help="backbone name (auto: read from the folder)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
