"""GenEval's generation output layout: `OUT/<index:05d>/metadata.jsonl` + `OUT/<index:05d>/samples/<k:04d>.png`.

`metadata.jsonl` holds the prompt's line of the prompt file (one JSON object). Each prompt directory is written to
a temporary name and renamed into place, so an interrupted generation leaves only complete prompts behind and can
resume by skipping the indices that exist.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vgt.io import atomic_directory

_PROMPT_DIR = re.compile(r"\d{5}")


@dataclass(frozen=True)
class PromptSamples:
    index: int
    metadata: dict
    sample_paths: tuple[Path, ...]


def prompt_dir(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / f"{index:05d}"


def write_prompt_samples(out_dir: str | os.PathLike, index: int, metadata: dict, images: Sequence[Image.Image],
                         overwrite: bool = False) -> Path:
    """Write one prompt's metadata and images; the directory appears complete or not at all."""
    if not images:
        raise ValueError(f"prompt {index}: no images to write")
    target = prompt_dir(out_dir, index)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (CLI: --overwrite) or write to a new OUT")
    with atomic_directory(target, overwrite=True) as tmp:  # checked above
        (tmp / "metadata.jsonl").write_text(json.dumps(metadata) + "\n")
        (tmp / "samples").mkdir()
        for k, image in enumerate(images):
            image.save(tmp / "samples" / f"{k:04d}.png")
    return target


def read_layout(out_dir: str | os.PathLike) -> list[PromptSamples]:
    """Every prompt directory of a generation output, in index order."""
    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; expected GenEval layout OUT/<00000>/metadata.jsonl")
    prompts = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and _PROMPT_DIR.fullmatch(p.name)):
        meta_file = path / "metadata.jsonl"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} is missing; every prompt directory needs its metadata line")
        lines = [line for line in meta_file.read_text().splitlines() if line.strip()]
        if len(lines) != 1:
            raise ValueError(f"{meta_file} must hold exactly one JSON line, found {len(lines)}")
        samples = tuple(sorted((path / "samples").glob("*.png")))
        if not samples:
            raise FileNotFoundError(f"{path / 'samples'} holds no .png images")
        prompts.append(PromptSamples(int(path.name), json.loads(lines[0]), samples))
    if not prompts:
        raise FileNotFoundError(f"{root} holds no prompt directories named like 00000/")
    return prompts
