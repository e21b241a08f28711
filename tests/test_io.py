"""Atomic writes: a finished folder appears in one rename, a failed one leaves nothing, permissions are ordinary."""

import pytest

from vgt.io import atomic_directory


def test_atomic_directory_replaces_the_folder_with_ordinary_permissions(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as staging:
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
