"""Data sources: deterministic, resumable streams of training samples.

One sample format everywhere: {"image": FloatTensor [3, H, W] in [-1, 1], "caption": str} (a latent cache serves
{"latent": FloatTensor [C, h, w], "caption": str} the same way). A source is read in *partitions*: with P
readers (processes x data-loader workers) reader p gets partition p of P, and partitions never overlap. Every
item comes with a cursor (a small JSON-able value); restarting a partition from a saved cursor continues the
stream exactly, which is what makes resumed training bit-identical.

An item that cannot be read (corrupt image, missing file, truncated tar shard) comes out as `Skipped(reason)`
instead of a sample, so the consumer counts and reports it and the stream goes on.

Sources: `ShapesSource` (the procedural ShapesWorld), `ImageFolderSource` (metadata.jsonl, the HF imagefolder
convention), `WebDatasetSource` (tar shards), `MixSource` (weighted mix of any of them).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vgt.data.transforms import decode_image, prepare_image

Sample = dict
Cursor = int | list
# What a damaged file can raise while being read or decoded (PIL raises SyntaxError for some broken headers).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, tarfile.TarError, Image.DecompressionBombError)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
CAPTION_KEYS = ("txt", "caption", "text")
# A stream that yields this many unreadable items in a row is broken as a whole, not noisy.
MAX_CONSECUTIVE_SKIPS = 1000
# `pipe:cmd`, `http://...`, `s3:...`: anything with a scheme is not a local file (`-` is stdin)
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class TruncatedShardError(tarfile.ReadError):
    """A tar shard that ends without its end-of-archive marker: samples after its last complete member are lost."""


class UnreadableDataError(ValueError):
    """A data source yielded nothing but unreadable items for `MAX_CONSECUTIVE_SKIPS` items in a row."""


@dataclass(frozen=True)
class Skipped:
    """An unreadable item: counted by the consumer and reported in the training metrics."""

    reason: str


class Source(ABC):
    #: how the user named it (the CLI spec), for error messages
    spec: str = ""

    def label(self) -> str:
        return self.spec or type(self).__name__

    @abstractmethod
    def stream(
        self, part: int, num_parts: int, seed: int, cursor: Cursor | None = None, repeat: bool = True
    ) -> Iterator[tuple[Cursor, Sample | Skipped]]:
        """Items of partition `part` of `num_parts`, starting after `cursor` (None: from the start). Yields
        (cursor after this item, sample or Skipped). With `repeat` the stream cycles over epochs forever."""

    def num_items(self) -> int | None:
        """Items per epoch when known (None for infinite or unknown-length sources)."""
        return None


def readable(items: Iterator[tuple[Cursor, Sample | Skipped]], name: str = "the data source",
             limit: int = MAX_CONSECUTIVE_SKIPS) -> Iterator[tuple[Cursor, Sample | Skipped]]:
    """`items` unchanged, but `limit` unreadable items in a row end the stream with `UnreadableDataError` (naming
    `name` and the last reason) instead of reading a broken source forever."""
    in_a_row = 0
    for cursor, item in items:
        in_a_row = in_a_row + 1 if isinstance(item, Skipped) else 0
        if in_a_row >= limit:
            raise UnreadableDataError(
                f"{name}: {in_a_row} unreadable samples in a row, nothing to train on; last: {item.reason}"
            )
        yield cursor, item


def check_resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ValueError(f"image resolution must be a positive number of pixels, got {resolution!r}")
    return resolution


def _check_part(part: int, num_parts: int) -> None:
    if not 0 <= part < num_parts:
        raise ValueError(f"partition {part} out of range for {num_parts} partitions")


class IndexedSource(Source):
    """A random-access source. Global item g of the (per-epoch shuffled) order belongs to partition g % P, so
    for a fixed seed the set of items in each global batch does not depend on how many readers share it."""

    shuffle: bool = True

    @abstractmethod
    def load(self, index: int, rng: np.random.Generator) -> Sample:
        """Item `index`, preprocessed with draws from `rng`; raises one of READ_ERRORS when unreadable."""

    def describe(self, index: int) -> str:
        return f"item {index}"

    def _order(self, seed: int, epoch: int, size: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(size)
        cached = getattr(self, "_order_cache", None)
        if cached is None or cached[0] != (seed, epoch, size):
            cached = ((seed, epoch, size), np.random.default_rng([seed, epoch, size]).permutation(size))
            self._order_cache = cached
        return cached[1]

    def stream(self, part, num_parts, seed, cursor=None, repeat=True):
        _check_part(part, num_parts)
        size = self.num_items()
        if size == 0:
            raise ValueError(f"{type(self).__name__} is empty")
        k = int(cursor or 0)
        while True:
            g = part + num_parts * k
            k += 1
            if size is None:
                epoch, index = 0, g
            else:
                epoch, position = divmod(g, size)
                if epoch > 0 and not repeat:
                    return
                index = int(self._order(seed, epoch, size)[position])
            try:
                sample = self.load(index, np.random.default_rng([seed, epoch, index]))
            except READ_ERRORS as err:
                yield k, Skipped(f"{self.describe(index)}: {type(err).__name__}: {err}")
            else:
                yield k, sample


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
        from vgt.data.shapes import ShapesWorld

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


class MixSource(Source):
    """A weighted mix: each item is drawn from source i with probability weights[i] / sum(weights)."""

    def __init__(self, sources: Sequence[Source], weights: Sequence[float]):
        if len(sources) != len(weights) or not sources:
            raise ValueError(f"MixSource needs one weight per source (got {len(sources)} and {len(weights)})")
        if not all(0 <= w < float("inf") for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {list(weights)}")
        self.sources = list(sources)
        self.probs = np.asarray(weights, dtype=np.float64) / float(sum(weights))

    def stream(self, part, num_parts, seed, cursor=None, repeat=True):
        k, cursors = cursor or (0, [None] * len(self.sources))
        cursors = list(cursors)
        streams: dict[int, Iterator] = {}
        while True:
            rng = np.random.default_rng([seed, part, k, len(self.sources)])
            choice = int(rng.choice(len(self.probs), p=self.probs))
            k += 1
            if choice not in streams:
                sub_seed = int(np.random.SeedSequence([seed, choice]).generate_state(1)[0])
                streams[choice] = self.sources[choice].stream(part, num_parts, sub_seed, cursors[choice], repeat)
            try:
                cursors[choice], item = next(streams[choice])
            except StopIteration:
                return
            yield [k, list(cursors)], item


def first_images(source: Source, n: int, seed: int = 12345, repeat: bool = True) -> torch.Tensor:
    """The first `n` readable images of `source` [n, 3, H, W] (a fixed batch for a sample or evaluation hook);
    fewer when a non-repeating source ends first, an error when it has none."""
    images = []
    for _, item in readable(source.stream(0, 1, seed=seed, repeat=repeat), source.label()):
        if isinstance(item, dict):
            images.append(item["image"])
        if len(images) == n:
            break
    if not images:
        raise ValueError(f"{source.label()} has no readable images")
    return torch.stack(images)


def parse_source(spec: str, resolution: int) -> Source:
    """A source from a CLI spec: `shapes`, `shapes:caption`, `folder:DIR`, `wds:SHARDS` (a brace pattern such
    as `data/train-{000000..000099}.tar`, or a .txt shard list), or `latents:DIR` (a latent cache)."""
    kind, _, arg = spec.partition(":")
    source = None
    if kind == "shapes":
        source = ShapesSource(resolution, text=arg or "prompt")
    elif kind == "folder" and arg:
        source = ImageFolderSource(arg, resolution)
    elif kind == "wds" and arg:
        source = WebDatasetSource(arg, resolution)
    elif kind == "latents" and arg:
        from vgt.data.latents import LatentCacheSource

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
