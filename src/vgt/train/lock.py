"""One training per run directory: a second one on the same `--run-dir` would interleave checkpoints and logs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirLock:
    """An exclusive `flock` on RUN_DIR/.lock, held while a run trains. The kernel releases it when the process
    ends however it ends (kill -9 included), so a crashed run never blocks its own resume."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise FileExistsError(
                f"another training (process {holder}) is running in {str(run_dir)!r}; wait for it to finish, stop "
                "it, or use another --run-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
