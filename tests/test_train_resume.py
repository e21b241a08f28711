"""Resume rules (docs/training.md): same settings or an explicit --allow-config-change, damaged newest checkpoint
or torn metrics line tolerated, an abandoned later branch never continued; one training per run directory."""

import logging
import shutil

import pytest

from vgt.train import list_checkpoints, read_metrics
from vgt.train.lock import RunDirLock

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def full(image_folder, tmp_path_factory, train_toy):
    """An uninterrupted 8-step run (checkpoints at 4 and 8)."""
    import torch

    run_dir = tmp_path_factory.mktemp("full") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that compare with it (module fixtures run outside single_thread)
    train_toy(image_folder, run_dir)
    torch.set_num_threads(threads)
    return run_dir


def test_a_second_training_on_a_locked_run_dir_is_refused(image_folder, tmp_path, train_toy):
    lock = RunDirLock(tmp_path / "run")
    with pytest.raises(FileExistsError, match="another training .* is running"):
        train_toy(image_folder, tmp_path / "run", steps=2)
    assert list_checkpoints(tmp_path / "run") == []
    lock.release()
    assert train_toy(image_folder, tmp_path / "run", steps=2).step == 2
    RunDirLock(tmp_path / "run").release()  # the finished run let go of it


@pytest.mark.parametrize("change", [{"lr": 1e-3}, {"seed": 1}, {"precision": "bf16"}, {"batch_size": 8}])
def test_changed_settings_on_resume_are_refused_unless_allowed(image_folder, full, tmp_path, change, train_toy):
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(list_checkpoints(cut)[-1])
    config = (cut / "config.json").read_text()
    name = next(iter(change))
    with pytest.raises(ValueError, match=rf"changed settings: train\.{name}: .*--allow-config-change"):
        train_toy(image_folder, cut, **change)
    assert (cut / "config.json").read_text() == config  # not rewritten
    if name != "batch_size":  # the global batch cannot change at all (the data position depends on it)
        assert train_toy(image_folder, cut, allow_config_change=True, **change).step == 8
        assert name in (cut / "config_changes.jsonl").read_text()


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(image_folder, full, tmp_path, caplog, train_toy,
                                                                  logged_losses):
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    newest = list_checkpoints(cut)[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with caplog.at_level(logging.WARNING):
        assert train_toy(image_folder, cut).step == 8
    assert "damaged" in caplog.text and "falling back" in caplog.text
    assert logged_losses(cut) == logged_losses(full)  # resumed exactly from step 4
    assert (cut / "checkpoints" / "abandoned" / newest.name).is_dir()  # kept, out of the way


def test_torn_last_metrics_line_is_dropped_on_resume(image_folder, full, tmp_path, train_toy, logged_losses):
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(list_checkpoints(cut)[-1])
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 0.12')  # killed mid-write
    assert train_toy(image_folder, cut).step == 8
    assert logged_losses(cut) == logged_losses(full) and len(read_metrics(cut)) == len(read_metrics(full))


def test_resume_auto_after_resuming_an_earlier_checkpoint_continues_the_new_branch(image_folder, full, tmp_path,
                                                                                   train_toy, logged_losses):
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    step4, step8 = list_checkpoints(cut)
    assert train_toy(image_folder, cut, resume=str(step4), steps=6, save_every=2).step == 6
    assert [p.name for p in list_checkpoints(cut)] == ["step_00000004", "step_00000006"]
    assert (cut / "checkpoints" / "abandoned" / step8.name).is_dir()
    branch = logged_losses(cut)
    assert train_toy(image_folder, cut, steps=8).step == 8  # from step 6 of the new branch, not the abandoned step 8
    assert [s for s, _ in logged_losses(cut)] == list(range(1, 9)) and logged_losses(cut)[:6] == branch
