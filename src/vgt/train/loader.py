"""Batches for one training process from a `Source`, with a position that can be saved and restored.

Each process owns `num_workers` partitions of the source (at least one): partition `rank * W + slot` of
`world_size * W`. Each data-loader worker reads one partition and yields whole batches; the loader takes batches
from the workers in turn, so batch n comes from slot n % W. Every batch carries its partition's cursor, so the
`StreamPosition` after n batches is known exactly, and a restarted loader continues with the same batches in the
same order (it must be restarted with the same number of processes and workers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vgt.data.sources import Skipped, Source, readable

logger = logging.getLogger(__name__)


@dataclass
class StreamPosition:
    """How far one process has read: batches consumed, the cursor of each of its partitions, items skipped."""

    num_parts: int
    batches: int = 0
    cursors: dict[int, object] = field(default_factory=dict)
    skipped: int = 0

    def advance(self, batch: dict) -> dict:
        """Record a batch taken from the loader; returns it without its bookkeeping fields."""
        self.batches += 1
        self.cursors[batch.pop("_part")] = batch.pop("_cursor")
        skipped, reasons = batch.pop("_skipped"), batch.pop("_skip_reasons")
        self.skipped += skipped
        for reason in reasons:
            logger.warning("skipped unreadable sample: %s", reason)
        return batch

    def state_dict(self) -> dict:
        return {"num_parts": self.num_parts, "batches": self.batches, "cursors": self.cursors,
                "skipped": self.skipped}

    @classmethod
    def from_state(cls, state: dict, num_parts: int) -> StreamPosition:
        if state["num_parts"] != num_parts:
            raise ValueError(
                f"the checkpoint's data position is for {state['num_parts']} readers (processes x data workers) "
                f"but this run has {num_parts}; resume with the same number of processes and --num-workers"
            )
        return cls(num_parts, state["batches"], dict(state["cursors"]), state["skipped"])


def collate(samples: list[dict]) -> dict:
    """Stack tensors, list strings, keyed like the samples."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


class BatchStream(IterableDataset):
    def __init__(self, source: Source, batch_size: int, seed: int, rank: int, world_size: int, num_workers: int,
                 position: StreamPosition):
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.slots = max(1, num_workers)
        self.position = position

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        slot = ((info.id if info else 0) + self.position.batches) % self.slots
        part = self.rank * self.slots + slot
        items = readable(
            self.source.stream(part, self.world_size * self.slots, self.seed, self.position.cursors.get(part)),
            f"{self.source.label()} (data partition {part})",
        )
        cursor = self.position.cursors.get(part)
        while True:
            samples, reasons, skipped = [], [], 0
            while len(samples) < self.batch_size:
                try:
                    cursor, item = next(items)
                except StopIteration:
                    return
                if isinstance(item, Skipped):
                    skipped += 1
                    reasons.append(item.reason)
                    continue
                samples.append(item)
            batch = collate(samples)
            batch.update(_part=part, _cursor=cursor, _skipped=skipped, _skip_reasons=reasons[:5])
            yield batch


def _as_is(batch: dict) -> dict:
    return batch


def make_loader(source: Source, batch_size: int, seed: int, rank: int, world_size: int, num_workers: int,
                position: StreamPosition, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over `BatchStream`. It draws no numbers from the global RNGs (its own generator is seeded),
    so creating it does not disturb the training randomness."""
    stream = BatchStream(source, batch_size, seed, rank, world_size, num_workers, position)
    return DataLoader(
        stream, batch_size=None, num_workers=num_workers, collate_fn=_as_is, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed), persistent_workers=False,
    )
