"""VGT-AE losses, discriminator and reconstruction metrics."""

import math

import pytest
import torch
from torch import nn

from vgt.ae.discriminator import BlurPool, DiscriminatorConfig, PatchDiscriminator
from vgt.ae.losses import (
    FrozenFeatures,
    LeCamRegularizer,
    distillation_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from vgt.ae.metrics import PooledTokenFeatures, frechet_distance, psnr_per_image, ssim_per_image

pytestmark = pytest.mark.usefixtures("single_thread")


def test_reconstruction_loss_is_mse_on_unit_range():
    target = torch.zeros(1, 3, 4, 4)
    recon = torch.full((1, 3, 4, 4), 0.5)  # 0.25 apart on the [0, 1] scale
    assert math.isclose(reconstruction_loss(recon, target).item(), 0.25**2, rel_tol=1e-6)


def test_distillation_loss_and_gradients():
    student = torch.randn(2, 4, 8, requires_grad=True)
    teacher = student.detach().clone()
    assert distillation_loss(student, teacher).item() == 0.0
    loss = distillation_loss(student, teacher + 1.0)
    assert math.isclose(loss.item(), 1.0, rel_tol=1e-6)
    loss.backward()
    assert student.grad is not None


def test_frozen_features_stay_frozen_and_in_eval():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5))
    frozen = FrozenFeatures(net)
    parent = nn.ModuleDict({"f": frozen}).train()
    assert not net.training and not frozen.training and parent.training
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    # the trainer's "vision" perceptual loss: gradients reach the images, never the frozen network
    distillation_loss(frozen(x), frozen(torch.zeros_like(x))).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert math.isclose(hinge_discriminator_loss(real, fake).item(), 0.75)
    assert math.isclose(hinge_generator_loss(fake).item(), 1.0)


def test_lecam_tracks_means_and_penalizes_drift():
    lecam = LeCamRegularizer(decay=0.5)
    lecam.update(torch.full((4,), 1.0), torch.full((4,), -1.0))
    assert lecam.real_ema.item() == 1.0 and lecam.fake_ema.item() == -1.0  # first update copies
    lecam.update(torch.full((4,), 3.0), torch.full((4,), -3.0))
    assert lecam.real_ema.item() == 2.0 and lecam.fake_ema.item() == -2.0
    # real logits above the fake mean and fake logits below the real mean are penalised quadratically
    penalty = lecam(torch.full((4,), 0.0), torch.full((4,), 0.0))
    assert math.isclose(penalty.item(), 2.0**2 + 2.0**2)
    assert set(lecam.state_dict()) == {"real_ema", "fake_ema", "initialized"}


def test_discriminator_patch_logits_and_blur():
    disc = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_downsamples=3, max_channels=32))
    logits = disc(torch.randn(2, 3, 64, 48))
    assert logits.shape == (2, 1, 8, 6)
    assert any(isinstance(m, nn.GroupNorm) for m in disc.modules())
    # the blur keeps a constant image constant (a low-pass filter with unit gain)
    blurred = BlurPool(3)(torch.ones(1, 3, 8, 8))
    assert blurred.shape == (1, 3, 4, 4) and torch.allclose(blurred, torch.ones_like(blurred))
    assert "net.2.kernel" not in disc.state_dict()  # the fixed filter is not a weight


def test_psnr_and_ssim():
    target = torch.zeros(2, 3, 16, 16)  # 0.5 gray on [0, 1]
    recon = target.clone()
    recon[1] += 0.2  # 0.1 error on the [0, 1] scale -> 20 dB
    psnr = psnr_per_image(recon, target)
    assert psnr[0] > 100 and math.isclose(psnr[1].item(), 20.0, rel_tol=1e-4)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ssim = ssim_per_image(x, x)
    assert ssim.shape == (3,) and torch.allclose(ssim, torch.ones(3), atol=1e-5)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert (ssim_per_image(noisy, x) < 0.9).all()


class MeanColor(nn.Module):
    """A stand-in token encoder: 4 tokens of per-quadrant mean colours."""

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)


def test_fid_with_custom_features():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 8, 8, generator=g)
    fid = frechet_distance(PooledTokenFeatures(MeanColor(), num_features=3))
    fid.update(real, real=True)
    fid.update(real, real=False)
    assert fid.compute().item() == pytest.approx(0.0, abs=1e-3)
    fid.reset()
    fid.update(real, real=True)
    fid.update(real * 0.5, real=False)  # darker images: a clearly different distribution
    assert fid.compute().item() > 0.01
