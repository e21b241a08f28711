"""VGTPipeline: persistence, seeds, argument checks, and a tiny model that overfits one caption-image pair."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from vgt import VGTAutoencoder, VGTForGeneration, VGTPipeline
from vgt.ar.training import ARLoss
from vgt.data.sources import Source
from vgt.loading import WEIGHTS_NAME
from vgt.pipeline import AE_DIR, GENERATOR_DIR, MODEL_INDEX, TOKENIZER_DIR, VLM_DIR
from vgt.testing import fill_zero_parameters, tiny_pipeline
from vgt.train import TrainConfig, train

CAPTION = "a red circle"


@pytest.fixture(scope="module")
def pipe() -> VGTPipeline:
    p = tiny_pipeline()
    fill_zero_parameters(p.generator.head, seed=1)  # so that outputs depend on the inputs
    return p


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "model"
    pipe.save_pretrained(path)
    return path


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images])


def test_images_and_output_types(pipe):
    out = pipe(["a red circle", "a blue square"], num_images_per_prompt=2, generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 4 and out.images[0].size == (32, 32)
    pt = pipe(CAPTION, output_type="pt", height=40, width=24, generator=torch.Generator().manual_seed(0)).images
    assert pt.shape == (1, 3, 40, 24) and 0 <= pt.min() and pt.max() <= 1
    latent = pipe(CAPTION, output_type="latent", tokens_per_step=4, generator=torch.Generator().manual_seed(0))
    assert latent.images.shape == (1, 8, 4, 4)
    arr = pipe(CAPTION, output_type="np", negative_prompt="a blue square", generator=torch.Generator().manual_seed(0))
    assert arr.images.shape == (1, 32, 32, 3)


def test_same_seed_same_images_different_seed_different(pipe):
    def run(seed):
        return pixels(pipe(CAPTION, num_images_per_prompt=2, generator=torch.Generator().manual_seed(seed)).images)

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # images of one prompt differ from each other


def test_one_generator_per_image_makes_images_independent_of_the_batch(pipe):
    both = pipe(["a red circle", "a blue square"], output_type="latent",
                generator=[torch.Generator().manual_seed(s) for s in (10, 11)]).images
    alone = pipe(["a blue square"], output_type="latent", generator=[torch.Generator().manual_seed(11)]).images
    assert torch.allclose(both[1], alone[0], atol=1e-4)
    with pytest.raises(ValueError, match="got 1 generators for 2 images"):
        pipe(CAPTION, num_images_per_prompt=2, generator=[torch.Generator()])


def test_save_writes_the_diffusers_layout(saved):
    index = json.loads((saved / MODEL_INDEX).read_text())
    assert index["_class_name"] == "VGTPipeline"
    assert index[AE_DIR] == ["vgt.ae.model", "VGTAutoencoder"]
    assert index[GENERATOR_DIR] == ["vgt.ar.model", "VGTForGeneration"]
    assert index[VLM_DIR] == ["transformers", "InternVLForConditionalGeneration"]
    assert index[TOKENIZER_DIR][0] == "transformers"
    for component in (AE_DIR, GENERATOR_DIR):
        assert sorted(p.name for p in (saved / component).iterdir()) == ["config.json", WEIGHTS_NAME]
    generator_keys = load_keys(saved / GENERATOR_DIR / WEIGHTS_NAME)
    assert generator_keys and not any(k.startswith("llm.") for k in generator_keys)  # the LLM is saved once, in vlm/


def load_keys(path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def test_save_and_load_round_trip(pipe, saved):
    loaded = VGTPipeline.from_pretrained(saved)
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0)
    a = pixels(pipe(CAPTION, generator=torch.Generator().manual_seed(5), **kwargs).images)
    b = pixels(loaded(CAPTION, generator=torch.Generator().manual_seed(5), **kwargs).images)
    assert np.array_equal(a, b)
    assert loaded.generator.config == pipe.generator.config and loaded.ae.config == pipe.ae.config
    assert next(loaded.generator.parameters()).dtype == torch.float32
    half = VGTPipeline.from_pretrained(saved, dtype=torch.bfloat16)
    assert {p.dtype for p in half.vlm.parameters()} == {torch.bfloat16}
    assert next(half.ae.parameters()).dtype == torch.bfloat16


def test_components_load_on_their_own(pipe, saved):
    ae = VGTAutoencoder.from_pretrained(saved / AE_DIR)  # no VLM needed: its config describes the vision path
    assert all(torch.equal(v, ae.state_dict()[k]) for k, v in pipe.ae.state_dict().items())
    generator = VGTForGeneration.from_pretrained(saved, subfolder=GENERATOR_DIR)
    assert generator.backbone is None and not hasattr(generator, "llm")
    assert generator.state_dict().keys() == pipe.generator.generator_state().keys()
    assert all(torch.equal(v, pipe.generator.state_dict()[k]) for k, v in generator.state_dict().items())
    fresh = VGTAutoencoder.from_config(VGTAutoencoder.load_config(saved / AE_DIR))  # diffusers' idiom: new weights
    assert fresh.config == pipe.ae.config and fresh.state_dict().keys() == pipe.ae.state_dict().keys()
    fresh = VGTForGeneration.from_config(VGTForGeneration.load_config(saved / GENERATOR_DIR))
    assert fresh.config == pipe.generator.config


def test_generic_diffusers_loader_needs_the_vgt_class(saved):
    """diffusers looks the class named in model_index.json up in the diffusers package; a pipeline class from
    another package is reached only through a code file in the folder (trust_remote_code), so vgt folders load with
    VGTPipeline.from_pretrained (docs/api.md)."""
    with pytest.raises(AttributeError, match="VGTPipeline"):
        DiffusionPipeline.from_pretrained(saved)


def corrupt(saved, tmp_path, component: str, change):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    weights = next((copy / component).glob("*.safetensors"))
    state = load_file(str(weights))
    change(state)
    save_file(state, str(weights))
    return copy


@pytest.mark.parametrize("component, change, message", [
    (GENERATOR_DIR, lambda s: s.pop("image_start"), r"missing keys \(1\): image_start"),
    (GENERATOR_DIR, lambda s: s.update(extra=torch.zeros(1)), r"unexpected keys \(1\): extra"),
    (GENERATOR_DIR, lambda s: s.update(image_start=torch.zeros(3)), r"shape mismatches \(1\): image_start \(3,\)"),
    (AE_DIR, lambda s: s.pop("bottleneck.to_latent.1.weight"), r"missing keys \(1\): bottleneck"),
    (VLM_DIR, lambda s: s.pop(next(k for k in s if "layers.0." in k)), r"missing_keys \(1\)"),
])
def test_loading_fails_loudly_on_wrong_weights(saved, tmp_path, component, change, message):
    with pytest.raises(ValueError, match=message):
        VGTPipeline.from_pretrained(corrupt(saved, tmp_path, component, change))


def test_a_folder_that_is_no_pipeline_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VGT pipeline folder"):
        VGTPipeline.from_pretrained(tmp_path)


def test_return_dict_false_gives_a_tuple(pipe):
    out = pipe(CAPTION, output_type="latent", return_dict=False, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, tuple) and len(out) == 1
    same = pipe(CAPTION, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(out[0], same)


def test_progress_bar_follows_set_progress_bar_config(pipe, capsys):
    try:
        pipe.set_progress_bar_config(disable=False, desc="decoding")
        pipe(CAPTION, tokens_per_step=16, generator=torch.Generator().manual_seed(0))
        assert "decoding" in capsys.readouterr().err
        pipe.set_progress_bar_config(disable=True)
        pipe(CAPTION, tokens_per_step=16, generator=torch.Generator().manual_seed(0))
        assert "decoding" not in capsys.readouterr().err
    finally:
        pipe.set_progress_bar_config(disable=True)


def test_the_command_loader_hides_the_libraries_loading_bars_and_restores_them(saved, capsys):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from vgt.eval.benchmark import load_sampling_pipeline

    libraries = (transformers_logging, diffusers_logging)
    assert all(lib.is_progress_bar_enabled() for lib in libraries)
    VGTPipeline.from_pretrained(saved)  # the library call keeps diffusers' convention: its bars show
    assert "Loading pipeline components" in capsys.readouterr().err
    load_sampling_pipeline(saved, device="cpu", threads=1)
    assert "Loading" not in capsys.readouterr().err
    assert all(lib.is_progress_bar_enabled() for lib in libraries)


def old_layout(saved, tmp_path):
    """The same model in the layout vgt wrote before the diffusers one (pipeline.json, backbone/, model.safetensors,
    an AE config pointing at ../backbone and holding the training-only noise_gamma)."""
    old = tmp_path / "old"
    (old / "backbone").mkdir(parents=True)
    for folder in (VLM_DIR, TOKENIZER_DIR):
        for f in (saved / folder).iterdir():
            shutil.copy2(f, old / "backbone" / f.name)
    for component in (AE_DIR, GENERATOR_DIR):
        (old / component).mkdir()
        shutil.copy2(saved / component / WEIGHTS_NAME, old / component / "model.safetensors")
        config = {k: v for k, v in json.loads((saved / component / "config.json").read_text()).items()
                  if not k.startswith("_")}
        if component == AE_DIR:
            config = {**{k: v for k, v in config.items() if k != "vision"}, "backbone_path": "../backbone",
                      "noise_gamma": 0.1}
        (old / component / "config.json").write_text(json.dumps(config))
    (old / "pipeline.json").write_text(json.dumps({"format": "vgt-pipeline", "version": 1, "backbone": "internvl"}))
    return old


def test_old_layout_is_refused_with_the_conversion_and_converts_to_the_same_model(pipe, saved, tmp_path):
    from vgt.cli import main

    old = old_layout(saved, tmp_path)
    with pytest.raises(FileNotFoundError, match="vgt convert pipeline"):
        VGTPipeline.from_pretrained(old)
    assert main(["convert", "pipeline", str(old), str(tmp_path / "new")]) == 0
    converted = VGTPipeline.from_pretrained(tmp_path / "new")
    new_weights = tmp_path / "new" / GENERATOR_DIR / WEIGHTS_NAME
    assert new_weights.read_bytes() == (saved / GENERATOR_DIR / WEIGHTS_NAME).read_bytes()  # copied byte for byte
    a = pipe(CAPTION, output_type="latent", generator=torch.Generator().manual_seed(2)).images
    b = converted(CAPTION, output_type="latent", generator=torch.Generator().manual_seed(2)).images
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt=[]), "empty prompt list"),
        (dict(height=30), "not a multiple of the AE stride 8"),
        (dict(height=56, width=56), "larger than this model's 6x6 query grid"),
        (dict(num_inference_steps=0), "num_inference_steps must be >= 1"),
        (dict(num_inference_steps=2.5), "num_inference_steps must be a whole number"),
        (dict(num_inference_steps=1), ">= 2 for the SDE"),
        (dict(sampler="ddim"), "sampler 'ddim' is unknown"),
        (dict(cfg_schedule="cosine"), "cfg_schedule 'cosine' is unknown"),
        (dict(temperature=float("nan")), "temperature must be a finite number"),
        (dict(num_images_per_prompt=0), ">= 1"),
        (dict(order="spiral"), "order 'spiral' is unknown"),
        (dict(output_type="jpeg"), "output_type 'jpeg' is unknown"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(negative_prompt=["x", "y"]), "2 negative prompts for 1 prompts"),
    ],
)
def test_bad_arguments(pipe, kwargs, message):
    kwargs = {"prompt": CAPTION, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


class OnePair(Source):
    """The same (latent, caption) pair forever."""

    def __init__(self, latent: torch.Tensor, caption: str):
        self.latent, self.caption = latent, caption

    def stream(self, part, num_parts, seed, cursor=None, repeat=True):
        i = cursor or 0
        while True:
            i += 1
            yield i, {"latent": self.latent, "caption": self.caption}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4.0 / (a - b).pow(2).mean().item())  # images in [-1, 1]


def overfit_one_pair(tmp_path, steps: int, min_lr: float):
    """Train a tiny pipeline through the engine on one (caption, latent) pair; returns it, the latent and the AE's
    reconstruction of the image (the reference: the AE is random, the point is the generator)."""
    pipe = tiny_pipeline(head_width=64)
    image = -torch.ones(1, 3, 32, 32)
    image[:, 0, 8:24, 8:24] = 1  # a red square on black
    with torch.no_grad():
        latent = pipe.ae.encode(image).latent
        reference = pipe.ae.decode(latent).sample
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), steps=steps, batch_size=8, lr=3e-3, min_lr=min_lr,
                      weight_decay=0.0, log_every=50, save_every=0, resume="never")
    result = train(pipe.generator, ARLoss(pipe.ae), OnePair(latent[0], CAPTION), cfg)
    return pipe, latent, reference, result


def test_training_captions_are_read_as_prompts_and_unknown_words_are_an_error(pipe, tmp_path):
    """A word the tokenizer does not know would train as `<unk>`; a capitalised caption trains as its lower-case
    form, which is what the sampler makes of the same prompt."""
    latent = torch.zeros(1, 8, 4, 4)
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), steps=2, batch_size=2, log_every=1, save_every=0,
                      resume="never")
    with pytest.raises(ValueError, match=r"training caption 'a red hexagon': 'hexagon' not in this model's vocab"):
        train(pipe.generator, ARLoss(), OnePair(latent[0], "a red hexagon"), cfg)
    assert not list((tmp_path / "run").glob("checkpoints/*"))
    batch = {"caption": ["A Red Circle", None, "", "a blue square"]}
    assert ARLoss.captions(pipe.generator, batch) == ["a red circle", None, "", "a blue square"]


def regenerate(pipe, **kwargs) -> torch.Tensor:
    return pipe(CAPTION, output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs).images


def test_tiny_model_overfits_one_pair_and_regenerates_it(tmp_path):
    """100 engine steps on one caption-latent pair, then the pipeline regenerates it (Euler ODE, no guidance).

    Reference: the AE's reconstruction of the image; a random latent decodes at ~17 dB from it.
    Bar: >= 25 dB and latent MSE <= 0.01 (measured on CPU: 27.8 dB, MSE 0.0027)."""
    pipe, latent, reference, result = overfit_one_pair(tmp_path, steps=100, min_lr=1e-3)
    assert result.metrics["loss"] < 0.1
    out = regenerate(pipe, sampler="euler", num_inference_steps=20, guidance_scale=1.0)
    assert (out - latent).pow(2).mean() <= 0.01
    with torch.no_grad():
        regenerated = pipe.ae.decode(out).sample
        baseline = pipe.ae.decode(pipe.ae.normalize_latents(torch.randn(latent.shape))).sample
    assert psnr(regenerated, reference) >= 25.0
    assert psnr(regenerated, reference) > psnr(baseline, reference) + 5


@pytest.mark.slow
def test_tiny_model_overfits_one_pair_with_every_sampler(tmp_path):
    """400 steps; measured on CPU: Euler 51.8 dB, SDE + CFG 3 28.5 dB (k=1) / 28.4 dB (k=4), Heun with all 16
    positions in one step 28.9 dB. The SDE keeps some of its injected noise, hence the lower bar."""
    pipe, latent, reference, _ = overfit_one_pair(tmp_path, steps=400, min_lr=1e-4)
    bars = [(dict(sampler="euler", num_inference_steps=20, guidance_scale=1.0), 40.0),
            (dict(sampler="sde", num_inference_steps=30, guidance_scale=3.0), 25.0),
            (dict(sampler="sde", num_inference_steps=30, guidance_scale=3.0, tokens_per_step=4), 25.0),
            (dict(sampler="heun", num_inference_steps=10, guidance_scale=1.0, tokens_per_step=16), 25.0)]
    for kwargs, bar in bars:
        with torch.no_grad():
            regenerated = pipe.ae.decode(regenerate(pipe, **kwargs)).sample
        assert psnr(regenerated, reference) >= bar, kwargs


def test_saved_default_temperature_is_used_and_an_argument_overrides_it(pipe):
    def latents(seed, **kwargs):
        return pipe("a red circle", output_type="latent", order="raster", num_inference_steps=3,
                    generator=torch.Generator().manual_seed(seed), **kwargs).images

    saved_temperature = pipe.generator.config.sampling.temperature
    try:
        pipe.generator.config.sampling.temperature = 0.0  # no head noise: in raster order the seed no longer matters
        assert torch.equal(latents(1), latents(2))
        assert not torch.allclose(latents(1, temperature=1.0), latents(2, temperature=1.0))
    finally:
        pipe.generator.config.sampling.temperature = saved_temperature


def test_model_cpu_offload_keeps_the_images():
    """diffusers' offload hooks VGTForGeneration.generate and the AE's decode (here onto the CPU itself, the only
    device a CPU test has: the hooks run, the numbers must not change)."""
    pipe = tiny_pipeline()
    before = pipe(CAPTION, output_type="np", generator=torch.Generator().manual_seed(0)).images
    pipe.enable_model_cpu_offload(device="cpu")
    after = pipe(CAPTION, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert np.array_equal(before, after)
