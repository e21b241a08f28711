"""A tiny denoising autoencoder: the model behind `vgt train toy`.

It exists to show (and test) the engine end to end on any machine: same flags as the real stages, one or many
processes, checkpoints, exact resume, EMA, hooks. It is not a model anyone needs.
"""

from __future__ import annotations

import torch
from torch import nn


class ToyAutoencoder(nn.Module):
    """Conv encoder (stride 4) -> conv decoder, images in [-1, 1]."""

    def __init__(self, width: int = 16, dropout: float = 0.0):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GroupNorm(4, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(), nn.Dropout(dropout),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.GroupNorm(4, width), nn.SiLU(),
            nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1), nn.Tanh(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def build_toy_model(width: int, dropout: float, seed: int) -> ToyAutoencoder:
    """Initialised from `seed` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyAutoencoder(width, dropout)


class DenoisingLoss:
    """MSE between the reconstruction of a noised image and the clean image (each image's noise from its own
    `ctx.generators` entry)."""

    def __init__(self, noise: float):
        self.noise = noise

    def __call__(self, model, batch, ctx):
        images = batch["image"]
        noise = torch.stack([torch.randn(images.shape[1:], generator=g, device=images.device) for g in ctx.generators])
        noisy = images + self.noise * noise
        recon = model(noisy).float()
        loss = torch.nn.functional.mse_loss(recon, images)
        psnr = 10 * torch.log10(4.0 / torch.nn.functional.mse_loss(recon.detach(), images).clamp_min(1e-10))
        return loss, {"psnr": psnr}


class ReconstructionSamples:
    """Hook: reconstruct a fixed batch with the evaluation weights and save originals | reconstructions."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __call__(self, ctx) -> dict:
        from vgt.images import save_png, to_pil

        with ctx.eval_model() as model, torch.no_grad():
            images = self.images.to(ctx.accelerator.device)
            recon = model(images).float()
        grid = torch.cat([torch.cat(list(images), dim=2), torch.cat(list(recon), dim=2)], dim=1)
        save_png(to_pil(grid), ctx.run_dir / "samples" / f"step_{ctx.step:08d}.png")
        return {"mse": torch.nn.functional.mse_loss(recon, images).item()}
