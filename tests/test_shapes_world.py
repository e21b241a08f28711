"""ShapesWorld: scenes, captions and prompts that say exactly what is drawn, reproducible streams, exported splits."""

import json
from collections import Counter
from itertools import islice

import numpy as np
import pytest
from PIL import Image

from vgt.cli import main
from vgt.data.shapes import (
    BORDER,
    CELL_MARGIN,
    COLORS,
    GAP,
    GENEVAL_TAGS,
    SHAPES,
    Scene,
    ShapeObject,
    compare_scene_caption,
    parse_scene_caption,
    render_scene,
    scene_caption,
    scene_matches_caption,
    split_words,
    vocabulary_words,
)
from vgt.data.shapes_world import ShapesWorld


def test_same_seed_same_samples_and_different_seed_differs():
    a, b, c = ShapesWorld(64, seed=3), ShapesWorld(64, seed=3), ShapesWorld(64, seed=4)
    for index in range(20):
        sa, sb = a.sample(index), b.sample(index)
        assert sa.image.tobytes() == sb.image.tobytes()
        assert (sa.prompt, sa.caption, sa.scene, sa.tag) == (sb.prompt, sb.caption, sb.scene, sb.tag)
    assert [a.sample(i).caption for i in range(20)] != [c.sample(i).caption for i in range(20)]


def test_iteration_is_random_access_and_shards_partition_the_stream():
    world = ShapesWorld(32, seed=1)
    streamed = [s.caption for s in islice(world, 10)]
    assert streamed == [world.sample(i).caption for i in range(10)]
    even = [s.index for s in islice(ShapesWorld(32, seed=1, shard=(0, 2)), 5)]
    odd = [s.index for s in islice(ShapesWorld(32, seed=1, shard=(1, 2)), 5)]
    assert even == [0, 2, 4, 6, 8] and odd == [1, 3, 5, 7, 9]
    assert ShapesWorld(32, seed=1, shard=(1, 2)).sample(3).caption == streamed[3]


def test_tasks_are_drawn_and_weights_respected():
    tags = Counter(ShapesWorld(32, seed=0).sample(i).tag for i in range(300))
    assert set(tags) == set(GENEVAL_TAGS)
    only = {ShapesWorld(32, seed=0, tasks=["counting", "scene"], weights=[0, 1]).sample(i).tag for i in range(20)}
    assert only == {"scene"}
    with pytest.raises(ValueError, match="unknown"):
        ShapesWorld(32, tasks=["dogs"])
    with pytest.raises(ValueError, match="shard"):
        ShapesWorld(32, shard=(2, 2))
    for weights, problem in (([1.0, float("nan")], "'scene' must be a finite number"), ([0, 0], "every task has"),
                             ([1.0], "1 weight")):
        with pytest.raises(ValueError, match=problem):
            ShapesWorld(32, tasks=["counting", "scene"], weights=weights)


def _boxes_apart(a: ShapeObject, b: ShapeObject) -> bool:
    reach = (a.size + b.size) / 2 + GAP - 1e-9
    return abs(a.center[0] - b.center[0]) >= reach or abs(a.center[1] - b.center[1]) >= reach


def test_scenes_satisfy_their_prompt_and_nothing_else():
    world = ShapesWorld(64, seed=5, tasks=[*GENEVAL_TAGS, "scene"])
    for index in range(300):
        sample = world.sample(index)
        objects = sample.scene.objects
        asked = Counter()
        for req in sample.spec.include:
            asked[req["class"]] += req["count"]
            if "color" in req:
                assert [o.color for o in objects if o.shape == req["class"]] == [req["color"]] * req["count"]
        assert Counter(o.shape for o in objects) == asked, sample.prompt
        for i, obj in enumerate(objects):
            assert BORDER - 1e-9 <= obj.center[0] - obj.size / 2 and obj.center[0] + obj.size / 2 <= 1 - BORDER + 1e-9
            assert all(_boxes_apart(obj, other) for other in objects[i + 1:])
            assert all(abs(v - cut) >= CELL_MARGIN - 1e-9 for v in obj.center for cut in (1 / 3, 2 / 3))
        if sample.tag == "position":
            target_req, req = sample.spec.include
            (target,) = [o for o in objects if o.shape == target_req["class"]]
            (mover,) = [o for o in objects if o.shape == req["class"]]
            dx, dy = mover.center[0] - target.center[0], mover.center[1] - target.center[1]
            expected = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}
            assert expected[req["position"][0]], sample.prompt


def test_render_is_antialiased_with_plain_background():
    scene = Scene((ShapeObject("circle", "blue", (0.5, 0.5), 0.4),))
    image = render_scene(scene, 64)
    assert image.size == (64, 64) and image.mode == "RGB"
    pixels = np.asarray(image).reshape(-1, 3)
    assert tuple(pixels[0]) == (255, 255, 255)
    assert tuple(np.asarray(image)[32, 32]) == COLORS["blue"]
    blends = {tuple(p) for p in pixels} - {(255, 255, 255), COLORS["blue"]}
    assert len(blends) > 5  # edge pixels mix object and background
    with pytest.raises(ValueError, match="resolution"):
        render_scene(scene, 8)


def test_caption_round_trip_and_per_attribute_comparison():
    scene = Scene((ShapeObject("triangle", "green", (0.8, 0.8), 0.2), ShapeObject("circle", "orange", (0.1, 0.1), 0.15),
                   ShapeObject("square", "red", (0.5, 0.5), 0.2)))
    caption = scene_caption(scene)
    assert caption == ("an orange circle at the top left, a red square at the center and "
                       "a green triangle at the bottom right")
    assert parse_scene_caption(caption) == [("orange", "circle", "top left"), ("red", "square", "center"),
                                            ("green", "triangle", "bottom right")]
    assert scene_matches_caption(scene, caption)
    reordered = "a green triangle at the bottom right, a red square at the center and an orange circle at the top left"
    assert scene_matches_caption(scene, reordered)
    wrong_color = caption.replace("red square", "blue square")
    assert compare_scene_caption(scene, wrong_color) == {"parsed": True, "count": True, "colors": False,
                                                         "shapes": True, "locations": True, "exact": False}
    wrong_place = caption.replace("at the center", "at the top")
    result = compare_scene_caption(scene, wrong_place)
    assert result["locations"] is False and result["colors"] and result["shapes"] and not result["exact"]
    missing = "an orange circle at the top left and a red square at the center"
    assert compare_scene_caption(scene, missing)["count"] is False
    # reading order of the cells, not of x: the top object comes first although it is further right
    two = Scene((ShapeObject("square", "blue", (0.2, 0.8), 0.2), ShapeObject("circle", "red", (0.6, 0.15), 0.2)))
    assert scene_caption(two) == "a red circle at the top and a blue square at the bottom left"
    assert parse_scene_caption("a purple dog at the top") is None
    assert compare_scene_caption(scene, "garbage")["parsed"] is False


def test_vocabulary_covers_every_prompt_and_caption():
    vocab = set(vocabulary_words())
    assert set(SHAPES) <= vocab and set(COLORS) <= vocab
    world = ShapesWorld(32, seed=2, tasks=[*GENEVAL_TAGS, "scene"])
    for index in range(300):
        sample = world.sample(index)
        for text in (sample.prompt, sample.caption):
            assert set(split_words(text)) <= vocab, text


def test_export_cli_writes_imagefolder_layout(tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["shapes", "export", "--out", str(out), "--n", "12", "--seed", "9", "--size", "48"]) == 0
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    world = ShapesWorld(48, seed=9)
    for index, line in enumerate(lines):
        assert {"file_name", "text", "prompt", "caption", "tag", "scene", "include"} <= set(line)
        sample = world.sample(index)
        assert line["text"] == sample.prompt and line["caption"] == sample.caption
        assert Scene.from_dict(line["scene"]) == sample.scene
        with Image.open(out / line["file_name"]) as image:
            assert image.tobytes() == sample.image.tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]  # no temporary directory left
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["shapes", "export", "--out", str(out), "--n", "2"])


def test_vocab_cli_json(capsys):
    assert main(["shapes", "vocab", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shapes"] == list(SHAPES)
    assert data["colors"] == {name: list(rgb) for name, rgb in COLORS.items()}
    assert "," in data["words"] and "triangles" in data["words"]
