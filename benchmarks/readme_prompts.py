"""Does a model draw the README's example prompts? Each example is generated exactly as its `vgt generate` line
does (one generator seeded with --seed, the README's sampler flags), at the README's seed and at seeds 0..7,
and every image is judged by ShapesEval's judge (strict rules: exactly the asked objects and nothing else).

    python benchmarks/readme_prompts.py [--model DIR] [--seeds 0 1 2 3 4 5 6 7] [--threads 2]

Target (issue 17): every image of the README's own command is correct, and one image per seed is correct in at
least 7 of seeds 0..7.
"""

import argparse
import time

import torch

from vgt.eval.benchmark import load_sampling_pipeline
from vgt.eval.judge import judge_image

#: the README's examples: the `vgt generate` line's prompt, its flags as pipeline arguments, its image count and
#: the GenEval metadata the judge checks (counts, colours, the relation to the object at index 0)
EXAMPLES = (
    {"command": 'vgt generate "two red circles" --out x.png',
     "prompt": "two red circles", "arguments": {}, "num_images": 1,
     "metadata": {"include": [{"class": "circle", "count": 2, "color": "red"}],
                  "exclude": [{"class": "circle", "count": 3}]}},
    {"command": 'vgt generate "a red circle to the left of a blue square" --num-images-per-prompt 4 --grid --seed 0 '
                "--out grid.png --guidance-scale 4.5 --num-inference-steps 30 --tokens-per-step 4",
     "prompt": "a red circle to the left of a blue square",
     "arguments": {"guidance_scale": 4.5, "num_inference_steps": 30, "tokens_per_step": 4}, "num_images": 4,
     "metadata": {"include": [{"class": "square", "count": 1, "color": "blue"},
                              {"class": "circle", "count": 1, "color": "red", "position": ["left of", 0]}]}},
)
README_SEED = 0


def judged(pipe, example: dict, seed: int, num_images: int) -> list[bool]:
    generator = torch.Generator().manual_seed(seed)
    images = pipe(example["prompt"], num_images_per_prompt=num_images, generator=generator,
                  **example["arguments"]).images
    return [judge_image(image, example["metadata"]).correct for image in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="VGT pipeline folder (default: the shipped model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    pipe = load_sampling_pipeline(args.model, threads=args.threads)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    for example in EXAMPLES:
        own = judged(pipe, example, README_SEED, example["num_images"])
        per_seed = [judged(pipe, example, seed, 1)[0] for seed in args.seeds]
        print(f"{example['command']}\n  README seed {README_SEED}: {sum(own)} of {len(own)} images correct; "
              f"seeds {args.seeds[0]}..{args.seeds[-1]} (one image each): {sum(per_seed)} of {len(per_seed)} correct "
              f"({''.join('+' if ok else '-' for ok in per_seed)})")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
