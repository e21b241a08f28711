"""Careless and hostile input at the command line: one `vgt: error:` line (exit 2), nothing lost, nothing run."""

import shutil

import pytest

from vgt.cli import run
from vgt.pretrained import shipped_model_dir

pytestmark = pytest.mark.usefixtures("single_thread")
SHIPPED = shipped_model_dir()


def error_of(capsys, *argv) -> str:
    code = run([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.rstrip().splitlines()[-1] if err.strip() else ""
    assert last.startswith("vgt: error:") and err.count("vgt: error:") == 1 and "Traceback" not in err, err
    return last


def test_export_never_replaces_the_run_or_a_foreign_folder_and_says_so_before_training(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_00000001").mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    base = ["train", "ar", "--backbone-path", SHIPPED / "vlm", "--ae", SHIPPED / "ae", "--run-dir", run_dir,
            "--max-steps", 1, "--resume", "never"]
    for export, overwrite in ((run_dir, ["--overwrite"]), (tmp_path, ["--overwrite"]), (SHIPPED / "ae", [])):
        assert "overlaps" in error_of(capsys, *base, "--export", export, *overwrite)
    assert "--overwrite" in error_of(capsys, *base, "--export", tmp_path / "mine")
    assert (run_dir / "checkpoints" / "step_00000001").is_dir() and (tmp_path / "mine" / "notes.txt").is_file()


def test_pack_refuses_a_target_holding_its_source_or_a_foreign_folder(tmp_path, capsys):
    source = tmp_path / "work" / "model"
    shutil.copytree(SHIPPED, source)
    for out in (source, tmp_path / "work", source / "packed"):
        assert "overlaps" in error_of(capsys, "recipe", "pack", "--model", source, "--out", out, "--overwrite",
                                      "--check-prompts-per-category", 0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert "--overwrite" in error_of(capsys, "recipe", "pack", "--model", source, "--out", tmp_path / "mine",
                                     "--check-prompts-per-category", 0)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["model"]
    assert (tmp_path / "mine" / "notes.txt").is_file()


def _png(path, size=(40, 40)):
    from PIL import Image

    Image.new("RGB", size, "red").save(path)
    return path


def _broken_copy(tmp_path, weights, how):
    """A copy of the shipped model whose `weights` file is cut short or holds a NaN."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(SHIPPED, model)
    target = model / weights
    if how == "cut":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        state = load_file(str(target))
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name].clone().float()
        state[name].view(-1)[0] = float("nan")
        save_file(state, str(target))
    return model


@pytest.mark.parametrize("argv", [
    ["generate", "x", "--guidance-scale", "nan"], ["generate", "x", "--cfg", "inf"],
    ["generate", "x", "--temperature", "nan"], ["generate", "x", "--size", "0"],
    ["generate", "x", "--num-inference-steps", "-1"], ["generate", "x", "--num-images-per-prompt", "0"],
    ["generate", "x", "--device", "cuda:7"], ["generate", "x", "--device", "gpu"],
    ["sampling-defaults", "--model", SHIPPED, "--guidance-scale", "nan"], ["sampling-defaults", "--model", SHIPPED,
                                                                "--temperature", "-inf"],
    ["train", "toy", "--run-dir", "r", "--lr", "nan"], ["train", "toy", "--run-dir", "r", "--batch-size", "0"],
    ["train", "toy", "--run-dir", "r", "--size", "0"], ["train", "toy", "--run-dir", "r", "--lr", "0"],
    ["shapes", "export", "--out", "e", "--n", "0"], ["shapes", "render", "o", "--samples", "0"],
    ["cache-latents", "--model", SHIPPED / "ae", "--data", "shapes", "--out", "c", "--num-samples", "2",
     "--device", "cuda"],
    ["eval", "recon", "--model", SHIPPED / "ae", "--num", "0"], ["reconstruct", "a.png", "--model", SHIPPED / "ae",
                                                                 "--size", "0"],
    ["recipe", "pack", "--model", SHIPPED, "--max-mb", "nan"], ["train", "ar", "--backbone-path", "b", "--ae", "a",
                                                                "--run-dir", "r", "--uncond-prob", "nan"],
])
def test_bad_numbers_and_devices_are_one_line_errors(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "cuda" in str(argv):
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    error_of(capsys, *argv)
    assert not (SHIPPED / "generator" / "config.json").read_text().count("NaN")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_non_finite_settings_are_refused_by_the_library_too():
    import math

    from vgt.ar.config import SamplingConfig
    from vgt.pipeline import VGTPipeline
    from vgt.train import TrainConfig

    for field in ("guidance_scale", "temperature"):
        for value in (math.nan, math.inf):
            with pytest.raises(ValueError, match=field):
                SamplingConfig(**{field: value})
    with pytest.raises(ValueError, match="lr must be finite"):
        TrainConfig(lr=math.nan)
    pipe = VGTPipeline.from_pretrained(SHIPPED)
    for kwargs in ({"guidance_scale": math.nan}, {"temperature": math.nan}, {"guidance_scale": math.inf},
                   {"height": 0}):
        with pytest.raises(ValueError):
            pipe("one red circle", num_inference_steps=2, **kwargs)


@pytest.mark.parametrize("weights", ["generator/diffusion_pytorch_model.safetensors",
                                     "ae/diffusion_pytorch_model.safetensors", "vlm/model.safetensors"])
@pytest.mark.parametrize("how", ["cut", "nan"])
def test_corrupt_or_non_finite_weights_are_refused_when_loading(weights, how, tmp_path, capsys):
    model = _broken_copy(tmp_path, weights, how)
    err = error_of(capsys, "generate", "x", "--model", model, "--out", tmp_path / "x.png", "--num-inference-steps", 2)
    assert ("non-finite" if how == "nan" else "corrupt") in err and not (tmp_path / "x.png").exists()


def test_ae_commands_find_the_recorded_vlm_from_any_directory(tmp_path, capsys, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _png(tmp_path / "a.png")
    assert run(["reconstruct", str(tmp_path / "a.png"), "--model", str(SHIPPED / "ae"), "--out", "out"]) == 0
    assert (elsewhere / "out" / "a_recon.png").is_file()
    assert run(["eval", "recon", "--model", str(SHIPPED / "ae"), "--num", "2", "--fid-features", "none"]) == 0


@pytest.mark.parametrize("argv", [
    ["generate", "x", "--model", "missing"], ["generate", "x", "--out", "afile/x.png", "--num-inference-steps", "2"],
    ["reconstruct", "missing.png", "--model", SHIPPED / "ae"], ["reconstruct", "afile", "--model", SHIPPED / "ae"],
    ["caption", "missing.png", "--model", SHIPPED / "vlm"], ["eval", "shapes", "missing"],
    ["eval", "shapes", "afile"], ["shapes", "export", "--out", "afile", "--n", "1"],
    ["shapes", "prompts", "--out", "afile/p.jsonl"], ["train", "toy", "--run-dir", "afile", "--max-steps", "1"],
    ["train", "toy", "--run-dir", "r", "--data", "folder:missing"], ["train", "toy", "--run-dir", "r", "--data",
                                                                     "folder:afile"],
    ["train", "toy", "--run-dir", "r", "--data", "wds:missing-{0..3}.tar"], ["train", "toy", "--run-dir", "r",
                                                                          "--data", "bogus:x"],
    ["train", "toy", "--run-dir", "r", "--resume", "missing"], ["cache-latents", "--model", "missing", "--data",
                                                                "shapes", "--out", "c", "--num-samples", "1"],
    ["eval", "understanding", "--model", "missing"], ["sampling-defaults", "--model", "missing"],
    ["recipe", "pack", "--model", "missing"], ["eval", "ae-understanding", "--model", "afile"],
    ["train", "ae", "--stage", "1", "--run-dir", "r", "--backbone-path", "missing"],
    ["train", "ar", "--backbone-path", "missing", "--ae", SHIPPED / "ae", "--run-dir", "r"],
    ["generate"], ["train", "toy"], ["nonsense"],
])
def test_ordinary_mistakes_with_paths_are_one_line_errors(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    error_of(capsys, *argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_unwritable_output_and_full_disk_are_one_line_errors(tmp_path, capsys, monkeypatch):
    import errno

    monkeypatch.chdir(tmp_path)
    assert "Errno" in error_of(capsys, "shapes", "prompts", "--out", "/proc/prompts.jsonl")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vgt.io.os.fsync", full)
    assert "No space left on device" in error_of(capsys, "shapes", "prompts", "--out", "p.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_words_outside_the_vocabulary_are_named_and_capitals_lower_cased(capsys, tmp_path):
    import torch

    from vgt.pipeline import VGTPipeline

    err = error_of(capsys, "generate", "a purple dragon", "--out", tmp_path / "x.png", "--num-inference-steps", 2)
    assert "'dragon' not in this model's vocabulary" in err and "circle" in err
    pipe = VGTPipeline.from_pretrained(SHIPPED)
    images = [pipe(p, num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0)).images
              for p in ("Two RED circles", "two red circles")]
    assert torch.equal(*images)
    with pytest.raises(ValueError, match="'dragon'"):
        pipe("one red circle", negative_prompt="a dragon", num_inference_steps=2)


def test_sixteen_bit_and_float_grayscale_images_keep_their_brightness(tmp_path):
    import numpy as np
    from PIL import Image

    from vgt.images import to_tensor

    gray = np.full((8, 8), 32768, dtype=np.uint16)  # mid-gray in 16 bits
    Image.fromarray(gray).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")
        assert abs(to_tensor(image).mean().item()) < 0.01  # about 0 in [-1, 1], not 1 (white)
    assert abs(to_tensor(Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))).mean().item()) < 0.01


@pytest.mark.parametrize("file, text", [("generator/config.json", "{garbage"), ("model_index.json", "[1]"),
                                        ("ae/config.json", '{"encoder": 3}'), ("generator/config.json", "")])
def test_damaged_model_configs_are_one_line_errors_naming_the_file(file, text, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(SHIPPED, model)
    (model / file).write_text(text)
    err = error_of(capsys, "generate", "x", "--model", model, "--out", tmp_path / "x.png", "--num-inference-steps", 2)
    assert file.split("/")[-1] in err or "VGT-AE config" in err


@pytest.mark.parametrize("argv", [
    ["train", "toy", "--run-dir", "r", "--data-weights", "-1"],
    ["recipe", "shapes", "--out", "rs", "--quick", "--set", "ar_steps=nan"],
    ["recipe", "shapes", "--out", "rs", "--quick", "--set", "ar_steps=1.5"],
])
def test_bad_weights_and_recipe_values_are_one_line_errors(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error_of(capsys, *argv)
    assert list(tmp_path.iterdir()) == []
