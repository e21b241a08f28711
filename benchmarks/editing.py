"""Inpainting on ShapesWorld scenes with a VGT model (default: the shipped one), judged like ShapesEval.

For each scene of 2-4 objects (ShapesWorld "scene" task, the model's default size) and one of its objects:

- restore: the object's box (plus a margin) is masked in the scene; the prompt is the full scene's caption.
- add: the scene is rendered without the object, the same box is masked (it holds only background); same prompt.
- complete: only the central half (in side) of the object's box is masked: its edges stay in the context.
- text-to-image: the same prompt without an image (the model's plain ShapesEval-style rate on these captions).

Per image: `scene` = the judge's strict "scene" verdict for the prompt (each shape's count, nothing else);
`object` = a detection of the object's shape and colour with its centre inside the object's box; `psnr` = PSNR
(on [0, 1]) of the pixels outside the mask against the input; `kept psnr` = the same over the pixels of the latent
tokens fed as context (a token the mask touches is regenerated whole, so this leaves out a border around the mask).
The output is the decoded image everywhere (no paste-back), so both are bounded by the AE's own reconstruction,
`ae psnr` (encode + decode of the input, pixels outside the mask). Means over all images with a 95% bootstrap
interval over scenes (a scene's images share it).

    python benchmarks/editing.py [--scenes 100] [--images 4] [--model DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from vgt import VGTPipeline
from vgt.data.shapes import Scene, ShapeObject, render_scene, scene_caption
from vgt.data.shapes_world import ShapesWorld, scene_prompt
from vgt.editing import regenerated_tokens
from vgt.eval.judge import judge_image
from vgt.pretrained import resolve_model_dir


def object_box(obj, resolution: int, margin: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of an object's bounding box grown by `margin`, clipped to the image."""
    half = obj.size / 2
    left, top = (obj.center[0] - half) * resolution - margin, (obj.center[1] - half) * resolution - margin
    right, bottom = (obj.center[0] + half) * resolution + margin, (obj.center[1] + half) * resolution + margin
    return (max(0, int(np.floor(left))), max(0, int(np.floor(top))),
            min(resolution, int(np.ceil(right))), min(resolution, int(np.ceil(bottom))))


def psnr(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float:
    mse = float(np.mean((a[keep].astype(np.float64) / 255 - b[keep].astype(np.float64) / 255) ** 2))
    return 10 * np.log10(1 / max(mse, 1e-10))


def object_found(image: Image.Image, obj, box) -> bool:
    detections = judge_image(image, {"include": []}, rules="geneval").detections
    return any(d.shape == obj.shape and d.color == obj.color and box[0] <= d.centroid[0] <= box[2]
               and box[1] <= d.centroid[1] <= box[3] for d in detections)


def interval(per_scene: list[list[float]], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean over images and a 95% percentile bootstrap over scenes."""
    sums = np.array([sum(v) for v in per_scene])
    counts = np.array([len(v) for v in per_scene], dtype=np.float64)
    pick = np.random.default_rng(seed).integers(0, len(sums), (resamples, len(sums)))
    draws = sums[pick].sum(1) / counts[pick].sum(1)
    return float(sums.sum() / counts.sum()), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=100, help="scenes (one object of each is masked)")
    parser.add_argument("--images", type=int, default=4, help="images per scene and task (seeds 0..N-1)")
    parser.add_argument("--model", help="VGT pipeline folder (default: the shipped model)")
    parser.add_argument("--margin", type=int, default=2, help="pixels added around the object's box")
    parser.add_argument("--tokens-per-step", type=int, default=None)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", help="save a PNG of the first scenes' inputs, masks and results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = VGTPipeline.from_pretrained(resolve_model_dir(args.model))
    size = pipe.generator.config.sampling.grid_size * pipe.ae.stride
    world = ShapesWorld(resolution=size, seed=20, tasks=("scene",))
    metrics = {task: {"scene": [], "object": [], "psnr": [], "kept psnr": [], "ae psnr": []}
               for task in ("restore", "add", "complete")}
    metrics["text-to-image"] = {"scene": [], "object": []}
    examples, scenes_used, index = [], 0, 0
    while scenes_used < args.scenes:
        sample = world.sample(index)
        index += 1
        if len(sample.scene.objects) < 2:
            continue
        scenes_used += 1
        scene = sample.scene
        caption = scene_caption(scene)
        metadata = scene_prompt(scene).to_metadata()
        pick = index % len(scene.objects)
        obj = scene.objects[pick]
        box = object_box(obj, size, args.margin)
        whole, centre = Image.new("L", (size, size), 0), Image.new("L", (size, size), 0)
        whole.paste(255, box)
        centre.paste(255, object_box(ShapeObject(obj.shape, obj.color, obj.center, obj.size / 2), size, 0))
        without = render_scene(Scene(tuple(o for i, o in enumerate(scene.objects) if i != pick), scene.background),
                               size)
        for task, image, mask in (("restore", sample.image, whole), ("add", without, whole),
                                  ("complete", sample.image, centre), ("text-to-image", None, None)):
            generators = [torch.Generator().manual_seed(1000 * index + k) for k in range(args.images)]
            edit = {} if image is None else {"image": image, "mask_image": mask}
            out = pipe(caption, num_images_per_prompt=args.images, generator=generators,
                       tokens_per_step=args.tokens_per_step, guidance_scale=args.guidance_scale, **edit).images
            m = metrics[task]
            m["scene"].append([float(judge_image(im, metadata).correct) for im in out])
            m["object"].append([float(object_found(im, obj, box)) for im in out])
            if image is not None:
                reference, keep = np.asarray(image), np.asarray(mask) == 0
                tokens = ~regenerated_tokens(~keep, pipe.ae.stride).numpy()
                kept = tokens.repeat(pipe.ae.stride, 0).repeat(pipe.ae.stride, 1)
                m["psnr"].append([psnr(np.asarray(im), reference, keep) for im in out])
                m["kept psnr"].append([psnr(np.asarray(im), reference, kept) for im in out])
                with torch.no_grad():
                    from vgt.images import to_pil, to_tensor

                    rec = to_pil(pipe.ae.decode(pipe.ae.encode(to_tensor(image)[None]).latent).sample[0])
                m["ae psnr"].append([psnr(np.asarray(rec), reference, keep)])
                if len(examples) < 6 * 12:
                    examples += [image, Image.composite(Image.new("RGB", image.size, (255, 0, 255)), image, mask),
                                 *out[:2]]
    seconds = time.perf_counter() - start
    print(f"{scenes_used} scenes x {args.images} images per task, model {resolve_model_dir(args.model)}, "
          f"{size} px, {seconds:.0f} s")
    print("| task | scene correct | object present | PSNR outside mask (dB) | PSNR of kept tokens (dB) "
          "| AE PSNR outside mask (dB) |")
    print("|---|---|---|---|---|---|")
    for task, m in metrics.items():
        cells = []
        for key in ("scene", "object", "psnr", "kept psnr", "ae psnr"):
            if key not in m:
                cells.append("-")
                continue
            mean, low, high = interval(m[key])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]" if key in ("scene", "object")
                         else f"{mean:.2f} [{low:.2f}, {high:.2f}]")
        print(f"| {task} | " + " | ".join(cells) + " |")
    if args.examples:
        from vgt.images import image_grid

        image_grid(examples, columns=12).save(args.examples)
        print(f"examples (input, mask, 2 results; restore, add, complete per scene): {args.examples}")


if __name__ == "__main__":
    main()
