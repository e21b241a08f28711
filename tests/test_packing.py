"""Packing a trained pipeline into the package (`vgt recipe pack`, `vgt.packing.pack_pipeline`) and the
default-model lookup ($VGT_MODEL, else the packed model), on the quick recipe's pipeline (`quick_run`)."""

from __future__ import annotations

import json

import pytest
import torch

from vgt import VGTPipeline
from vgt.cli import main
from vgt.data.shapes import GENEVAL_TAGS
from vgt.packing import PACK_REPORT, pack_pipeline
from vgt.pretrained import DEFAULT_MODEL_ENV, default_model_dir, resolve_model_dir


def test_pack_stores_float16_and_loads_back(quick_run, tmp_path):
    out, _ = quick_run
    source = out / "ar" / "model"
    report = pack_pipeline(source, tmp_path / "packed")
    assert report.tensors_float16 > 0 and report.max_relative_error <= 1e-3
    assert report.bytes_after < 0.6 * report.bytes_before
    assert json.loads((tmp_path / "packed" / PACK_REPORT).read_text())["tensors_float16"] == report.tensors_float16
    reference, packed = VGTPipeline.from_pretrained(source), VGTPipeline.from_pretrained(tmp_path / "packed")
    assert next(packed.generator.parameters()).dtype == torch.float32  # stored fp16, loaded back to fp32
    latents = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = reference.ae.decode(latents).sample, packed.ae.decode(latents).sample
    assert (a - b).abs().max() < 2e-2
    with pytest.raises(ValueError, match="budget"):
        pack_pipeline(source, tmp_path / "too-small", max_bytes=1000)
    assert not (tmp_path / "too-small").exists()


def test_pack_command_compares_against_float32(quick_run, tmp_path, capsys):
    out, _ = quick_run
    assert main(["recipe", "pack", "--model", str(out / "ar" / "model"), "--out", str(tmp_path / "packed"),
                 "--check-prompts-per-category", "1", "--check-images", "1"]) == 0
    comparison = json.loads((tmp_path / "packed" / PACK_REPORT).read_text())["comparison"]
    assert comparison["images"] == len(GENEVAL_TAGS)
    assert 0 <= comparison["shapes_eval_packed"] <= 1 and "identical" in capsys.readouterr().out


def test_default_model_comes_from_the_environment_or_the_package(quick_run, tmp_path, monkeypatch):
    out, _ = quick_run
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(out / "ar" / "model"))
    assert default_model_dir() == out / "ar" / "model"
    assert resolve_model_dir(None) == out / "ar" / "model"
    assert isinstance(VGTPipeline.from_pretrained(), VGTPipeline)
    assert main(["generate", "two red circles", "--num-inference-steps", "2", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").is_file()
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="vgt recipe shapes"):
        VGTPipeline.from_pretrained()
