"""The training engine end to end on a toy model: exact resume, accumulation, EMA export, failure handling.
(Multi-process runs: test_train_ddp.py.)"""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vgt.data.readers import ImageFolderSource
from vgt.train import (
    Hook,
    NonFiniteLossError,
    TrainConfig,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_weights,
    read_metrics,
    train,
)
from vgt.train import checkpoint as ckpt
from vgt.train.toy import DenoisingLoss, ToyAutoencoder, build_toy_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_resumed_run_equals_uninterrupted_run(image_folder, tmp_path, train_toy, logged_losses):
    full = tmp_path / "full"
    result = train_toy(image_folder, full)
    assert result.step == 8 and [c.name for c in list_checkpoints(full)] == ["step_00000004", "step_00000008"]
    # Interrupt after step 4: keep only that checkpoint, then resume (dropout + noise exercise the RNG restore,
    # 24 images at batch 4 cross an epoch boundary of the shuffled order).
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for path in list_checkpoints(cut)[1:]:
        shutil.rmtree(path)
    resumed = train_toy(image_folder, cut)
    assert resumed.step == 8
    assert logged_losses(cut) == logged_losses(full)  # bit-identical, and the log reads as one run
    a = load_file(str(full / "checkpoints/step_00000008/model.safetensors"))
    b = load_file(str(cut / "checkpoints/step_00000008/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea = load_file(str(full / "checkpoints/step_00000008/ema.safetensors"))
    eb = load_file(str(cut / "checkpoints/step_00000008/ema.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_resume_is_exact_with_data_workers(image_folder, tmp_path, train_toy, logged_losses):
    full, cut = tmp_path / "full", tmp_path / "cut"
    train_toy(image_folder, full, steps=6, save_every=3, num_workers=2)
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints/step_00000006")
    train_toy(image_folder, cut, steps=6, save_every=3, num_workers=2)
    assert logged_losses(cut) == logged_losses(full)


def test_run_directory_contents_and_ema_export(image_folder, tmp_path):
    seen = []
    cfg = TrainConfig(run_dir=str(tmp_path), steps=4, batch_size=4, log_every=2, save_every=0, eval_every=2,
                      ema_decay=0.5, seed=3)
    hook = Hook(lambda ctx: seen.append(ctx.step) or {"steps_seen": float(ctx.step)}, name="probe")
    train(build_toy_model(8, 0.0, 0), DenoisingLoss(0.0), ImageFolderSource(image_folder, 16), cfg, hooks=[hook])
    assert seen == [2, 4]
    config = json.loads((tmp_path / "config.json").read_text())
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert config["train"]["ema_decay"] == 0.5 and info["seed"] == 3 and "torch" in info["versions"]
    assert "git_revision" in info and info["num_processes"] == 1 and info["distributed_type"] == "NO"
    assert {"step": 2, "probe/steps_seen": 2.0} in read_metrics(tmp_path)
    checkpoint = latest_checkpoint(tmp_path)
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert meta["eval_weights"] == "ema.safetensors" and "EMA" in meta["files"]["ema.safetensors"]
    model = ToyAutoencoder(8)
    assert load_checkpoint_weights(model, checkpoint) == "ema"
    ema = load_file(str(checkpoint / "ema.safetensors"))
    assert torch.equal(model.state_dict()["encoder.0.weight"], ema["encoder.0.weight"])
    assert load_checkpoint_weights(model, checkpoint, use_ema=False) == "model"
    with pytest.raises(ValueError, match="shape mismatch"):
        load_checkpoint_weights(ToyAutoencoder(4), checkpoint)


def test_unreadable_images_are_counted_in_the_metrics(image_folder, tmp_path, train_toy):
    damaged = tmp_path / "data"
    shutil.copytree(image_folder, damaged)
    (damaged / "005.png").write_bytes(b"\x89PNG broken")
    result = train_toy(damaged, tmp_path / "run", steps=7, ema_decay=0.0)  # 28 samples: one pass over 005.png at least
    assert result.skipped >= 1 and read_metrics(tmp_path / "run")[-1]["skipped"] == result.skipped


def test_gradient_accumulation_matches_full_batch(image_folder, tmp_path, train_toy):
    # with noise: each sample draws from its own generator, whichever micro-step holds it
    train_toy(image_folder, tmp_path / "a", dropout=0.0, noise=0.2, steps=3, batch_size=8, ema_decay=0.0)
    train_toy(image_folder, tmp_path / "b", dropout=0.0, noise=0.2, steps=3, batch_size=8, grad_accum=4, ema_decay=0.0)
    a = load_file(str(tmp_path / "a/checkpoints/step_00000003/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/step_00000003/model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bf16_autocast_keeps_fp32_master_weights(image_folder, tmp_path, train_toy, logged_losses):
    train_toy(image_folder, tmp_path, steps=2, precision="bf16", ema_decay=0.0)
    weights = load_file(str(latest_checkpoint(tmp_path) / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert all(np.isfinite(loss) for _, loss in logged_losses(tmp_path))


def test_non_finite_loss_stops_with_last_good_checkpoint_intact(image_folder, tmp_path):
    def exploding(model, batch, ctx):
        loss, metrics = DenoisingLoss(0.0)(model, batch, ctx)
        return (loss * float("nan") if ctx.step == 5 else loss), metrics

    cfg = TrainConfig(run_dir=str(tmp_path), steps=10, batch_size=4, save_every=2, log_every=1)
    with pytest.raises(NonFiniteLossError, match=r"step 6.*step_00000004"):
        train(build_toy_model(8, 0.0, 0), exploding, ImageFolderSource(image_folder, 16), cfg)
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    load_checkpoint_weights(ToyAutoencoder(8), latest_checkpoint(tmp_path))
    assert "error" in read_metrics(tmp_path)[-1]


def test_interrupted_checkpoint_write_leaves_previous_checkpoint_loadable(image_folder, tmp_path, monkeypatch,
                                                                          train_toy):
    original = ckpt.save_weights
    calls = []

    def crash_on_second_save(state, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"half a file")
            raise KeyboardInterrupt("killed mid-write")
        original(state, path, metadata)

    monkeypatch.setattr(ckpt, "save_weights", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        train_toy(image_folder, tmp_path, ema_decay=0.0, steps=8)
    monkeypatch.setattr(ckpt, "save_weights", original)
    assert [c.name for c in list_checkpoints(tmp_path)] == ["step_00000004"]
    assert (tmp_path / "checkpoints/.step_00000008.partial").exists()  # the debris is never taken for a checkpoint
    load_checkpoint_weights(ToyAutoencoder(8), latest_checkpoint(tmp_path))
    result = train_toy(image_folder, tmp_path, ema_decay=0.0, steps=8)  # and the run continues from it
    assert result.step == 8 and not (tmp_path / "checkpoints/.step_00000008.partial").exists()


def test_resume_never_refuses_to_overwrite_and_explicit_resume_checks_world(image_folder, tmp_path, train_toy):
    train_toy(image_folder, tmp_path, steps=2, save_every=2, ema_decay=0.0)
    with pytest.raises(FileExistsError, match="--resume auto"):
        train_toy(image_folder, tmp_path, steps=4, ema_decay=0.0, resume="never")
    with pytest.raises(ValueError, match="global batch"):
        train_toy(image_folder, tmp_path, steps=4, ema_decay=0.0, batch_size=8, allow_config_change=True)
