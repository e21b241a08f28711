"""VGT-AR training through the shared engine: the loss function, a sampling hook, and model assembly.

The engine (`vgt.train`) owns the loop, precision, EMA, checkpoints and resume; this module only says how a batch
becomes a loss. Batches come either from images ({"image", "caption"}: encoded on the fly by the frozen AE) or
from a latent cache ({"latent", "caption"}: the AE is not run at all).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vgt.ar.config import ar_preset
from vgt.ar.model import VGTForGeneration

#: training-hyper-parameter overrides that size `--model-preset cpu-small` runs for a 2-core CPU
CPU_SMALL_TRAIN = dict(steps=1500, batch_size=16, lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.05,
                       ema_decay=0.999, ema_start=200, save_every=250, log_every=25, precision="fp32")


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
        out = model(self.latents(batch, ctx.device), list(batch["caption"]), generator=ctx.generators)
        return out.loss, {}


class SampleImages:
    """Engine hook: generate a fixed set of prompts with the evaluation weights and save one grid image."""

    def __init__(self, ae, prompts: list[str], seed: int = 0, **pipeline_kwargs):
        self.ae = ae
        self.prompts = prompts
        self.seed = seed
        self.pipeline_kwargs = pipeline_kwargs

    def __call__(self, ctx) -> dict:
        from vgt.ar.pipeline import image_grid
        from vgt.pipeline import VGTPipeline

        with ctx.eval_model() as model:
            pipe = VGTPipeline.from_generator(model, self.ae)
            pipe.set_progress_bar_config(disable=True)
            generator = torch.Generator().manual_seed(self.seed)
            images = pipe(self.prompts, generator=generator, **self.pipeline_kwargs).images
        out = Path(ctx.run_dir) / "samples" / f"step_{ctx.step:08d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        image_grid(images).save(tmp, format="PNG")
        tmp.replace(out)
        return {}


def build_generator(backbone, ae, model_preset: str, seed: int, grid_size: int | None = None,
                    position_init: str | None = None) -> VGTForGeneration:
    """A fresh VGT-AR around `backbone`'s language model, initialised from `seed` (global RNG left untouched)."""
    config = ar_preset(model_preset, hidden_size=backbone.text.hidden_size, latent_channels=ae.latent_channels)
    # sampled latents get the AE's channel LayerNorm exactly when its own latents do
    changes = {"normalize_sampled_latents": bool(ae.config.channel_norm)}
    if position_init is not None:
        changes["position_init"] = position_init
    if grid_size is not None:
        if grid_size > config.max_grid:
            raise ValueError(f"training grid {grid_size} exceeds the preset's max_grid {config.max_grid}")
        changes["sampling"] = dataclasses.replace(config.sampling, grid_size=grid_size)
    config = dataclasses.replace(config, **changes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VGTForGeneration(config, backbone, ae=ae)
    return model.float()
