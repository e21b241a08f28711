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
        ae.config.channel_norm = stage.channel_norm
        ae.config.image_size = stage.image_size
        is_vlm = ae.config.encoder == "vlm"
        if not is_vlm and (stage.distill_weight > 0 or stage.perceptual == "vision"):
            raise ValueError("the pixel-VAE baseline trains on pixel losses only: set distill_weight 0 and "
                             "perceptual 'none'")
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
