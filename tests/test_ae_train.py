"""VGT-AE training: the stage objective, GAN gradient routing, engine integration, the understanding path."""

import copy

import pytest
import torch

from vgt.ae.discriminator import DiscriminatorConfig
from vgt.ae.losses import hinge_discriminator_loss
from vgt.ae.model import VGTAutoencoder
from vgt.ae.trainer import AETrainingModule, ae_loss_fn, export_autoencoder
from vgt.ae.understanding import backbone_with_tuned_vision
from vgt.presets import ae_preset, ae_stage_preset
from vgt.testing import TINY_DCAE, tiny_internvl_backbone
from vgt.testing import random_images as images

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_DISC = DiscriminatorConfig(base_channels=8, num_downsamples=2, max_channels=16)


@pytest.fixture(scope="module")
def backbone():
    return tiny_internvl_backbone(image_size=32, seed=0)


def make_module(backbone, stage="cpu-stage1", **stage_overrides) -> AETrainingModule:
    torch.manual_seed(0)
    stage = ae_stage_preset(stage, image_size=32, **stage_overrides)
    ae = VGTAutoencoder.from_backbone(backbone, ae_preset("small-cpu", latent_channels=8, dcae=TINY_DCAE,
                                                          **stage.model_settings()))
    return AETrainingModule(ae, stage, teacher=backbone.vision, discriminator=SMALL_DISC)


def test_distillation_loss_is_zero_at_init(backbone):
    module = make_module(backbone)
    _, metrics = module(images(), step=0)
    assert metrics["distill"].item() == 0.0
    with torch.no_grad():
        module.ae.vision.projector.linear_1.weight.add_(0.1)
    _, metrics = module(images(), step=0)
    assert metrics["distill"].item() > 0


def test_teacher_is_frozen_and_not_checkpointed(backbone):
    module = make_module(backbone, stage="cpu-stage2").train()
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    state = module.state_dict()
    assert state and not any(k.startswith("teacher.") for k in state)
    assert any(k.startswith("ae.vision.") for k in state)
    module.load_state_dict(state, strict=True)  # strict load works without the teacher's weights
    assert module.ae.config.channel_norm and module.stage.noise_gamma == 0.1  # stage 2 regularisers on
    assert not hasattr(module.ae.config, "noise_gamma")  # a training setting, not saved with the model


def test_freeze_encoder_and_lr_multipliers(backbone):
    module = make_module(backbone, stage="cpu-stage2", freeze_encoder=True, gan_weight=0.1)
    assert not any(p.requires_grad for p in module.ae.vision.parameters())
    assert all(p.requires_grad for p in module.ae.bottleneck.parameters())
    assert module.lr_multipliers(1e-4) == {"discriminator.": pytest.approx(2.0)}
    unfrozen = make_module(backbone, stage="cpu-stage2", gan_weight=0.0)
    assert unfrozen.lr_multipliers(1e-4) == {"ae.vision.": 0.5} and unfrozen.discriminator is None


def test_gan_gradients_reach_each_player_only_through_its_own_loss(backbone):
    module = make_module(backbone, gan_weight=0.5, gan_start=1, lecam_weight=0.0, distill_weight=0.0,
                         reconstruction_weight=0.0)
    x = images()
    loss, metrics = module(x, step=0)  # before gan_start: no GAN term
    assert "gan_d" not in metrics and module.discriminator is not None
    loss, metrics = module(x, step=1)
    loss.backward()
    disc_grads = {n: p.grad.clone() for n, p in module.discriminator.named_parameters()}
    # the discriminator's gradient is exactly that of its hinge loss on (real, detached fake)
    module.zero_grad()
    module.eval()  # same forward without noise (noise is off in stage 1 anyway)
    with torch.no_grad():
        fake = module.ae(x).sample
    hinge_discriminator_loss(module.discriminator(x), module.discriminator(fake)).backward()
    for name, p in module.discriminator.named_parameters():
        assert torch.allclose(p.grad, disc_grads[name], atol=1e-6), name
    # and the autoencoder gets the generator's adversarial gradient (nothing else is on)
    module.zero_grad()
    module.train()
    loss, _ = module(x, step=1)
    loss.backward()
    assert module.ae.decoder.conv_out.weight.grad.abs().sum() > 0


def test_pixel_baseline_rejects_vlm_losses():
    stage = ae_stage_preset("cpu-stage2", distill_weight=0.0)
    ae = VGTAutoencoder.from_backbone(None, ae_preset("pixel-small-cpu", stride=8, latent_channels=8,
                                                      dcae=TINY_DCAE, **stage.model_settings()))
    with pytest.raises(ValueError, match="pixel losses only"):
        AETrainingModule(ae, ae_stage_preset("cpu-stage1"))
    module = AETrainingModule(ae, stage)
    loss, metrics = module(images(), step=0)
    assert set(metrics) == {"rec_mse", "psnr"} and torch.isfinite(loss)


def test_the_stage_settings_are_built_into_the_model_never_written_into_its_config(backbone, tmp_path):
    from vgt.ae.trainer import AEModelSpec, build_autoencoder

    stage = ae_stage_preset("cpu-stage2", image_size=32)
    ae = VGTAutoencoder.from_backbone(backbone, ae_preset("small-cpu", latent_channels=8, dcae=TINY_DCAE))
    before = ae.config.to_dict()
    with pytest.raises(ValueError, match="not built for this stage.*channel_norm False vs True"):
        AETrainingModule(ae, stage, teacher=backbone.vision)
    assert ae.config.to_dict() == before
    ae.save_pretrained(tmp_path / "stage1")
    continued = build_autoencoder(AEModelSpec(init=str(tmp_path / "stage1")), stage, backbone, None)
    assert (continued.config.channel_norm, continued.config.image_size) == (True, 32)
    assert all(torch.equal(v, ae.state_dict()[k]) for k, v in continued.state_dict().items())
    AETrainingModule(continued, stage, teacher=backbone.vision)
    assert (continued.config.channel_norm, continued.config.image_size) == (True, 32)


def test_understanding_path_reuses_the_tuned_tower(backbone):
    module = make_module(backbone)
    ae = module.ae
    with torch.no_grad():
        for p in ae.vision.parameters():
            p.add_(0.05 * torch.randn_like(p))
    original = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    tuned = backbone_with_tuned_vision(backbone, ae)
    x = images()
    assert torch.allclose(tuned.vision(x), ae.vision(x), atol=1e-6)
    assert not torch.allclose(backbone.vision(x), ae.vision(x), atol=1e-3)
    # the VLM itself (what its understanding metric runs) carries the tuned tower and projector
    hf_tower = tuned.model.model.vision_tower.state_dict()
    for name, tensor in ae.vision.vision_tower.state_dict().items():
        assert torch.equal(hf_tower[name], tensor), name
    pixels = backbone.vision.normalize(x)
    features = tuned.model.model.get_image_features(pixel_values=pixels)
    features = getattr(features, "pooler_output", features)
    assert torch.allclose(features.reshape(x.shape[0], -1, features.shape[-1]), ae.vision(x), atol=1e-5)
    # the original backbone is untouched
    for name, tensor in backbone.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name


def test_tiny_overfit_through_the_engine(backbone, tmp_path):
    from vgt.data.readers import ShapesSource
    from vgt.presets import train_preset
    from vgt.train import read_metrics, train

    module = make_module(backbone, gan_weight=0.1, gan_start=15)
    cfg = train_preset("toy", run_dir=str(tmp_path / "run"), steps=30, batch_size=4, lr=2e-3, min_lr=2e-3,
                 warmup_steps=0, log_every=5, save_every=30, lr_multipliers=module.lr_multipliers(2e-3))
    result = train(module, ae_loss_fn, ShapesSource(32), cfg, find_unused_parameters=True)
    rows = [r for r in read_metrics(tmp_path / "run") if "rec_mse" in r]
    first, last = rows[0]["rec_mse"], rows[-1]["rec_mse"]
    assert last < 0.5 * first, (first, last)
    assert "gan_d" in rows[-1] and "lecam" in rows[-1]
    fresh = make_module(backbone, gan_weight=0.1, gan_start=15)
    export_autoencoder(fresh, result.checkpoint, tmp_path / "model")
    exported = VGTAutoencoder.from_pretrained(tmp_path / "model", backbone=backbone).eval()
    trained = copy.deepcopy(module.ae).eval()
    assert torch.equal(exported(images()).sample, trained(images()).sample)
