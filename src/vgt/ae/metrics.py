"""Reconstruction metrics: PSNR and SSIM per image on [0, 1] (SSIM with data_range 1, not the inflated 2.0 of the
released evaluation), and FID between originals and reconstructions with a pluggable feature network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance

SSIM_DATA_RANGE = 1.0


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (decoder outputs may overshoot)."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr_per_image(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair, computed on [0, 1] images given in [-1, 1]. Returns [B]."""
    mse = (to_unit_range(reconstruction) - to_unit_range(target)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim_per_image(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image pair on [0, 1] images (given in [-1, 1]) with data_range=1. Returns [B]."""
    return structural_similarity_index_measure(
        to_unit_range(reconstruction), to_unit_range(target), data_range=SSIM_DATA_RANGE, reduction="none"
    )


class PooledTokenFeatures(nn.Module):
    """FID features from a vision encoder (e.g. the VLM's frozen vision tower): images in [0, 1] -> mean-pooled
    tokens [N, D]. A stand-in for Inception where no Inception weights are available; numbers are comparable only
    between runs that use the same feature network."""

    def __init__(self, encoder: nn.Module, num_features: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.num_features = num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images * 2.0 - 1.0).float().mean(dim=1)


class TorchScriptFeatures(nn.Module):
    """FID features from a TorchScript file mapping images [N, 3, H, W] in [0, 1] to features [N, d] — the way to
    plug in Inception (or any network) when the user has its weights."""

    def __init__(self, path: str | Path):
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID feature network {path} not found (expected a TorchScript .pt file)")
        self.network = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images).float().flatten(1)


def frechet_distance(feature_net: nn.Module) -> FrechetInceptionDistance:
    """torchmetrics' FID with a custom feature module (no torch-fidelity needed). Update with images in [0, 1]:
    `fid.update(x, real=True)`."""
    return FrechetInceptionDistance(feature=feature_net, normalize=True)
