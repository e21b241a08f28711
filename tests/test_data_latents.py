"""Latent cache: encode once with a real (fixed random conv) encoder, train from the stored latents."""

import json

import pytest
import torch

from vgt.data.latents import write_latent_cache
from vgt.data.readers import LatentCacheSource, ShapesSource, parse_source
from vgt.data.sources import Skipped
from vgt.train import TrainConfig, train
from vgt.train.loader import StreamPosition, make_loader

pytestmark = pytest.mark.usefixtures("single_thread")


def conv_encoder():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 4, kernel_size=4, stride=4)
    return lambda images: conv(images)


def test_cache_roundtrip_matches_direct_encoding(tmp_path):
    encode = conv_encoder()
    source = ShapesSource(16, text="caption")
    out = write_latent_cache(source, encode, tmp_path / "cache", num_samples=10, batch_size=4, shard_size=3)
    index = json.loads((out / "index.json").read_text())
    assert index["num_samples"] == 10 and index["latent_shape"] == [4, 4, 4] and len(index["shards"]) == 4
    cached = [x for _, x in LatentCacheSource(out, shuffle_shards=False).stream(0, 1, seed=0, repeat=False)]
    direct = [x for _, (_, x) in zip(range(10), source.stream(0, 1, seed=0), strict=False)]
    assert [c["caption"] for c in cached] == [d["caption"] for d in direct]
    with torch.no_grad():
        expected = encode(torch.stack([d["image"] for d in direct]))
    assert torch.allclose(torch.stack([c["latent"] for c in cached]), expected, atol=1e-6)
    with pytest.raises(FileExistsError):
        write_latent_cache(source, encode, out, num_samples=2)
    with pytest.raises(ValueError, match="num_samples"):
        write_latent_cache(source, encode, tmp_path / "endless")


def test_cache_serves_batches_across_ranks_and_trains(tmp_path):
    out = write_latent_cache(ShapesSource(16), conv_encoder(), tmp_path / "cache", num_samples=16, shard_size=4)
    source = parse_source(f"latents:{out}", resolution=16)
    parts = [{x["caption"] + str(x["latent"].sum().item()) for _, x in source.stream(p, 2, 0, repeat=False)}
             for p in range(2)]
    assert len(parts[0]) + len(parts[1]) == 16 and not parts[0] & parts[1]
    position = StreamPosition(num_parts=1)
    batch = position.advance(next(iter(make_loader(source, 8, 0, 0, 1, 0, position))))
    assert batch["latent"].shape == (8, 4, 4, 4) and len(batch["caption"]) == 8

    model = torch.nn.Conv2d(4, 4, 1)

    def loss_fn(model, batch, ctx):  # a trivial regression on cached latents, through the engine
        return torch.nn.functional.mse_loss(model(batch["latent"]), batch["latent"]), {}

    result = train(model, loss_fn, source, TrainConfig(run_dir=str(tmp_path / "run"), steps=3, batch_size=4))
    assert result.step == 3 and result.skipped == 0


def test_damaged_cache_shard_is_skipped(tmp_path):
    out = write_latent_cache(ShapesSource(16), conv_encoder(), tmp_path / "cache", num_samples=8, shard_size=4)
    shard = out / "latents-000001.tar"
    shard.write_bytes(shard.read_bytes()[:700])
    items = [x for _, x in LatentCacheSource(out, shuffle_shards=False).stream(0, 1, 0, repeat=False)]
    assert sum(isinstance(x, Skipped) for x in items) == 1 and sum(isinstance(x, dict) for x in items) == 4


def test_cache_latents_command_with_a_saved_autoencoder(tmp_path):
    from vgt.ae.model import VGTAutoencoder
    from vgt.cli import main
    from vgt.presets import ae_preset
    from vgt.testing import TINY_DCAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ae = VGTAutoencoder.from_backbone(None, ae_preset("pixel-small-cpu", stride=8, latent_channels=8,
                                                          dcae=TINY_DCAE, image_size=16))
    ae.save_pretrained(tmp_path / "ae")
    assert main(["cache-latents", "--model", str(tmp_path / "ae"), "--data", "shapes", "--out",
                 str(tmp_path / "cache"), "--num-samples", "6", "--batch-size", "4"]) == 0
    cached = [x for _, x in LatentCacheSource(tmp_path / "cache", shuffle_shards=False).stream(0, 1, 0, repeat=False)]
    source = ShapesSource(16)
    images = torch.stack([x["image"] for _, (_, x) in zip(range(6), source.stream(0, 1, seed=0), strict=False)])
    with torch.no_grad():
        expected = ae.eval().encode(images).latent
    assert torch.allclose(torch.stack([c["latent"] for c in cached]), expected, atol=1e-5)
