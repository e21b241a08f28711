"""The ShapesWorld recipe end to end (`--quick`), resuming, packing the result, and the default-model lookup.

The quick recipe trains every stage for tens of steps (~1 minute on one CPU thread). It runs once per module on one
thread: on a machine shared with other jobs, PyTorch's thread pool slows such tiny models down many times over.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vgt.cli import build_parser, main
from vgt.data.shapes import GENEVAL_TAGS
from vgt.pipeline import VGTPipeline
from vgt.pretrained import DEFAULT_MODEL_ENV, PACK_REPORT, default_model_dir, pack_pipeline, resolve_model_dir
from vgt.recipe import (
    STAGES,
    TUNE_SEED_OFFSET,
    build_stages,
    evaluate_pipeline,
    recipe_preset,
    run_recipe,
    shapes_eval_subset,
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("recipe") / "quick"
        state = run_recipe(recipe_preset("quick"), out)
        yield out, state
    finally:
        torch.set_num_threads(threads)


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
    assert main(["generate", "two red circles", "--steps", "2", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").is_file()
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="vgt recipe shapes"):
        VGTPipeline.from_pretrained()


def test_stages_are_the_project_commands():
    stages = build_stages(recipe_preset("full"), "/runs/x")
    assert [s.name for s in stages] == list(STAGES)
    argv = {s.name: s.argv for s in stages}
    assert argv["vlm"][:2] == ("train", "vlm") and argv["ar"][:2] == ("train", "ar")
    assert "--init" in argv["ae2"] and argv["ae2"][argv["ae2"].index("--init") + 1] == "/runs/x/ae1/model"
    assert f"latents:{'/runs/x/cache'}" in argv["ar"]
    parser = build_parser()
    for name in STAGES:  # every stage's arguments parse
        parser.parse_args(list(argv[name]))


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


def test_a_failing_stage_stops_the_recipe_and_says_how_to_resume(tmp_path):
    calls = []

    def failing(argv):
        calls.append(argv)
        return 1

    with pytest.raises(RuntimeError, match="recipe stage vlm failed"):
        run_recipe(recipe_preset("quick"), tmp_path, runner=failing)
    assert len(calls) == 1 and calls[0][:2] == ["train", "vlm"]
    assert "vlm: stopped" in (tmp_path / "recipe.log").read_text()
    assert "re-run the same command to resume" in (tmp_path / "recipe.log").read_text()


def test_eval_model_prints_scores_with_the_sampler_settings(quick_run, tmp_path, capsys):
    out, _ = quick_run
    assert main(["eval", "model", "--model", str(out / "ar" / "model"), "--out", str(tmp_path / "eval"),
                 "--prompts-per-category", "1", "--n-per-prompt", "2", "--tokens-per-step", "4"]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "tokens-per-step=4" in printed and "sampler=sde" in printed
    assert "95% interval" in printed and "seed 0" in printed and "seed 1" in printed
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert scores["n_images"] == 2 * 2 * len(GENEVAL_TAGS)  # two sampling seeds by default
    assert set(scores["seeds"]) == {"0", "1"} and scores["split"] == "report"
    assert scores["overall"] == pytest.approx(np.mean([s["overall"] for s in scores["seeds"].values()]))
    assert scores["sampler_flags"][scores["sampler_flags"].index("--tokens-per-step") + 1] == "4"
    # the tuning split samples other prompts from other seeds
    assert main(["eval", "model", "--model", str(out / "ar" / "model"), "--out", str(tmp_path / "tune"),
                 "--prompts-per-category", "1", "--n-per-prompt", "1", "--seeds", "0", "--split", "tune"]) == 0
    tuned = json.loads((tmp_path / "tune" / "seed-0" / "scores.json").read_text())
    assert tuned["split"] == "tune" and tuned["sampling_seed"] == TUNE_SEED_OFFSET


def test_evaluate_pipeline_regenerates_samples_left_by_other_settings(quick_run, tmp_path, monkeypatch):
    out, _ = quick_run
    model, eval_dir = out / "ar" / "model", tmp_path / "eval"
    first = evaluate_pipeline(model, eval_dir, 1, 1)
    image = eval_dir / "samples" / "00000" / "samples" / "0000.png"
    before = np.asarray(Image.open(image))
    other = evaluate_pipeline(model, eval_dir, 2, 1, sampling=("--temperature", "0"))
    assert other["sampler_flags"] == ["--temperature", "0"] and other["n_images"] == 2 * len(GENEVAL_TAGS)
    assert not np.array_equal(before, np.asarray(Image.open(image)))  # not the old images judged again
    # an interrupted run with the first settings leaves none of the other run's images to be judged as its own
    monkeypatch.setattr("vgt.cli.main", lambda argv: 1)
    with pytest.raises(RuntimeError, match="failed"):
        evaluate_pipeline(model, eval_dir, 1, 1)
    monkeypatch.undo()
    again = evaluate_pipeline(model, eval_dir, 1, 1)
    assert again["n_images"] == len(GENEVAL_TAGS)  # the larger prompt set's extra prompts are gone
    assert np.array_equal(before, np.asarray(Image.open(image))) and again["overall"] == first["overall"]
