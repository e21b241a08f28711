"""VGT-AE model: shapes and strides, latent regularisers, input contract, persistence."""

import json

import pytest
import torch

from vgt.ae.bottleneck import add_latent_noise, normalize_latents
from vgt.ae.config import AEConfig
from vgt.ae.model import VGTAutoencoder
from vgt.presets import ae_preset
from vgt.testing import TINY_DCAE, tiny_ae, tiny_internvl_backbone
from vgt.testing import random_images as images

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def backbone():
    return tiny_internvl_backbone(image_size=32, seed=0)  # stride 8


def make_ae(backbone, **overrides) -> VGTAutoencoder:
    return tiny_ae(backbone, **overrides)


def test_shapes_and_strides(backbone):
    ae = make_ae(backbone)
    assert ae.stride == backbone.vision.stride == 8
    assert ae.decoder_stride == 4  # decoded at stride 4, resized to the encoder's stride 8
    for h, w in [(32, 32), (48, 24)]:
        out = ae(images(height=h, width=w))
        assert out.latent.shape == (2, 8, h // 8, w // 8)
        assert out.tokens.shape == (2, (h // 8) * (w // 8), backbone.vision.out_dim)
        assert out.sample.shape == (2, 3, h, w)
    z = torch.randn(3, 8, 2, 5)
    assert ae.decode(z).sample.shape == (3, 3, 16, 40)
    assert ae.grid_size(64, 40) == (8, 5)
    assert ae.latent_channels == 8


def test_input_contract_errors(backbone):
    ae = make_ae(backbone)
    with pytest.raises(ValueError, match="multiple of the VGT-AE stride 8"):
        ae.encode(images(height=30, width=32))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ae.encode((images() + 1) * 127.5)
    with pytest.raises(ValueError, match="expected latents"):
        ae.decode(torch.randn(1, 4, 2, 2))


def test_channel_norm_statistics(backbone):
    ae = make_ae(backbone, channel_norm=True)
    z = ae.encode(images(batch=3)).latent
    per_token_mean = z.mean(dim=1)
    per_token_var = z.var(dim=1, unbiased=False)
    assert torch.allclose(per_token_mean, torch.zeros_like(per_token_mean), atol=1e-5)
    assert torch.allclose(per_token_var, torch.ones_like(per_token_var), atol=1e-3)
    raw = make_ae(backbone).encode(images(batch=3)).latent
    assert not torch.allclose(raw.mean(dim=1), torch.zeros_like(raw.mean(dim=1)), atol=1e-3)
    assert torch.allclose(normalize_latents(raw), z, atol=1e-5)  # the public normalizer is the encoder's


def test_noise_only_in_training(backbone):
    ae = make_ae(backbone)
    x = images()
    ae.eval()
    a, b = ae(x, noise_gamma=0.5), ae(x, noise_gamma=0.5)
    assert torch.equal(a.sample, b.sample)
    assert torch.equal(a.sample, ae.decode(ae.encode(x).latent).sample)
    ae.train()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    n1, n2 = ae(x, generator=g1, noise_gamma=0.5), ae(x, generator=g2, noise_gamma=0.5)
    assert not torch.allclose(n1.sample, n2.sample)
    assert torch.equal(ae(x, generator=torch.Generator().manual_seed(1), noise_gamma=0.5).sample, n1.sample)  # seeded
    assert torch.equal(n1.latent, a.latent)  # the reported latent is the clean one
    assert torch.equal(ae(x).sample, a.sample)  # no noise unless the trainer asks for it
    with pytest.raises(ValueError, match="noise_gamma must be >= 0"):
        ae(x, noise_gamma=-0.1)


def test_noise_scale_per_sample():
    z = torch.zeros(4000, 2, 1, 1)
    noised = add_latent_noise(z, 0.3, torch.Generator().manual_seed(0))
    scale = noised.abs().amax(dim=(1, 2, 3))
    assert 0 < scale.max() < 0.3 * 6
    # a ~ U[0, gamma] and eps ~ N(0, 1): E[(a eps)^2] = gamma^2 / 3
    assert abs(noised.pow(2).mean().item() - 0.3**2 / 3) < 0.003
    assert torch.equal(add_latent_noise(z, 0.0), z)


def test_save_load_round_trip(backbone, tmp_path):
    ae = make_ae(backbone, channel_norm=True).eval()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights that differ from any fresh init
    ae.save_pretrained(tmp_path / "ae")
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert config["channel_norm"] is True and config["_class_name"] == "VGTAutoencoder"
    assert config["vision"]["family"] == "internvl" and config["stride"] == 8
    assert "noise_gamma" not in config and "backbone_path" not in config  # no training setting, no VLM pointer
    loaded = VGTAutoencoder.from_pretrained(tmp_path / "ae").eval()  # built from its config alone
    x = images()
    assert torch.equal(ae(x).sample, loaded(x).sample)
    assert torch.equal(ae.encode(x).latent, loaded.encode(x).latent)


def test_strict_loading_names_missing_keys(backbone, tmp_path):
    from safetensors.torch import load_file, save_file

    ae = make_ae(backbone)
    ae.save_pretrained(tmp_path / "ae")
    weights = tmp_path / "ae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    del state["bottleneck.to_latent.1.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"missing keys \(1\): bottleneck\.to_latent\.1\.weight.*extra\.weight"):
        VGTAutoencoder.from_pretrained(tmp_path / "ae")
    state = load_file(str(weights))
    del state["extra.weight"]
    state["bottleneck.to_latent.1.weight"] = torch.zeros(3, 3)
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): bottleneck\.to_latent\.1\.weight \(3, 3\)"):
        VGTAutoencoder.from_pretrained(tmp_path / "ae")


def test_config_of_an_older_export_loads_through_its_vlm_folder(backbone, tmp_path):
    """Older exports recorded `noise_gamma` and pointed at their VLM (`backbone_path`) instead of describing the
    vision path; they still load, taking the description from the VLM folder's config."""
    ae = make_ae(backbone).eval()
    ae.save_pretrained(tmp_path / "ae")
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    old = {k: v for k, v in config.items() if k != "vision" and not k.startswith("_")}
    (tmp_path / "ae" / "config.json").write_text(json.dumps({**old, "noise_gamma": 0.1,
                                                             "backbone_path": "../vlm"}))
    (tmp_path / "ae" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "ae" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="backbone_path"):
        VGTAutoencoder.from_pretrained(tmp_path / "ae")
    backbone.save_pretrained(tmp_path / "vlm")
    loaded = VGTAutoencoder.from_pretrained(tmp_path / "ae")
    assert loaded.config.vision == ae.config.vision
    assert torch.equal(loaded.encode(images()).latent, ae.encode(images()).latent)


def test_pixel_encoder_same_grid_as_vlm(backbone, tmp_path):
    vlm = make_ae(backbone)
    pixel = VGTAutoencoder.from_backbone(
        None, AEConfig(encoder="pixel", stride=vlm.stride, latent_channels=8, dcae=TINY_DCAE, channel_norm=True)
    )
    x = images(height=48, width=32)
    assert pixel.encode(x).latent.shape == vlm.encode(x).latent.shape
    assert pixel(x).sample.shape == x.shape
    assert not hasattr(pixel, "vision")
    pixel.save_pretrained(tmp_path / "pixel")
    loaded = VGTAutoencoder.from_pretrained(tmp_path / "pixel").eval()
    assert torch.equal(loaded(x).sample, pixel.eval()(x).sample)


def test_config_validation():
    with pytest.raises(ValueError, match="pixel encoder needs `stride`"):
        AEConfig(encoder="pixel")
    with pytest.raises(ValueError, match="latent_channels 16 differs"):
        AEConfig(latent_channels=16)
    with pytest.raises(ValueError, match="unknown AutoencoderDC config keys"):
        VGTAutoencoder(AEConfig(encoder="pixel", stride=8, latent_channels=8, dcae={**TINY_DCAE, "bogus": 1}))


def test_decoder_from_pretrained_dcae_folder(backbone, tmp_path):
    from diffusers import AutoencoderDC

    torch.manual_seed(3)
    dcae = AutoencoderDC(**TINY_DCAE)
    dcae.save_pretrained(tmp_path / "dcae")
    ae = VGTAutoencoder.from_backbone(backbone, ae_preset("small-cpu"), dcae_path=tmp_path / "dcae")
    for name, tensor in dcae.decoder.state_dict().items():
        assert torch.equal(ae.decoder.state_dict()[name], tensor), name


@pytest.mark.parametrize(("vlm_preset", "dcae_preset", "grid"),
                         [("small", "small-cpu", 8), ("small-64", "small-cpu", 4), ("small-s32", "small-cpu-f32", 4)])
def test_small_vlm_presets_have_a_decoder_of_their_stride(vlm_preset, dcae_preset, grid):
    # each small VLM has a DC-AE that decodes at its stride: no resize of blurred pixels
    from vgt.presets import DCAE_PRESETS, SMALL_VLM_PRESETS
    from vgt.vlm.model import build_small_vlm

    size = SMALL_VLM_PRESETS[vlm_preset].image_size
    backbone = build_small_vlm(SMALL_VLM_PRESETS[vlm_preset])
    ae = VGTAutoencoder.from_backbone(backbone, ae_preset("small-cpu", dcae=DCAE_PRESETS[dcae_preset])).eval()
    assert ae.stride == ae.decoder_stride == size // grid
    with torch.no_grad():
        out = ae(images(batch=1, height=size, width=size))
    assert out.latent.shape == (1, 32, grid, grid) and out.sample.shape == (1, 3, size, size)
