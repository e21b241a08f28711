"""`vgt generate`, `vgt sample-benchmark` and `vgt train ar` end to end on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vgt import threads
from vgt.cli import main
from vgt.data.shapes import vocabulary_words
from vgt.eval.layout import read_layout
from vgt.pipeline import VGTPipeline
from vgt.testing import fill_zero_parameters, tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    pipe = tiny_pipeline(words=vocabulary_words())  # it trains on ShapesWorld captions: it must know their words
    fill_zero_parameters(pipe.generator.head, seed=1)
    path = tmp_path_factory.mktemp("model") / "vgt"
    pipe.save_pretrained(path)
    return path


def test_generate_is_reproducible(model_dir, tmp_path, capsys):
    args = ["generate", "a red circle", "--model", str(model_dir), "--num-inference-steps", "3", "--seed", "0"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    assert main([*args[:-1], "1", "--out", str(tmp_path / "c.png")]) == 0
    a, b, c = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "abc")
    assert a.shape == (32, 32, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_generate_several_images_files_or_grid(model_dir, tmp_path):
    base = ["generate", "a red circle", "--model", str(model_dir), "--num-inference-steps", "2", "-n", "3",
            "--tokens-per-step", "4", "--size", "24"]
    assert main([*base, "--out", str(tmp_path / "x.png")]) == 0
    files = sorted(p.name for p in tmp_path.glob("x-*.png"))
    assert files == ["x-000.png", "x-001.png", "x-002.png"]
    assert main([*base, "--grid", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size == (48, 48)  # 3 images of 24 px tiled 2 x 2


def test_generate_threads_setting_and_default(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = ["generate", "a red circle", "--model", str(model_dir), "--num-inference-steps", "2",
            "--out", str(tmp_path / "x.png")]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main([*args, "--threads", "1"]) == 0 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert main(args) == 0 and torch.get_num_threads() == 1  # one image: one thread unless told otherwise
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert main(args) == 0 and torch.get_num_threads() == 2  # the user's OMP_NUM_THREADS is kept
        for bad in ("0", "-2"):
            with pytest.raises(ValueError, match="--threads must be >= 1"):  # `vgt` prints it in one line
                main([*args, "--threads", bad])
    finally:
        torch.set_num_threads(before)


def test_default_threads_follow_batch_size_and_idle_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.2, 0.0, 0.0), raising=False)
    assert threads.default_threads(1) == 1 and threads.default_threads(threads.PARALLEL_FROM_IMAGES - 1) == 1
    assert threads.default_threads(16) == 3  # 4 cores, one of them busy
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0), raising=False)
    assert threads.default_threads(16) == 1


def test_generate_without_a_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VGT_MODEL", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--model DIR"):
        main(["generate", "a red circle", "--out", str(tmp_path / "x.png")])


ROWS = [{"tag": "single_object", "prompt": "a circle", "include": [{"class": "circle", "count": 1}]},
        {"tag": "colors", "prompt": "a red square", "include": [{"class": "square", "count": 1, "color": "red"}]},
        {"tag": "colors", "prompt": "a blue circle", "include": [{"class": "circle", "count": 1, "color": "blue"}]}]
# (prompts in the test model's small vocabulary: words outside it are refused)


def write_prompts(path, rows=ROWS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sample_benchmark_writes_geneval_layout_and_resumes(model_dir, tmp_path, capsys):
    rows = ROWS[:2]
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out"
    args = ["sample-benchmark", "--prompts", str(prompts), "--out", str(out), "--model", str(model_dir),
            "--num-inference-steps", "2", "--tokens-per-step", "16", "--num-images-per-prompt", "2"]
    assert main(args) == 0
    layout = read_layout(out)
    assert [p.index for p in layout] == [0, 1]
    assert [p.metadata for p in layout] == rows
    assert all(len(p.sample_paths) == 2 for p in layout)
    first = np.asarray(Image.open(layout[1].sample_paths[0]))
    assert main(args) == 0
    assert "0 prompt(s) (2 already present)" in capsys.readouterr().out
    assert main([*args[:-1], "3"]) == 0  # another image count is not "already present": generated again
    assert "2 prompt(s) (0 already present)" in capsys.readouterr().out
    assert all(len(p.sample_paths) == 3 for p in read_layout(out))
    assert np.array_equal(first, np.asarray(Image.open(read_layout(out)[1].sample_paths[0])))  # per-image seeds
    assert main(args) == 0
    assert all(len(p.sample_paths) == 2 for p in read_layout(out))
    assert main([*args, "--overwrite"]) == 0  # same seeds -> same images
    assert np.array_equal(first, np.asarray(Image.open(layout[1].sample_paths[0])))
    assert main([*args, "--overwrite", "--batch-prompts", "2"]) == 0  # per-image seeds: batching changes nothing
    batched = np.asarray(Image.open(layout[1].sample_paths[0])).astype(int)
    assert np.abs(batched - first.astype(int)).max() <= 1  # up to the rounding of batched arithmetic
    assert main(["eval", "shapes", str(out), "--json", str(tmp_path / "scores.json")]) == 0


def test_train_ar_runs_through_the_engine_and_exports(model_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "ar", "--backbone-path", str(model_dir / "vlm"), "--ae", str(model_dir / "ae"),
            "--run-dir", str(run), "--max-steps", "3", "--batch-size", "2", "--size", "16", "--log-every", "1",
            "--eval-every", "3", "--sample-prompts", "a red circle", "--seed", "0",
            "--eval-prompts", str(write_prompts(tmp_path / "prompts.jsonl")), "--eval-max-prompts", "2"]
    assert main(args) == 0
    assert (run / "samples" / "step_00000003.png").is_file()
    assert len(read_layout(run / "eval" / "step_00000003")) == 2
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
    assert any(0 <= m.get("shapes_eval/overall", -1) <= 1 for m in metrics)
    pipe = VGTPipeline.from_pretrained(run / "model")
    assert pipe.generator.config.sampling.grid_size == 2  # 16 px / stride 8
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (16, 16)


def test_train_ar_from_a_latent_cache(model_dir, tmp_path):
    cache = tmp_path / "cache"
    assert main(["cache-latents", "--model", str(model_dir / "ae"), "--backbone-path", str(model_dir / "vlm"),
                 "--data", "shapes", "--size", "24", "--num-samples", "4", "--shard-size", "4",
                 "--out", str(cache)]) == 0
    run = tmp_path / "run"
    assert main(["train", "ar", "--backbone-path", str(model_dir / "vlm"), "--ae", str(model_dir / "ae"),
                 "--data", f"latents:{cache}", "--run-dir", str(run), "--max-steps", "2", "--batch-size", "2",
                 "--head-noise-samples", "2"]) == 0
    pipe = VGTPipeline.from_pretrained(run / "model")
    assert pipe.generator.config.sampling.grid_size == 3  # the cache's 3x3 latents, not the default resolution
    assert pipe.generator.config.head_noise_samples == 2  # a training constant, saved with the model's config


def test_train_ar_head_size_and_online_weight_export(model_dir, tmp_path, capsys):
    from vgt.ar.training import ARStageConfig
    from vgt.train import latest_checkpoint
    from vgt.train.checkpoint import EMA_FILE, MODEL_FILE, read_weights

    run = tmp_path / "run"
    args = ["train", "ar", "--backbone-path", str(model_dir / "vlm"), "--ae", str(model_dir / "ae"),
            "--run-dir", str(run), "--max-steps", "3", "--batch-size", "2", "--size", "16", "--lr", "0.01",
            "--ema-decay", "0.5", "--ema-start", "0", "--head-width", "24", "--head-depth", "2"]
    assert main(args) == 0
    assert main([*args, "--export", str(tmp_path / "online"), "--export-weights", "online"]) == 0  # no more steps
    assert "(model weights)" in capsys.readouterr().out
    ema, online = (VGTPipeline.from_pretrained(d).generator for d in (run / "model", tmp_path / "online"))
    assert (ema.config.head.width, ema.config.head.depth) == (24, 2) and len(ema.head.res_blocks) == 2
    checkpoint = latest_checkpoint(run)
    assert checkpoint.name.endswith("3")
    for model, file in ((ema, EMA_FILE), (online, MODEL_FILE)):
        saved = {k: v for k, v in read_weights(checkpoint / file).items() if k.startswith("head.")}
        weights = model.state_dict()
        assert len(saved) == len([k for k in weights if k.startswith("head.")]) > 0
        assert all(torch.equal(weights[k], v) for k, v in saved.items())
    assert not torch.equal(ema.head.final_layer.linear.weight, online.head.final_layer.linear.weight)
    with pytest.raises(ValueError, match="export_weights must be one of ema, online"):
        ARStageConfig(str(model_dir / "vlm"), str(model_dir / "ae"), export_weights="best")


def test_sampling_defaults_are_saved_with_the_model(model_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    saved = json.loads((model / "generator" / "config.json").read_text())
    assert main(["sampling-defaults", "--model", str(model), "--guidance-scale", "2.5", "--sampler", "heun",
                 "--num-inference-steps", "7", "--temperature", "0.8"]) == 0
    assert json.loads(capsys.readouterr().out)["guidance_scale"] == 2.5
    written = json.loads((model / "generator" / "config.json").read_text())
    assert written["_class_name"] == saved["_class_name"] == "VGTForGeneration" and "_diffusers_version" in written
    assert {k: v for k, v in written.items() if k != "sampling"} == {k: v for k, v in saved.items() if k != "sampling"}
    sampling = VGTPipeline.from_pretrained(model).generator.config.sampling
    assert (sampling.guidance_scale, sampling.sampler, sampling.num_inference_steps, sampling.temperature) == (
        2.5, "heun", 7, 0.8)
    assert sorted(p.name for p in (model / "generator").iterdir()) == sorted(
        p.name for p in (model_dir / "generator").iterdir())  # nothing half-written left beside it
    with pytest.raises(SystemExit):  # argparse: "argument --num-inference-steps: must be >= 1, got 0"
        main(["sampling-defaults", "--model", str(model), "--num-inference-steps", "0"])
