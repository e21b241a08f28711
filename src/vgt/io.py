"""Atomic file writes: a reader (or a run that crashed mid-write) sees the old file or the new one, never half."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it is synced and renamed into place, on an error
    removed, so `path` holds the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, sync it, then rename it into place."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | os.PathLike, kind: type = dict) -> object:
    """A JSON file that must hold a `kind` (an object by default); a ValueError naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not a JSON text file ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); the file is damaged or not the one expected"
                         ) from None
    if not isinstance(data, kind):
        raise ValueError(f"{str(path)!r} holds a JSON {type(data).__name__}, expected a {kind.__name__}")
    return data


def write_json(path: str | os.PathLike, data: object, sort_keys: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def holds(*names: str) -> Callable[[Path], bool]:
    """A test that a folder holds all these files: how a folder written by vgt is recognised."""
    return lambda folder: all((folder / name).is_file() for name in names)


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_replaceable(directory: str | os.PathLike, overwrite: bool = False,
                      ours: Callable[[Path], bool] | None = None, protect: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, to write a folder at `directory` where that would destroy what vgt did not make.

    A file there is an error; a non-empty folder is replaced only when `ours(folder)` says vgt wrote it (e.g. it
    holds a pipeline.json) or with `overwrite`; a target that holds or lies inside a `protect`ed path (the source
    being read, a run's checkpoints) is refused even with `overwrite`."""
    directory = Path(directory)
    for path in protect:
        if _overlaps(directory, Path(path)):
            raise ValueError(f"refusing to write {str(directory)!r}: it overlaps {str(path)!r}, which it would "
                             "replace or be written into; choose a separate folder")
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{str(directory)!r} is a file, but a folder is written there; choose another path")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite and not (ours and ours(directory)):
        raise FileExistsError(f"{str(directory)!r} exists and is not a folder vgt wrote; choose another folder or "
                              "pass --overwrite (overwrite=True) to replace it and everything in it")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def staging_directory(directory: Path, kind: str = "tmp") -> Path:
    """A new hidden sibling `.NAME.KIND-PID-XXXX` of `directory` to build it in. Staging folders that earlier
    processes left behind (killed mid-write, so their PID is gone) are removed first."""
    pattern = re.compile(rf"\.{re.escape(directory.name)}\.(?:tmp|old|partial)-(\d+)-\w+")
    for sibling in directory.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{directory.name}.{kind}-{os.getpid()}-", dir=directory.parent))


@contextmanager
def atomic_directory(directory: str | Path, overwrite: bool = False, ours: Callable[[Path], bool] | None = None,
                     protect: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `directory` in one rename, so a crash never
    leaves a half-written model folder behind. An existing `directory` is replaced only as `check_replaceable`
    allows."""
    directory = Path(directory)
    check_replaceable(directory, overwrite, ours, protect)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would hide the finished folder from other users
    try:
        yield staging
        if directory.exists():
            retired = staging_directory(directory, "old")
            os.replace(directory, retired / directory.name)
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
