"""Image understanding with an InternVL-architecture VLM: the captioning objective, greedy captioning and the
ShapesWorld understanding metric.

The VLM sees one chat turn "<img><IMG_CONTEXT> x N</img>\\nDescribe the image." whose N image placeholders are
replaced by the visual tokens of `backbone.vision` (exactly VGT's encoder path), and answers with the full scene
caption. The metric decodes captions greedily and parses them back into scenes: exact-scene accuracy (every
object's colour, shape and location right, nothing missing or extra) and per-attribute accuracy. Passing another
vision encoder (e.g. a tuned VGT-AE encoder) measures how much understanding it kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vgt.backbones.base import VisionEncoder
from vgt.backbones.internvl import InternVLBackbone
from vgt.vlm.model import DESCRIBE_INSTRUCTION, IMAGE_END, IMAGE_START

IGNORE = -100
#: world seed of the held-out evaluation scenes (training streams use other seeds)
EVAL_WORLD_SEED = 1_000_003
METRIC_KEYS = ("exact", "parsed", "count", "shapes", "colors", "locations", "exact_tol")
#: default location tolerance of `exact_tol`, as a fraction of the image side (2 px at 128 px)
LOCATION_TOLERANCE = 1 / 64


def locations_near(center: tuple[float, float], tolerance: float) -> set[str]:
    """Location words of every 3x3 cell within `tolerance` of a center (one word unless it is near a border)."""
    from vgt.data.shapes import LOCATIONS

    def cells(v: float) -> set[int]:
        return {min(max(int((v + d) * 3), 0), 2) for d in (-tolerance, 0.0, tolerance)}

    return {LOCATIONS[row][col] for row in cells(center[1]) for col in cells(center[0])}


def scene_matches_within_tolerance(scene, text: str, tolerance: float = LOCATION_TOLERANCE) -> bool:
    """Exact-scene match where an object's location may also name a cell within `tolerance` of its center: a
    center a pixel from a cell border is ambiguous to the eye, and a caption naming the neighbouring cell is then
    not a failure of understanding. Colours, shapes and the object count must still be exact."""
    from vgt.data.shapes import parse_scene_caption

    parsed = parse_scene_caption(text)
    if parsed is None or len(parsed) != len(scene.objects):
        return False
    objects = scene.objects
    accepted = [locations_near(o.center, tolerance) for o in objects]
    for order in permutations(range(len(objects))):  # at most 4 objects: 24 pairings
        if all(color == objects[i].color and shape == objects[i].shape and where in accepted[i]
               for (color, shape, where), i in zip(parsed, order, strict=True)):
            return True
    return False


def _require_internvl(backbone) -> InternVLBackbone:
    if not isinstance(backbone, InternVLBackbone):
        raise TypeError(
            f"understanding needs an InternVL-architecture backbone (internvl, tiny), got {type(backbone).__name__}"
        )
    return backbone


def understanding_prompt_ids(backbone: InternVLBackbone, num_image_tokens: int) -> list[int]:
    """Token ids of the user turn holding the image and the instruction, up to the assistant header."""
    context = backbone.tokenizer.convert_ids_to_tokens(backbone.model.config.image_token_id)
    text = backbone.chat_prompt(f"{IMAGE_START}{context * num_image_tokens}{IMAGE_END}\n{DESCRIBE_INSTRUCTION}")
    return backbone.tokenizer(text, add_special_tokens=False)["input_ids"]


def caption_batch(backbone: InternVLBackbone, captions: Sequence[str], num_image_tokens: int) -> dict:
    """Right-padded prompt + caption + end-of-turn sequences; labels only on the answer tokens."""
    tokenizer = backbone.tokenizer
    prompt = understanding_prompt_ids(backbone, num_image_tokens)
    answers = []
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise ValueError(f"caption {caption!r} has words outside the tokenizer's vocabulary")
        answers.append(ids + [tokenizer.eos_token_id])
    length = len(prompt) + max(len(a) for a in answers)
    input_ids = torch.full((len(answers), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(answers), length), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(answers), length), dtype=torch.long)
    for row, answer in enumerate(answers):
        end = len(prompt) + len(answer)
        input_ids[row, :end] = torch.tensor(prompt + answer)
        labels[row, len(prompt) : end] = torch.tensor(answer)
        attention_mask[row, :end] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def embed_with_images(backbone: InternVLBackbone, input_ids: torch.Tensor, visual_tokens: torch.Tensor):
    """Token embeddings with the image placeholders replaced, in order, by the visual tokens [B, N, D]."""
    embeds = backbone.text.embed_tokens(input_ids)
    placeholder = (input_ids == backbone.model.config.image_token_id).unsqueeze(-1)
    if placeholder.sum() * embeds.shape[-1] != visual_tokens.numel():
        raise ValueError(f"{int(placeholder.sum())} image placeholders for {visual_tokens.shape[:2]} visual tokens")
    return embeds.masked_scatter(placeholder, visual_tokens.to(embeds.dtype))


class CaptioningModel(nn.Module):
    """The captioning objective as a module (what the training engine wraps): images + tokenized captions ->
    mean next-token cross-entropy over the answer tokens, and the token accuracy."""

    def __init__(self, backbone: InternVLBackbone):
        super().__init__()
        _require_internvl(backbone)
        self.vlm = backbone.model  # the only registered module: checkpoints hold the HF model's weights once
        object.__setattr__(self, "backbone", backbone)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        backbone = self.backbone
        embeds = embed_with_images(backbone, input_ids, backbone.vision(images))
        hidden = backbone.text(embeds, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        answer = targets != IGNORE
        logits = backbone.lm_head(hidden[:, :-1][answer]).float()
        loss = F.cross_entropy(logits, targets[answer])
        accuracy = (logits.argmax(-1) == targets[answer]).float().mean()
        return loss, accuracy


@torch.no_grad()
def greedy_answer_ids(backbone: InternVLBackbone, images: torch.Tensor, max_new_tokens: int = 64,
                      vision: VisionEncoder | None = None) -> torch.Tensor:
    """Greedy answer tokens [B, T] for images [B, 3, H, W] in [-1, 1], decoded with a KV cache; rows that
    finished early are filled with the end-of-turn token. `vision` replaces the backbone's own vision encoder
    (its tokens must have the LLM's width)."""
    _require_internvl(backbone)
    visual = (backbone.vision if vision is None else vision)(images)
    prompt = torch.tensor([understanding_prompt_ids(backbone, visual.shape[1])], device=images.device)
    input_ids = prompt.expand(images.shape[0], -1)
    out = backbone.text(embed_with_images(backbone, input_ids, visual), use_cache=True)
    eos = backbone.tokenizer.eos_token_id
    tokens = torch.empty(images.shape[0], 0, dtype=torch.long, device=images.device)
    done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    for step in range(max_new_tokens):
        next_token = backbone.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        next_token = torch.where(done, torch.full_like(next_token, eos), next_token)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        done |= next_token == eos
        if done.all() or step == max_new_tokens - 1:
            break
        position = torch.full((images.shape[0], 1), prompt.shape[1] + step, device=images.device)
        out = backbone.text(backbone.text.embed_tokens(next_token[:, None]), position_ids=position,
                            past_key_values=out.past_key_values, use_cache=True)
    return tokens


def generate_captions(backbone: InternVLBackbone, images: torch.Tensor, max_new_tokens: int = 64,
                      vision: VisionEncoder | None = None) -> list[str]:
    """Greedy captions (text up to the first end of turn, special tokens dropped); see `greedy_answer_ids`."""
    eos = backbone.tokenizer.eos_token_id
    captions = []
    for row in greedy_answer_ids(backbone, images, max_new_tokens, vision).tolist():
        row = row[: row.index(eos)] if eos in row else row
        captions.append(backbone.tokenizer.decode(row, skip_special_tokens=True).strip())
    return captions


def evaluate_understanding(backbone: InternVLBackbone, num_images: int = 200, batch_size: int = 25,
                           world_seed: int = EVAL_WORLD_SEED, vision: VisionEncoder | None = None,
                           num_examples: int = 5, progress: bool = True,
                           location_tolerance: float = LOCATION_TOLERANCE) -> dict:
    """Caption held-out ShapesWorld scenes and score them. Returns the accuracies (fractions in [0, 1]) — strict
    `exact` and per attribute as `compare_scene_caption` defines them, and `exact_tol` (see
    `scene_matches_within_tolerance`) — the number of images and a few examples."""
    from vgt.data.shapes import compare_scene_caption
    from vgt.data.shapes_world import ShapesWorld
    from vgt.images import to_tensor

    _require_internvl(backbone)
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"num_images and batch_size must be >= 1 (got {num_images}, {batch_size})")
    image_size = (backbone.vision if vision is None else vision).image_size
    world = ShapesWorld(resolution=image_size, seed=world_seed, tasks=("scene",))
    totals = dict.fromkeys(METRIC_KEYS, 0)
    examples = []
    was_training = backbone.model.training
    backbone.model.eval()
    try:
        for start in tqdm(range(0, num_images, batch_size), desc="understanding", disable=not progress):
            samples = [world.sample(i) for i in range(start, min(start + batch_size, num_images))]
            images = torch.stack([to_tensor(s.image) for s in samples]).to(backbone.device)
            for sample, caption in zip(samples, generate_captions(backbone, images, vision=vision), strict=True):
                scores = compare_scene_caption(sample.scene, caption)
                scores["exact_tol"] = scene_matches_within_tolerance(sample.scene, caption, location_tolerance)
                for key in METRIC_KEYS:
                    totals[key] += int(scores[key])
                if len(examples) < num_examples:
                    examples.append({"index": sample.index, "truth": sample.caption, "generated": caption,
                                     "exact": scores["exact"]})
    finally:
        backbone.model.train(was_training)
    return {**{key: totals[key] / num_images for key in METRIC_KEYS}, "num_images": num_images,
            "world_seed": world_seed, "image_size": image_size, "location_tolerance": location_tolerance,
            "examples": examples}
