"""Data sources: partitioning, exact continuation from a cursor, skip-and-count of damaged data, preprocessing."""

import io
import itertools
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from vgt.data.readers import ImageFolderSource, ShapesSource, WebDatasetSource, build_source
from vgt.data.shapes import GENEVAL_TAGS
from vgt.data.sources import MixSource, Skipped, UnreadableDataError, readable
from vgt.data.transforms import prepare_image
from vgt.train.loader import StreamPosition, make_loader

pytestmark = pytest.mark.usefixtures("single_thread")


def png_bytes(rng, size=(24, 16)):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """6 shards x 5 samples; sample keys say which shard they are in."""
    root = tmp_path_factory.mktemp("wds")
    rng = np.random.default_rng(0)
    for s in range(6):
        with tarfile.open(root / f"train-{s:04d}.tar", "w") as tar:
            for i in range(5):
                add(tar, f"s{s}_{i}.png", png_bytes(rng))
                add(tar, f"s{s}_{i}.txt", f"shard {s} item {i}".encode())
    return root


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(rng))
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"caption {i}"}))
    (tmp_path / "3.png").write_bytes(png_bytes(rng)[:60])  # truncated PNG
    (tmp_path / "7.png").write_bytes(b"not an image at all")
    lines.append(json.dumps({"file_name": "missing.png", "text": "gone"}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def take(stream, n):
    return list(itertools.islice(stream, n))


def captions(items):
    return [x["caption"] if isinstance(x, dict) else "SKIP" for _, x in items]


def test_webdataset_shards_are_split_across_ranks_and_workers_without_overlap(shards):
    source = WebDatasetSource(str(shards / "train-{0000..0005}.tar"), resolution=8)
    seen = {}
    for part in range(3):  # e.g. 3 processes x 1 worker, or 1 process x 3 workers
        seen[part] = {c.split(" item")[0] for c in captions(take(source.stream(part, 3, seed=0, repeat=False), 100))}
    assert all(len(v) == 2 for v in seen.values())
    assert set.union(*seen.values()) == {f"shard {s}" for s in range(6)}
    assert sum(len(v) for v in seen.values()) == 6  # disjoint
    with pytest.raises(ValueError, match="cannot feed 8 readers"):
        next(source.stream(0, 8, seed=0))
    listed = shards / "shards.txt"
    listed.write_text("".join(f"{shards / f'train-{s:04d}.tar'}\n" for s in range(6)))
    assert WebDatasetSource(str(listed), resolution=8).urls == source.urls


def test_webdataset_stream_continues_exactly_from_a_cursor(shards):
    source = WebDatasetSource(str(shards / "train-{0000..0005}.tar"), resolution=8)
    full = take(source.stream(1, 2, seed=5), 25)  # crosses into the second epoch
    cursor = full[11][0]
    rest = take(source.stream(1, 2, seed=5, cursor=cursor), 13)
    assert captions(rest) == captions(full[12:])
    assert all(torch.equal(a[1]["image"], b[1]["image"]) for a, b in zip(rest, full[12:], strict=True))


def test_truncated_shard_is_skipped_and_counted(shards, tmp_path):
    data = (shards / "train-0001.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes((shards / "train-0000.tar").read_bytes())
    (tmp_path / "b.tar").write_bytes(data[: len(data) // 2])  # cut mid-shard
    (tmp_path / "c.tar").write_bytes((shards / "train-0002.tar").read_bytes())
    source = WebDatasetSource([str(tmp_path / n) for n in ("a.tar", "b.tar", "c.tar")], 8, shuffle_shards=False)
    items = list(source.stream(0, 1, seed=0, repeat=False))
    skipped = [x for _, x in items if isinstance(x, Skipped)]
    assert len(skipped) == 1 and "b.tar" in skipped[0].reason
    good = [x["caption"] for _, x in items if isinstance(x, dict)]
    assert good[:5] == [f"shard 0 item {i}" for i in range(5)] and good[-5:] == [f"shard 2 item {i}" for i in range(5)]
    assert 5 < len(good) < 15  # the readable head of the cut shard is still used


def _member_boundaries(path):
    with tarfile.open(path) as tar:
        return [m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers()]


def test_shard_cut_at_a_member_boundary_is_reported_as_truncated(shards, tmp_path):
    data = (shards / "train-0001.tar").read_bytes()
    cut = _member_boundaries(shards / "train-0001.tar")[3]  # after 2 complete samples (4 members)
    (tmp_path / "b.tar").write_bytes(data[:cut])
    items = list(WebDatasetSource([str(tmp_path / "b.tar")], 8).stream(0, 1, seed=0, repeat=False))
    good = [x["caption"] for _, x in items if isinstance(x, dict)]
    skipped = [x.reason for _, x in items if isinstance(x, Skipped)]
    assert good == ["shard 1 item 0", "shard 1 item 1"]
    assert len(skipped) == 1 and "truncated" in skipped[0] and "end-of-archive" in skipped[0]
    # a cut inside the last sample (its caption lost) skips that sample too
    (tmp_path / "c.tar").write_bytes(data[: _member_boundaries(shards / "train-0001.tar")[2]])
    items = list(WebDatasetSource([str(tmp_path / "c.tar")], 8).stream(0, 1, seed=0, repeat=False))
    assert [x["caption"] for _, x in items if isinstance(x, dict)] == ["shard 1 item 0"]
    assert sum(isinstance(x, Skipped) for _, x in items) == 2
    # complete shards (end marker present) report nothing
    items = list(WebDatasetSource([str(shards / "train-0001.tar")], 8).stream(0, 1, seed=0, repeat=False))
    assert not any(isinstance(x, Skipped) for _, x in items) and len(items) == 5


@pytest.mark.parametrize("line", ["pipe:touch {marker}", "-", "http://example.com/a.tar", "file:///etc/passwd"])
def test_shard_lists_and_patterns_never_run_commands_or_read_urls(shards, tmp_path, line):
    marker = tmp_path / "ran"
    listing = tmp_path / "shards.txt"
    listing.write_text(f"{shards / 'train-0000.tar'}\n{line.format(marker=marker)}\n")
    for spec in (str(listing), line.format(marker=marker)):
        with pytest.raises(ValueError, match="local tar files"):
            WebDatasetSource(spec, 8)
    assert not marker.exists()


def test_shard_list_lines_are_files_relative_to_the_list(shards, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.tar").write_bytes((shards / "train-0003.tar").read_bytes())
    (tmp_path / "list.txt").write_text("sub/x.tar\n\n")
    source = WebDatasetSource(str(tmp_path / "list.txt"), 8)
    assert source.urls == [str(tmp_path / "sub" / "x.tar")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WebDatasetSource(str(tmp_path / "missing-{00..03}.tar"), 8)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        WebDatasetSource([str(tmp_path / "sub")], 8)


def test_a_source_with_nothing_readable_stops_with_an_error_naming_it(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"junk")
    (tmp_path / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.png", "text": "x"}) + "\n" for i in range(3)))
    source = build_source([f"folder:{tmp_path}"], 8)
    with pytest.raises(UnreadableDataError, match=f"folder:{tmp_path}: 1000 unreadable samples in a row"):
        list(readable(source.stream(0, 1, seed=0), source.label()))  # repeats forever without the bound
    loader = make_loader(source, 2, 0, 0, 1, 0, StreamPosition(1))
    with pytest.raises(UnreadableDataError, match=r"data partition 0\): 1000 unreadable"):
        next(iter(loader))
    with pytest.raises(ValueError, match="resolution"):
        build_source(["shapes"], 0)


def test_a_null_or_non_string_caption_is_an_error_not_the_word_none(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    for text in ("null", "3", '["a"]'):
        (tmp_path / "metadata.jsonl").write_text(f'{{"file_name": "a.png", "text": {text}}}\n')
        with pytest.raises(ValueError, match="metadata.jsonl:1: .* must be strings"):
            ImageFolderSource(tmp_path, 8)


def test_corrupt_images_are_skipped_and_counted_by_the_loader(folder):
    source = ImageFolderSource(folder, 8, shuffle=False)
    position = StreamPosition(num_parts=1)
    loader = make_loader(source, batch_size=4, seed=0, rank=0, world_size=1, num_workers=0, position=position)
    batches = [position.advance(b) for b in itertools.islice(loader, 3)]
    # 11 listed, 8 readable: the truncated PNG, the non-image and the missing file are skipped in epoch 0, the
    # truncated one again at the start of epoch 1 (12 samples taken)
    assert position.skipped == 4
    assert batches[0]["image"].shape == (4, 3, 8, 8) and len(batches[0]["caption"]) == 4
    assert "caption 3" not in batches[0]["caption"] + batches[1]["caption"]


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        ImageFolderSource(tmp_path, 8)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:1.*'text'"):
        ImageFolderSource(tmp_path, 8)


def test_indexed_partitions_cover_each_global_batch_independently_of_the_reader_count(folder):
    source = ImageFolderSource(folder, 8)
    one = captions(take(source.stream(0, 1, seed=3), 22))
    two = [captions(take(source.stream(p, 2, seed=3), 11)) for p in range(2)]
    assert sorted(one[:10]) == sorted(two[0][:5] + two[1][:5])
    assert sorted(one[11:22]) != sorted(one[:11]) or one[11:22] != one[:11]  # a new order in the next epoch


def test_random_square_crop_is_seeded_and_keeps_the_short_side():
    image = Image.fromarray(np.arange(40 * 10 * 3, dtype=np.uint8).reshape(10, 40, 3) % 251)
    a = prepare_image(image, 10, np.random.default_rng(0))
    b = prepare_image(image, 10, np.random.default_rng(0))
    assert torch.equal(a, b) and a.shape == (3, 10, 10) and a.min() >= -1 and a.max() <= 1
    crops = {prepare_image(image, 10, np.random.default_rng(s))[0, 0, 0].item() for s in range(20)}
    assert len(crops) > 5  # the square moves along the long side


def test_mix_follows_weights_and_resumes(shards, folder):
    wds = WebDatasetSource(str(shards / "train-{0000..0005}.tar"), resolution=8)
    mix = MixSource([wds, ImageFolderSource(folder, 8)], [3.0, 1.0])
    items = take(mix.stream(0, 1, seed=0), 400)
    from_wds = sum(1 for _, x in items if isinstance(x, dict) and x["caption"].startswith("shard"))
    assert 0.68 < from_wds / 400 < 0.82
    rest = take(mix.stream(0, 1, seed=0, cursor=items[199][0]), 200)
    assert captions(rest) == captions(items[200:])


def test_shapes_source_and_cli_specs():
    shapes = ShapesSource(16, text="caption")
    (_, first), = take(shapes.stream(0, 1, seed=0), 1)
    assert first["image"].shape == (3, 16, 16) and isinstance(first["caption"], str)
    assert isinstance(build_source(["shapes", "shapes:prompt"], 16, [1, 2]), MixSource)
    with pytest.raises(ValueError, match="folder:DIR"):
        build_source(["imagenet"], 16)


def test_shapes_spec_sets_the_task_mix_and_rejects_bad_weights():
    source = build_source(["shapes:caption:position=3,colors=0"], 16)
    assert source.text == "caption"
    tags = Counter(source.world.sample(i).tag for i in range(400))
    assert "colors" not in tags and "scene" not in tags
    assert tags["position"] > 2 * max(tags[t] for t in tags if t != "position")
    assert build_source(["shapes:scene=1"], 16).world.tasks[-1] == "scene"
    for spec, problem in (("shapes:hexagon=1", "unknown ShapesWorld task 'hexagon'"),
                          ("shapes:position=-1", "'position' must be a finite number >= 0"),
                          ("shapes:position=nan", "'position' must be a finite number >= 0"),
                          ("shapes:position=inf", "'position' must be a finite number >= 0"),
                          ("shapes:position=two", "'position' is 'two', not a number"),
                          ("shapes:" + ",".join(f"{t}=0" for t in GENEVAL_TAGS), "every task has weight 0")):
        with pytest.raises(ValueError, match=problem):
            build_source([spec], 16)


def test_loader_workers_read_disjoint_shards_and_restart_exactly(shards):
    source = WebDatasetSource(str(shards / "train-{0000..0005}.tar"), resolution=8)

    def batches(position, n):
        loader = make_loader(source, batch_size=2, seed=1, rank=1, world_size=2, num_workers=2, position=position)
        return [position.advance(b)["caption"] for b in itertools.islice(loader, n)]

    full = batches(StreamPosition(num_parts=4), 8)
    shards_of = [{c.split(" item")[0] for batch in full[i::2] for c in batch} for i in range(2)]  # per worker
    assert not shards_of[0] & shards_of[1]  # this rank's two workers read partitions 2 and 3 of 4
    assert set.union(*shards_of) <= {"shard 2", "shard 3"}
    position = StreamPosition(num_parts=4)
    head = batches(position, 3)  # an odd count: the restarted loader must begin with the other worker's slot
    state = position.state_dict()
    tail = batches(StreamPosition.from_state(state, num_parts=4), 5)
    assert head + tail == full
    with pytest.raises(ValueError, match="same number of processes"):
        StreamPosition.from_state(state, num_parts=2)
