"""What a run leaves behind besides checkpoints: metrics.jsonl, TensorBoard events, and the run's provenance.

`config.json` holds the resolved configuration; `run_info.json` the seed, package versions, git revision,
command line and process count, so any run directory says how it was made.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from vgt.io import atomic_write_text, write_json

METRICS_FILE = "metrics.jsonl"
_PACKAGES = ("vgt", "torch", "accelerate", "transformers", "diffusers", "safetensors", "numpy", "webdataset")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str:
    """Commit of the source tree vgt is imported from (with '-dirty' for local changes), or 'unknown'."""
    src = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=src, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def write_run_info(run_dir: Path, config: dict, seed: int, setup: dict) -> None:
    """config.json and run_info.json (rewritten on every start, so a resumed run records its latest launch).
    `setup` describes the processes (count, distributed type, device, precision)."""
    write_json(run_dir / "config.json", config, sort_keys=True)
    write_json(
        run_dir / "run_info.json",
        {
            "seed": seed,
            **setup,
            "versions": package_versions(),
            "git_revision": git_revision(),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


class MetricsLogger:
    """Appends one JSON object per logged step to metrics.jsonl (and TensorBoard scalars when installed).

    On resume from step S, lines with step > S (logged after that checkpoint by the interrupted run) are dropped
    so the file reads as one continuous run.
    """

    def __init__(self, run_dir: Path, resumed_step: int | None = None):
        self.path = run_dir / METRICS_FILE
        if resumed_step is not None and self.path.is_file():
            self._truncate_after(resumed_step)
        elif resumed_step is None and self.path.is_file():
            self.path.unlink()  # a fresh run in an existing directory starts a fresh log
        self._file = open(self.path, "a")
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resumed_step)
        except ImportError:
            pass

    def _truncate_after(self, step: int) -> None:
        kept = [line for line, record in _records(self.path) if record.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _records(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of each complete line; a line torn by a crash mid-write (the last one) is dropped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append((line, record))
    return records


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """All records of a run's metrics.jsonl, in order."""
    return [record for _, record in _records(Path(run_dir) / METRICS_FILE)]
