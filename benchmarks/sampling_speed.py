"""Sampling speed of a VGT pipeline, every setting measured side by side in one run.

    python benchmarks/sampling_speed.py [--model DIR] [--images 4] [--rounds 3] [--tokens-per-step 1 4 16]
    python benchmarks/sampling_speed.py --images 1 --rounds 1 --steps 2          # reduced run

Settings: tokens_per_step 1 with the KV cache, tokens_per_step 1 recomputing the whole sequence at every step
(`generate_latents(use_cache=False)`), and every other --tokens-per-step with the cache. Rounds interleave the
settings (round 1: all settings, round 2: all settings, ...) so a change in machine load hits them alike; the
table reports the median over rounds. Time covers the whole pipeline: prompt encoding, decoding with guidance,
and the VGT-AE decoder. Without --model the default model (`$VGT_MODEL`, else the one shipped with vgt) is used.
"""

import argparse
import statistics
import time

import torch

from vgt.ar.sampling import generate_latents
from vgt.pipeline import VGTPipeline
from vgt.pretrained import resolve_model_dir


def time_batch(pipe: VGTPipeline, prompts: list[str], tokens_per_step: int, use_cache: bool, steps: int) -> float:
    """Seconds to generate one image per prompt (decoded to pixels)."""
    sampling = pipe.generator.config.sampling
    grid = (sampling.grid_size, sampling.grid_size)
    start = time.perf_counter()
    latents = generate_latents(
        pipe.generator, prompts, grid, guidance_scale=sampling.guidance_scale, cfg_schedule=sampling.cfg_schedule,
        num_inference_steps=steps, sampler=sampling.sampler, sde_t_end=sampling.sde_t_end,
        tokens_per_step=tokens_per_step, order=sampling.order, generator=torch.Generator().manual_seed(0),
        use_cache=use_cache,
    ).latents
    with torch.no_grad():
        pipe.ae.decode(latents)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder (default: $VGT_MODEL, else the shipped model)")
    parser.add_argument("--images", type=int, default=4, help="images per generation call (one batch)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--tokens-per-step", type=int, nargs="+", default=[4, 16],
                        help="parallel settings compared with tokens_per_step 1")
    parser.add_argument("--steps", type=int, help="flow-head sampler steps (default: the model's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)
    pipe = VGTPipeline.from_pretrained(model_dir)
    steps = args.steps or pipe.generator.config.sampling.num_inference_steps
    grid = pipe.generator.config.sampling.grid_size
    prompts = ["two red circles", "a blue square to the left of a yellow triangle", "three green triangles",
               "a purple circle"]
    prompts = (prompts * args.images)[: args.images]
    settings = [("1, KV cache", 1, True), ("1, full recomputation", 1, False)]
    settings += [(f"{k}, KV cache", k, True) for k in args.tokens_per_step if k != 1]
    time_batch(pipe, prompts[:1], 1, True, 2)  # warm-up: first-call allocations and lazy initialisation
    seconds = {name: [] for name, _, _ in settings}
    for _ in range(args.rounds):
        for name, k, cache in settings:
            seconds[name].append(time_batch(pipe, prompts, k, cache, steps))
    defaults = pipe.generator.config.sampling
    print(f"model {model_dir}: {grid}x{grid} latents ({grid * grid} tokens), {args.images} images per call, guidance "
          f"{defaults.guidance_scale} ({defaults.cfg_schedule}), {steps} {defaults.sampler} steps, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    base = statistics.median(seconds["1, KV cache"])
    print(f"{'tokens_per_step':<26} {'s/call':>8} {'images/s':>9} {'speed-up vs 1 (cache)':>22}")
    for name, _, _ in settings:
        median = statistics.median(seconds[name])
        print(f"{name:<26} {median:8.3f} {args.images / median:9.3f} {base / median:21.2f}x")


if __name__ == "__main__":
    main()
