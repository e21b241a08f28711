"""`vgt train vlm`, `vgt caption`, `vgt eval understanding`: the small VLM pretrained here, and understanding
checks for any InternVL-architecture VLM."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vgt.argtypes import non_negative_int, positive_int
from vgt.io import write_json


def add_commands(tree) -> None:
    from vgt.train.config import add_train_args

    p = tree.command("train vlm", train_vlm, "Pretrain the small VLM for understanding on ShapesWorld (image -> "
                     "scene caption). Resumes from --run-dir; exports a HF folder at the end.")
    p.add_argument("--vlm-preset", default="small", choices=("small", "toy"),
                   help="architecture + default hyper-parameters (small: 128 px, stride 16; toy: smoke test)")
    p.add_argument("--out", help="export folder of the trained VLM (default: RUN_DIR/model)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace an existing folder that vgt did not write (and everything in it)")
    p.add_argument("--eval-images", type=non_negative_int, default=100,
                   help="held-out scenes captioned at every --eval-every step (0: no evaluation during training)")
    add_train_args(p)

    p = tree.command("caption", caption, "Caption images with a VLM (greedy decoding).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", required=True, help="VLM folder (e.g. the output of `vgt train vlm`)")
    p.add_argument("--backbone", default="auto", help="backbone name (auto: read from the folder)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)

    p = tree.command("eval understanding", eval_understanding,
                     "Exact-scene and per-attribute accuracy of a VLM's captions on held-out ShapesWorld scenes.")
    p.add_argument("--model", required=True, help="VLM folder")
    p.add_argument("--backbone", default="auto", help="backbone name (auto: read from the folder)")
    p.add_argument("--num-images", type=positive_int, default=200)
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--out", help="JSON report path (default: MODEL/understanding.json)")


def train_vlm(args: argparse.Namespace) -> int:
    from vgt.backbones.pretrain import VLM_TRAINING, train_small_vlm
    from vgt.train.config import config_from_args

    cfg = config_from_args(args, **VLM_TRAINING[args.vlm_preset])
    result = train_small_vlm(args.vlm_preset, cfg, out=args.out, eval_images=args.eval_images,
                             overwrite=args.overwrite)
    print(json.dumps(result, indent=2))
    return 0


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
    from vgt.backbones.understanding import generate_captions

    backbone = load_backbone(args.backbone, args.model).eval()
    size = backbone.vision.image_size
    images = torch.cat([_load_image(path, size) for path in args.images])
    for path, text in zip(args.images, generate_captions(backbone, images, args.max_new_tokens), strict=True):
        print(f"{path}\t{text}" if len(args.images) > 1 else text)
    return 0


def eval_understanding(args: argparse.Namespace) -> int:
    from vgt.backbones import load_backbone
    from vgt.backbones.understanding import METRIC_KEYS, evaluate_understanding

    backbone = load_backbone(args.backbone, args.model).eval()
    metrics = evaluate_understanding(backbone, num_images=args.num_images, batch_size=args.batch_size)
    report = {"model": str(args.model), **metrics}
    out = Path(args.out) if args.out else Path(args.model) / "understanding.json"
    write_json(out, report)
    for key in METRIC_KEYS:
        print(f"{key:>10}: {100 * metrics[key]:.1f}%")
    print(f"({metrics['num_images']} held-out scenes, world seed {metrics['world_seed']}; exact_tol accepts a "
          f"neighbouring location within {metrics['location_tolerance']:.4f} of the side; report: {out})")
    return 0
