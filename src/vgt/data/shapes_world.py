"""The ShapesWorld generator: scene layout (sizes and positions that never overlap, relations that hold with a clear
margin), `ShapesWorld` (a random-access stream of samples from `(seed, index)`) and the export of a fixed split.

The world's vocabulary, its data types, rendering, captions and prompts are in `vgt.data.shapes`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import count as count_from
from pathlib import Path

import numpy as np

from vgt.data.shapes import (
    BORDER,
    CELL_MARGIN,
    COLORS,
    GAP,
    GENEVAL_TAGS,
    MAX_COUNT,
    MIN_SIZE,
    SHAPES,
    TASKS,
    PromptSpec,
    Scene,
    ShapeObject,
    ShapeSample,
    random_prompt,
    render_scene,
    scene_caption,
)
from vgt.io import atomic_directory


def size_range(n_objects: int) -> tuple[float, float]:
    """Object sides for a scene of n objects: fewer objects may be larger."""
    return MIN_SIZE, max(MIN_SIZE + 0.04, min(0.4, 0.16 + 0.24 / max(n_objects, 1)))


def _apart(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    reach = (a[2] + b[2]) / 2 + GAP
    return abs(a[0] - b[0]) >= reach or abs(a[1] - b[1]) >= reach


def _off_cell_borders(v: float) -> bool:
    return abs(v - 1 / 3) >= CELL_MARGIN and abs(v - 2 / 3) >= CELL_MARGIN


def place_objects(sizes: Sequence[float], rng: np.random.Generator,
                  existing: Sequence[ShapeObject] = (), attempts: int = 100) -> list[tuple[float, float]] | None:
    """Centers for objects of the given sizes, away from the image border, from the 3x3 cell borders and from each
    other; None if they do not fit."""
    boxes = [(o.center[0], o.center[1], o.size) for o in existing]
    centers = []
    for size in sizes:
        lo, hi = BORDER + size / 2, 1 - BORDER - size / 2
        for _ in range(attempts):
            x, y = (round(float(v), 4) for v in rng.uniform(lo, hi, 2))
            if _off_cell_borders(x) and _off_cell_borders(y) and all(_apart((x, y, size), box) for box in boxes):
                break
        else:
            return None
        boxes.append((x, y, size))
        centers.append((x, y))
    return centers


def clear_relation(a: ShapeObject, b: ShapeObject) -> str | None:
    """The relation of `a` to `b` when unmistakable: separated along one axis, at most half as far along the other.

    Such pairs satisfy GenEval's rule (threshold 0.1, cut 0.5) with margin, and their mirror image clearly fails it.
    """
    dx, dy = a.center[0] - b.center[0], a.center[1] - b.center[1]
    reach = (a.size + b.size) / 2 + GAP
    if abs(dx) >= reach and abs(dy) <= abs(dx) / 2:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= reach and abs(dx) <= abs(dy) / 2:
        return "above" if dy < 0 else "below"
    return None


def scene_for_prompt(spec: PromptSpec, rng: np.random.Generator, attempts: int = 200) -> Scene:
    """A random scene that satisfies the prompt and contains nothing else."""
    wanted: list[tuple[str, str | None]] = []
    relations: list[tuple[int, str, int]] = []  # (object, relation, target object)
    first_of_group: list[int] = []
    for req in spec.include:
        if req["class"] not in SHAPES:
            raise ValueError(f"class {req['class']!r} is not a ShapesWorld shape ({', '.join(SHAPES)})")
        first_of_group.append(len(wanted))
        for _ in range(int(req["count"])):
            if "position" in req:
                relation, target = req["position"]
                relations.append((len(wanted), relation, first_of_group[target]))
            wanted.append((req["class"], req.get("color")))
    lo, hi = size_range(len(wanted))
    for _ in range(attempts):
        sizes = [round(float(s), 4) for s in rng.uniform(lo, hi, len(wanted))]
        colors = [color or str(rng.choice(list(COLORS))) for _, color in wanted]
        centers = place_objects(sizes, rng)
        if centers is None:
            continue
        objects = [ShapeObject(shape, color, center, size)
                   for (shape, _), color, center, size in zip(wanted, colors, centers, sizes, strict=True)]
        if all(clear_relation(objects[i], objects[t]) == rel for i, rel, t in relations):
            return Scene(tuple(objects))
    raise RuntimeError(f"could not lay out a scene for {spec.prompt!r} in {attempts} attempts")


def random_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    n = int(rng.integers(1, MAX_COUNT + 1)) if n_objects is None else n_objects
    while True:
        sizes = [round(float(s), 4) for s in rng.uniform(*size_range(n), n)]
        centers = place_objects(sizes, rng)
        if centers is not None:
            return Scene(tuple(ShapeObject(str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), c, s)
                               for c, s in zip(centers, sizes, strict=True)))


def scene_prompt(scene: Scene) -> PromptSpec:
    """The "scene" task: the prompt is the full caption; the judge checks the count of each shape."""
    counts = Counter(o.shape for o in scene.objects)
    return PromptSpec("scene", scene_caption(scene),
                      tuple({"class": shape, "count": counts[shape]} for shape in SHAPES if counts[shape]))


# ----------------------------------------------------------------------------------------------------------------
# The stream


class ShapesWorld:
    """An endless, seeded stream of ShapeSamples; `sample(index)` gives any element directly.

    `tasks` are drawn uniformly (or by `weights`). `shard=(i, n)` makes iteration yield indices i, i+n, i+2n, ...
    so n workers/ranks together cover the stream exactly once.
    """

    def __init__(self, resolution: int = 128, seed: int = 0, tasks: Sequence[str] = GENEVAL_TAGS,
                 weights: Sequence[float] | None = None, shard: tuple[int, int] = (0, 1), start: int = 0):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"unknown or no tasks {unknown or list(tasks)}; choose from {', '.join(TASKS)}")
        if weights is not None:
            if len(weights) != len(tasks):
                raise ValueError(f"{len(weights)} weight(s) for {len(tasks)} task(s): give one per task")
            bad = [t for t, w in zip(tasks, weights, strict=True) if not 0 <= w < float("inf")]
            if bad:
                raise ValueError(f"the weight of {bad[0]!r} must be a finite number >= 0")
            if not any(weights):
                raise ValueError("every task has weight 0; give at least one a positive weight")
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {shard} must be (index, count) with 0 <= index < count")
        self.resolution, self.seed, self.tasks, self.shard, self.start = resolution, seed, tuple(tasks), shard, start
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / float(sum(weights))

    def sample(self, index: int) -> ShapeSample:
        rng = np.random.default_rng([self.seed, index])
        tag = str(self.tasks[rng.choice(len(self.tasks), p=self.weights)])
        if tag == "scene":
            scene = random_scene(rng)
            spec = scene_prompt(scene)
        else:
            spec = random_prompt(tag, rng)
            scene = scene_for_prompt(spec, rng)
        return ShapeSample(render_scene(scene, self.resolution), spec.prompt, scene_caption(scene), scene, tag,
                           index, spec)

    __getitem__ = sample

    def __iter__(self) -> Iterator[ShapeSample]:
        index, count = self.shard
        for i in count_from(self.start + index, count):
            yield self.sample(i)


def sample_record(sample: ShapeSample, file_name: str) -> dict:
    """One metadata.jsonl line (HF imagefolder: `file_name` + `text`, the text-to-image prompt)."""
    record = {"file_name": file_name, "text": sample.prompt, "prompt": sample.prompt, "caption": sample.caption,
              "tag": sample.tag, "index": sample.index, "scene": sample.scene.to_dict()}
    if sample.spec is not None:
        record.update({k: v for k, v in sample.spec.to_metadata().items() if k in ("include", "exclude")})
    return record


def export_split(out_dir: str | os.PathLike, n: int, seed: int, resolution: int = 128,
                 tasks: Sequence[str] = GENEVAL_TAGS, start: int = 0, overwrite: bool = False) -> Path:
    """Write samples start..start+n-1 as PNGs + metadata.jsonl; the directory appears complete or not at all."""
    from tqdm import tqdm

    out = Path(out_dir)
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    world = ShapesWorld(resolution, seed, tasks)
    with atomic_directory(out, overwrite=overwrite) as tmp, open(tmp / "metadata.jsonl", "w") as meta:
        for index in tqdm(range(start, start + n), desc=f"export {out}", unit="img"):
            sample = world.sample(index)
            name = f"{index:08d}.png"
            sample.image.save(tmp / name)
            meta.write(json.dumps(sample_record(sample, name)) + "\n")
    return out
