"""Claim 4 (paper Table 8: QueryAR GenEval 0.62 at 1 token per step, 0.59 at 4; 16 tokens per step still good).

One trained pipeline decodes (reduced) ShapesEval with tokens_per_step 1, 2, 4, 8 and 16 (same prompts, seeds and
sampler otherwise); images/s is measured side by side on one batch per setting, interleaved over rounds
(`sampling_speed.time_batch`: prompt encoding, guided decoding with the KV cache, VGT-AE decoding).

    python benchmarks/claims_parallel_decoding.py --work runs/claims/parallel [--model DIR]
    python benchmarks/claims_parallel_decoding.py --work /tmp/par --model runs/quick/ar/model \\
        --eval-prompts-per-category 1 --eval-images 1 --rounds 1                            # reduced run
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from claims_common import score_text
from sampling_speed import time_batch

from vgt.eval.benchmark import evaluate_pipeline_seeds, shapes_eval_subset
from vgt.pipeline import VGTPipeline
from vgt.pretrained import resolve_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder (default: $VGT_MODEL, else the shipped model)")
    parser.add_argument("--work", required=True, help="folder for the generated images and scores (resumable)")
    parser.add_argument("--tokens-per-step", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--eval-prompts-per-category", type=int, default=20,
                        help="ShapesEval prompts per category (0: the full set)")
    parser.add_argument("--eval-images", type=int, default=4, help="images per ShapesEval prompt")
    parser.add_argument("--speed-images", type=int, default=4, help="images per timed batch")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="sampling seeds; each score is their mean, with a 95%% interval over prompts")
    parser.add_argument("--threads", type=int, help="torch CPU threads for the ShapesEval and the timing "
                        "(default: the sampler's choice, one thread for small batches)")
    args = parser.parse_args()
    model = resolve_model_dir(args.model)
    work = Path(args.work)
    per_category = args.eval_prompts_per_category or None

    scores = {}
    for k in args.tokens_per_step:
        # resumable: evaluate_pipeline keeps the images of unchanged settings and judges them again
        scores[k] = evaluate_pipeline_seeds(model, work / f"tokens_per_step_{k}", args.seeds, per_category,
                                            args.eval_images, {"tokens_per_step": k}, threads=args.threads)

    pipe = VGTPipeline.from_pretrained(model)
    if args.threads:  # the evaluation sets its own count for its batches
        torch.set_num_threads(args.threads)
    prompts = [row["prompt"] for row in shapes_eval_subset(per_category)]
    prompts = (prompts * args.speed_images)[: args.speed_images]
    steps = pipe.generator.config.sampling.num_inference_steps
    time_batch(pipe, prompts[:1], 1, True, 2)  # warm-up
    seconds = {k: [] for k in args.tokens_per_step}
    for _ in range(args.rounds):
        for k in args.tokens_per_step:
            seconds[k].append(time_batch(pipe, prompts, k, True, steps))

    grid = pipe.generator.config.sampling.grid_size
    first = scores[args.tokens_per_step[0]]
    print(f"Parallel decoding: {model}, {grid}x{grid} latents; ShapesEval {first['n_images']} images "
          f"({per_category or 'all'} prompts per category x {args.eval_images} x seeds "
          f"{' '.join(map(str, args.seeds))}; 95% interval over prompts in brackets); speed: {args.speed_images} "
          f"images per batch, median of {args.rounds} rounds, {torch.get_num_threads()} threads; other "
          f"sampler settings: the model's ({first['sampler_defaults']['sampler']}, {steps} steps, guidance "
          f"{first['sampler_defaults']['guidance_scale']} {first['sampler_defaults']['cfg_schedule']})")
    base = statistics.median(seconds[args.tokens_per_step[0]])
    print(f"{'tokens/step':>11} {'forward passes':>15} {'ShapesEval':>21} {'images/s':>9} {'speed-up':>9}")
    rows = []
    for k in args.tokens_per_step:
        median = statistics.median(seconds[k])
        rows.append({"tokens_per_step": k, "shapes_eval": scores[k]["overall"],
                     "interval": scores[k]["interval"]["overall"], "seeds": scores[k]["seeds"],
                     "categories": scores[k]["categories"],
                     "images_per_s": args.speed_images / median, "speed_up": base / median})
        print(f"{k:11d} {-(-grid * grid // k):15d} {score_text(scores[k]):>21} {args.speed_images / median:9.3f} "
              f"{base / median:8.2f}x")
    path = work / "results.json"
    path.write_text(json.dumps({"model": str(model), "rows": rows}, indent=2) + "\n")
    print(f"(results: {path})")


if __name__ == "__main__":
    main()
