"""Data sources: deterministic, resumable streams of training samples.

One sample format everywhere: {"image": FloatTensor [3, H, W] in [-1, 1], "caption": str} (a latent cache serves
{"latent": FloatTensor [C, h, w], "caption": str} the same way). A source is read in *partitions*: with P
readers (processes x data-loader workers) reader p gets partition p of P, and partitions never overlap. Every
item comes with a cursor (a small JSON-able value); restarting a partition from a saved cursor continues the
stream exactly, which is what makes resumed training bit-identical.

An item that cannot be read (corrupt image, missing file, truncated tar shard) comes out as `Skipped(reason)`
instead of a sample, so the consumer counts and reports it and the stream goes on.

This module is the contract (`Source`, `IndexedSource`, `Skipped`, `readable`) and `MixSource` (a weighted mix of
sources); the readers themselves, and the CLI's data specs, are in `vgt.data.readers`.
"""

from __future__ import annotations

import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

Sample = dict
Cursor = int | list
# What a damaged file can raise while being read or decoded (PIL raises SyntaxError for some broken headers).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, tarfile.TarError, Image.DecompressionBombError)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
CAPTION_KEYS = ("txt", "caption", "text")
# A stream that yields this many unreadable items in a row is broken as a whole, not noisy.
MAX_CONSECUTIVE_SKIPS = 1000


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


