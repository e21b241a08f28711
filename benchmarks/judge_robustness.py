"""Measure the ShapesEval judge's tolerance: accuracy on degraded ground-truth renders, worst category.

    python benchmarks/judge_robustness.py [--resolutions 64 128] [--stride 1]

Each prompt of the ShapesEval set is rendered once per resolution, degraded (Gaussian blur, Gaussian pixel noise,
JPEG) and judged; the table shows the lowest category accuracy for each level. docs/shapes_eval.md quotes it.
"""

import argparse
import io

import numpy as np
from PIL import Image, ImageFilter

from vgt.data.shapes import PromptSpec, render_scene, scene_for_prompt
from vgt.eval.judge import judge_image
from vgt.eval.shapes import shapes_eval_prompts, summarize

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--stride", type=int, default=1, help="judge every n-th prompt (faster)")
    args = parser.parse_args()
    prompts = shapes_eval_prompts()[::args.stride]
    for resolution in args.resolutions:
        renders = [(p, render_scene(scene_for_prompt(PromptSpec.from_metadata(p), np.random.default_rng([1, i])),
                                    resolution)) for i, p in enumerate(prompts)]
        print(f"\n{resolution} px, {len(renders)} images per level: worst-category accuracy (overall)")
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
