"""The model shipped inside the package: complete, within its size budget, and what `vgt generate` uses when no
model is named (the README's first command)."""

import json

import numpy as np
import pytest
from PIL import Image

from vgt.ae.model import VGTAutoencoder
from vgt.cli import main
from vgt.eval.judge import judge_image
from vgt.packing import MAX_PACKED_BYTES, PACK_REPORT
from vgt.pipeline import AE_DIR
from vgt.pretrained import DEFAULT_MODEL_ENV, PIPELINE_FILE, shipped_model_dir

pytestmark = pytest.mark.usefixtures("single_thread")


def test_shipped_model_is_complete_and_within_budget():
    folder = shipped_model_dir()
    assert (folder / PIPELINE_FILE).is_file(), f"no shipped model in {folder}"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= MAX_PACKED_BYTES
    comparison = json.loads((folder / PACK_REPORT).read_text())["comparison"]
    assert comparison["shapes_eval_packed"] >= comparison["shapes_eval_float32"] - 0.05  # float16 storage is harmless
    VGTAutoencoder.from_pretrained(folder / AE_DIR)  # its VGT-AE loads on its own, from the model's own VLM


def test_generate_without_model_uses_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.delenv(DEFAULT_MODEL_ENV, raising=False)
    args = ["generate", "two red circles", "--seed", "0", "--num-inference-steps", "4", "--tokens-per-step", "16"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert a.shape == (128, 128, 3)
    assert np.array_equal(a, b)  # same seed, same image
    assert (a.min(axis=-1) < 128).mean() > 0.005  # something is drawn on the white background


#: where the shipped model draws for "two red circles", seed 0, its saved sampling defaults: the mean "ink"
#: (1 - darkest channel) of each 16x16-pixel block of the 128x128 image, measured when the model was packed
SEED0_INK = [[0.008, 0.389, 0.098] + [0.0] * 5, [0.064, 0.893, 0.300] + [0.0] * 5, [0.0, 0.013] + [0.0] * 6]
SEED0_INK += [[0.0] * 8] * 2 + [[0.0] * 5 + [0.180, 0.378, 0.0], [0.0] * 5 + [0.274, 0.460, 0.005], [0.0] * 8]


def test_shipped_model_draws_what_it_drew_when_packed():
    """A repacking, a loader or a sampler change that alters the shipped model's images fails here."""
    import torch

    from vgt import VGTPipeline

    pipe = VGTPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    image = pipe("two red circles", generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    ink = (1 - image.min(axis=-1)).reshape(8, 16, 8, 16).mean(axis=(1, 3))
    assert np.abs(ink - np.array(SEED0_INK)).max() < 0.01
    again = pipe("two red circles", generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert np.array_equal(image, again)  # bit for bit
    two_red_circles = {"include": [{"class": "circle", "count": 2, "color": "red"}],
                       "exclude": [{"class": "circle", "count": 3}]}
    assert judge_image(image, two_red_circles).correct  # the README's first command draws what it asks
