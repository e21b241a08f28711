"""Generate a prompt file's images in GenEval's layout (for `vgt sample-benchmark` and training-time evaluation).

Each prompt gets its own generator (seed * 1000003 + prompt index), so its images do not depend on batching,
on resuming, or on which other prompts are generated; prompt directories already present are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vgt.ar.pipeline import VGTPipeline


def prompt_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


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
                            **pipeline_kwargs) -> int:
    """Write `n_per_prompt` images for each (index, metadata) into OUT/<index:05d>/; returns how many prompts
    were generated (the others already existed)."""
    from vgt.eval.layout import prompt_dir, write_prompt_samples

    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
    written = 0
    for index, metadata in tqdm(prompts, desc="prompts", unit="prompt", disable=not progress):
        if prompt_dir(out_dir, index).exists() and not overwrite:
            continue
        images = pipe(metadata["prompt"], num_images_per_prompt=n_per_prompt,
                      generator=prompt_generator(seed, index), **pipeline_kwargs).images
        write_prompt_samples(out_dir, index, metadata, images, overwrite=overwrite)
        written += 1
    return written


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
        from vgt.eval.shapes import evaluate_layout, write_json

        out = Path(ctx.run_dir) / "eval" / f"step_{ctx.step:08d}"
        with ctx.eval_model() as model:
            write_benchmark_samples(VGTPipeline(model, self.ae), self.prompts, out, self.n_per_prompt, self.seed,
                                    overwrite=True, progress=False, **self.pipeline_kwargs)
        scores, _ = evaluate_layout(out)
        write_json(out / "scores.json", scores)
        return {"overall": scores["overall"], **scores["categories"]}
