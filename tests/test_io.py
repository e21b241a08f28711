"""Atomic writes: a finished folder appears in one rename, a failed one leaves nothing, permissions are ordinary."""

import os
import subprocess
import sys

import pytest

from vgt.io import atomic_directory, holds


def test_atomic_directory_replaces_the_folder_with_ordinary_permissions(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # invisible until finished
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    (tmp_path / "plain").mkdir()
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "plain"]  # no staging or retired folders left


def test_atomic_directory_leaves_nothing_when_writing_fails(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "model") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_vgt_did_not_write_is_never_replaced_without_overwrite(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a folder vgt wrote.*--overwrite"):
        with atomic_directory(target) as staging:
            (staging / "model.bin").write_text("x")
    assert (target / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    (target / "pipeline.json").write_text("{}")  # a folder vgt wrote is replaced
    with atomic_directory(target, ours=holds("pipeline.json")) as staging:
        (staging / "pipeline.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["pipeline.json"]
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty") as staging:  # an empty folder loses nothing
        (staging / "a").write_text("a")


def test_a_target_holding_a_protected_path_or_a_file_is_refused_even_with_overwrite(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000001").mkdir(parents=True)
    for target in (run, tmp_path, run / "checkpoints" / "inside"):
        with pytest.raises(ValueError, match="overlaps"):
            with atomic_directory(target, overwrite=True, protect=[run / "checkpoints"]):
                pass
    assert (run / "checkpoints" / "step_00000001").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, but a folder"):
        with atomic_directory(tmp_path / "file", overwrite=True):
            pass


def test_staging_folders_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    for name in (f".model.tmp-{pid}-abc123", f".model.old-{pid}-x_y", f".model.partial-{pid}-q"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.bin").write_text("half")
    (tmp_path / ".other.tmp-1-abc").mkdir()  # another folder's, or a live process's: kept
    (tmp_path / f".model.tmp-{os.getppid()}-live").mkdir()
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "a").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".other.tmp-1-abc", f".model.tmp-{os.getppid()}-live", "model"])
