"""Resuming a run: which checkpoint to continue from, and which settings may change on the way.

A run continues only with the settings it was started with (docs/training.md, Resume): how long to train and how
often to log, save and evaluate may change; anything else is refused unless `allow_config_change`, and then
recorded in RUN_DIR/config_changes.jsonl.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vgt.train import checkpoint as ckpt

logger = logging.getLogger(__name__)

#: settings that may differ on resume: how long to train and how often to log, save and evaluate
RESUMABLE_CHANGES = {"steps", "log_every", "save_every", "eval_every", "keep_last", "resume", "run_dir",
                     "allow_config_change"}
#: stage settings that only change what is evaluated during training, not what is trained
EVALUATION_SETTINGS = {"eval_images"}
CONFIG_CHANGES_FILE = "config_changes.jsonl"


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: dict, new: dict) -> list[str]:
    """'name: old -> new' for every setting of `new` that differs from the run's saved config.json, except the
    `RESUMABLE_CHANGES` of the training config and the stage's `EVALUATION_SETTINGS`."""
    old, now = _flatten(saved), _flatten(new)
    ignored = {f"train.{name}" for name in RESUMABLE_CHANGES}
    checked = [k for k in sorted(set(old) | set(now)) if k not in ignored and k.rpartition(".")[2] not in
               EVALUATION_SETTINGS]
    return [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(now.get(k))}" for k in checked if old.get(k) != now.get(k)]


def step_of(path: Path) -> int:
    return int(path.name.split("_")[-1])


def find_resume_checkpoint(run_dir: Path, resume: str) -> tuple[Path | None, dict | None]:
    """The checkpoint to continue from and its files, read (`ckpt.read_checkpoint`), for `resume` = "auto" (the
    newest in `run_dir`; a damaged newest one is skipped with a warning for the previous readable one), "never"
    (refused when `run_dir` holds checkpoints) or a checkpoint directory."""
    if resume == "never":
        if ckpt.latest_checkpoint(run_dir) is not None:
            raise FileExistsError(
                f"{run_dir} already holds checkpoints; use --resume auto to continue it or a new --run-dir"
            )
        return None, None
    if resume == "auto":
        found = ckpt.list_checkpoints(run_dir)
        for path in reversed(found):
            try:
                return path, ckpt.read_checkpoint(path)
            except (ValueError, OSError) as err:
                logger.warning("checkpoint %s is damaged (%s); falling back to the previous one", path, err)
        if found:
            raise ValueError(f"no readable checkpoint in {run_dir} ({len(found)} damaged); resume from an "
                             "intact copy with --resume DIR, or start a new --run-dir")
        return None, None
    path = Path(resume)
    if not (path / ckpt.META_FILE).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint directory (no {ckpt.META_FILE})")
    return path, ckpt.read_checkpoint(path)


def check_resumed_config(path: Path, config: dict, run_dir: Path, allow_config_change: bool,
                         is_main_process: bool) -> None:
    """Resume from checkpoint `path` only with the settings `config` the run was made with (its saved
    config.json), or record the changes when `allow_config_change`."""
    saved_file = path.parent.parent / "config.json"
    if not saved_file.is_file():
        return
    changes = config_changes(json.loads(saved_file.read_text()), config)
    if not changes:
        return
    listing = "; ".join(changes)
    if not allow_config_change:
        raise ValueError(
            f"resuming {path} with changed settings: {listing}. Resume with the settings the run was started "
            "with, start a new --run-dir, or pass --allow-config-change to continue with the new ones"
        )
    logger.warning("resuming %s with changed settings (--allow-config-change): %s", path, listing)
    if is_main_process:
        with open(run_dir / CONFIG_CHANGES_FILE, "a") as f:
            f.write(json.dumps({"resumed_from": str(path), "changes": changes}) + "\n")
