"""Reading the authors' `.pth` files: containers, the EMA swap, prefixes, dtype and memory format.

mmengine's EMA hook swaps the two dicts before saving, so in an AR `iter_*.pth` `state_dict` holds the EMA
weights and `ema_state_dict` the online ones; the authors' scripts load `ema_state_dict` (i.e. the online
weights). `--weights as-official` takes what their scripts take; `--weights ema` the true EMA average.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vgt.official.rules import ConversionError, ConversionReport

WEIGHTS = ("as-official", "ema")
DEFAULT_WEIGHTS = "as-official"
#: top-level entries of an mmengine checkpoint that are not model weights
TRAINING_ENTRIES = ("meta", "message_hub", "optimizer", "param_schedulers", "scheduler", "lr_scheduler")


def read_pth(path: str | Path) -> dict:
    """torch.load with weights_only=True (a foreign file never runs code here), memory-mapped when possible."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # an old (non-zip) serialization cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConversionError(
            f"{str(path)!r} cannot be read with torch.load(weights_only=True): {error}. If it is a trusted file, "
            "re-save only its tensors: torch.save({'state_dict': torch.load(p, weights_only=False)['state_dict']}, q)"
        ) from error
    if not isinstance(data, dict):
        raise ConversionError(f"{str(path)!r} holds a {type(data).__name__}, not a state dict")
    return data


def select_weights(data: dict, weights: str, report: ConversionReport, what: str) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint: `ema_state_dict` / `state_dict` / the dict itself, then `module.`
    stripped, `steps` dropped, every tensor float32 and contiguous."""
    if weights not in WEIGHTS:
        raise ConversionError(f"--weights {weights!r} is unknown; choose one of {WEIGHTS}")
    containers = [k for k in ("state_dict", "ema_state_dict") if isinstance(data.get(k), dict)]
    if len(containers) == 2:
        name = "ema_state_dict" if weights == "as-official" else "state_dict"
        meaning = ("what the authors' scripts load: the online weights, after their EMA hook's swap"
                   if weights == "as-official" else "the EMA average, after their EMA hook's swap")
        report.notes.append(f"{what}: took {name!r} ({meaning})")
    elif weights == "ema":
        raise ConversionError(
            f"{what}: --weights ema needs a checkpoint saved with EMA (both 'state_dict' and 'ema_state_dict'); this "
            f"file has {containers or 'a plain state dict'}: use --weights as-official"
        )
    elif containers:
        name = containers[0]
        report.notes.append(f"{what}: took {name!r} (the only weights in the file)")
    else:
        name = None
        report.notes.append(f"{what}: a plain state dict")
    state = data[name] if name else data
    if name:
        ignored = sorted(k for k in data if k != name)
        unknown = [k for k in ignored if k not in (*TRAINING_ENTRIES, "state_dict", "ema_state_dict")]
        if unknown:
            report.notes.append(f"{what}: top-level entries {unknown} besides the weights were ignored")
    out = {}
    for key, value in state.items():
        if key == "steps":
            report.add("dropped", key, "EMA step counter", "ema-steps")
            continue
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{what}: entry {key!r} is a {type(value).__name__}, not a tensor")
        key = key.removeprefix("module.")
        if key in out:
            raise ConversionError(f"{what}: key {key!r} appears with and without the 'module.' prefix")
        out[key] = value.float().contiguous() if value.is_floating_point() else value.contiguous()
    if not out:
        raise ConversionError(f"{what}: the checkpoint holds no tensors")
    return out
