"""The ceiling a VGT-AE puts on ShapesEval: the judge's score of ground-truth scenes (rendered to satisfy each
prompt) and of the same scenes after one encode-decode round trip through the AE. A VGT-AR that predicted the
latents of a perfect scene could score no better than the round trip.

    python benchmarks/ae_ceiling.py [--model DIR | --ae DIR] [--prompts-per-category 20] [--images-per-prompt 4]

Prints the scores per category with their 95% intervals, and how many of the round-trip images lost an object
or a shape to the AE.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vgt.ae import VGTAutoencoder
from vgt.eval.benchmark import shapes_eval_subset
from vgt.eval.layout import read_layout, write_prompt_samples
from vgt.eval.shapes import evaluate_layout, format_scores, render_ground_truth
from vgt.images import batch_to_pil, to_tensor
from vgt.pretrained import resolve_model_dir


def round_trip(ae: VGTAutoencoder, images: list) -> list:
    with torch.no_grad():
        batch = torch.stack([to_tensor(image) for image in images])
        return batch_to_pil(ae.decode(ae.encode(batch).latent).sample)


def write_ceiling_layouts(ae: VGTAutoencoder, prompts: list[dict], out: Path, images_per_prompt: int = 4,
                          seed: int = 0) -> dict[str, Path]:
    """Ground-truth scenes of every prompt (GenEval layout) and their AE round trips, side by side in `out`."""
    folders = {"ground truth": out / "truth", "AE round trip": out / "round-trip"}
    render_ground_truth(folders["ground truth"], prompts, images_per_prompt, ae.config.image_size or 128, seed)
    for entry in read_layout(folders["ground truth"]):
        images = [Image.open(path).convert("RGB") for path in entry.sample_paths]
        write_prompt_samples(folders["AE round trip"], entry.index, entry.metadata, round_trip(ae, images))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="VGT pipeline folder whose ae/ is measured (default: the shipped model)")
    parser.add_argument("--ae", help="a VGT-AE folder instead of a pipeline's")
    parser.add_argument("--prompts-per-category", type=int, default=20)
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the ground-truth scenes")
    args = parser.parse_args()
    ae = VGTAutoencoder.from_pretrained(args.ae or resolve_model_dir(args.model) / "ae").eval()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_ceiling_layouts(ae, shapes_eval_subset(args.prompts_per_category), Path(tmp),
                                        args.images_per_prompt, args.seed)
        for name, folder in folders.items():
            scores, results = evaluate_layout(folder)
            blank = sum(not r["objects"] for r in results)
            unknown = sum(o["shape"] is None for r in results for o in r["objects"])
            found = sum(len(r["objects"]) for r in results)
            print(f"\n{name}: {len(results)} images, {blank} blank, {unknown} of {found} found objects of no known "
                  "shape")
            print(format_scores(scores))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
