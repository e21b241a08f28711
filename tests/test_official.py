"""`vgt convert official` on tiny checkpoints in the authors' released format (tests/fixtures/official, made by
tools/reference/make_fixtures.py from weights made here): every rule and refusal, and parity with the outputs
of the authors' own code on those checkpoints (fp32; tolerances from each fixture's reference.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vgt.ae.model import VGTAutoencoder
from vgt.ar.sampling import generate_latents
from vgt.cli import main
from vgt.official import ConversionError, convert_official
from vgt.pipeline import VGTPipeline

FIXTURES = Path(__file__).parent / "fixtures" / "official"
AE_FILES = {"internvl": "vgt_ae_internvl3.pth", "qwen": "vgt_ae_qwen25vl.pth"}
PATHS = ("internvl", "qwen")


def fixture(path: str, name: str) -> Path:
    return FIXTURES / path / name


def reference(path: str) -> dict:
    return json.loads(fixture(path, "reference.json").read_text())


def convert(tmp_path: Path, path: str, ar: Path | None = None, ae: Path | None = None, **kwargs):
    return convert_official(tmp_path / "out", fixture(path, "base_vlm"), ar=ar, ae=ae,
                            dcae_config=fixture(path, "dcae_config.json"), **kwargs)


@pytest.fixture(scope="module", params=PATHS)
def converted(request, tmp_path_factory) -> tuple[str, VGTPipeline]:
    path = request.param
    out = tmp_path_factory.mktemp(path) / "pipeline"
    assert main(["convert", "official", "--ar", str(fixture(path, "iter_5.pth")), "--vlm",
                 str(fixture(path, "base_vlm")), "--dcae-config", str(fixture(path, "dcae_config.json")),
                 "--out", str(out)]) == 0
    assert main(["generate", "a red cube", "--model", str(out), "--size", "56", "--num-inference-steps", "2",
                 "--out", str(out.parent / "image.png")]) == 0  # the CLI loads it strictly too
    assert (out.parent / "image.png").is_file()
    return path, VGTPipeline.from_pretrained(out)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---- parity with the authors' implementation ------------------------------------------------------------------


def test_ae_latents_and_pixels_match_the_authors_code(converted):
    path, pipe = converted
    ref, tol = load_file(fixture(path, "reference_ae.safetensors")), reference(path)["tolerances"]
    with torch.no_grad():
        assert max_error(pipe.ae.encode(ref["images"]).latent, ref["latents"]) < tol["ae_latents_atol"]
        assert max_error(pipe.ae.decode(ref["latents"]).sample, ref["decoded"]) < tol["ae_decoded_atol"]


def test_teacher_forced_head_velocities_match_the_authors_code(converted):
    path, pipe = converted
    ref, settings = load_file(fixture(path, "reference_ar.safetensors")), reference(path)
    tol, captions = settings["tolerances"], [settings["teacher_forced"]["caption"], None]
    prompts = pipe.generator.prompts(captions)  # their template, no system turn, right-padded
    assert torch.equal(prompts["input_ids"], ref["input_ids"])
    assert torch.equal(prompts["attention_mask"], ref["attention_mask"])
    order = ref["order"].long()
    with torch.no_grad():
        states = pipe.generator.teacher_forced_query_states(ref["latents"], captions, order.expand(2, -1))
        states = states[:, order.argsort()]  # generation order -> raster, as their head call
        assert max_error(states, ref["query_states"]) < tol["query_states_atol"]
        velocity = pipe.generator.velocity(ref["x_t"], ref["t"], states)
    assert max_error(velocity, ref["velocity"]) < tol["velocity_atol"]


def generate_as_reference(pipe: VGTPipeline, path: str) -> torch.Tensor:
    ref, gen = load_file(fixture(path, "reference_generate.safetensors")), reference(path)["generate"]
    grid = (gen["height"] // pipe.ae.stride, gen["width"] // pipe.ae.stride)
    with torch.no_grad():
        return generate_latents(pipe.generator, [gen["caption"]], grid, guidance_scale=gen["cfg_scale"],
                                cfg_schedule=gen["cfg_schedule"], num_inference_steps=gen["num_steps"],
                                orders=ref["order"].long()[None], noise=ref["noise"]).latents


def test_whole_generation_with_the_fed_noise_matches_the_authors_code(converted):
    path, pipe = converted
    ref, settings = load_file(fixture(path, "reference_generate.safetensors")), reference(path)
    gen, tol = settings["generate"], settings["tolerances"]
    assert pipe.generator.config.image_start_ids == gen["image_start_ids"]
    assert torch.equal(pipe.generator.prompts([gen["caption"], None])["input_ids"], ref["input_ids"])
    latents = generate_as_reference(pipe, path)
    with torch.no_grad():
        images = pipe.ae.decode(latents).sample
    assert max_error(latents, ref["latents"]) < tol["generate_latents_atol"]
    assert max_error(images, ref["images"]) < tol["generate_images_atol"]


def test_converted_pipeline_generates_reproducibly(converted):
    _, pipe = converted
    run = lambda: pipe("a red cube", height=56, width=56, num_inference_steps=3, output_type="pt",  # noqa: E731
                       generator=torch.Generator().manual_seed(0)).images
    first = run()
    assert first.shape == (1, 3, 56, 56) and torch.equal(first, run())
    # with no size given, a model whose query grid is smaller than the released 16x16 uses its largest grid
    grid = pipe.generator.config.max_grid
    assert pipe.generator.config.sampling.grid_size == min(16, grid)
    default = pipe("a red cube", num_inference_steps=2, output_type="pt").images
    assert default.shape[-1] == min(16, grid) * pipe.ae.stride


def test_qwen_positions_after_the_first_step_follow_the_authors_loop(converted):
    path, pipe = converted
    if path != "qwen":
        assert pipe.generator.config.decode_position_offset == 0
        return
    assert pipe.generator.config.decode_position_offset == -2  # 3 `<img>` slots
    ref = load_file(fixture(path, "reference_generate.safetensors"))
    pipe.generator.config.decode_position_offset = 0  # training positions: no longer what their loop computes
    try:
        assert max_error(generate_as_reference(pipe, path), ref["latents"]) > 1e-2
    finally:
        pipe.generator.config.decode_position_offset = -2


# ---- rules and report -----------------------------------------------------------------------------------------


def load_pth(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_every_source_key_is_accounted_for(tmp_path):
    result = convert(tmp_path, "qwen", ar=fixture("qwen", "iter_5.pth"))
    source = load_pth(fixture("qwen", "iter_5.pth"))["ema_state_dict"]
    report = result.report
    accounted = sum(report.count(a) for a in ("kept", "renamed", "split", "dropped"))
    assert accounted == len(source) and report.count("refused") == 0
    assert {"llm-duplicate", "ema-steps"} <= report.rules_used("dropped")
    assert "ae-decoder" in report.rules_used("kept")
    formatted = report.format()
    assert "layer_ratio 0.5" in formatted and "identical duplicate" in formatted


def test_qkv_split_round_trips_and_grids_lose_their_batch_dim(tmp_path):
    result = convert(tmp_path, "internvl", ar=fixture("internvl", "iter_5.pth"))
    assert "vit-qkv" in result.report.rules_used("split")
    source = {k.removeprefix("module."): v.float() for k, v in
              load_pth(fixture("internvl", "iter_5.pth"))["ema_state_dict"].items()}
    pipe = VGTPipeline.from_pretrained(result.out)
    ae = pipe.ae.state_dict()
    qkv = torch.cat([ae[f"vision.vision_tower.encoder.layer.0.attention.{n}_proj.weight"] for n in "qkv"])
    assert torch.equal(qkv, source["vgt_ae.encoder.encoder.layers.0.attn.qkv.weight"])
    assert torch.equal(pipe.generator.queries.query_grid, source["adaptive_metaquery.max_metaquery"][0])


def test_weights_choice_picks_the_documented_dict(tmp_path):
    data = load_pth(fixture("internvl", "iter_5.pth"))
    key = "module.image_out_projector.weight"
    for choice, container in (("as-official", "ema_state_dict"), ("ema", "state_dict")):
        result = convert(tmp_path / choice, "internvl", ar=fixture("internvl", "iter_5.pth"), weights=choice)
        weight = VGTPipeline.from_pretrained(result.out).generator.image_out_projector.weight
        assert torch.equal(weight, data[container][key].float())
    assert not torch.equal(data["state_dict"][key], data["ema_state_dict"][key])


def test_ae_file_alone_gives_an_ae_folder_and_replaces_the_embedded_one(tmp_path):
    result = convert(tmp_path / "ae", "internvl", ae=fixture("internvl", AE_FILES["internvl"]))
    ae = VGTAutoencoder.from_pretrained(result.out)
    ref = load_file(fixture("internvl", "reference_ae.safetensors"))
    with torch.no_grad():
        assert max_error(ae.encode(ref["images"]).latent, ref["latents"]) < 1e-4
    both = convert(tmp_path / "both", "internvl", ar=fixture("internvl", "iter_5.pth"),
                   ae=fixture("internvl", AE_FILES["internvl"]))
    assert "ar-embedded-ae" in both.report.rules_used("dropped")


def test_plain_channels_last_file_is_read(tmp_path):
    state = load_pth(fixture("qwen", AE_FILES["qwen"]))
    state = state.get("state_dict", state)
    state = {k: v.to(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in state.items()}
    torch.save(state, tmp_path / "ae.pth")
    result = convert(tmp_path, "qwen", ae=tmp_path / "ae.pth")
    ae = VGTAutoencoder.from_pretrained(result.out)
    name = next(k for k, v in state.items() if v.dim() == 4)
    assert torch.equal(ae.state_dict()[name], state[name].float().contiguous())


# ---- refusals ---------------------------------------------------------------------------------------------------


def edited_ar(tmp_path: Path, path: str, edit) -> Path:
    data = load_pth(fixture(path, "iter_5.pth"))
    for name in ("state_dict", "ema_state_dict"):
        edit(data[name])
    out = tmp_path / "edited.pth"
    torch.save(data, out)
    return out


def test_unknown_keys_are_refused(tmp_path):
    ar = edited_ar(tmp_path, "internvl", lambda s: s.__setitem__("module.image_head.net.extra.weight",
                                                                torch.zeros(2)))
    with pytest.raises(ConversionError, match="match no conversion rule: image_head.net.extra.weight"):
        convert(tmp_path, "internvl", ar=ar)
    assert not (tmp_path / "out").exists()


def test_kl_ae_is_refused(tmp_path):
    def widen(state):  # the `kl: True` recipe: down_mlp emits mean and log-variance, 2 x 32 channels
        for name in ("1.weight", "1.bias", "3.bias"):
            t = state[f"module.vgt_ae.down_mlp.{name}"]
            state[f"module.vgt_ae.down_mlp.{name}"] = torch.cat([t, t])
        t = state["module.vgt_ae.down_mlp.3.weight"]
        state["module.vgt_ae.down_mlp.3.weight"] = torch.zeros(2 * t.shape[0], 2 * t.shape[1], dtype=t.dtype)
    with pytest.raises(ConversionError, match="kl: True"):
        convert(tmp_path, "internvl", ar=edited_ar(tmp_path, "internvl", widen))


def test_differing_qwen_duplicates_are_refused(tmp_path):
    def perturb(state):
        key = "module.lmm.language_model.norm.weight"
        state[key] = state[key] + 1
    with pytest.raises(ConversionError, match="two copies of the language model"):
        convert(tmp_path, "qwen", ar=edited_ar(tmp_path, "qwen", perturb))


def test_layer_count_inconsistencies_are_refused(tmp_path):
    ar = fixture("qwen", "iter_5.pth")
    with pytest.raises(ConversionError, match="--num-layers 4 but the checkpoint holds 2"):
        convert(tmp_path, "qwen", ar=ar, num_layers=4)

    def extra_layer(state):
        for key in [k for k in state if ".layers.1." in k and "language_model" in k]:
            state[key.replace(".layers.1.", ".layers.2.")] = state[key].clone()
    with pytest.raises(ConversionError, match="holds 3 language-model layers but the VLM folder's model has only 2"):
        convert(tmp_path, "internvl", ar=edited_ar(tmp_path, "internvl", extra_layer))

    def drop_layer(state):
        for key in [k for k in state if ".layers.0." in k and "language_model" in k]:
            del state[key]
    with pytest.raises(ConversionError, match=r"lacks layers \[0\]"):
        convert(tmp_path, "internvl", ar=edited_ar(tmp_path, "internvl", drop_layer))


def test_other_mistakes_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConversionError, match="is a internvl model but the VLM folder holds a qwen2_5_vl"):
        convert_official(tmp_path / "out", fixture("qwen", "base_vlm"), ar=fixture("internvl", "iter_5.pth"),
                         dcae_config=fixture("internvl", "dcae_config.json"))
    with pytest.raises(ConversionError, match="--weights ema needs a checkpoint saved with EMA"):
        convert(tmp_path, "qwen", ae=fixture("qwen", AE_FILES["qwen"]), weights="ema")
    with pytest.raises(ConversionError, match="nothing to convert"):
        convert(tmp_path, "qwen")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert(tmp_path, "qwen", ae=fixture("qwen", AE_FILES["qwen"]))
    assert (tmp_path / "out" / "x").exists()
    # --overwrite replaces a folder vgt did not write (checked before the work, honoured by the save)
    convert(tmp_path, "qwen", ae=fixture("qwen", AE_FILES["qwen"]), overwrite=True)
    assert not (tmp_path / "out" / "x").exists() and (tmp_path / "out" / "config.json").exists()
    # a target that holds a source is refused even with --overwrite
    vlm = tmp_path / "models" / "base_vlm"
    shutil.copytree(fixture("qwen", "base_vlm"), vlm)
    with pytest.raises(ValueError, match="overlaps"):
        convert_official(vlm.parent, vlm, ae=fixture("qwen", AE_FILES["qwen"]), overwrite=True)
    assert (vlm / "config.json").exists()
