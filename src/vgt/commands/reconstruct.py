"""`vgt reconstruct IMAGE...`: encode and decode images with a VGT-AE."""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import positive_int


def run_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from vgt.ae.frozen import load_frozen_autoencoder
    from vgt.images import save_png, to_pil, to_rgb, to_tensor

    ae, _ = load_frozen_autoencoder(args.model, args.backbone_path)
    out_dir = Path(args.out)
    for path in map(Path, args.images):
        with Image.open(path) as image:
            image = to_rgb(image).copy()  # loaded before the file closes
        width, height = image.size
        if args.size:
            width = height = args.size
        size = (max(ae.stride, round(width / ae.stride) * ae.stride),
                max(ae.stride, round(height / ae.stride) * ae.stride))
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        with torch.no_grad():
            recon = ae(to_tensor(image)[None]).sample[0]
        target = out_dir / f"{path.stem}_recon.png"
        save_png(to_pil(recon), target)
        print(f"{path} -> {target} ({size[0]}x{size[1]})")
    return 0


def add_commands(tree) -> None:
    p = tree.command("reconstruct", run_reconstruct, "Encode and decode images with a VGT-AE.")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="exported VGT-AE folder (RUN_DIR/model)")
    p.add_argument("--out", default="reconstructions", help="output folder")
    p.add_argument("--size", type=positive_int,
                   help="resize to SIZE x SIZE first (default: nearest multiple of the stride)")
    p.add_argument("--backbone-path", help="the VLM folder, when it moved since training")
