"""What the claims_*.py experiments share: they start from a finished `vgt recipe shapes` run (its small VLM, its
VGT-AE and its settings), train the variants a claim compares with the library's stage functions (those behind
`vgt train ae`, `vgt cache-latents`, `vgt train ar`), and judge them with ShapesEval. Every step is skipped when
its output exists, so an interrupted experiment resumes.

Work folder layout: WORK/<variant>/{ae1,ae2,cache,ar,eval...}; each result table is also written as
WORK/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True,
                        help="a finished `vgt recipe shapes` folder (its VLM, VGT-AE and settings are reused)")
    parser.add_argument("--work", required=True, help="folder for this experiment's runs (resumable)")
    parser.add_argument("--ar-steps", type=int, help="VGT-AR training steps per variant (default: the recipe's)")
    parser.add_argument("--ar-batch-size", type=int, help="VGT-AR batch (default: the recipe's)")
    parser.add_argument("--ae-steps", type=int, nargs=2, metavar=("STAGE1", "STAGE2"),
                        help="VGT-AE steps per stage for variants that train an AE (default: the recipe's)")
    parser.add_argument("--cache-samples", type=int, help="latents cached per AE (default: the recipe's)")
    parser.add_argument("--eval-prompts-per-category", type=int, default=20,
                        help="ShapesEval prompts per category (reduced set; the full set has >= 80)")
    parser.add_argument("--eval-images", type=int, default=2, help="images per ShapesEval prompt")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


class Experiment:
    """The recipe run a claim builds on, and helpers that train or evaluate one variant."""

    def __init__(self, args: argparse.Namespace):
        if args.threads:
            torch.set_num_threads(args.threads)
        self.recipe = Path(args.recipe)
        state_file = self.recipe / "recipe.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"{self.recipe} is not a `vgt recipe shapes` folder (no recipe.json)")
        self.config = json.loads(state_file.read_text())["config"]
        # the recipe's own VGT-AR stage (noise draws per token, sampling temperature, schedule, precision, EMA):
        # every variant trains exactly it, with only the latents and the run length changed
        from vgt.recipe import build_stages
        from vgt.recipe_config import RecipeConfig

        ar = next(s for s in build_stages(RecipeConfig(**self.config), self.recipe) if s.name == "ar").arguments
        self.ar_stage, self.ar_train = ar["stage"], ar["train_config"]
        self.vlm = self.recipe / "vlm" / "model"
        self.ae = self.recipe / "ae2" / "model"
        for path in (self.vlm, self.ae):
            if not path.is_dir():
                raise FileNotFoundError(f"{path} is missing: run `vgt recipe shapes --out {self.recipe} "
                                        "--stop-after ae2` (or the whole recipe) first")
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        c = self.config
        self.image_size = c["image_size"]
        self.ar_steps = args.ar_steps or c["ar_steps"]
        self.ar_batch_size = args.ar_batch_size or c["ar_batch_size"]
        self.ar_ema_start = int(self.ar_steps * c["ar_ema_start_fraction"])
        self.ae_steps = tuple(args.ae_steps or (c["ae1_steps"], c["ae2_steps"]))
        self.ae_batch_size = c["ae_batch_size"]
        self.cache_samples = args.cache_samples or c["cache_samples"]
        self.eval_prompts = args.eval_prompts_per_category
        self.eval_images = args.eval_images
        self.seed = c["seed"]

    def train_ae(self, name: str, stage: int, init: Path | None = None, encoder: str = "vlm",
                 stride: int | None = None, **stage_changes) -> Path:
        """One VGT-AE stage of a variant (`stage_changes`: `AEStageConfig` fields, e.g. distill_weight=0); returns
        its exported model folder. A VLM-encoder AE tunes the recipe's VLM; a pixel one gets no VLM."""
        from vgt.ae.trainer import AEModelSpec, ae_stage_config, train_autoencoder
        from vgt.presets import train_preset

        run = self.work / name
        model = run / "model"
        if not (model / "diffusion_pytorch_model.safetensors").is_file():
            steps = self.ae_steps[stage - 1]  # None: the stage's own default, as in the recipe
            schedule = {"steps": steps, "batch_size": self.ae_batch_size}
            train_autoencoder(
                ae_stage_config(stage, encoder=encoder, image_size=self.image_size, **stage_changes),
                train_preset(f"ae-stage{stage}-cpu", run_dir=str(run), seed=self.seed,
                             **{k: v for k, v in schedule.items() if v is not None}),
                AEModelSpec(encoder=encoder, preset="small-cpu" if encoder == "vlm" else "pixel-small-cpu",
                            init=str(init) if init is not None else None, stride=stride),
                backbone_path=str(self.vlm) if encoder == "vlm" else None)
        return model

    def cache(self, name: str, ae: Path) -> Path:
        """The latent cache of `ae` over the same ShapesWorld samples as every other variant's."""
        from vgt.ae.cache import cache_latents

        out = self.work / name
        if not (out / "index.json").is_file():
            cache_latents(ae, ["shapes"], out, backbone_path=self.vlm, size=self.image_size,
                          num_samples=self.cache_samples, shard_size=max(1, -(-self.cache_samples // 8)),
                          seed=self.seed)
        return out

    def train_ar(self, name: str, ae: Path, cache: Path, save_every: int = 0) -> Path:
        """VGT-AR on `ae`'s latents with the same LLM init, data order, steps and seed for every variant; returns
        the run folder (the pipeline is RUN/model). `save_every` keeps every intermediate checkpoint."""
        from vgt.ar.training import train_generator

        run = self.work / name
        if not (run / "model" / "model_index.json").is_file():
            keep = {"save_every": save_every, "keep_last": self.ar_steps // save_every + 1} if save_every else {}
            train_generator(
                dataclasses.replace(self.ar_stage, ae=str(ae), data=(f"latents:{cache}",), sample_prompts=()),
                dataclasses.replace(self.ar_train, run_dir=str(run), steps=self.ar_steps,
                                    batch_size=self.ar_batch_size, ema_start=self.ar_ema_start, eval_every=0, **keep))
        return run

    def recon_psnr(self, name: str, ae: Path, num_images: int) -> float:
        """Held-out reconstruction PSNR of a VGT-AE (resumable; cached in WORK/NAME/recon_metrics.json)."""
        from vgt.ae.evaluation import evaluate_reconstruction

        out = self.work / name
        if not (out / "recon_metrics.json").is_file():
            evaluate_reconstruction(ae, num=num_images, fid_features="none", out=out, backbone_path=self.vlm)
        return json.loads((out / "recon_metrics.json").read_text())["psnr_db"]

    def shapes_eval(self, model: Path, out: Path, sampling: dict | None = None) -> dict:
        """Reduced ShapesEval of a pipeline folder (resumable: `evaluate_pipeline` keeps OUT's images while the
        model, prompt set, images per prompt, seed and sampler flags stay the same, and only judges them again)."""
        from vgt.eval.benchmark import evaluate_pipeline

        return evaluate_pipeline(model, out, self.eval_prompts, self.eval_images, self.seed, sampling)

    def checkpoint_scores(self, run: Path) -> list[tuple[int, dict]]:
        """(step, ShapesEval scores) for every checkpoint of a VGT-AR run, evaluated with its EMA weights."""
        from vgt.pipeline import VGTPipeline
        from vgt.train import list_checkpoints, load_checkpoint_weights

        results = []
        for checkpoint in list_checkpoints(run):
            step = int(json.loads((checkpoint / "meta.json").read_text())["step"])
            out = run / "shapes_eval" / f"step_{step:08d}"
            if not (out / "pipeline").is_dir():  # written atomically
                pipe = VGTPipeline.from_pretrained(run / "model")
                load_checkpoint_weights(pipe.generator, checkpoint, use_ema=True)
                pipe.save_pretrained(out / "pipeline")
            results.append((step, self.shapes_eval(out / "pipeline", out)))
        return results

    def write_results(self, results: dict) -> None:
        from vgt.io import write_json

        print(f"(results: {write_json(self.work / 'results.json', results)})")

    def describe(self) -> str:
        t, stage = self.ar_train, self.ar_stage
        return (f"recipe {self.recipe} ({self.image_size} px); VGT-AR {self.ar_steps} steps x batch "
                f"{self.ar_batch_size} {t.precision}, lr {t.lr}, {stage.head_noise_samples or 1} noise draw(s) per "
                f"token, seed {self.seed}; ShapesEval {self.eval_prompts} prompts per category x {self.eval_images} "
                f"images, the model's default sampler (temperature {stage.sampling_temperature or 1:g}), 95% "
                "intervals over prompts in brackets")


def score_text(scores: dict) -> str:
    """A ShapesEval score with its spread: `0.206 (0.171-0.240)`, the 95% interval over prompts."""
    low, high = scores["interval"]["overall"]
    return f"{scores['overall']:.3f} ({low:.3f}-{high:.3f})"
