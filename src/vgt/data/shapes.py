"""ShapesWorld: procedural scenes of flat coloured shapes, with GenEval-style prompts and full scene captions.

Every object is known exactly, so the same six questions GenEval asks of real images (one object, two objects,
counting, colors, position, color attribution) can be generated, trained on and judged on a CPU. Scenes are
resolution independent (centers and sizes are fractions of the image side) and rendered anti-aliased by drawing
at 4x and box-filtering down. Objects keep a gap between their bounding boxes so a judge can separate them even
after blur.

This module holds the world's vocabulary, its data types, rendering, captions and prompts; the generator (layout,
the `ShapesWorld` stream, split export) is `vgt.data.shapes_world`. A sample is derived from `(seed, index)` alone,
so `ShapesWorld.sample(index)` is random access: data-loader workers and DDP ranks split indices (or use `shard=`)
and every split of the stream is reproducible.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles"}
# Well separated in RGB (>= 100 apart pairwise, >= 230 from the white background) so a judge can name them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 20, 30),
    "orange": (250, 130, 0),
    "yellow": (240, 230, 20),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 180),
}
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four")
MAX_COUNT = len(NUMBERS)
# GenEval's relation names (metadata) and how ShapesWorld prompts say them.
RELATIONS: dict[str, str] = {"left of": "to the left of", "right of": "to the right of", "above": "above",
                             "below": "below"}
GENEVAL_TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# "scene": a random scene of 1-4 objects whose prompt is its full caption (richer data for scene understanding).
TASKS: tuple[str, ...] = (*GENEVAL_TAGS, "scene")
# 3x3 location cells of a caption, indexed [row][column].
LOCATIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)

GAP = 0.06  # minimum gap between object bounding boxes, as a fraction of the image side
BORDER = 0.03  # minimum distance of an object from the image edge
# minimum distance of an object's center from the 3x3 cell borders (5 px at 128 px): its location word is never a
# coin flip, neither for a captioning VLM nor for a generator reading the caption
CELL_MARGIN = 0.04
MIN_SIZE = 0.15  # smallest object side: ~10 px at 64 px, still classifiable
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    """One flat object: `center` (x, y) and `size` (bounding-box side) are fractions of the image side."""

    shape: str
    color: str
    center: tuple[float, float]
    size: float

    @property
    def location(self) -> str:
        return location_word(self.center)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: tuple[int, int, int] = BACKGROUND

    def to_dict(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects], "background": list(self.background)}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        objects = tuple(
            ShapeObject(o["shape"], o["color"], (float(o["center"][0]), float(o["center"][1])), float(o["size"]))
            for o in data["objects"]
        )
        return cls(objects, tuple(data.get("background", BACKGROUND)))


@dataclass(frozen=True)
class PromptSpec:
    """A prompt and what it demands, in GenEval's metadata form.

    `include`: list of {"class", "count", "color"?, "position"?: [relation, index of an earlier include entry]};
    `exclude`: list of {"class", "count"}: the image fails if it holds `count` or more of that class.
    """

    tag: str
    prompt: str
    include: tuple[dict, ...]
    exclude: tuple[dict, ...] = ()

    def to_metadata(self) -> dict:
        data = {"tag": self.tag, "include": [dict(r) for r in self.include]}
        if self.exclude:
            data["exclude"] = [dict(r) for r in self.exclude]
        data["prompt"] = self.prompt
        return data

    @classmethod
    def from_metadata(cls, data: dict) -> PromptSpec:
        for key in ("tag", "prompt", "include"):
            if key not in data:
                raise ValueError(f"prompt metadata lacks {key!r}: {data}")
        return cls(data["tag"], data["prompt"], tuple(data["include"]), tuple(data.get("exclude", ())))


@dataclass(frozen=True)
class ShapeSample:
    image: Image.Image
    prompt: str
    caption: str
    scene: Scene
    tag: str
    index: int = 0
    spec: PromptSpec | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def render_scene(scene: Scene, resolution: int, supersample: int = SUPERSAMPLE) -> Image.Image:
    """Draw the scene at `supersample` x `resolution` and box-filter down: anti-aliased, deterministic."""
    if resolution < 16:
        raise ValueError(f"resolution {resolution} is too small; use at least 16 px (64-224 is typical)")
    big = resolution * supersample
    image = Image.new("RGB", (big, big), tuple(scene.background))
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        cx, cy = obj.center[0] * big, obj.center[1] * big
        half = obj.size * big / 2
        color = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=color)
        elif obj.shape == "square":
            draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=color)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=color)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}; ShapesWorld draws {', '.join(SHAPES)}")
    return image.resize((resolution, resolution), Image.BOX)


# ----------------------------------------------------------------------------------------------------------------
# Captions: "a red circle at the top left, a blue square at the center and a green triangle at the bottom"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _cell(center: tuple[float, float]) -> tuple[int, int]:
    return min(max(int(center[1] * 3), 0), 2), min(max(int(center[0] * 3), 0), 2)


def location_word(center: tuple[float, float]) -> str:
    row, col = _cell(center)
    return LOCATIONS[row][col]


def scene_caption(scene: Scene) -> str:
    """Every object as "a COLOR SHAPE at the LOCATION", in reading order of the 3x3 cells (objects sharing a cell
    left to right): with centers off the cell borders, the order is as unambiguous as the words."""
    objects = sorted(scene.objects, key=lambda o: (*_cell(o.center), o.center[0], o.center[1]))
    return _join([f"{_article(o.color)} {o.color} {o.shape} at the {o.location}" for o in objects])


_LOCATION_WORDS = [word for row in LOCATIONS for word in row]
_OBJECT_PHRASE = re.compile(
    rf"(?:a|an) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) at the ({'|'.join(sorted(_LOCATION_WORDS, key=len)[::-1])})"
)


def parse_scene_caption(text: str) -> list[tuple[str, str, str]] | None:
    """(color, shape, location) per object of a caption written like `scene_caption`; None if it does not parse."""
    text = " ".join(text.lower().strip().rstrip(".").split())
    if not text:
        return None
    objects = []
    for phrase in re.split(r", | and ", text):
        match = _OBJECT_PHRASE.fullmatch(phrase)
        if match is None:
            return None
        objects.append(match.groups())
    return objects


def compare_scene_caption(scene: Scene, text: str) -> dict[str, bool]:
    """Per-attribute correctness of a caption for a scene (order-free, as multisets).

    Keys: parsed, count, shapes, colors, locations, exact (all three attributes paired per object).
    """
    parsed = parse_scene_caption(text)
    if parsed is None:
        return dict.fromkeys(("parsed", "count", "shapes", "colors", "locations", "exact"), False)
    truth = [(o.color, o.shape, o.location) for o in scene.objects]

    def same(i: int | None) -> bool:
        pick = (lambda t: t) if i is None else (lambda t: t[i])
        return Counter(map(pick, parsed)) == Counter(map(pick, truth))

    return {"parsed": True, "count": len(parsed) == len(truth), "colors": same(0), "shapes": same(1),
            "locations": same(2), "exact": same(None)}


def scene_matches_caption(scene: Scene, text: str) -> bool:
    return compare_scene_caption(scene, text)["exact"]


def split_words(text: str) -> list[str]:
    """The words of a prompt or caption as `vocabulary_words` counts them: "," is a word of its own."""
    return text.replace(",", " , ").split()


def vocabulary_words() -> list[str]:
    """Every word a ShapesWorld prompt or caption can contain (see `split_words`), sorted."""
    words = {"a", "an", "and", "at", "the", "to", "of", ","}
    words.update(SHAPES, PLURALS.values(), COLORS, NUMBERS)
    for phrase in (*RELATIONS.values(), *_LOCATION_WORDS):
        words.update(phrase.split())
    return sorted(words)


# ----------------------------------------------------------------------------------------------------------------
# Prompts (GenEval's six task types)


def _object_phrase(shape: str, color: str | None = None) -> str:
    words = [color, shape] if color else [shape]
    return f"{_article(words[0])} {' '.join(words)}"


def make_prompt(tag: str, shapes: Sequence[str], colors: Sequence[str | None] = (), count: int = 1,
                relation: str | None = None) -> PromptSpec:
    """The prompt of a GenEval task type for given shapes/colors; `position` reads "shapes[0] REL shapes[1]"."""
    if tag == "single_object":
        return PromptSpec(tag, _object_phrase(shapes[0]), ({"class": shapes[0], "count": 1},))
    if tag == "two_object":
        a, b = shapes
        return PromptSpec(tag, f"{_object_phrase(a)} and {_object_phrase(b)}",
                          ({"class": a, "count": 1}, {"class": b, "count": 1}))
    if tag == "counting":
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count {count} out of range 1-{MAX_COUNT}")
        noun = shapes[0] if count == 1 else PLURALS[shapes[0]]
        return PromptSpec(tag, f"{NUMBERS[count - 1]} {noun}", ({"class": shapes[0], "count": count},),
                          ({"class": shapes[0], "count": count + 1},))
    if tag == "colors":
        return PromptSpec(tag, _object_phrase(shapes[0], colors[0]),
                          ({"class": shapes[0], "count": 1, "color": colors[0]},))
    if tag == "position":
        a, b = shapes
        return PromptSpec(tag, f"{_object_phrase(a)} {RELATIONS[relation]} {_object_phrase(b)}",
                          ({"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}))
    if tag == "color_attr":
        (a, b), (ca, cb) = shapes, colors
        return PromptSpec(tag, f"{_object_phrase(a, ca)} and {_object_phrase(b, cb)}",
                          ({"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}))
    raise ValueError(f"unknown prompt tag {tag!r}; choose from {', '.join(GENEVAL_TAGS)}")


def random_prompt(tag: str, rng: np.random.Generator) -> PromptSpec:
    shapes = [str(s) for s in rng.permutation(SHAPES)[:2]]
    colors = [str(c) for c in rng.permutation(list(COLORS))[:2]]
    return make_prompt(tag, shapes, colors, count=int(rng.integers(1, MAX_COUNT + 1)),
                       relation=str(rng.choice(list(RELATIONS))))
