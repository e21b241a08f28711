"""Backbone adapters on tiny random configs of the real HF classes (CPU, offline)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vgt.backbones import load_backbone
from vgt.backbones.base import GENERATION_INSTRUCTION, UNCONDITIONAL_INSTRUCTION
from vgt.testing import tiny_internvl_backbone, tiny_qwen2_5_vl_backbone
from vgt.vlm.model import SmallVLMBackbone

CAPTION = "a red circle left of a blue square"


def random_images(batch, height, width, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name", ["internvl", "qwen2_5_vl"])
def test_prompts_are_each_prompt_s_own_ids_then_pads(name):
    """The tokenizer's own right padding: row i is prompt i tokenized alone (no added special tokens), then pads."""
    backbone = BUILDERS[name]()
    captions = [CAPTION, None, "a red circle"]
    batch = backbone.generation_prompts(captions)
    tokenizer = backbone.tokenizer
    for row, caption in enumerate(captions):
        text = backbone.chat_prompt(UNCONDITIONAL_INSTRUCTION if caption is None
                                    else GENERATION_INSTRUCTION.format(caption=caption))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids and batch["attention_mask"][row, :n].all()
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert not batch["attention_mask"][row, n:].any()
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long


def tiny_small_vlm(image_size=32, seed=0):
    """The "tiny" backbone class (the small VLM's architecture) with a test-sized random config."""
    backbone = tiny_internvl_backbone(image_size=image_size, seed=seed, words=[CAPTION])
    return SmallVLMBackbone(backbone.model, backbone.tokenizer)


BUILDERS = {
    "internvl": lambda: tiny_internvl_backbone(image_size=32, words=[CAPTION]),
    "qwen2_5_vl": lambda: tiny_qwen2_5_vl_backbone(words=[CAPTION]),
    "tiny": tiny_small_vlm,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def backbone(request):
    return BUILDERS[request.param]()


@pytest.mark.parametrize("height,width", [(32, 32), (48, 64)])
def test_feature_shapes_and_stride(backbone, height, width):
    vision = backbone.vision
    assert vision.stride == 8
    h, w = vision.grid_size(height, width)
    with torch.no_grad():
        tokens = vision(random_images(2, height, width))
    assert tokens.shape == (2, h * w, vision.out_dim)
    assert vision.out_dim == backbone.text.hidden_size
    assert torch.isfinite(tokens).all()


def test_internvl_tokens_match_hf_image_features():
    """Our path (last layer, CLS dropped, pixel shuffle, projector) is exactly HF's `get_image_features`."""
    backbone = tiny_internvl_backbone(image_size=32)
    images = random_images(2, 32, 32)
    assert backbone.model.config.vision_feature_layer == -1  # HF then uses the last layer's output
    pixels = ((images + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = backbone.vision(images)
        theirs = backbone.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_qwen_tokens_match_hf_processor_and_image_features():
    """Our patch ordering equals the HF Qwen2-VL image processor's; features equal HF `get_image_features`."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    backbone = tiny_qwen2_5_vl_backbone()
    array = np.random.default_rng(0).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2, do_resize=False)
    inputs = processor(images=[Image.fromarray(array)], return_tensors="pt")
    images = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ours = backbone.vision(images)
        theirs = backbone.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]
        ).pooler_output[0]
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 12]]
    torch.testing.assert_close(ours[0], theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "build",
    [
        # no ViT layers: every token sees only its own 2x2 patches
        lambda: tiny_internvl_backbone(image_size=32, vision_layers=0),
        # windows of one merged token and no full-attention layer: same locality through Qwen's window permutation
        lambda: tiny_qwen2_5_vl_backbone(window_tokens=1, vision_layers=2, full_attention_layers=()),
    ],
    ids=["internvl", "qwen2_5_vl"],
)
def test_tokens_come_out_in_raster_order(build):
    backbone = build()
    height, width = 48, 64  # 6 x 8 token grid, not square
    images = random_images(1, height, width)
    row, col = 4, 5
    changed = images.clone()
    changed[:, :, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8] *= -1
    with torch.no_grad():
        delta = (backbone.vision(changed) - backbone.vision(images)).abs().amax(-1)[0]
    assert delta.argmax().item() == row * 8 + col
    assert (delta > 1e-6).sum().item() == 1


def test_vision_and_text_share_parameters_with_the_hf_model(backbone):
    hf_params = {p.data_ptr() for p in backbone.model.parameters()}
    assert {p.data_ptr() for p in backbone.vision.parameters()} <= hf_params
    assert {p.data_ptr() for p in backbone.text.parameters()} <= hf_params
    assert backbone.text.language_model is backbone.model.model.language_model


def test_each_weight_appears_once_under_model(backbone):
    keys = list(backbone.state_dict())
    assert keys and all(k.startswith("model.") for k in keys)
    assert sum(p.numel() for p in backbone.parameters()) == sum(p.numel() for p in backbone.model.parameters())


def test_dtype_conversion_reaches_the_views():
    backbone = tiny_internvl_backbone(image_size=32).to(torch.bfloat16)
    with torch.no_grad():
        assert backbone.vision(random_images(1, 32, 32)).dtype == torch.bfloat16
        prompts = backbone.generation_prompts([CAPTION])
        assert backbone.text(backbone.text.embed_tokens(prompts["input_ids"])).last_hidden_state.dtype == (
            torch.bfloat16)


def cached_and_uncached(backbone):
    """Hidden states of prompt + continuation in one pass, and with the prompt cached first."""
    prompts = backbone.generation_prompts([CAPTION, None])
    embeds = backbone.text.embed_tokens(prompts["input_ids"])
    extra = torch.randn(2, 5, backbone.text.hidden_size, generator=torch.Generator().manual_seed(1))
    mask = torch.cat([prompts["attention_mask"], torch.ones(2, 5, dtype=torch.long)], dim=1)
    positions = mask.cumsum(1) - 1  # pads take no positions
    length = embeds.shape[1]
    with torch.no_grad():
        full = backbone.text(torch.cat([embeds, extra], 1), mask, positions).last_hidden_state
        first = backbone.text(embeds, prompts["attention_mask"], positions[:, :length], use_cache=True)
        assert first.past_key_values is not None
        second = backbone.text(extra, mask, positions[:, length:], past_key_values=first.past_key_values,
                               use_cache=True)
    return full, first.last_hidden_state, second.last_hidden_state, prompts["attention_mask"].bool()


def test_kv_cache_gives_the_same_hidden_states(backbone):
    full, first, second, prompt_mask = cached_and_uncached(backbone)
    length = first.shape[1]
    torch.testing.assert_close(full[:, length:], second, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(full[:, :length][prompt_mask], first[prompt_mask], rtol=1e-4, atol=1e-5)


def test_qwen_text_positions_broadcast_to_all_mrope_sections():
    backbone = tiny_qwen2_5_vl_backbone()
    positions = torch.tensor([[0, 1, 2, 3], [0, 1, 1, 2]])
    expanded = backbone.text.prepare_position_ids(positions)
    assert expanded.shape == (3, 2, 4)
    assert all(torch.equal(expanded[i], positions) for i in range(3))


def test_generation_prompts_use_the_chat_template(backbone):
    prompts = backbone.generation_prompts([CAPTION, None])
    ids, mask = prompts["input_ids"], prompts["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    texts = [backbone.tokenizer.decode(row[m.bool()]) for row, m in zip(ids, mask, strict=True)]
    assert texts[0] == (f"<|im_start|>user\n{GENERATION_INSTRUCTION.format(caption=CAPTION)}<|im_end|>\n"
                        "<|im_start|>assistant\n")
    assert texts[1] == f"<|im_start|>user\n{UNCONDITIONAL_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    # right padding: every row is ones then zeros
    assert torch.equal(mask, mask.sort(dim=1, descending=True).values)
    assert mask[1].sum() < mask[0].sum()
    assert backbone.tokenizer.unk_token_id not in ids[mask.bool()].tolist()
    assert backbone.tokenizer.convert_ids_to_tokens(backbone.image_start_token_id) == backbone.image_start_token


def test_save_load_round_trip(backbone, tmp_path):
    target = tmp_path / "model"
    backbone.save_pretrained(target)
    assert json.loads((target / "vgt_backbone.json").read_text())["backbone"] == backbone.name
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left behind
    loaded = load_backbone(backbone.name, target)
    assert type(loaded) is type(backbone)
    assert type(load_backbone("auto", target)) is type(backbone)
    images = random_images(1, 32, 32)
    prompts = backbone.generation_prompts([CAPTION])
    with torch.no_grad():
        torch.testing.assert_close(loaded.vision(images), backbone.vision(images), rtol=0, atol=0)
        a = loaded.text(loaded.text.embed_tokens(prompts["input_ids"])).last_hidden_state
        b = backbone.text(backbone.text.embed_tokens(prompts["input_ids"])).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(loaded.generation_prompts([CAPTION])["input_ids"], prompts["input_ids"])
    assert loaded.vision.image_size == backbone.vision.image_size
    backbone.save_pretrained(target)  # overwriting an existing folder also works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_tuning_the_view_changes_what_is_saved(tmp_path):
    backbone = tiny_internvl_backbone(image_size=32)
    with torch.no_grad():
        backbone.vision.projector.linear_2.bias.add_(1.0)
    backbone.save_pretrained(tmp_path / "m")
    loaded = load_backbone("internvl", tmp_path / "m")
    torch.testing.assert_close(loaded.vision.projector.linear_2.bias, backbone.vision.projector.linear_2.bias)


def test_seeded_construction_is_reproducible():
    a, b, c = (tiny_internvl_backbone(seed=s) for s in (0, 0, 1))
    state_a, state_b, state_c = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a)


def test_clear_errors(tmp_path):
    backbone = tiny_internvl_backbone(image_size=32)
    with pytest.raises(ValueError, match="not a multiple of the encoder stride 8"):
        backbone.vision(random_images(1, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        backbone.vision(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="unknown backbone 'llava'.*internvl.*qwen2_5_vl.*tiny"):
        load_backbone("llava", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone("internvl", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backbone("internvl", tmp_path)
    tiny_qwen2_5_vl_backbone().save_pretrained(tmp_path / "qwen")
    with pytest.raises(ValueError, match="holds a 'qwen2_5_vl' model, not 'internvl'"):
        load_backbone("internvl", tmp_path / "qwen")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="'llava' model, which no vgt backbone supports"):
        load_backbone("auto", tmp_path / "other")


def test_missing_weights_fail_loudly(tmp_path):
    tiny_internvl_backbone(image_size=32).save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    dropped = next(k for k in weights if "multi_modal_projector.linear_1.weight" in k)
    del weights[dropped]
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing_keys.*multi_modal_projector.linear_1.weight"):
        load_backbone("internvl", tmp_path / "m")
