"""ShapesEval of a VGT pipeline: generate a prompt file's images in GenEval's layout (`write_benchmark_samples`, for
`vgt sample-benchmark` and the training-time `ShapesEvalHook`), and judge a whole model (`evaluate_pipeline`, for
`vgt eval model`, the recipe, packing and the claim benchmarks).

Every image gets its own generator, seeded from (seed, prompt index, image index), so its random draws do not
depend on batching, on resuming, or on which other prompts are generated; prompt directories that already hold
the requested number of images are skipped (others are generated again). (Batching several prompts together can
still change the last bits of the arithmetic.)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vgt.io import write_json
from vgt.pipeline import VGTPipeline

SPLITS = ("report", "tune")
#: the tune split samples from these seeds on (seed s -> TUNE_SEED_OFFSET + s), never from a reporting seed
TUNE_SEED_OFFSET = 1000
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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

        out = Path(ctx.run_dir) / "eval" / f"step_{ctx.step:08d}"
        with ctx.eval_model() as model:
            pipe = VGTPipeline.from_generator(model, self.ae)
            write_benchmark_samples(pipe, self.prompts, out, self.n_per_prompt, self.seed, overwrite=True,
                                    progress=False, **self.pipeline_kwargs)
        scores, _ = evaluate_layout(out)
        write_json(out / "scores.json", scores)
        return {"overall": scores["overall"], **scores["categories"]}


def load_sampling_pipeline(model: str | os.PathLike | None = None, device: str = "auto", dtype: str = "fp32",
                           threads: int | None = None, images_per_call: int = 1) -> VGTPipeline:
    """A pipeline folder (None: $VGT_MODEL, else the shipped model) on `device` in `dtype` (fp32, bf16, fp16),
    with the CPU threads set for `images_per_call` images per call (`vgt.threads.set_sampling_threads`)."""
    from vgt.devices import resolve_device
    from vgt.pretrained import resolve_model_dir
    from vgt.threads import set_sampling_threads

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    target = resolve_device(device)
    set_sampling_threads(threads, images_per_call, target)
    with quiet_loading_bars():
        return VGTPipeline.from_pretrained(resolve_model_dir(model), torch_dtype=DTYPES[dtype]).to(target)


@contextmanager
def quiet_loading_bars() -> Iterator[None]:
    """Hide transformers' and diffusers' loading bars ("Loading weights", "Loading pipeline components...") for the
    duration, then restore each library's setting: a local pipeline folder loads in about a second, and the bars
    would bury the output of `vgt generate` and of every per-seed load of `vgt eval model`."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (transformers_logging, diffusers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()


def shapes_eval_subset(prompts_per_category: int | None = None, split: str = "report") -> list[dict]:
    """The ShapesEval prompt set, or `prompts_per_category` prompts of each category spread evenly over it (a
    reduced evaluation; the full set repeats each category's distinct prompts up to >= 80 lines).

    `split="tune"` draws a set for choosing settings (temperature, guidance, steps) that the reported score does
    not use: per category, the distinct prompts the reporting subset leaves out, in a fixed shuffled order, then
    (where a category has too few distinct prompts, e.g. 3 for single_object) the reporting ones again; its
    images are sampled from other seeds (`TUNE_SEED_OFFSET`)."""
    import numpy as np

    from vgt.data.shapes import GENEVAL_TAGS
    from vgt.eval.shapes import shapes_eval_prompts

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    rows = shapes_eval_prompts()
    if prompts_per_category is None and split == "report":
        return rows
    subset = []
    for tag in GENEVAL_TAGS:
        category = [r for r in rows if r["tag"] == tag]  # the distinct prompts, repeated in the same order
        distinct = len({r["prompt"] for r in category})
        take = min(prompts_per_category or len(category), len(category))
        if take <= distinct:  # evenly spaced distinct prompts
            report = [category[(i * distinct) // take] for i in range(take)]
        else:  # every distinct prompt, then repeats
            report = category[:take]
        if split == "report":
            subset += report
            continue
        used = {r["prompt"] for r in report}
        unique = list({r["prompt"]: r for r in category[:distinct]}.values())
        order = np.random.default_rng([TUNE_SEED_OFFSET, GENEVAL_TAGS.index(tag)]).permutation(len(unique))
        fresh = [unique[i] for i in order if unique[i]["prompt"] not in used]
        reused = [unique[i] for i in order if unique[i]["prompt"] in used]
        subset += ((fresh + reused) * -(-take // distinct))[:take]
    return subset


def sampling_flags(sampling: Mapping[str, object]) -> list[str]:
    """The `vgt generate` / `vgt sample-benchmark` flags of pipeline arguments (`guidance_scale=2` ->
    `--guidance-scale 2`): every sampling flag is named after its argument."""
    return [item for name, value in sampling.items() for item in (f"--{name.replace('_', '-')}", str(value))]


def evaluate_pipeline(model: str | os.PathLike | None, out: str | os.PathLike, prompts_per_category: int | None = None,
                      n_per_prompt: int = 4, seed: int = 0, sampling: Mapping[str, object] | None = None,
                      split: str = "report", device: str = "auto", dtype: str = "fp32", threads: int | None = None,
                      ) -> dict:
    """ShapesEval of a VGT pipeline folder (None: the shipped model) at one sampling seed: writes the prompt set,
    generates it in GenEval layout (resumable), judges it and writes OUT/scores.json (scores with their 95%
    interval over prompts), which also records the model, prompt set, split, seed and sampler settings.
    `sampling`: pipeline arguments (e.g. `{"guidance_scale": 2.0}`; unset ones are the model's defaults).
    `split="tune"`: the tuning prompt draw (`shapes_eval_subset`). Samples left in OUT by a run with other
    settings are removed and generated again, not judged as these."""
    from vgt.ar.config import ARConfig
    from vgt.eval.shapes import PROMPT_SET_VERSION, evaluate_layout, read_prompts
    from vgt.io import write_jsonl
    from vgt.loading import CONFIG_NAME
    from vgt.pipeline import GENERATOR_DIR
    from vgt.pretrained import resolve_model_dir

    sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
    model_dir = resolve_model_dir(model)
    out = Path(out)
    prompts = write_jsonl(out / "prompts.jsonl", shapes_eval_subset(prompts_per_category, split))
    sample_seed = seed + (TUNE_SEED_OFFSET if split == "tune" else 0)
    settings = {"model": str(model_dir), "prompts_per_category": prompts_per_category, "n_per_prompt": n_per_prompt,
                "seed": seed, "sampling": sampling, "dtype": dtype, **({"split": split} if split != "report" else {})}
    # OUT/samples only ever holds images of the recorded settings: others (or unrecorded ones) are removed before
    # the new settings are recorded, so an interrupted run resumes with nothing of the old one left to judge
    settings_file, samples = out / "samples_settings.json", out / "samples"
    if samples.exists() and (not settings_file.is_file() or json.loads(settings_file.read_text()) != settings):
        shutil.rmtree(samples)
    write_json(settings_file, settings)
    pipe = load_sampling_pipeline(model_dir, device, dtype, threads, images_per_call=n_per_prompt)
    write_benchmark_samples(pipe, list(enumerate(read_prompts(prompts))), samples, n_per_prompt, seed=sample_seed,
                            **sampling)
    scores, results = evaluate_layout(samples)
    defaults = ARConfig.load(model_dir / GENERATOR_DIR / CONFIG_NAME).sampling.__dict__
    command = ["vgt", "sample-benchmark", "--prompts", str(prompts), "--out", str(samples), "--model", str(model_dir),
               "--num-images-per-prompt", str(n_per_prompt), "--seed", str(sample_seed), *sampling_flags(sampling),
               *(["--dtype", dtype] if dtype != "fp32" else [])]
    scores.update(model=str(model_dir), prompt_set=PROMPT_SET_VERSION, split=split,
                  prompts_per_category=prompts_per_category, n_per_prompt=n_per_prompt, seed=seed,
                  sampling_seed=sample_seed, sampler_defaults=dict(defaults), sampling=sampling,
                  command=" ".join(command))
    write_jsonl(out / "per_image.jsonl", results)
    write_json(out / "scores.json", scores)
    return scores


def evaluate_pipeline_seeds(model: str | os.PathLike | None, out: str | os.PathLike, seeds: Sequence[int],
                            prompts_per_category: int | None = None, n_per_prompt: int = 4,
                            sampling: Mapping[str, object] | None = None, split: str = "report", **load) -> dict:
    """ShapesEval over several sampling seeds: `evaluate_pipeline` per seed in OUT/seed-S, and OUT/scores.json with
    their mean (the score), each seed's scores and a 95% bootstrap interval over prompts (a prompt's images from
    every seed resampled together). `load`: device, dtype, threads of `evaluate_pipeline`."""
    from vgt.eval.shapes import summarize

    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    out = Path(out)
    runs = {seed: evaluate_pipeline(model, out / f"seed-{seed}", prompts_per_category, n_per_prompt, seed, sampling,
                                    split, **load) for seed in seeds}
    per_seed = {seed: [json.loads(line) for line in (out / f"seed-{seed}" / "per_image.jsonl").read_text().splitlines()]
                for seed in seeds}
    scores = summarize([row for rows in per_seed.values() for row in rows], per_seed)
    first = runs[seeds[0]]
    scores.update({k: first[k] for k in ("model", "prompt_set", "split", "prompts_per_category", "n_per_prompt",
                                         "sampler_defaults", "sampling")},
                  commands=[run["command"] for run in runs.values()])
    write_json(out / "scores.json", scores)
    return scores
