"""Checkpoints: safetensors weights plus a small state file, written atomically, last N kept.

Layout of `RUN_DIR/checkpoints/step_00001000/`:
- `model.safetensors` — the online (trained) weights, i.e. what the optimizer updated.
- `ema.safetensors` — the exponential moving average of those weights (only when EMA is enabled).
- `trainer.pt` — optimizer state, step, EMA settings (plain tensors and numbers; loads with weights_only=True).
- `rank_00000.pt`, ... — per process: RNG states and data-stream position.
- `meta.json` — step, which weights file is which, world size. Written last: its presence marks a complete
  checkpoint.

All files go into a hidden `.step_00001000.partial` directory that is renamed into place only once complete, so a
crash mid-write leaves the previous checkpoints untouched and never a half-written one under a real name.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vgt.io import write_json

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
TRAINER_FILE = "trainer.pt"
META_FILE = "meta.json"
ABANDONED_DIR = "abandoned"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def partial_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f".{step_dir_name(step)}.partial"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_weights(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors file of a state dict; tensors sharing storage (tied weights) are stored as separate copies."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    save_file(tensors, str(path), metadata=metadata)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _listing(keys: list[str], limit: int = 10) -> str:
    return ", ".join(keys[:limit]) + (" ..." if len(keys) > limit else "")


def check_finite(state: dict[str, torch.Tensor], origin: str) -> None:
    """Refuse weights holding NaN or infinity: they would only ever produce black images or NaN losses."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{origin} holds non-finite values (NaN or inf) in {len(bad)} tensor(s): {_listing(bad)}; "
                         "the run that wrote it diverged or the file is damaged: use an earlier checkpoint")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict; a missing, corrupt or non-finite file is an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({err}): it is truncated or corrupt; "
                         "export or copy it again") from None
    check_finite(state, repr(str(path)))
    return state


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], origin: str,
                      loaded_elsewhere: tuple[str, ...] = ()) -> None:
    """`model.load_state_dict` that first reports, readably, every missing, unexpected or mis-shaped tensor.
    Keys starting with a prefix in `loaded_elsewhere` (e.g. an LLM saved with its backbone) are not expected."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(loaded_elsewhere)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{origin} does not match {type(model).__name__}: missing keys ({len(missing)}): {_listing(missing)}; "
            f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}; shape mismatches ({len(shapes)}): "
            f"{_listing(shapes, 4)} (file vs model). Was it saved from a different model config?"
        )
    model.load_state_dict(state, strict=not loaded_elsewhere)


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a safetensors state dict strictly (see `load_state_strict`)."""
    load_state_strict(model, read_weights(path), str(path))


def load_checkpoint_weights(model: nn.Module, checkpoint: str | os.PathLike, use_ema: bool = True) -> str:
    """Load a checkpoint's weights for evaluation/export: the EMA weights when present and `use_ema`, else the
    online weights. Returns which was loaded ("ema" or "model")."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / META_FILE).is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete vgt checkpoint (no {META_FILE})")
    state = read_weights(checkpoint / MODEL_FILE)
    if use_ema and (checkpoint / EMA_FILE).is_file():
        # EMA files hold only floating tensors; integer buffers come from the online weights.
        state.update(read_weights(checkpoint / EMA_FILE))
        load_state_strict(model, state, f"{checkpoint / EMA_FILE}")
        return "ema"
    load_state_strict(model, state, f"{checkpoint / MODEL_FILE}")
    return "model"


def capture_rng() -> dict:
    """Global RNG states of this process (python, numpy, torch CPU and CUDA), as plain tensors and numbers."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def torch_save_synced(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def load_state_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing; the checkpoint is incomplete or corrupt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise ValueError(f"checkpoint file {path} is corrupt ({type(err).__name__}: {err})") from None


def read_checkpoint(path: Path) -> dict:
    """Every file of a checkpoint, read and checked (weights finite, state files loadable, every rank's file
    present): {"meta", "model", "ema" (or None), "trainer", "ranks"}. Raises ValueError/OSError naming the damage."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable {META_FILE} ({err})") from None
    return {"meta": meta, "model": read_weights(path / MODEL_FILE),
            "ema": read_weights(path / EMA_FILE) if meta.get("ema") else None,
            "trainer": load_state_file(path / TRAINER_FILE),
            "ranks": [load_state_file(path / rank_file(r)) for r in range(int(meta.get("world_size", 1)))]}


def set_aside(checkpoints: list[Path]) -> Path | None:
    """Move checkpoints out of the way of `--resume auto` (into checkpoints/abandoned/), keeping their files."""
    if not checkpoints:
        return None
    target = checkpoints[0].parent / ABANDONED_DIR
    target.mkdir(exist_ok=True)
    for path in checkpoints:
        destination = target / path.name
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(path, destination)
    return target


def publish(partial: Path, meta: dict, keep_last: int) -> Path:
    """Finish a checkpoint written into `partial`: meta.json last, atomic rename, prune old ones."""
    write_json(partial / META_FILE, meta, sort_keys=True)
    _fsync_dir(partial)
    final = partial.parent / step_dir_name(meta["step"])
    if final.exists():  # re-saving a step (e.g. after a resume): replace the old copy
        shutil.rmtree(final)
    os.replace(partial, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(final.parent.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final
