"""Generate a prompt file's images in GenEval's layout (for `vgt sample-benchmark` and training-time evaluation).

Every image gets its own generator, seeded from (seed, prompt index, image index), so its random draws do not
depend on batching, on resuming, or on which other prompts are generated; prompt directories that already hold
the requested number of images are skipped (others are generated again). (Batching several prompts together can
still change the last bits of the arithmetic.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vgt.pipeline import VGTPipeline


def image_generators(seed: int, index: int, n: int) -> list[torch.Generator]:
    """One generator per image of prompt `index`."""
    return [torch.Generator().manual_seed((seed * 1_000_003 + index) * 1_009 + k) for k in range(n)]


def evenly_spaced(prompts: Sequence[dict], limit: int | None) -> list[tuple[int, dict]]:
    """(index, prompt) pairs: all of them, or `limit` spread evenly over the file (covering every category of a
    file that lists its categories in blocks)."""
    indexed = list(enumerate(prompts))
    if limit is None or limit >= len(indexed):
        return indexed
    if limit < 1:
        raise ValueError(f"the prompt limit must be >= 1, got {limit}")
    return [indexed[round(i * (len(indexed) - 1) / max(limit - 1, 1))] for i in range(limit)]


def write_benchmark_samples(pipe: VGTPipeline, prompts: Sequence[tuple[int, dict]], out_dir: str | os.PathLike,
                            n_per_prompt: int, seed: int = 0, overwrite: bool = False, progress: bool = True,
                            prompts_per_batch: int = 1, **pipeline_kwargs) -> int:
    """Write `n_per_prompt` images for each (index, metadata) into OUT/<index:05d>/, `prompts_per_batch` prompts
    per pipeline call; returns how many prompts were generated (the others already existed)."""
    from vgt.eval.layout import prompt_dir, write_prompt_samples

    if n_per_prompt < 1 or prompts_per_batch < 1:
        raise ValueError(f"n_per_prompt and prompts_per_batch must be >= 1, got {n_per_prompt}, {prompts_per_batch}")
    todo = [(i, m) for i, m in prompts
            if overwrite or len(list((prompt_dir(out_dir, i) / "samples").glob("*.png"))) != n_per_prompt]
    pipe.set_progress_bar_config(disable=True)  # the bar here counts prompts
    bar = tqdm(total=len(todo), desc="prompts", unit="prompt", disable=not progress)
    for start in range(0, len(todo), prompts_per_batch):
        batch = todo[start : start + prompts_per_batch]
        generators = [g for index, _ in batch for g in image_generators(seed, index, n_per_prompt)]
        images = pipe([m["prompt"] for _, m in batch], num_images_per_prompt=n_per_prompt, generator=generators,
                      **pipeline_kwargs).images
        for row, (index, metadata) in enumerate(batch):
            write_prompt_samples(out_dir, index, metadata, images[row * n_per_prompt : (row + 1) * n_per_prompt],
                                 overwrite=True)  # absent, incomplete, or to be overwritten
        bar.update(len(batch))
    bar.close()
    return len(todo)


class ShapesEvalHook:
    """Engine hook: generate a prompt subset with the evaluation weights into RUN_DIR/eval/step_N and score it with
    the ShapesEval judge; returns the overall score and one per category (the engine logs them under the hook's
    name, e.g. `shapes_eval/overall`)."""

    def __init__(self, ae, prompts: Sequence[tuple[int, dict]], n_per_prompt: int = 1, seed: int = 0,
                 **pipeline_kwargs):
        self.ae = ae
        self.prompts = list(prompts)
        self.n_per_prompt = n_per_prompt
        self.seed = seed
        self.pipeline_kwargs = pipeline_kwargs

    def __call__(self, ctx) -> dict:
        from vgt.eval.shapes import evaluate_layout
        from vgt.io import write_json

        out = Path(ctx.run_dir) / "eval" / f"step_{ctx.step:08d}"
        with ctx.eval_model() as model:
            pipe = VGTPipeline.from_generator(model, self.ae)
            write_benchmark_samples(pipe, self.prompts, out, self.n_per_prompt, self.seed, overwrite=True,
                                    progress=False, **self.pipeline_kwargs)
        scores, _ = evaluate_layout(out)
        write_json(out / "scores.json", scores)
        return {"overall": scores["overall"], **scores["categories"]}
