"""Training a VGT-AE stage on the shared training engine (`vgt.train`).

The engine optimizes one module with one optimizer. The GAN needs the discriminator to *maximise* what the
generator minimises, so `AETrainingModule.forward` returns one scalar whose gradients do the right thing for both
players ("simultaneous gradient descent"):
- the generator's adversarial term runs the discriminator with *detached* parameters, so it sends gradients to
  the autoencoder only;
- the discriminator's hinge + LeCam term sees the reconstruction *detached*, so it sends gradients to the
  discriminator only.
One backward and one AdamW step then update both; the discriminator's learning rate is set through an lr
multiplier on the `discriminator.` prefix, and its weights, optimizer state and LeCam running means are part of
the engine's checkpoints (exact resume). The only coupling left is the global gradient-norm clip.

The frozen teacher (the original vision path, for self-distillation and the "vision" perceptual loss) is a
submodule so it follows the model across devices, but it is left out of the state dict: checkpoints and the EMA
hold only what trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from vgt.ae.config import AEStageConfig
from vgt.ae.discriminator import DiscriminatorConfig, PatchDiscriminator
from vgt.ae.losses import (
    FrozenFeatures,
    LeCamRegularizer,
    distillation_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from vgt.ae.metrics import psnr_per_image
from vgt.ae.model import VGTAutoencoder
from vgt.backbones.base import VisionEncoder

TEACHER = "teacher"


def _is_teacher_key(key: str) -> bool:
    return key.startswith(f"{TEACHER}.") or f".{TEACHER}." in key


def _drop_teacher_keys(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(f"{prefix}{TEACHER}.")]:
        del state_dict[key]


def _ignore_missing_teacher(module, incompatible_keys) -> None:
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not _is_teacher_key(k)]


class AETrainingModule(nn.Module):
    """What one VGT-AE stage trains: the autoencoder, and the discriminator + LeCam state when the GAN is on.
    `forward(images, step, generator)` -> (loss, metrics)."""

    def __init__(
        self,
        ae: VGTAutoencoder,
        stage: AEStageConfig,
        teacher: VisionEncoder | None = None,
        discriminator: DiscriminatorConfig | None = None,
    ):
        super().__init__()
        self.ae = ae
        self.stage = stage
        is_vlm = ae.config.encoder == "vlm"
        if not is_vlm and (stage.distill_weight > 0 or stage.perceptual == "vision"):
            raise ValueError("the pixel-VAE baseline trains on pixel losses only: set distill_weight 0 and "
                             "perceptual 'none'")
        differing = {k: (getattr(ae.config, k), v) for k, v in stage.model_settings().items()
                     if getattr(ae.config, k) != v}
        if differing:
            raise ValueError(
                "the autoencoder was not built for this stage (model config vs stage: "
                + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in differing.items())
                + "); build it with the stage's settings: build_autoencoder(spec, stage, ...), or "
                "ae_preset(name, **stage.model_settings()) / VGTAutoencoder.from_pretrained(dir, "
                "config_changes=stage.model_settings())"
            )
        needs_teacher = is_vlm and (stage.distill_weight > 0 or stage.perceptual == "vision")
        if needs_teacher and teacher is None:
            raise ValueError("self-distillation and the 'vision' perceptual loss need the original vision path "
                             "(pass teacher=backbone.vision)")
        self.teacher = FrozenFeatures(teacher) if needs_teacher else None
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher)
        if stage.freeze_encoder:
            if not is_vlm:
                raise ValueError("freeze_encoder applies to the VLM vision path; the pixel encoder has none")
            ae.vision.requires_grad_(False)
        self.discriminator = PatchDiscriminator(discriminator) if stage.gan_weight > 0 else None
        self.lecam = LeCamRegularizer() if stage.gan_weight > 0 else None

    def lr_multipliers(self, base_lr: float) -> dict[str, float]:
        """Per-prefix lr factors for the engine: reduced encoder lr (unless frozen), the discriminator's own lr."""
        multipliers = {}
        if self.ae.config.encoder == "vlm" and not self.stage.freeze_encoder and self.stage.encoder_lr_mult != 1:
            multipliers["ae.vision."] = self.stage.encoder_lr_mult
        if self.discriminator is not None:
            multipliers["discriminator."] = self.stage.discriminator_lr / base_lr
        return multipliers

    def forward(self, images: torch.Tensor, step: int, generator: torch.Generator | None = None):
        stage = self.stage
        out = self.ae(images, generator=generator, noise_gamma=self.stage.noise_gamma)
        reconstruction = out.sample
        rec = reconstruction_loss(reconstruction, images)
        loss = stage.reconstruction_weight * rec
        metrics: dict[str, torch.Tensor] = {"rec_mse": rec.detach()}
        if self.teacher is not None:
            with torch.no_grad():
                teacher_tokens = self.teacher(images)
            if stage.distill_weight > 0:
                distill = distillation_loss(out.tokens, teacher_tokens)
                loss = loss + stage.distill_weight * distill
                metrics["distill"] = distill.detach()
            if stage.perceptual == "vision":
                perceptual = distillation_loss(self.teacher(reconstruction), teacher_tokens)
                loss = loss + stage.perceptual_weight * perceptual
                metrics["perceptual"] = perceptual.detach()
        if self.discriminator is not None and step >= stage.gan_start:
            frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
            generator_adv = hinge_generator_loss(functional_call(self.discriminator, frozen, (reconstruction,)))
            real_logits = self.discriminator(images)
            fake_logits = self.discriminator(reconstruction.detach())
            disc = hinge_discriminator_loss(real_logits, fake_logits)
            lecam = self.lecam(real_logits, fake_logits)
            self.lecam.update(real_logits, fake_logits)
            loss = loss + stage.gan_weight * generator_adv + disc + stage.lecam_weight * lecam
            metrics.update(gan_g=generator_adv.detach(), gan_d=disc.detach(), lecam=lecam.detach(),
                           logits_real=real_logits.detach().float().mean(),
                           logits_fake=fake_logits.detach().float().mean())
        metrics["psnr"] = psnr_per_image(reconstruction.detach(), images).mean()
        return loss, metrics


def ae_loss_fn(model: nn.Module, batch: dict, ctx) -> tuple[torch.Tensor, dict]:
    """The engine's loss function: runs the (possibly DDP-wrapped) training module on the batch's images."""
    return model(batch["image"], ctx.step, ctx.generators)


def export_autoencoder(module: AETrainingModule, checkpoint: str | Path, out_dir: str | Path,
                       use_ema: bool = True) -> str:
    """Write the autoencoder of a training checkpoint (EMA weights when present) as a standalone model folder."""
    from vgt.train import load_checkpoint_weights

    which = load_checkpoint_weights(module, checkpoint, use_ema=use_ema)
    module.ae.save_pretrained(out_dir)
    return which


# ---------------------------------------------------------------------------------------------- the stage

#: world seed of held-out ShapesWorld images (training streams use world seed 0)
HELDOUT_WORLD_SEED = 7_000_001


@dataclass(frozen=True)
class AEModelSpec:
    """Which VGT-AE a stage trains: an exported one to continue (`init`, stage 2), or a fresh one of the
    model-size preset `preset` (`vgt.presets.AE_PRESETS`) with these changes."""

    encoder: str = "vlm"
    preset: str = "small-cpu"
    init: str | None = None
    #: a pretrained DC-AE folder (diffusers AutoencoderDC) to start the decoder from
    dcae_path: str | None = None
    #: decoder architecture (`vgt.presets.DCAE_PRESETS`) instead of the preset's
    dcae_preset: str | None = None
    latent_channels: int | None = None
    #: pixel encoder: pixels per latent (default: the VLM's stride)
    stride: int | None = None
    disc_channels: int = 64


def ae_stage_config(stage: int, scale: str = "cpu", encoder: str = "vlm", **changes) -> AEStageConfig:
    """The stage preset `{scale}-stage{stage}` with `changes`; a pixel-encoder AE trains on pixel losses only
    (no self-distillation, no perceptual loss) unless `changes` say otherwise."""
    from vgt.presets import ae_stage_preset

    if encoder == "pixel":
        changes = {"distill_weight": 0.0, "perceptual": "none", **changes}
    return ae_stage_preset(f"{scale}-stage{stage}", **changes)


def heldout_images(data: Sequence[str] | None, size: int, num: int, seed: int) -> torch.Tensor:
    """`num` images [num, 3, size, size]: held-out ShapesWorld scenes for the default `shapes` data, else the start
    of the source."""
    from vgt.data.readers import ShapesSource, build_source
    from vgt.data.sources import first_images

    specs = list(data or ["shapes"])
    source = ShapesSource(size, world_seed=HELDOUT_WORLD_SEED) if specs == ["shapes"] else build_source(specs, size)
    return first_images(source, num, seed=seed, repeat=False)


class ReconstructionHook:
    """Reconstruct a fixed held-out batch with the evaluation weights: logs PSNR/SSIM, saves a side-by-side grid."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __call__(self, ctx) -> dict:
        from vgt.ae.metrics import ssim_per_image
        from vgt.images import save_png, side_by_side

        with ctx.eval_model() as module, torch.no_grad():
            images = self.images.to(ctx.accelerator.device)
            recon = torch.cat([module.ae(images[i : i + 16]).sample.float() for i in range(0, len(images), 16)])
        save_png(side_by_side(images[:8], recon[:8]), ctx.run_dir / "samples" / f"step_{ctx.step:08d}.png")
        return {"psnr": psnr_per_image(recon, images).mean().item(),
                "ssim": ssim_per_image(recon, images).mean().item()}


def build_autoencoder(spec: AEModelSpec, stage: AEStageConfig, backbone, backbone_path: str | None
                      ) -> VGTAutoencoder:
    """The VGT-AE a stage starts from (see `AEModelSpec`), built with the stage's settings
    (`AEStageConfig.model_settings`)."""
    from vgt.presets import DCAE_PRESETS, ae_preset

    if spec.init:
        if spec.dcae_path or spec.dcae_preset:
            raise ValueError("--init continues an existing VGT-AE; --dcae/--dcae-preset apply to a fresh one")
        ae = VGTAutoencoder.from_pretrained(spec.init, backbone=backbone, config_changes=stage.model_settings())
        if ae.config.encoder != spec.encoder:
            raise ValueError(f"--init {spec.init} holds a {ae.config.encoder!r}-encoder VGT-AE, not --encoder "
                             f"{spec.encoder}")
        return ae
    if stage.stage == 2:
        raise ValueError("stage 2 continues a stage-1 model: pass --init STAGE1_RUN_DIR/model")
    overrides = {}
    if spec.latent_channels:
        overrides["latent_channels"] = spec.latent_channels
    if spec.dcae_preset:
        overrides["dcae"] = {**DCAE_PRESETS[spec.dcae_preset], "latent_channels": spec.latent_channels or 32}
    if spec.encoder == "pixel":
        stride = spec.stride or (backbone.vision.stride if backbone is not None else None)
        if stride:
            overrides["stride"] = stride
    config = ae_preset(spec.preset, **overrides, **stage.model_settings())
    return VGTAutoencoder.from_backbone(backbone if spec.encoder == "vlm" else None, config, dcae_path=spec.dcae_path)


def train_autoencoder(stage: AEStageConfig, train_config, model: AEModelSpec = AEModelSpec(),
                      backbone_path: str | None = None, backbone: str = "auto",
                      data: Sequence[str] | None = None):
    """Train one VGT-AE stage (resuming from `train_config.run_dir`) and export the autoencoder (EMA weights when
    present) to RUN_DIR/model. `train_config.lr` is the autoencoder's; the vision path and the discriminator train
    at `stage.encoder_lr_mult` and `stage.discriminator_lr` through lr multipliers (a user's own multipliers win).
    Returns the engine's `TrainResult` with `model_dir` set where the model was exported (on the main process)."""
    import dataclasses

    from vgt.backbones.registry import load_frozen_backbone
    from vgt.data.readers import build_source
    from vgt.train import Hook, train

    if model.encoder == "vlm" and not backbone_path:
        raise ValueError("a VLM-encoder VGT-AE needs backbone_path (--backbone-path DIR: the VLM whose vision path "
                         "is tuned)")
    vlm = load_frozen_backbone(backbone, backbone_path) if backbone_path else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        ae = build_autoencoder(model, stage, vlm, backbone_path)
        module = AETrainingModule(ae, stage, teacher=vlm.vision if vlm is not None else None,
                                  discriminator=DiscriminatorConfig(base_channels=model.disc_channels))
    ae.grid_size(stage.image_size, stage.image_size)  # a clear error before training when the size does not fit
    cfg = dataclasses.replace(train_config, lr_multipliers={**module.lr_multipliers(train_config.lr),
                                                            **train_config.lr_multipliers})
    specs = list(data or ["shapes"])
    source = build_source(specs, stage.image_size)
    hooks = [Hook(ReconstructionHook(heldout_images(data, stage.image_size, 32, seed=12345)), name="heldout")]
    extra = {"ae": ae.config.to_dict(), "ae_stage": stage.to_dict(), "data": specs}
    result = train(module, ae_loss_fn, source, cfg, hooks=hooks, extra_config=extra, find_unused_parameters=True)
    if result.checkpoint is None or not result.is_main_process:
        return result
    out = Path(cfg.run_dir) / "model"
    which = export_autoencoder(module, result.checkpoint, out)
    return dataclasses.replace(result, model_dir=out, weights=which)
