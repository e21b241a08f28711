"""The readers of `vgt.data.sources`: ShapesWorld, image folders, WebDataset tar shards and latent caches, and the
CLI's data specs (`parse_source`, `build_source`) that name them.

`ShapesSource` (the procedural ShapesWorld), `ImageFolderSource` (metadata.jsonl, the HF imagefolder convention),
`WebDatasetSource` (tar shards), `LatentCacheSource` (a cache written by `vgt.data.latents.write_latent_cache`);
any of them mixes with `MixSource`.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vgt.data.latents import INDEX_FILE
from vgt.data.sources import (
    CAPTION_KEYS,
    IMAGE_EXTENSIONS,
    READ_ERRORS,
    IndexedSource,
    MixSource,
    Sample,
    Skipped,
    Source,
    TruncatedShardError,
    _check_part,
    check_resolution,
)
from vgt.data.transforms import decode_image, prepare_image

# `pipe:cmd`, `http://...`, `s3:...`: anything with a scheme is not a local file (`-` is stdin)
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class ImageFolderSource(IndexedSource):
    """Images listed in `ROOT/metadata.jsonl`, one JSON object per line: {"file_name": "a/b.jpg", "text": "..."}
    (the Hugging Face imagefolder convention; the caption field name is configurable)."""

    def __init__(self, root: str | os.PathLike, resolution: int, caption_key: str = "text", shuffle: bool = True):
        self.root = Path(root)
        self.resolution = check_resolution(resolution)
        self.shuffle = shuffle
        metadata = self.root / "metadata.jsonl"
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {str(self.root)!r} is not a directory")
        if not metadata.is_file():
            raise FileNotFoundError(
                f"{metadata} not found: an image folder needs a metadata.jsonl with one line per image, "
                f'e.g. {{"file_name": "img/0001.jpg", "{caption_key}": "a red cube"}}'
            )
        self.items: list[tuple[str, str]] = []
        for number, line in enumerate(metadata.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                file_name, caption = record["file_name"], record[caption_key]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{metadata}:{number}: expected a JSON object with 'file_name' and '{caption_key}' ({err})"
                ) from None
            if not isinstance(file_name, str) or not isinstance(caption, str):
                raise ValueError(
                    f"{metadata}:{number}: 'file_name' and '{caption_key}' must be strings, got "
                    f"{json.dumps(file_name)} and {json.dumps(caption)} (write \"\" for an empty caption)"
                )
            self.items.append((file_name, caption))
        if not self.items:
            raise ValueError(f"{metadata} lists no images")

    def num_items(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        return str(self.root / self.items[index][0])

    def load(self, index, rng):
        file_name, caption = self.items[index]
        with Image.open(self.root / file_name) as image:
            image.load()
            return {"image": prepare_image(image, self.resolution, rng), "caption": caption}


class ShapesSource(IndexedSource):
    """The procedural ShapesWorld stream; `text` picks the short `prompt` or the full `caption` of each scene.

    Item i is `ShapesWorld.sample(i)`, rendered at the training resolution; the stream is infinite and never
    repeats. `world_kwargs` (tasks, weights) go to `ShapesWorld`."""

    shuffle = False

    def __init__(self, resolution: int, text: str = "prompt", world_seed: int = 0, **world_kwargs):
        from vgt.data.shapes_world import ShapesWorld

        if text not in ("prompt", "caption"):
            raise ValueError(f"ShapesSource text must be 'prompt' or 'caption', got {text!r}")
        self.resolution = check_resolution(resolution)
        self.text = text
        self.world = ShapesWorld(resolution=resolution, seed=world_seed, **world_kwargs)

    def load(self, index, rng):
        sample = self.world.sample(index)
        return {"image": prepare_image(sample.image, self.resolution, rng), "caption": getattr(sample, self.text)}


def image_sample(raw: dict, resolution: int, rng: np.random.Generator) -> Sample:
    """Decode a WebDataset image-text sample (image under jpg/png/webp/..., caption under txt/caption/json)."""
    image_key = next((k for k in IMAGE_EXTENSIONS if k in raw), None)
    if image_key is None:
        raise ValueError(f"no image ({'/'.join(IMAGE_EXTENSIONS)}) in sample with keys {sorted(raw)}")
    caption = next((raw[k].decode("utf-8") for k in CAPTION_KEYS if k in raw), None)
    if caption is None and "json" in raw:
        meta = json.loads(raw["json"])
        caption = meta.get("caption", meta.get("text")) if isinstance(meta, dict) else None
    if not isinstance(caption, str):
        raise ValueError(f"no caption (txt/caption/text, or a json with a string caption/text) in sample with keys "
                         f"{sorted(raw)}")
    return {"image": prepare_image(decode_image(raw[image_key]), resolution, rng), "caption": caption}


class WebDatasetSource(Source):
    """Tar shards in the WebDataset layout (files `KEY.jpg`, `KEY.txt`, ... grouped by KEY). `urls`: a brace
    pattern (`data/train-{000000..000099}.tar`, `::` joins several), a list, or a `.txt` file listing one per line
    (relative lines are read relative to the list's folder). Shards are local files, opened as files: `pipe:`
    commands, `-` (stdin) and URLs are refused, since a shard list is data and must not run anything.

    Shards are dealt to partitions round-robin (shard i -> partition i % P), so ranks and workers never read the
    same shard; there must be at least as many shards as readers. Each epoch a partition visits its shards in a
    new seeded order; samples within a shard keep their stored order (write shards pre-shuffled). A truncated or
    unreadable shard ends with one `Skipped` and the stream moves on to the next shard; so does a shard without
    its end-of-archive marker (cut at a member boundary), after its complete samples.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        resolution: int | None = None,
        decode: Callable[[dict, np.random.Generator], Sample] | None = None,
        shuffle_shards: bool = True,
    ):
        self.urls = _shard_paths(urls)
        if decode is None:
            if resolution is None:
                raise ValueError("WebDatasetSource needs a resolution (or a custom decode function)")
            decode = _ImageDecoder(check_resolution(resolution))
        self.decode = decode
        self.shuffle_shards = shuffle_shards

    def shards_of(self, part: int, num_parts: int) -> list[int]:
        """Indices of the shards read by partition `part`."""
        _check_part(part, num_parts)
        if len(self.urls) < num_parts:
            raise ValueError(
                f"{len(self.urls)} shard(s) cannot feed {num_parts} readers (processes x data workers); "
                f"write at least {num_parts} shards or use fewer --num-workers"
            )
        return list(range(part, len(self.urls), num_parts))

    def _samples(self, url: str) -> Iterator[dict]:
        from webdataset.tariterators import group_by_keys

        with tarfile.open(url, mode="r:*") as tar:
            files = ({"fname": m.name, "data": tar.extractfile(m).read(), "__url__": url} for m in tar if m.isfile())
            yield from group_by_keys(files)
            # tarfile takes end of file for end of archive; a shard cut at a member boundary would read as complete
            tar.fileobj.seek(tar.offset)
            if tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
                raise TruncatedShardError(
                    f"truncated: no end-of-archive marker after {len(tar.members)} member(s), so the samples after "
                    "them are lost (an interrupted copy or write?)"
                )

    def stream(self, part, num_parts, seed, cursor=None, repeat=True):
        shards = self.shards_of(part, num_parts)
        epoch, position, item = cursor or (0, 0, 0)
        while repeat or epoch == 0:
            order = shards
            if self.shuffle_shards:
                order = [shards[i] for i in np.random.default_rng([seed, epoch, part]).permutation(len(shards))]
            while position < len(order):
                shard = order[position]
                try:
                    for index, raw in enumerate(self._samples(self.urls[shard])):
                        if index < item:
                            continue  # resuming: already consumed, skip without decoding
                        item = index + 1
                        try:
                            sample = self.decode(raw, np.random.default_rng([seed, epoch, shard, index]))
                        except READ_ERRORS as err:
                            sample = Skipped(f"{self.urls[shard]} sample {raw.get('__key__')}: {err}")
                        yield [epoch, position, item], sample
                except READ_ERRORS as err:
                    position, item = position + 1, 0
                    yield [epoch, position, item], Skipped(f"{self.urls[shard]} unreadable: {err}")
                    continue
                position, item = position + 1, 0
            epoch, position = epoch + 1, 0


def _shard_paths(urls: str | Sequence[str]) -> list[str]:
    """Local shard files from a brace pattern, a list, or a `.txt` shard list; anything else is refused."""
    from webdataset.shardlists import expand_urls

    base = None
    if isinstance(urls, str) and urls.endswith(".txt") and Path(urls).is_file():  # a shard list, one per line
        base = Path(urls).parent
        urls = [line.strip() for line in Path(urls).read_text().splitlines() if line.strip()]
    paths = list(expand_urls(urls)) if isinstance(urls, str) else [str(u) for u in urls]
    if not paths:
        raise ValueError(f"no shards in {urls!r}")
    refused = [p for p in paths if p == "-" or _URL_SCHEME.match(p)]
    if refused:
        raise ValueError(f"shards must be local tar files; refusing {refused[0]!r} ({len(refused)} such entries): "
                         "pipe: commands, stdin (-) and URLs are not read (download remote shards first)")
    if base is not None:
        paths = [str(base / p) for p in paths]  # absolute lines stay as they are
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        kind = "is a directory, not a tar shard" if Path(missing[0]).is_dir() else "does not exist"
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} shard(s) are not files: {missing[0]!r} {kind}"
                                f" (shards: {urls!r})")
    return paths


class _ImageDecoder:
    """Picklable default decoder (data-loader workers need to pickle the source)."""

    def __init__(self, resolution: int):
        self.resolution = resolution

    def __call__(self, raw: dict, rng: np.random.Generator) -> Sample:
        return image_sample(raw, self.resolution, rng)


class _LatentDecoder:
    def __call__(self, raw: dict, rng: np.random.Generator) -> Sample:
        if "latent.npy" not in raw or "txt" not in raw:
            raise ValueError(f"latent cache sample {raw.get('__key__')} lacks latent.npy or txt")
        latent = np.load(io.BytesIO(raw["latent.npy"]), allow_pickle=False)
        return {"latent": torch.from_numpy(latent.astype(np.float32)), "caption": raw["txt"].decode("utf-8")}


class LatentCacheSource(WebDatasetSource):
    """Serves {"latent": FloatTensor [C, h, w], "caption": str} from a cache written by `write_latent_cache`."""

    def __init__(self, cache_dir: str | os.PathLike, shuffle_shards: bool = True):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{index_path} not found: {self.cache_dir} is not a latent cache (write one with `vgt cache-latents` "
                "or vgt.data.latents.write_latent_cache)"
            )
        self.index = json.loads(index_path.read_text())
        super().__init__([str(self.cache_dir / name) for name in self.index["shards"]], decode=_LatentDecoder(),
                         shuffle_shards=shuffle_shards)

    def num_items(self) -> int:
        return int(self.index["num_samples"])


def _shapes_spec(spec: str, arg: str) -> tuple[str, dict]:
    """`shapes[:prompt|caption][:TASK=WEIGHT,...]`: the text field and the task mix. Named tasks get their weight,
    the other GenEval tasks keep weight 1, and `scene` (full-caption scenes) is drawn only when named."""
    from vgt.data.shapes import GENEVAL_TAGS, TASKS

    text, weights = "prompt", {}
    for part in filter(None, arg.split(":")):
        if "=" not in part:
            text = part
            continue
        for item in part.split(","):
            task, _, value = item.partition("=")
            if task not in TASKS:
                raise ValueError(f"data spec {spec!r}: unknown ShapesWorld task {task!r}; choose from "
                                 f"{', '.join(TASKS)}")
            try:
                weights[task] = float(value)
            except ValueError:
                raise ValueError(f"data spec {spec!r}: the weight of {task!r} is {value!r}, not a number") from None
    if not weights:
        return text, {}
    tasks = GENEVAL_TAGS + (("scene",) if "scene" in weights else ())
    return text, {"tasks": tasks, "weights": [weights.get(t, 1.0) for t in tasks]}


def parse_source(spec: str, resolution: int) -> Source:
    """A source from a CLI spec: `shapes` (ShapesWorld; `shapes:caption` for full captions, `shapes:position=2,
    colors=0.5` for another task mix), `folder:DIR`, `wds:SHARDS` (a brace pattern such as
    `data/train-{000000..000099}.tar`, or a .txt shard list), or `latents:DIR` (a latent cache)."""
    kind, _, arg = spec.partition(":")
    source = None
    if kind == "shapes":
        text, world_kwargs = _shapes_spec(spec, arg)
        try:
            source = ShapesSource(resolution, text=text, **world_kwargs)
        except ValueError as error:  # a bad text field or weight (ShapesWorld checks them), named with its spec
            raise ValueError(f"data spec {spec!r}: {error}") from None
    elif kind == "folder" and arg:
        source = ImageFolderSource(arg, resolution)
    elif kind == "wds" and arg:
        source = WebDatasetSource(arg, resolution)
    elif kind == "latents" and arg:
        source = LatentCacheSource(arg)
    if source is not None:
        source.spec = spec
        return source
    if kind in ("folder", "wds", "latents"):
        raise ValueError(f"data spec {spec!r} names no path; write {kind}:PATH")
    raise ValueError(
        f"cannot read data spec {spec!r}; use shapes[:prompt|caption], folder:DIR (with metadata.jsonl), "
        "wds:SHARD_PATTERN or latents:DIR"
    )


def build_source(specs: Sequence[str], resolution: int, weights: Sequence[float] | None = None) -> Source:
    """One source from one or more CLI specs (several specs make a `MixSource`, equal weights by default)."""
    sources = [parse_source(s, resolution) for s in specs]
    if weights is not None and len(weights) != len(sources):
        raise ValueError(f"{len(weights)} data weight(s) for {len(sources)} data source(s)")
    if weights is not None and not (all(0 <= w < float("inf") for w in weights) and sum(weights) > 0):
        raise ValueError(f"data weights must be finite, >= 0 and not all 0, got {list(weights)}")
    if len(sources) == 1:
        return sources[0]
    return MixSource(sources, weights or [1.0] * len(sources))
