"""The ShapesWorld recipe: every stage of VGT, end to end, on one machine.

    small VLM (understanding) -> VGT-AE stage 1 -> VGT-AE stage 2 -> latent cache -> VGT-AR -> ShapesEval

Each stage is the project's own command (`vgt train vlm`, `vgt train ae`, `vgt cache-latents`, `vgt train ar`,
`vgt sample-benchmark`), run in-process with the arguments a preset gives it, so the recipe is exactly what a user
would type, one stage after another. A stage is finished when its output exists (every output is written
atomically); finished stages are skipped, and an interrupted training stage continues from its last checkpoint
(the engine's `--resume auto`). Re-running the same command therefore resumes the recipe.

    OUT/recipe.json     the preset, and per finished stage its wall time and first/last training loss
    OUT/recipe.log      one line per stage start/finish, with timestamps
    OUT/vlm/model       the small VLM (HF folder)          OUT/ae1/model, OUT/ae2/model   the VGT-AE after each stage
    OUT/cache           VGT-AE latents + prompts            OUT/ar/model                   the VGT pipeline
    OUT/eval/scores.json  ShapesEval of OUT/ar/model
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vgt.io import write_json

STAGES = ("vlm", "ae1", "ae2", "cache", "ar", "eval")
#: prompts VGT-AR renders into OUT/ar/samples every `ar_sample_every` steps (one per ShapesEval category)
SAMPLE_PROMPTS = ("a triangle", "a circle and a square", "three triangles", "a blue square",
                  "a circle to the left of a square", "a red circle and a yellow triangle")
STATE_FILE, LOG_FILE = "recipe.json", "recipe.log"


def _has_type(value: object, annotation: str) -> bool:
    """Whether `value` fits a simple annotation such as "int", "float | None" (floats finite; bools are not ints)."""
    kinds = {k.strip() for k in annotation.split("|")}
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool(kinds & {"int", "float"})
    if isinstance(value, float):
        return "float" in kinds and math.isfinite(value)
    return isinstance(value, str) and "str" in kinds or not kinds <= {"int", "float", "str", "bool", "None"}


@dataclass(frozen=True)
class RecipeConfig:
    """What the recipe trains and for how long. Everything not listed here is the stage's own default (see
    `vgt train vlm|ae|ar --help`): the recipe sizes the stages, it does not re-tune them."""

    name: str
    #: small-VLM architecture preset (`vgt.backbones.tiny.SMALL_VLM_PRESETS`); sets the resolution and stride
    vlm_preset: str = "small"
    vlm_steps: int = 2400
    vlm_batch_size: int = 32
    #: VGT-AE (and VGT-AR) training resolution: a multiple of the VLM's stride
    image_size: int = 128
    #: VGT-AE stage lengths and batch; None keeps `vgt train ae`'s CPU defaults (600 + 300 steps, batch 8)
    ae1_steps: int | None = None
    ae2_steps: int | None = None
    ae_batch_size: int | None = None
    #: stage-2 latent noise a ~ U[0, gamma]
    noise_gamma: float = 0.1
    #: samples encoded once into the latent cache that VGT-AR trains on
    cache_samples: int = 64_000
    ar_steps: int = 8000
    ar_batch_size: int = 32
    ar_lr: float = 1e-3
    #: autocast of the VGT-AR stage (fp32 master weights either way); bf16 measured 2.2x faster per step on CPU
    ar_precision: str = "bf16"
    #: VGT-AR weight EMA (exported and evaluated): decay, averaging from `ar_ema_start_fraction` of the steps on
    #: (before that it copies the weights), so the exported model does not lag far behind a short run
    ar_ema_decay: float = 0.998
    ar_ema_start_fraction: float = 0.5
    #: default sampling temperature of the exported model; 0.7 measured better than 1 on ShapesEval (docs/sampling.md)
    ar_sampling_temperature: float = 0.7
    #: steps between VGT-AR sample grids of `SAMPLE_PROMPTS` (0: none)
    ar_sample_every: int = 1000
    #: ShapesEval after training: prompts per category (None: the full set, ~30 min more on 2 cores; the shipped
    #: model's full score comes from `vgt eval model`) and images per prompt
    eval_prompts_per_category: int | None = 20
    eval_images_per_prompt: int = 4
    #: steps between the stages' evaluation hooks (held-out understanding, reconstructions, samples); None keeps
    #: each stage's own default, 0 turns them off
    eval_every: int | None = None
    #: steps between metric lines of the training stages; None keeps each stage's own default
    log_every: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        wrong = [f"{f.name} must be {f.type} (got {getattr(self, f.name)!r})" for f in dataclasses.fields(self)
                 if not _has_type(getattr(self, f.name), str(f.type))]
        if wrong:
            raise ValueError("invalid recipe config: " + "; ".join(wrong))
        problems = [f"{f.name} must be >= 1 (got {getattr(self, f.name)})" for f in dataclasses.fields(self)
                    if f.name.endswith(("_steps", "_batch_size", "_samples", "_per_prompt"))
                    and getattr(self, f.name) is not None and getattr(self, f.name) < 1]
        if not 0 <= self.ar_ema_decay < 1 or not 0 <= self.ar_ema_start_fraction <= 1:
            problems.append(f"ar_ema_decay must lie in [0, 1) and ar_ema_start_fraction in [0, 1] (got "
                            f"{self.ar_ema_decay}, {self.ar_ema_start_fraction})")
        if self.ar_sample_every < 0:
            problems.append(f"ar_sample_every must be >= 0 (got {self.ar_sample_every})")
        if self.eval_every is not None and self.eval_every < 0:
            problems.append(f"eval_every must be >= 0 or None (got {self.eval_every})")
        if self.log_every is not None and self.log_every < 1:
            problems.append(f"log_every must be >= 1 or None (got {self.log_every})")
        if self.eval_prompts_per_category is not None and self.eval_prompts_per_category < 1:
            problems.append(f"eval_prompts_per_category must be >= 1 or None (got {self.eval_prompts_per_category})")
        if self.ar_precision not in ("fp32", "bf16", "fp16"):
            problems.append(f"ar_precision must be fp32, bf16 or fp16 (got {self.ar_precision!r})")
        if self.ar_sampling_temperature < 0:
            problems.append(f"ar_sampling_temperature must be >= 0 (got {self.ar_sampling_temperature})")
        if self.noise_gamma < 0:
            problems.append(f"noise_gamma must be >= 0 (got {self.noise_gamma})")
        if problems:
            raise ValueError(f"invalid recipe {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, RecipeConfig] = {
    # The shipped model's recipe (the field defaults): 128 px, stride 16 (8 x 8 latents). Measured on a 2-core CPU:
    # VLM 27.5 min, VGT-AE 8, latent cache 6, VGT-AR 66-72 at 0.50-0.54 s/step, eval 7: 114-120 min in all
    "full": RecipeConfig(name="full"),
    # CI: 32 px toy VLM (4 x 4 latents), tens of steps per stage. Checks that everything runs and losses fall.
    "quick": RecipeConfig(
        name="quick", vlm_preset="toy", vlm_steps=40, vlm_batch_size=8, image_size=32, ae1_steps=30, ae2_steps=30,
        ae_batch_size=8, cache_samples=256, ar_steps=40, ar_batch_size=8, ar_lr=2e-3, eval_prompts_per_category=1,
        eval_images_per_prompt=1, eval_every=0, log_every=5, ar_sample_every=0,
    ),
}


def recipe_preset(name: str, **overrides) -> RecipeConfig:
    """A named recipe with some fields replaced (e.g. `recipe_preset("full", ar_steps=5000)`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return dataclasses.replace(RECIPES[name], **overrides)


@dataclass(frozen=True)
class Stage:
    name: str
    #: `vgt` command-line arguments of the stage
    argv: tuple[str, ...]
    #: a file that exists once the stage has finished
    done_marker: Path
    #: engine run directory (None for stages that do not train)
    run_dir: Path | None = None


def stage_dirs(out: str | os.PathLike) -> dict[str, Path]:
    """Where each stage writes, under the recipe's output folder."""
    out = Path(out)
    return {name: out / name for name in STAGES}


def build_stages(cfg: RecipeConfig, out: str | os.PathLike) -> list[Stage]:
    """The recipe as `vgt` commands, in order."""
    d = stage_dirs(out)
    vlm, ae1, ae2, ar = d["vlm"] / "model", d["ae1"] / "model", d["ae2"] / "model", d["ar"] / "model"
    train = ("--seed", str(cfg.seed), *(() if cfg.log_every is None else ("--log-every", str(cfg.log_every))))
    hooks = () if cfg.eval_every is None else ("--eval-every", str(cfg.eval_every))
    vlm_hooks = ("--eval-images", "0") if cfg.eval_every == 0 else hooks
    ema_start = int(cfg.ar_steps * cfg.ar_ema_start_fraction)
    samples = ("--eval-every", str(cfg.ar_sample_every), "--sample-prompts", *SAMPLE_PROMPTS) if cfg.ar_sample_every \
        else hooks
    ae_common = ("--backbone-path", str(vlm), "--image-size", str(cfg.image_size), *train, *hooks,
                 *(() if cfg.ae_batch_size is None else ("--batch-size", str(cfg.ae_batch_size))))
    ae_steps = [() if steps is None else ("--steps", str(steps)) for steps in (cfg.ae1_steps, cfg.ae2_steps)]
    return [
        Stage("vlm", ("train", "vlm", "--vlm-preset", cfg.vlm_preset, "--run-dir", str(d["vlm"]), "--steps",
                      str(cfg.vlm_steps), "--batch-size", str(cfg.vlm_batch_size), *vlm_hooks, *train),
              vlm / "config.json", d["vlm"]),
        Stage("ae1", ("train", "ae", "--stage", "1", "--run-dir", str(d["ae1"]), *ae_steps[0], *ae_common),
              ae1 / "diffusion_pytorch_model.safetensors", d["ae1"]),
        Stage("ae2", ("train", "ae", "--stage", "2", "--init", str(ae1), "--run-dir", str(d["ae2"]), *ae_steps[1],
                      "--noise-gamma", str(cfg.noise_gamma), *ae_common),
              ae2 / "diffusion_pytorch_model.safetensors", d["ae2"]),
        Stage("cache", ("cache-latents", "--model", str(ae2), "--backbone-path", str(vlm), "--data", "shapes",
                        "--num-samples", str(cfg.cache_samples), "--resolution", str(cfg.image_size),
                        "--shard-size", str(max(1, math.ceil(cfg.cache_samples / 8))), "--seed", str(cfg.seed),
                        "--out", str(d["cache"])), d["cache"] / "index.json"),
        Stage("ar", ("train", "ar", "--backbone-path", str(vlm), "--ae", str(ae2), "--data", f"latents:{d['cache']}",
                     "--run-dir", str(d["ar"]), "--steps", str(cfg.ar_steps), "--batch-size", str(cfg.ar_batch_size),
                     "--lr", str(cfg.ar_lr), "--min-lr", str(cfg.ar_lr / 10), "--precision", cfg.ar_precision,
                     "--ema-decay", str(cfg.ar_ema_decay), "--ema-start", str(ema_start),
                     "--sampling-temperature", str(cfg.ar_sampling_temperature), *train, *samples),
              ar / "model_index.json", d["ar"]),
        Stage("eval", ("eval", "model", "--model", str(ar), "--out", str(d["eval"]), "--seeds", str(cfg.seed), *(
            ("--prompts-per-category", str(cfg.eval_prompts_per_category)) if cfg.eval_prompts_per_category else ()),
                       "--n-per-prompt", str(cfg.eval_images_per_prompt)), d["eval"] / "scores.json"),
    ]


# ------------------------------------------------------------------------------------------------- evaluation

SPLITS = ("report", "tune")
#: the tune split samples from these seeds on (seed s -> TUNE_SEED_OFFSET + s), never from a reporting seed
TUNE_SEED_OFFSET = 1000


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


def evaluate_pipeline(model: str | os.PathLike | None, out: str | os.PathLike, prompts_per_category: int | None = None,
                      n_per_prompt: int = 4, seed: int = 0, sampling: Sequence[str] = (), split: str = "report",
                      ) -> dict:
    """ShapesEval of a VGT pipeline folder (None: the shipped model) at one sampling seed: writes the prompt set,
    generates it in GenEval layout with `vgt sample-benchmark` (resumable), judges it and writes OUT/scores.json
    (scores with their 95% interval over prompts), which also records the model, prompt set, split, seed and
    sampler settings. `sampling`: extra `vgt sample-benchmark` flags. `split="tune"`: the tuning prompt draw
    (`shapes_eval_subset`). Samples left in OUT by a run with other settings are removed and generated again,
    not judged as these."""
    from vgt.ar.config import ARConfig
    from vgt.cli import main
    from vgt.eval.shapes import PROMPT_SET_VERSION, evaluate_layout
    from vgt.io import write_jsonl
    from vgt.loading import CONFIG_NAME
    from vgt.pipeline import GENERATOR_DIR
    from vgt.pretrained import resolve_model_dir

    model_dir = resolve_model_dir(model)
    out = Path(out)
    prompts = write_jsonl(out / "prompts.jsonl", shapes_eval_subset(prompts_per_category, split))
    sample_seed = seed + (TUNE_SEED_OFFSET if split == "tune" else 0)
    settings = {"model": str(model_dir), "prompts_per_category": prompts_per_category, "n_per_prompt": n_per_prompt,
                "seed": seed, "sampler_flags": list(sampling), **({"split": split} if split != "report" else {})}
    # OUT/samples only ever holds images of the recorded settings: others (or unrecorded ones) are removed before
    # the new settings are recorded, so an interrupted run resumes with nothing of the old one left to judge
    settings_file, samples = out / "samples_settings.json", out / "samples"
    if samples.exists() and (not settings_file.is_file() or json.loads(settings_file.read_text()) != settings):
        shutil.rmtree(samples)
    write_json(settings_file, settings)
    argv = ["sample-benchmark", "--prompts", str(prompts), "--out", str(samples), "--model", str(model_dir),
            "--n-per-prompt", str(n_per_prompt), "--seed", str(sample_seed), *sampling]
    if main(argv) != 0:
        raise RuntimeError(f"`vgt {' '.join(argv)}` failed")
    scores, results = evaluate_layout(samples)
    defaults = ARConfig.load(model_dir / GENERATOR_DIR / CONFIG_NAME).sampling.__dict__
    scores.update(model=str(model_dir), prompt_set=PROMPT_SET_VERSION, split=split,
                  prompts_per_category=prompts_per_category, n_per_prompt=n_per_prompt, seed=seed,
                  sampling_seed=sample_seed, sampler_defaults=dict(defaults), sampler_flags=list(sampling),
                  command=f"vgt {' '.join(argv)}")
    write_jsonl(out / "per_image.jsonl", results)
    write_json(out / "scores.json", scores)
    return scores


def evaluate_pipeline_seeds(model: str | os.PathLike | None, out: str | os.PathLike, seeds: Sequence[int],
                            prompts_per_category: int | None = None, n_per_prompt: int = 4,
                            sampling: Sequence[str] = (), split: str = "report") -> dict:
    """ShapesEval over several sampling seeds: `evaluate_pipeline` per seed in OUT/seed-S, and OUT/scores.json with
    their mean (the score), each seed's scores and a 95% bootstrap interval over prompts (a prompt's images from
    every seed resampled together)."""
    from vgt.eval.shapes import summarize

    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    out = Path(out)
    runs = {seed: evaluate_pipeline(model, out / f"seed-{seed}", prompts_per_category, n_per_prompt, seed, sampling,
                                    split) for seed in seeds}
    per_seed = {seed: [json.loads(line) for line in (out / f"seed-{seed}" / "per_image.jsonl").read_text().splitlines()]
                for seed in seeds}
    scores = summarize([row for rows in per_seed.values() for row in rows], per_seed)
    first = runs[seeds[0]]
    scores.update({k: first[k] for k in ("model", "prompt_set", "split", "prompts_per_category", "n_per_prompt",
                                         "sampler_defaults", "sampler_flags")},
                  commands=[run["command"] for run in runs.values()])
    write_json(out / "scores.json", scores)
    return scores


# ------------------------------------------------------------------------------------------------- running

def _log(out: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}"
    print(f"[recipe] {line}", flush=True)
    with open(out / LOG_FILE, "a") as f:
        f.write(line + "\n")


def _write_state(out: Path, state: dict) -> None:
    write_json(out / STATE_FILE, state)


def training_losses(run_dir: str | os.PathLike) -> dict | None:
    """First and last logged training loss of an engine run (None when it logged none)."""
    from vgt.train.logging import read_metrics

    path = Path(run_dir)
    if not (path / "metrics.jsonl").is_file():
        return None
    losses = [(m["step"], m["loss"]) for m in read_metrics(path) if "loss" in m and "step" in m]
    if not losses:
        return None
    return {"first_step": losses[0][0], "first_loss": losses[0][1], "last_step": losses[-1][0],
            "last_loss": losses[-1][1]}


def run_recipe(cfg: RecipeConfig, out: str | os.PathLike, stop_after: str | None = None,
               runner: Callable[[Sequence[str]], int] | None = None) -> dict:
    """Run (or continue) the recipe in `out`; returns the state written to OUT/recipe.json. `stop_after` ends the
    run after the named stage. A folder started with another recipe config is refused rather than mixed."""
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"unknown stage {stop_after!r}; stages are {', '.join(STAGES)}")
    if runner is None:
        from vgt.cli import main as runner
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"config": cfg.to_dict(), "stages": {}}
    if state["config"] != cfg.to_dict():
        changed = sorted(k for k in cfg.to_dict() if state["config"].get(k) != cfg.to_dict()[k])
        raise ValueError(f"{out} holds a recipe run with other settings (differs in: {', '.join(changed)}); resume it "
                         "with the same preset and options, or use a new --out")
    for stage in build_stages(cfg, out):
        if stage.done_marker.is_file():
            _log(out, f"{stage.name}: done already, skipped ({stage.done_marker})")
        else:
            resuming = stage.run_dir is not None and (stage.run_dir / "checkpoints").is_dir()
            _log(out, f"{stage.name}: {'resuming' if resuming else 'starting'}: vgt {' '.join(stage.argv)}")
            start = time.perf_counter()
            try:
                if runner(list(stage.argv)) != 0:
                    raise RuntimeError(f"recipe stage {stage.name} failed: vgt {' '.join(stage.argv)}")
                if not stage.done_marker.is_file():
                    raise RuntimeError(f"recipe stage {stage.name} ended without writing {stage.done_marker}")
            except BaseException as error:
                _log(out, f"{stage.name}: stopped after {(time.perf_counter() - start) / 60:.1f} min: "
                          f"{type(error).__name__}: {error}; re-run the same command to resume")
                raise
            seconds = time.perf_counter() - start
            record = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "command": "vgt " + " ".join(stage.argv)}
            if stage.run_dir is not None:
                record["losses"] = training_losses(stage.run_dir)
            state["stages"][stage.name] = {**state["stages"].get(stage.name, {}), **record}
            _write_state(out, state)
            _log(out, f"{stage.name}: finished in {seconds / 60:.1f} min")
        if stage.name == stop_after:
            break
    if state["stages"].get("eval") and (out / "eval" / "scores.json").is_file():
        state["shapes_eval"] = json.loads((out / "eval" / "scores.json").read_text())["overall"]
    _write_state(out, state)
    return state
