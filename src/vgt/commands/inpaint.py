"""Editing commands: `vgt inpaint`, `vgt outpaint`, `vgt variations` (QueryAR with known latents, `vgt.editing`).

Flags are named like the pipeline's arguments (`--guidance-scale`, `--num-inference-steps`, `--negative-prompt`,
`--strength`, ...); sampling flags left out take the model's saved defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int
from vgt.commands.generate import add_sampling_flags


def _open_image(path: str, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise SystemExit(f"{what} {path!r} does not exist") from None
    except UnidentifiedImageError:
        raise SystemExit(f"{what} {path!r} is not an image file PIL can read (PNG, JPEG, ...)") from None
    return image


def _image(path: str):
    """An input image as RGB (RGBA and grayscale files are converted)."""
    from vgt.images import to_rgb

    return to_rgb(_open_image(path, "--image"))


def _edit(args: argparse.Namespace, image, mask_image=None, strength=None, paste_back=False) -> int:
    import torch

    from vgt.commands.generate import SAMPLING_FLAGS
    from vgt.eval.benchmark import load_sampling_pipeline
    from vgt.images import save_png

    pipe = load_sampling_pipeline(args.model, args.device, args.dtype, args.threads, args.num_images_per_prompt)
    sampling = {name: getattr(args, name) for name in SAMPLING_FLAGS if getattr(args, name) is not None}
    images = pipe(args.prompt, negative_prompt=args.negative_prompt, image=image, mask_image=mask_image,
                  strength=strength, paste_back=paste_back, num_images_per_prompt=args.num_images_per_prompt,
                  generator=torch.Generator().manual_seed(args.seed), **sampling).images
    out = Path(args.out)  # one image: OUT; several: OUT-000.png, OUT-001.png, ...
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}-{i:03d}{out.suffix or '.png'}")
                                            for i in range(len(images))]
    print("\n".join(str(save_png(image, path)) for image, path in zip(images, paths, strict=True)))
    return 0


def run_inpaint(args: argparse.Namespace) -> int:
    return _edit(args, _image(args.image), _open_image(args.mask, "--mask"), args.strength, args.paste_back)


def run_outpaint(args: argparse.Namespace) -> int:
    from vgt.editing import outpaint_canvas

    if args.size is None and (args.width is None or args.height is None):
        raise SystemExit("give the canvas size: --size PX, or --width PX and --height PX")
    size = (args.width or args.size, args.height or args.size)
    try:
        canvas, mask = outpaint_canvas(_image(args.image), size, None if args.offset is None else tuple(args.offset))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return _edit(args, canvas, mask, None, args.paste_back)


def run_variations(args: argparse.Namespace) -> int:
    return _edit(args, _image(args.image), None, args.strength)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="what the whole edited image shows, e.g. the full scene's caption")
    p.add_argument("--image", required=True, help="input image (sides a multiple of the AE stride)")
    p.add_argument("--out", default="out.png", help="output PNG (several images: OUT-000.png, ...)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed: same seed, same images")
    p.add_argument("--num-images-per-prompt", "-n", type=positive_int, default=1, help="images to make")
    p.add_argument("--negative-prompt", help="prompt for the unconditional branch of guidance")
    g = p.add_argument_group("sampling (unset: the model's saved defaults)")
    g.add_argument("--model", help="VGT pipeline folder (default: $VGT_MODEL, else the model shipped with vgt)")
    add_sampling_flags(g)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    g.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="weight precision")
    g.add_argument("--threads", type=int, help="CPU threads (default: $OMP_NUM_THREADS if set, else by batch size)")


def add_commands(tree) -> None:
    p = tree.command("inpaint", run_inpaint, "Regenerate the masked region of an image (white = regenerate).")
    _common(p)
    p.add_argument("--mask", required=True, help="mask PNG of the image's size: white = regenerate, black = keep")
    p.add_argument("--strength", type=finite_float, default=None,
                   help="fraction of the masked latent tokens regenerated (default 1: all of them)")
    p.add_argument("--paste-back", action="store_true",
                   help="keep the input's own pixels outside the mask (default: the decoded image everywhere)")

    p = tree.command("outpaint", run_outpaint, "Extend an image: place it on a bigger canvas, generate the rest.")
    _common(p)
    p.add_argument("--size", type=positive_int, help="canvas height and width in pixels")
    p.add_argument("--width", type=positive_int, help="canvas width (default --size)")
    p.add_argument("--height", type=positive_int, help="canvas height (default --size)")
    p.add_argument("--offset", type=non_negative_int, nargs=2, metavar=("LEFT", "TOP"),
                   help="where the image sits on the canvas (default: centred)")
    p.add_argument("--paste-back", action="store_true", help="keep the input's own pixels where it was placed")

    p = tree.command("variations", run_variations, "Variations of an image: regenerate a random part of its tokens.")
    _common(p)
    p.add_argument("--strength", type=finite_float, default=0.5,
                   help="fraction of the latent tokens regenerated (0 < strength < 1)")
