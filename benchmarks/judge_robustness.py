"""Measure the ShapesEval judge: what it wrongly accepts, and its tolerance of degraded ground truth.

    python benchmarks/judge_robustness.py [--resolutions 64 128] [--stride 1] [--foreign 100] [--skip-degraded]

1. Foreign shapes (`vgt.eval.foreign`: ellipses, rectangles, stars, hexagons, ... drawn like ShapesWorld's own):
   the false-accept rate per kind, i.e. the share of images where the judge names the shape a circle, square or
   triangle (target 0), at ShapesWorld's sizes (15-40 % of the side) and split at 25 %.
2. Ground truth: the accept rate of clean renders of every ShapesEval prompt (must be 1.000).
3. Tolerance: each prompt rendered once per resolution, degraded (Gaussian blur, Gaussian pixel noise, JPEG) and
   judged; the table shows the lowest category accuracy for each level.
docs/shapes_eval.md quotes all three.
"""

import argparse
import io

import numpy as np
from PIL import Image, ImageFilter

from vgt.data.shapes import PromptSpec, render_scene
from vgt.data.shapes_world import scene_for_prompt
from vgt.eval.judge import detect_objects, judge_image
from vgt.eval.shapes import shapes_eval_prompts, summarize

FOREIGN_SIZES = {"15-25 %": (0.15, 0.25), "25-40 %": (0.25, 0.4)}

LEVELS = {
    "blur sigma (px)": [0.5, 1.0, 1.5, 2.0, 2.5],
    "noise sigma (0-255)": [10, 20, 30, 40],
    "jpeg quality": [90, 75, 50, 30, 15],
}


def degrade(image: Image.Image, kind: str, level: float, seed: int) -> Image.Image:
    if kind.startswith("blur"):
        return image.filter(ImageFilter.GaussianBlur(level))
    if kind.startswith("noise"):
        noise = np.random.default_rng(seed).normal(0, level, (*image.size[::-1], 3))
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(level))
    return Image.open(io.BytesIO(buffer.getvalue()))


def foreign_false_accepts(resolutions: list[int], per_kind: int) -> None:
    from vgt.eval.foreign import FOREIGN_KINDS, random_foreign_scene

    columns = [f"{r} px {name}" for r in resolutions for name in FOREIGN_SIZES]
    print(f"foreign shapes named circle/square/triangle, {per_kind} images per cell (false-accept rate)")
    print(f"  {'kind':<18} " + " | ".join(f"{c:>14}" for c in columns))
    for kind in FOREIGN_KINDS:
        rng = np.random.default_rng([3, FOREIGN_KINDS.index(kind)])
        cells = []
        for resolution in resolutions:
            for sizes in FOREIGN_SIZES.values():
                named = [any(d.shape is not None for d in detect_objects(random_foreign_scene(
                    kind, resolution, rng, sizes)[0])) for _ in range(per_kind)]
                cells.append(f"{np.mean(named):>14.3f}")
        print(f"  {kind:<18} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--stride", type=int, default=1, help="judge every n-th prompt (faster)")
    parser.add_argument("--foreign", type=int, default=100, help="foreign-shape images per kind and cell (0: skip)")
    parser.add_argument("--skip-degraded", action="store_true", help="skip the degradation table")
    args = parser.parse_args()
    if args.foreign:
        foreign_false_accepts(args.resolutions, args.foreign)
    prompts = shapes_eval_prompts()[::args.stride]
    for resolution in args.resolutions:
        renders = [(p, render_scene(scene_for_prompt(PromptSpec.from_metadata(p), np.random.default_rng([1, i])),
                                    resolution)) for i, p in enumerate(prompts)]
        accepted = np.mean([judge_image(im, p).correct for p, im in renders])
        print(f"\n{resolution} px ground truth, clean: {accepted:.3f} of {len(renders)} images accepted")
        if args.skip_degraded:
            continue
        print(f"{resolution} px, {len(renders)} images per level: worst-category accuracy (overall)")
        for kind, levels in LEVELS.items():
            cells = []
            for level in levels:
                results = [{"tag": p["tag"], "correct": judge_image(degrade(im, kind, level, i), p).correct}
                           for i, (p, im) in enumerate(renders)]
                scores = summarize(results)
                cells.append(f"{level:g}: {min(scores['categories'].values()):.3f} ({scores['overall']:.3f})")
            print(f"  {kind:<20} " + " | ".join(cells))


if __name__ == "__main__":
    main()
