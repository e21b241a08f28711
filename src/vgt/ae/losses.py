"""VGT-AE losses: pixel reconstruction, a pluggable feature-space (perceptual) loss, self-distillation against the
frozen original encoder, and the hinge GAN with LeCam regularisation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE on [0, 1] images (inputs are in [-1, 1]; the factor 1/4 maps the error to the [0, 1] scale)."""
    return F.mse_loss(reconstruction.float(), target.float()) / 4.0


def distillation_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """MSE between the tuned encoder's projector output and the frozen original's on the same images: keeps the
    visual tokens usable by the VLM's LLM (without it understanding collapses, paper Table 1)."""
    return F.mse_loss(student_tokens.float(), teacher_tokens.detach().float())


class FrozenFeatures(nn.Module):
    """A feature network that never trains: parameters frozen and always in eval mode, also when a parent module
    is switched to train mode. `forward(images in [-1, 1])` -> features tensor."""

    def __init__(self, network: nn.Module | Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.network = network
        if isinstance(network, nn.Module):
            network.requires_grad_(False)
            network.eval()

    def train(self, mode: bool = True) -> FrozenFeatures:
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.float().mean()


class LeCamRegularizer(nn.Module):
    """LeCam regularisation (Tseng et al. 2021): pulls the discriminator's real logits towards the running mean of
    its fake logits and vice versa, which keeps the GAN stable with little data. The running means are buffers, so
    they are checkpointed with the module."""

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("real_ema", torch.zeros(()))
        self.register_buffer("fake_ema", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        real, fake = real_logits.float().mean(), fake_logits.float().mean()
        if not bool(self.initialized):
            self.real_ema.copy_(real)
            self.fake_ema.copy_(fake)
            self.initialized.fill_(True)
        else:
            self.real_ema.lerp_(real, 1 - self.decay)
            self.fake_ema.lerp_(fake, 1 - self.decay)

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return (
            F.relu(real_logits.float() - self.fake_ema).pow(2).mean()
            + F.relu(self.real_ema - fake_logits.float()).pow(2).mean()
        )
