"""The ShapesWorld recipe: every stage of VGT, end to end, on one machine.

    small VLM (understanding) -> VGT-AE stage 1 -> VGT-AE stage 2 -> latent cache -> VGT-AR -> ShapesEval

Each stage is the library call behind the project's own command (`train_small_vlm` = `vgt train vlm`,
`train_autoencoder` = `vgt train ae`, `cache_latents` = `vgt cache-latents`, `train_generator` = `vgt train ar`,
`evaluate_pipeline_seeds` = `vgt eval model`) with the typed configs a preset gives it; the log records the
equivalent command line, so the recipe is exactly what a user would type, one stage after another. A stage is
finished when its output exists (every output is written atomically); finished stages are skipped, and an
interrupted training stage continues from its last checkpoint (the engine's `--resume auto`). Re-running the
same command therefore resumes the recipe.

    OUT/recipe.json     the preset, and per finished stage its wall time and first/last training loss
    OUT/recipe.log      one line per stage start/finish, with timestamps
    OUT/vlm/model       the small VLM (HF folder)          OUT/ae1/model, OUT/ae2/model   the VGT-AE after each stage
    OUT/cache           VGT-AE latents + prompts            OUT/ar/model                   the VGT pipeline
    OUT/eval/scores.json  ShapesEval of OUT/ar/model
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vgt.io import write_json
from vgt.recipe_config import RecipeConfig

STAGES = ("vlm", "ae1", "ae2", "cache", "ar", "eval")
#: prompts VGT-AR renders into OUT/ar/samples every `ar_sample_every` steps (one per ShapesEval category)
SAMPLE_PROMPTS = ("a triangle", "a circle and a square", "three triangles", "a blue square",
                  "a circle to the left of a square", "a red circle and a yellow triangle")
STATE_FILE, LOG_FILE = "recipe.json", "recipe.log"


@dataclass(frozen=True)
class Stage:
    name: str
    #: the library call of the stage: `function(**arguments)`
    function: Callable[..., object]
    arguments: dict
    #: the equivalent `vgt` command line (recorded in the log and OUT/recipe.json)
    command: tuple[str, ...]
    #: a file that exists once the stage has finished
    done_marker: Path
    #: engine run directory (None for stages that do not train)
    run_dir: Path | None = None

    def run(self) -> object:
        return self.function(**self.arguments)


def stage_dirs(out: str | os.PathLike) -> dict[str, Path]:
    """Where each stage writes, under the recipe's output folder."""
    out = Path(out)
    return {name: out / name for name in STAGES}


def _flags(values: dict) -> tuple[str, ...]:
    """`--name value` for each set value (`max_steps=3` -> `--max-steps 3`)."""
    return tuple(item for k, v in values.items() if v is not None for item in (f"--{k.replace('_', '-')}", str(v)))


def build_stages(cfg: RecipeConfig, out: str | os.PathLike) -> list[Stage]:
    """The recipe as library calls, in order, each with its `vgt` command line."""
    from vgt.ae.cache import cache_latents
    from vgt.ae.trainer import AEModelSpec, ae_stage_config, train_autoencoder
    from vgt.ar.training import ARStageConfig, train_generator
    from vgt.eval.benchmark import evaluate_pipeline_seeds
    from vgt.presets import train_preset
    from vgt.vlm.pretrain import train_small_vlm

    d = stage_dirs(out)
    vlm, ae1, ae2, ar = d["vlm"] / "model", d["ae1"] / "model", d["ae2"] / "model", d["ar"] / "model"
    common = {"seed": cfg.seed, "log_every": cfg.log_every}  # None: the stage preset's value
    hooks = {"eval_every": cfg.eval_every}
    vlm_train = {"run_dir": str(d["vlm"]), "steps": cfg.vlm_steps, "batch_size": cfg.vlm_batch_size, **common,
                 "eval_every": cfg.eval_every or None}
    eval_images = 0 if cfg.eval_every == 0 else 100
    ae_train = [{"run_dir": str(d[name]), "steps": steps, "batch_size": cfg.ae_batch_size, **common, **hooks}
                for name, steps in (("ae1", cfg.ae1_steps), ("ae2", cfg.ae2_steps))]
    ar_samples = {"eval_every": cfg.ar_sample_every} if cfg.ar_sample_every else hooks
    ar_train = {"run_dir": str(d["ar"]), "steps": cfg.ar_steps, "batch_size": cfg.ar_batch_size, "lr": cfg.ar_lr,
                "min_lr": cfg.ar_lr / 10, "precision": cfg.ar_precision, "ema_decay": cfg.ar_ema_decay,
                "ema_start": int(cfg.ar_steps * cfg.ar_ema_start_fraction), **common, **ar_samples}
    ar_stage = ARStageConfig(backbone_path=str(vlm), ae=str(ae2), data=(f"latents:{d['cache']}",),
                             sampling_temperature=cfg.ar_sampling_temperature,
                             head_noise_samples=cfg.ar_head_noise_samples,
                             sample_prompts=SAMPLE_PROMPTS if cfg.ar_sample_every else ())
    shard_size = max(1, math.ceil(cfg.cache_samples / 8))

    def train(values: dict, name: str):
        return train_preset(name, **{k: v for k, v in values.items() if v is not None})

    def train_flags(values: dict) -> tuple[str, ...]:
        return _flags({("max_steps" if k == "steps" else k): v for k, v in values.items()})

    ae_flags = ("--backbone-path", str(vlm), "--size", str(cfg.image_size))
    return [
        Stage("vlm", train_small_vlm,
              dict(preset=cfg.vlm_preset, cfg=train(vlm_train, f"vlm-{cfg.vlm_preset}"), eval_images=eval_images),
              ("train", "vlm", "--vlm-preset", cfg.vlm_preset, *train_flags(vlm_train),
               *(("--eval-images", "0") if eval_images == 0 else ())),
              vlm / "config.json", d["vlm"]),
        Stage("ae1", train_autoencoder,
              dict(stage=ae_stage_config(1, image_size=cfg.image_size),
                   train_config=train(ae_train[0], "ae-stage1-cpu"), model=AEModelSpec(dcae_preset=cfg.ae_decoder),
                   backbone_path=str(vlm)),
              ("train", "ae", "--stage", "1", *ae_flags, *_flags({"dcae_preset": cfg.ae_decoder}),
               *train_flags(ae_train[0])),
              ae1 / "diffusion_pytorch_model.safetensors", d["ae1"]),
        Stage("ae2", train_autoencoder,
              dict(stage=ae_stage_config(2, image_size=cfg.image_size, noise_gamma=cfg.noise_gamma),
                   train_config=train(ae_train[1], "ae-stage2-cpu"), model=AEModelSpec(init=str(ae1)),
                   backbone_path=str(vlm)),
              ("train", "ae", "--stage", "2", "--init", str(ae1), "--noise-gamma", str(cfg.noise_gamma), *ae_flags,
               *train_flags(ae_train[1])),
              ae2 / "diffusion_pytorch_model.safetensors", d["ae2"]),
        Stage("cache", cache_latents,
              dict(ae_dir=str(ae2), data=["shapes"], out=str(d["cache"]), backbone_path=str(vlm), size=cfg.image_size,
                   num_samples=cfg.cache_samples, shard_size=shard_size, seed=cfg.seed),
              ("cache-latents", "--model", str(ae2), "--backbone-path", str(vlm), "--data", "shapes", "--num-samples",
               str(cfg.cache_samples), "--size", str(cfg.image_size), "--shard-size", str(shard_size), "--seed",
               str(cfg.seed), "--out", str(d["cache"])),
              d["cache"] / "index.json"),
        Stage("ar", train_generator, dict(stage=ar_stage, train_config=train(ar_train, "ar-cpu")),
              ("train", "ar", "--backbone-path", str(vlm), "--ae", str(ae2), "--data", f"latents:{d['cache']}",
               "--sampling-temperature", str(cfg.ar_sampling_temperature),
               *_flags({"head_noise_samples": cfg.ar_head_noise_samples}),
               *(("--sample-prompts", *SAMPLE_PROMPTS) if cfg.ar_sample_every else ()), *train_flags(ar_train)),
              ar / "model_index.json", d["ar"]),
        Stage("eval", evaluate_pipeline_seeds,
              dict(model=str(ar), out=str(d["eval"]), seeds=[cfg.seed],
                   prompts_per_category=cfg.eval_prompts_per_category, n_per_prompt=cfg.eval_images_per_prompt),
              ("eval", "model", "--model", str(ar), "--out", str(d["eval"]), "--seeds", str(cfg.seed),
               *_flags({"prompts_per_category": cfg.eval_prompts_per_category}),
               "--num-images-per-prompt", str(cfg.eval_images_per_prompt)),
              d["eval"] / "scores.json"),
    ]


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


def run_recipe(cfg: RecipeConfig, out: str | os.PathLike, stop_after: str | None = None) -> dict:
    """Run (or continue) the recipe in `out`; returns the state written to OUT/recipe.json. `stop_after` ends the
    run after the named stage. A folder started with another recipe config is refused rather than mixed."""
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"unknown stage {stop_after!r}; stages are {', '.join(STAGES)}")
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
            _log(out, f"{stage.name}: {'resuming' if resuming else 'starting'}: vgt {' '.join(stage.command)}")
            start = time.perf_counter()
            try:
                stage.run()
                if not stage.done_marker.is_file():
                    raise RuntimeError(f"recipe stage {stage.name} ended without writing {stage.done_marker}")
            except BaseException as error:
                _log(out, f"{stage.name}: stopped after {(time.perf_counter() - start) / 60:.1f} min: "
                          f"{type(error).__name__}: {error}; re-run the same command to resume")
                raise
            seconds = time.perf_counter() - start
            record = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "command": "vgt " + " ".join(stage.command)}
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
