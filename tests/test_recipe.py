"""The ShapesWorld recipe end to end (`--quick`, the `quick_run` fixture of conftest.py), resuming, its stages as
library calls, and the ShapesEval of a whole model (`vgt eval model`, `evaluate_pipeline`)."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vgt import VGTPipeline
from vgt.cli import build_parser, main
from vgt.data.shapes import GENEVAL_TAGS
from vgt.eval.benchmark import TUNE_SEED_OFFSET, evaluate_pipeline, shapes_eval_subset
from vgt.presets import recipe_preset
from vgt.recipe import STAGES, build_stages, run_recipe


def test_quick_recipe_runs_every_stage_and_losses_fall(quick_run):
    out, state = quick_run
    assert list(state["stages"]) == list(STAGES)
    for name in ("vlm", "ae1", "ae2", "ar"):
        losses = state["stages"][name]["losses"]
        assert losses["last_step"] > losses["first_step"]
        assert np.isfinite(losses["last_loss"]), name
        assert losses["last_loss"] < losses["first_loss"], f"{name}: loss did not fall: {losses}"
    assert json.loads((out / "cache" / "index.json").read_text())["latent_shape"] == [32, 4, 4]
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert set(scores["categories"]) == set(GENEVAL_TAGS) and scores["n_images"] == len(GENEVAL_TAGS)
    assert scores["sampler_defaults"]["tokens_per_step"] == 1
    assert scores["sampler_defaults"]["temperature"] == recipe_preset("quick").ar_sampling_temperature == 0.7
    pipe = VGTPipeline.from_pretrained(out / "ar" / "model")
    image = pipe("a red circle", generator=torch.Generator().manual_seed(0), num_inference_steps=2).images[0]
    assert image.size == (32, 32)


def test_recipe_rerun_skips_finished_stages_and_refuses_other_settings(quick_run, capsys):
    out, state = quick_run
    again = run_recipe(recipe_preset("quick"), out)
    assert again["stages"] == state["stages"]  # nothing ran again
    log = (out / "recipe.log").read_text()
    assert all(f"{name}: done already, skipped" in log for name in STAGES)
    with pytest.raises(ValueError, match="ar_steps"):
        run_recipe(recipe_preset("quick", ar_steps=41), out)


def test_recipe_command_names_the_pipeline_only_when_it_exists(quick_run, tmp_path, monkeypatch, capsys):
    out, _ = quick_run
    assert main(["recipe", "shapes", "--quick", "--out", str(out)]) == 0
    assert f"the pipeline: {out / 'ar' / 'model'}" in capsys.readouterr().out
    monkeypatch.setattr("vgt.recipe.run_recipe", lambda cfg, out, stop_after=None: {"stages": {}})
    assert main(["recipe", "shapes", "--quick", "--out", str(tmp_path), "--stop-after", "cache"]) == 0
    printed = capsys.readouterr().out
    assert "the pipeline" not in printed and "stopped after cache" in printed


@pytest.mark.parametrize("changes", [{}, {"vlm_preset": "small-s32", "ae_decoder": "small-cpu-f32", "image_size": 128,
                                                                        "ar_head_noise_samples": None}])
def test_each_stage_is_the_library_call_of_its_recorded_command(changes):
    from vgt.commands.train import ae_arguments, ar_arguments, vlm_arguments

    stages = build_stages(recipe_preset("full", **changes), "/runs/x")
    assert [s.name for s in stages] == list(STAGES)
    command = {s.name: s.command for s in stages}
    assert command["vlm"][:2] == ("train", "vlm") and command["ar"][:2] == ("train", "ar")
    assert "--init" in command["ae2"] and command["ae2"][command["ae2"].index("--init") + 1] == "/runs/x/ae1/model"
    assert "latents:/runs/x/cache" in command["ar"]
    parser = build_parser()
    parsed = {name: parser.parse_args(list(command[name])) for name in STAGES}  # every command parses
    # the typed configs the recipe calls each training stage with are those its recorded command builds
    for name, arguments_of in (("vlm", vlm_arguments), ("ae1", ae_arguments), ("ae2", ae_arguments),
                               ("ar", ar_arguments)):
        stage = next(s for s in stages if s.name == name)
        signature = inspect.signature(stage.function)
        called, typed = signature.bind(**stage.arguments), signature.bind(**arguments_of(parsed[name]))
        called.apply_defaults()
        typed.apply_defaults()
        assert called.arguments == typed.arguments, name
    assert stages[1].arguments["train_config"].steps == 600  # the CPU AE stage-1 schedule (ae-stage1-cpu)


def test_preset_overrides_are_checked():
    with pytest.raises(ValueError, match="ar_steps must be >= 1"):
        recipe_preset("quick", ar_steps=0)
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_preset("huge")


def test_shapes_eval_subset_spreads_over_each_category():
    full = shapes_eval_subset()
    subset = shapes_eval_subset(5)
    assert len(subset) == 5 * len(GENEVAL_TAGS)
    for tag in GENEVAL_TAGS:
        prompts = [r["prompt"] for r in subset if r["tag"] == tag]
        assert len(prompts) == 5 and all(r in full for r in subset)
        assert len(set(prompts)) > 1  # spread over the category, not its first prompt repeated


def test_tune_split_draws_other_prompts_where_a_category_has_them():
    report, tune = shapes_eval_subset(20), shapes_eval_subset(20, "tune")
    assert len(tune) == len(report) and shapes_eval_subset(20, "tune") == tune
    for tag in GENEVAL_TAGS:
        asked = {r["prompt"] for r in report if r["tag"] == tag}
        tuned = [r["prompt"] for r in tune if r["tag"] == tag]
        distinct = len({r["prompt"] for r in shapes_eval_subset() if r["tag"] == tag})
        # every distinct prompt the report leaves out is drawn before a reported one is reused
        assert len(set(tuned) - asked) == min(distinct - len(asked), len(tuned)), tag
    assert not {r["prompt"] for r in tune if r["tag"] == "color_attr"} & {r["prompt"] for r in report}
    with pytest.raises(ValueError, match="unknown split"):
        shapes_eval_subset(5, "test")


def test_a_failing_stage_stops_the_recipe_and_says_how_to_resume(tmp_path, monkeypatch):
    calls = []

    def failing(**arguments):
        calls.append(arguments)
        raise RuntimeError("out of memory")

    monkeypatch.setattr("vgt.vlm.pretrain.train_small_vlm", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_recipe(recipe_preset("quick"), tmp_path)
    assert len(calls) == 1 and calls[0]["preset"] == "toy"
    assert "vlm: stopped" in (tmp_path / "recipe.log").read_text()
    assert "re-run the same command to resume" in (tmp_path / "recipe.log").read_text()


def test_eval_model_prints_scores_with_the_sampler_settings(quick_run, tmp_path, capsys):
    out, _ = quick_run
    assert main(["eval", "model", "--model", str(out / "ar" / "model"), "--out", str(tmp_path / "eval"),
                 "--prompts-per-category", "1", "--num-images-per-prompt", "2", "--tokens-per-step", "4"]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "tokens_per_step=4" in printed and "sampler=sde" in printed
    assert "95% interval" in printed and "seed 0" in printed and "seed 1" in printed
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert scores["n_images"] == 2 * 2 * len(GENEVAL_TAGS)  # two sampling seeds by default
    assert set(scores["seeds"]) == {"0", "1"} and scores["split"] == "report"
    assert scores["overall"] == pytest.approx(np.mean([s["overall"] for s in scores["seeds"].values()]))
    assert scores["sampling"] == {"tokens_per_step": 4}
    # the tuning split samples other prompts from other seeds
    assert main(["eval", "model", "--model", str(out / "ar" / "model"), "--out", str(tmp_path / "tune"),
                 "--prompts-per-category", "1", "--num-images-per-prompt", "1", "--seeds", "0", "--split", "tune"]) == 0
    tuned = json.loads((tmp_path / "tune" / "seed-0" / "scores.json").read_text())
    assert tuned["split"] == "tune" and tuned["sampling_seed"] == TUNE_SEED_OFFSET


def test_evaluate_pipeline_regenerates_samples_left_by_other_settings(quick_run, tmp_path, monkeypatch):
    out, _ = quick_run
    model, eval_dir = out / "ar" / "model", tmp_path / "eval"
    first = evaluate_pipeline(model, eval_dir, 1, 1)
    image = eval_dir / "samples" / "00000" / "samples" / "0000.png"
    before = np.asarray(Image.open(image))
    other = evaluate_pipeline(model, eval_dir, 2, 1, sampling={"temperature": 0.0})
    assert other["sampling"] == {"temperature": 0.0} and other["n_images"] == 2 * len(GENEVAL_TAGS)
    assert "--temperature 0.0" in other["command"]
    assert not np.array_equal(before, np.asarray(Image.open(image)))  # not the old images judged again
    # an interrupted run with the first settings leaves none of the other run's images to be judged as its own
    def interrupted(*args, **kwargs):
        raise RuntimeError("sampling failed")

    monkeypatch.setattr("vgt.eval.benchmark.write_benchmark_samples", interrupted)
    with pytest.raises(RuntimeError, match="failed"):
        evaluate_pipeline(model, eval_dir, 1, 1)
    monkeypatch.undo()
    again = evaluate_pipeline(model, eval_dir, 1, 1)
    assert again["n_images"] == len(GENEVAL_TAGS)  # the larger prompt set's extra prompts are gone
    assert np.array_equal(before, np.asarray(Image.open(image))) and again["overall"] == first["overall"]


def test_claim_experiments_train_the_recipes_own_vgt_ar_stage(tmp_path, monkeypatch, benchmark_module):
    """benchmarks/claims_*.py compare latents under the recipe's VGT-AR (noise draws per token, temperature,
    precision, schedule), changing only the latents and the run length."""
    import argparse
    import dataclasses

    import vgt.ar.training

    recipe = tmp_path / "recipe"
    for folder in ("vlm/model", "ae2/model"):
        (recipe / folder).mkdir(parents=True)
    cfg = dataclasses.replace(recipe_preset("quick"), ar_head_noise_samples=3, ar_sampling_temperature=0.6,
                              ar_precision="bf16")
    (recipe / "recipe.json").write_text(json.dumps({"config": cfg.to_dict(), "stages": {}}))
    args = argparse.Namespace(recipe=str(recipe), work=str(tmp_path / "work"), ar_steps=20, ar_batch_size=None,
                              ae_steps=None, cache_samples=None, eval_prompts_per_category=1, eval_images=1,
                              threads=None)
    experiment = benchmark_module("claims_common").Experiment(args)
    calls = []
    monkeypatch.setattr(vgt.ar.training, "train_generator", lambda stage, train: calls.append((stage, train)))
    experiment.train_ar("ar-pixel", tmp_path / "pixel-ae", tmp_path / "cache", save_every=5)

    (stage, train), = calls
    assert (stage.head_noise_samples, stage.sampling_temperature) == (3, 0.6)
    assert stage.backbone_path == str(recipe / "vlm" / "model")
    assert stage.ae == str(tmp_path / "pixel-ae") and stage.data == (f"latents:{tmp_path / 'cache'}",)
    assert stage.sample_prompts == ()
    assert (train.steps, train.batch_size, train.precision, train.lr) == (20, cfg.ar_batch_size, "bf16", cfg.ar_lr)
    assert train.ema_start == int(20 * cfg.ar_ema_start_fraction) and train.ema_decay == cfg.ar_ema_decay
    assert (train.save_every, train.keep_last, train.eval_every) == (5, 5, 0)
    assert train.run_dir == str(tmp_path / "work" / "ar-pixel")
    assert "3 noise draw(s) per token" in experiment.describe()
