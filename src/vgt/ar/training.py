"""VGT-AR training through the shared engine: the loss function, a sampling hook, model assembly, and the stage
itself (`train_generator`).

The engine (`vgt.train`) owns the loop, precision, EMA, checkpoints and resume; this module only says how a batch
becomes a loss. Batches come either from images ({"image", "caption"}: encoded on the fly by the frozen AE) or
from a latent cache ({"latent", "caption"}: the AE is not run at all).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from vgt.ar.model import VGTForGeneration
from vgt.presets import ar_preset


class ARLoss:
    """`loss_fn(model, batch, ctx)` for `vgt.train.train`. Every random draw comes from `ctx.generators` (one per
    sample)."""

    def __init__(self, ae: torch.nn.Module | None = None):
        self.ae = ae

    def latents(self, batch: dict, device: torch.device) -> torch.Tensor:
        if "latent" in batch:
            return batch["latent"].to(device).float()
        if "image" not in batch:
            raise KeyError(f"a VGT-AR batch needs 'latent' or 'image' (got keys {sorted(batch)})")
        if self.ae is None:
            raise ValueError("training from images needs the VGT-AE (pass ae=...); or train from a latent cache")
        self.ae.to(device)
        with torch.no_grad():
            return self.ae.encode(batch["image"].to(device)).latent.float()

    def __call__(self, model, batch: dict, ctx) -> tuple[torch.Tensor, dict]:
        out = model(self.latents(batch, ctx.device), self.captions(model, batch), generator=ctx.generators)
        return out.loss, {}

    @staticmethod
    def captions(model, batch: dict) -> list[str | None]:
        """The batch's captions as the sampler will read prompts (lower-cased where that makes them known); a
        caption with words outside a word-level vocabulary is an error, not `<unk>` learned in silence."""
        from vgt.text import check_prompt

        tokenizer = getattr(model, "module", model).backbone.tokenizer  # DDP wraps the model
        return [check_prompt(tokenizer, c, what="training caption") if c else c for c in batch["caption"]]


class SampleImages:
    """Engine hook: generate a fixed set of prompts with the evaluation weights and save one grid image."""

    def __init__(self, ae, prompts: list[str], seed: int = 0, **pipeline_kwargs):
        self.ae = ae
        self.prompts = prompts
        self.seed = seed
        self.pipeline_kwargs = pipeline_kwargs

    def __call__(self, ctx) -> dict:
        from vgt.images import image_grid, save_png
        from vgt.pipeline import VGTPipeline

        with ctx.eval_model() as model:
            pipe = VGTPipeline.from_generator(model, self.ae)
            pipe.set_progress_bar_config(disable=True)
            generator = torch.Generator().manual_seed(self.seed)
            images = pipe(self.prompts, generator=generator, **self.pipeline_kwargs).images
        save_png(image_grid(images), Path(ctx.run_dir) / "samples" / f"step_{ctx.step:08d}.png")
        return {}


def build_generator(backbone, ae, model_preset: str, seed: int, grid_size: int | None = None,
                    position_init: str | None = None, sampling_temperature: float | None = None,
                    head_width: int | None = None, head_depth: int | None = None,
                    **config_changes) -> VGTForGeneration:
    """A fresh VGT-AR around `backbone`'s language model, initialised from `seed` (global RNG left untouched).
    `head_width` / `head_depth` resize the preset's flow head; `config_changes` replace `ARConfig` fields of the
    preset (e.g. uncond_prob, timestep_shift)."""
    config = ar_preset(model_preset, hidden_size=backbone.text.hidden_size, latent_channels=ae.latent_channels)
    head = {k: v for k, v in (("width", head_width), ("depth", head_depth)) if v is not None}
    if head:
        config_changes["head"] = dataclasses.replace(config.head, **head)
    sampling = {k: v for k, v in (("grid_size", grid_size), ("temperature", sampling_temperature)) if v is not None}
    if grid_size is not None and grid_size > config.max_grid:
        raise ValueError(f"training grid {grid_size} exceeds the preset's max_grid {config.max_grid}")
    if position_init is not None:
        config_changes["position_init"] = position_init
    # sampled latents get the AE's channel LayerNorm exactly when its own latents do
    config_changes["normalize_sampled_latents"] = bool(ae.config.channel_norm)
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, **sampling), **config_changes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VGTForGeneration(config, backbone, ae=ae)
    return model.float()


#: `ARStageConfig.export_weights` choices
EXPORT_WEIGHTS = ("ema", "online")


@dataclass(frozen=True)
class ARStageConfig:
    """What one VGT-AR run trains on and builds (its optimizer schedule is the engine's `TrainConfig`)."""

    #: the VLM whose language model is tuned, and its registry name
    backbone_path: str
    #: the exported VGT-AE folder (its RUN_DIR/model)
    ae: str
    backbone: str = "auto"
    #: generator architecture (`vgt.presets.AR_PRESETS`)
    model_preset: str = "cpu-small"
    #: data specs (`vgt.data.readers.parse_source`) and their mix weights
    data: tuple[str, ...] = ("shapes",)
    data_weights: tuple[float, ...] | None = None
    #: training image size (default: the AE's training resolution, else the preset's default grid)
    size: int | None = None
    #: None keeps the preset's value
    uncond_prob: float | None = None
    timestep_shift: float | None = None
    head_noise_samples: int | None = None
    head_width: int | None = None
    head_depth: int | None = None
    position_init: str | None = None
    #: default sampling temperature saved with the exported model
    sampling_temperature: float | None = None
    #: which weights of the last checkpoint are exported: "ema" (when the run keeps an EMA) or "online"
    export_weights: str = "ema"
    #: prompts rendered into RUN_DIR/samples every `eval_every` steps
    sample_prompts: tuple[str, ...] = ()
    #: a prompt file: ShapesEval every `eval_every` steps on `eval_max_prompts` of it, `eval_per_prompt` images each
    eval_prompts: str | None = None
    eval_max_prompts: int | None = None
    eval_per_prompt: int = 1

    def __post_init__(self) -> None:
        if self.export_weights not in EXPORT_WEIGHTS:
            raise ValueError(f"export_weights must be one of {', '.join(EXPORT_WEIGHTS)} (got {self.export_weights!r})")


def train_generator(stage: ARStageConfig, train_config, export: str | Path | None = None, overwrite: bool = False):
    """Train VGT-AR (resuming from `train_config.run_dir`) and export the pipeline (EMA weights when present) to
    `export` (default RUN_DIR/model). A finished run only exports again (e.g. `export_weights="online"`
    beside its EMA export). The export folder is checked before training: it may not replace a folder
    vgt did not write (unless `overwrite`), the run's checkpoints or the inputs. Returns the engine's
    `TrainResult` with `model_dir` set where the pipeline was exported (on the main process)."""
    from vgt.ae.model import VGTAutoencoder
    from vgt.backbones.registry import load_backbone
    from vgt.data.readers import build_source
    from vgt.eval.benchmark import ShapesEvalHook, evenly_spaced
    from vgt.eval.shapes import read_prompts
    from vgt.io import check_replaceable, holds
    from vgt.pipeline import VGTPipeline
    from vgt.pretrained import PIPELINE_FILE
    from vgt.text import check_prompt
    from vgt.train import Hook, Trainer, load_checkpoint_weights

    cfg = train_config
    backbone = load_backbone(stage.backbone, stage.backbone_path)
    ae = VGTAutoencoder.from_pretrained(stage.ae, backbone=backbone).eval().requires_grad_(False)
    size = stage.size or (getattr(ae.config, "image_size", None)
                          or ar_preset(stage.model_preset, 1).sampling.grid_size * ae.stride)
    grid = ae.grid_size(size, size)[0]  # a clear error before training when it does not fit
    specs = list(stage.data)
    source = build_source(specs, size, stage.data_weights)
    cache = getattr(source, "index", None)  # a latent cache knows its latent shape; images follow `size`
    if cache is not None:
        channels, grid = cache["latent_shape"][0], cache["latent_shape"][1]
        if channels != ae.latent_channels:
            raise ValueError(f"the latent cache holds {channels}-channel latents, the AE in {stage.ae} makes "
                             f"{ae.latent_channels}: cache the data with this AE (`vgt cache-latents --model ...`)")
    changes = {k: v for k, v in (("uncond_prob", stage.uncond_prob), ("timestep_shift", stage.timestep_shift),
                                 ("head_noise_samples", stage.head_noise_samples)) if v is not None}
    model = build_generator(backbone, ae, stage.model_preset, seed=cfg.seed, grid_size=grid,
                            position_init=stage.position_init, sampling_temperature=stage.sampling_temperature,
                            head_width=stage.head_width, head_depth=stage.head_depth, **changes)
    hooks = []
    if stage.sample_prompts:  # prompts outside the vocabulary fail now, not at the first hook
        sample_prompts = [check_prompt(backbone.tokenizer, p) for p in stage.sample_prompts]
        hooks.append(Hook(SampleImages(ae, sample_prompts, seed=0), name="samples"))
    if stage.eval_prompts:
        prompts = evenly_spaced(read_prompts(stage.eval_prompts), stage.eval_max_prompts)
        for _, row in prompts:
            check_prompt(backbone.tokenizer, row["prompt"])
        hooks.append(Hook(ShapesEvalHook(ae, prompts, n_per_prompt=stage.eval_per_prompt), name="shapes_eval"))
    extra = {"ar": model.config.to_dict(), "data": specs, "resolution": size,
             "backbone_path": str(stage.backbone_path), "ae": str(stage.ae)}
    out = Path(export or Path(cfg.run_dir) / "model")
    # before training, not after hours of it: never replace a foreign folder, the run's checkpoints or the inputs
    check_replaceable(out, overwrite, holds(PIPELINE_FILE),
                      protect=[Path(cfg.run_dir) / "checkpoints", stage.ae, stage.backbone_path])
    trainer = Trainer(model, ARLoss(ae), source, cfg, hooks, extra_config=extra)
    result = trainer.train()
    if result.checkpoint is None or not result.is_main_process:
        return result
    model = trainer.accelerator.unwrap_model(trainer.model)
    which = load_checkpoint_weights(model, result.checkpoint, use_ema=stage.export_weights == "ema")
    VGTPipeline.from_generator(model.to(torch.device("cpu")), ae.to(torch.device("cpu"))).save_pretrained(
        out, overwrite)
    return dataclasses.replace(result, model_dir=out, weights=which)
