"""The small VLM: its offline tokenizer, the captioning objective, greedy captioning, the understanding metric, and
a quick pretraining run through the training engine and the CLI."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from vgt.backbones import load_backbone
from vgt.backbones.base import GENERATION_INSTRUCTION
from vgt.cli import main
from vgt.data.shapes import vocabulary_words
from vgt.data.shapes_world import ShapesWorld
from vgt.images import to_tensor
from vgt.presets import SMALL_VLM_PRESETS, train_preset
from vgt.vlm.model import (
    CHAT_TEMPLATE,
    SmallVLMBackbone,
    build_small_vlm,
    shapes_tokenizer,
    tiny_internvl_backbone,
)
from vgt.vlm.pretrain import train_small_vlm
from vgt.vlm.understanding import (
    IGNORE,
    CaptioningModel,
    caption_batch,
    embed_with_images,
    evaluate_understanding,
    greedy_answer_ids,
    locations_near,
    scene_matches_within_tolerance,
    understanding_prompt_ids,
)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(resolution=32, seed=3, tasks=("scene",))


def test_tokenizer_round_trips_every_caption(world, tmp_path):
    tokenizer = shapes_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for i in range(50):
        caption = world.sample(i).caption
        for tok in (tokenizer, reloaded):
            ids = tok(caption, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == caption
    assert all(tokenizer.convert_tokens_to_ids(w) != tokenizer.unk_token_id for w in vocabulary_words())
    assert reloaded.chat_template == CHAT_TEMPLATE
    assert reloaded.get_vocab() == tokenizer.get_vocab()


def test_chat_template_round_trip(world):
    tokenizer = shapes_tokenizer()
    caption = world.sample(0).caption
    messages = [{"role": "user", "content": GENERATION_INSTRUCTION.format(caption=caption)},
                {"role": "assistant", "content": caption}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (f"<|im_start|>user\nGenerate an image: {caption}<|im_end|>\n"
                    f"<|im_start|>assistant\n{caption}<|im_end|>\n")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.replace("<|im_start|>", "").replace(
        "<|im_end|>", "")
    parts = [{"role": "user", "content": [{"type": "text", "text": "Generate an image."}]}]
    assert tokenizer.apply_chat_template(parts, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nGenerate an image.<|im_end|>\n<|im_start|>assistant\n")


def test_unknown_words_become_unk_and_captions_refuse_them():
    backbone = tiny_internvl_backbone(words=["red circle"])
    ids = backbone.tokenizer("a zebra", add_special_tokens=False)["input_ids"]
    assert backbone.tokenizer.unk_token_id in ids
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        caption_batch(backbone, ["a zebra"], num_image_tokens=4)


def test_small_vlm_is_seeded_and_starts_with_position_codes():
    a, b, c = (build_small_vlm(SMALL_VLM_PRESETS["toy"], seed=s) for s in (0, 0, 1))
    state_a, state_b, state_c = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a)
    codes = a.model.model.vision_tower.embeddings.position_embeddings[0, 1:]
    assert codes.shape[0] == (32 // 4) ** 2 and len({tuple(row.tolist()) for row in codes}) == codes.shape[0]
    assert a.vision.stride == 8 and a.vision.image_size == 32
    assert build_small_vlm(SMALL_VLM_PRESETS["small"]).vision.grid_size(128, 128) == (8, 8)


def test_caption_batch_labels_only_the_answer(world):
    backbone = build_small_vlm(SMALL_VLM_PRESETS["toy"])
    captions = [world.sample(i).caption for i in range(3)]
    batch = caption_batch(backbone, captions, num_image_tokens=16)
    prompt = understanding_prompt_ids(backbone, 16)
    tok = backbone.tokenizer
    assert prompt.count(backbone.model.config.image_token_id) == 16
    for row, caption in enumerate(captions):
        labels = batch["labels"][row]
        answer = labels[labels != IGNORE].tolist()
        assert tok.decode(answer) == caption + "<|im_end|>"
        assert batch["input_ids"][row, : len(prompt)].tolist() == prompt
        assert (labels[: len(prompt)] == IGNORE).all()
        assert batch["attention_mask"][row].sum() == len(prompt) + len(answer)


def test_greedy_decoding_with_cache_matches_uncached_argmax(world):
    """At every step the cached greedy decoder picks the argmax of an uncached forward over the same sequence."""
    backbone = build_small_vlm(SMALL_VLM_PRESETS["toy"], seed=1)
    images = torch.stack([to_tensor(world.sample(i).image) for i in range(2)])
    with torch.no_grad():
        answers = greedy_answer_ids(backbone, images, max_new_tokens=6)
        assert answers.shape == (2, 6)
        prompt = torch.tensor([understanding_prompt_ids(backbone, 16)] * 2)
        ids = torch.cat([prompt, answers], dim=1)
        hidden = backbone.text(embed_with_images(backbone, ids, backbone.vision(images))).last_hidden_state
        argmax = backbone.lm_head(hidden).argmax(-1)[:, prompt.shape[1] - 1 : -1]
    eos = backbone.tokenizer.eos_token_id
    for row in range(2):  # compare up to and including the first end of turn
        stop = answers[row].tolist().index(eos) + 1 if eos in answers[row] else answers.shape[1]
        assert torch.equal(argmax[row, :stop], answers[row, :stop])


def test_understanding_metric_scores_parsed_scenes(monkeypatch):
    """The metric compares parsed captions with the true scenes: perfect captions score 1, wrong ones 0."""
    import vgt.vlm.understanding as understanding

    backbone = build_small_vlm(SMALL_VLM_PRESETS["toy"])
    world = ShapesWorld(resolution=32, seed=understanding.EVAL_WORLD_SEED, tasks=("scene",))
    truth = [world.sample(i).caption for i in range(6)]
    served = iter([truth[:3], truth[3:]])
    monkeypatch.setattr(understanding, "generate_captions", lambda *a, **k: next(served))
    metrics = evaluate_understanding(backbone, num_images=6, batch_size=3, progress=False)
    assert metrics["exact"] == metrics["exact_tol"] == metrics["colors"] == metrics["locations"] == 1.0
    assert metrics["num_images"] == 6
    assert metrics["examples"][0]["truth"] == metrics["examples"][0]["generated"] == truth[0]
    wrong = [t.replace("circle", "square").replace("triangle", "square") for t in truth]
    served = iter([wrong[:3], wrong[3:]])
    metrics = evaluate_understanding(backbone, num_images=6, batch_size=3, progress=False)
    expected_exact = sum(w == t for w, t in zip(wrong, truth, strict=True)) / 6
    assert metrics["exact"] == expected_exact < 1.0
    assert metrics["colors"] == 1.0 and metrics["parsed"] == 1.0


def test_location_tolerance_only_forgives_borderline_locations():
    from vgt.data.shapes import Scene, ShapeObject

    scene = Scene((ShapeObject("circle", "red", (0.335, 0.5), 0.2), ShapeObject("square", "blue", (0.85, 0.15), 0.2)))
    exact = "a red circle at the center and a blue square at the top right"
    neighbour = "a red circle at the left and a blue square at the top right"
    assert scene_matches_within_tolerance(scene, exact) and scene_matches_within_tolerance(scene, neighbour)
    assert not scene_matches_within_tolerance(scene, neighbour, tolerance=0.0)
    assert not scene_matches_within_tolerance(scene, "a red circle at the center and a blue square at the top")
    assert not scene_matches_within_tolerance(scene, "a red square at the center and a blue circle at the top right")
    assert not scene_matches_within_tolerance(scene, "a red circle at the center")
    assert scene_matches_within_tolerance(scene, "a blue square at the top right and a red circle at the left")
    assert locations_near((0.5, 0.5), 1 / 64) == {"center"}


def test_understanding_needs_an_internvl_backbone():
    from vgt.vlm.model import tiny_qwen2_5_vl_backbone

    with pytest.raises(TypeError, match="InternVL-architecture backbone"):
        CaptioningModel(tiny_qwen2_5_vl_backbone())


def test_quick_pretraining_loss_falls_and_exports(tmp_path):
    cfg = train_preset("vlm-toy", steps=16, run_dir=str(tmp_path / "run"), save_every=16)
    result = train_small_vlm("toy", cfg, eval_images=0)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < 0.75 * losses[0]
    backbone = load_backbone("auto", result["model"])
    assert isinstance(backbone, SmallVLMBackbone)
    assert backbone.vision.image_size == SMALL_VLM_PRESETS["toy"].image_size


def test_cli_train_caption_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "vlm", "--vlm-preset", "toy", "--run-dir", str(run), "--max-steps", "4", "--eval-images", "4",
                 "--eval-every", "4", "--log-every", "2"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("understanding/exact" in r for r in records)
    # resuming a finished run with more steps continues from its checkpoint
    assert main(["train", "vlm", "--vlm-preset", "toy", "--run-dir", str(run), "--max-steps", "6", "--eval-images",
                 "0"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    image = tmp_path / "scene.png"
    ShapesWorld(resolution=32, seed=5, tasks=("scene",)).sample(0).image.save(image)
    capsys.readouterr()
    assert main(["caption", str(image), "--model", str(run / "model"), "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() != ""
    report = tmp_path / "understanding.json"
    assert main(["eval", "understanding", "--model", str(run / "model"), "--num-images", "4", "--batch-size", "2",
                 "--out", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["num_images"] == 4 and 0.0 <= data["exact"] <= 1.0
    assert "exact:" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["caption", str(tmp_path / "missing.png"), "--model", str(run / "model")])
