"""The model shipped inside the package: complete, within its size budget, and what `vgt generate` uses when no
model is named (the README's first command)."""

import json

import numpy as np
import pytest
from PIL import Image

from vgt.ae.model import VGTAutoencoder
from vgt.pipeline import AE_DIR
from vgt.cli import main
from vgt.pretrained import DEFAULT_MODEL_ENV, MAX_PACKED_BYTES, PACK_REPORT, PIPELINE_FILE, shipped_model_dir

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
    args = ["generate", "two red circles", "--seed", "0", "--steps", "4", "--tokens-per-step", "16"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert a.shape == (128, 128, 3)
    assert np.array_equal(a, b)  # same seed, same image
    assert (a.min(axis=-1) < 128).mean() > 0.005  # something is drawn on the white background
