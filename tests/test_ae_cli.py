"""The VGT-AE commands end to end on a tiny random VLM: train both stages, evaluate, reconstruct."""

import json

import pytest
from PIL import Image

from vgt.cli import main
from vgt.testing import tiny_internvl_backbone

pytestmark = pytest.mark.usefixtures("single_thread")

COMMON = ["--size", "32", "--batch-size", "2", "--log-every", "2", "--eval-every", "0", "--disc-channels", "8"]
TINY = [*COMMON, "--dcae-preset", "small-cpu", "--latent-channels", "8"]


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vlm") / "tiny"
    tiny_internvl_backbone(image_size=32, seed=0).save_pretrained(path)
    return path


def test_train_both_stages_then_evaluate(vlm_dir, tmp_path, capsys):
    run1, run2 = tmp_path / "stage1", tmp_path / "stage2"
    assert main(["train", "ae", "--stage", "1", "--backbone-path", str(vlm_dir), "--run-dir", str(run1),
                 "--max-steps", "3", *TINY]) == 0
    stage2_flags = COMMON
    with pytest.raises(ValueError, match="--init"):
        main(["train", "ae", "--stage", "2", "--backbone-path", str(vlm_dir), "--run-dir", str(run2),
              "--max-steps", "2", *stage2_flags])
    assert main(["train", "ae", "--stage", "2", "--backbone-path", str(vlm_dir), "--init", str(run1 / "model"),
                 "--run-dir", str(run2), "--max-steps", "2", "--freeze-encoder", *stage2_flags]) == 0
    config = json.loads((run2 / "model" / "config.json").read_text())
    assert config["channel_norm"] is True and "noise_gamma" not in config and config["image_size"] == 32

    out = tmp_path / "eval"
    with pytest.raises(ValueError, match="--fid-features vision needs a VLM: pass --backbone-path"):
        main(["eval", "recon", "--model", str(run2 / "model"), "--num", "6", "--out", str(out)])
    assert main(["eval", "recon", "--model", str(run2 / "model"), "--backbone-path", str(vlm_dir), "--num", "6",
                 "--batch-size", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "data_range=1" in printed and "PSNR" in printed and "FID" in printed
    metrics = json.loads((out / "recon_metrics.json").read_text())
    assert metrics["num_images"] == 6 and metrics["ssim_data_range"] == 1.0 and metrics["fid"] is not None
    assert Image.open(out / "recon_grid.png").size == (6 * 32, 32)  # 3 (original | reconstruction) pairs

    assert main(["eval", "ae-understanding", "--model", str(run2 / "model"), "--backbone-path", str(vlm_dir),
                 "--num", "2", "--batch-size", "2", "--out", str(out)]) == 0
    understanding = json.loads((out / "understanding.json").read_text())
    assert set(understanding) == {"original", "tuned"} and understanding["tuned"]["num_images"] == 2

    image = tmp_path / "photo.png"
    Image.new("RGB", (50, 30), (200, 30, 30)).save(image)
    assert main(["reconstruct", str(image), "--model", str(run2 / "model"), "--out", str(tmp_path / "rec")]) == 0
    assert Image.open(tmp_path / "rec" / "photo_recon.png").size == (48, 32)  # nearest multiple of stride 8


def test_pixel_baseline_command(tmp_path, vlm_dir):
    run = tmp_path / "pixel"
    assert main(["train", "ae", "--stage", "1", "--encoder", "pixel", "--stride", "8", "--run-dir", str(run),
                 "--max-steps", "2", *TINY]) == 0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["encoder"] == "pixel" and config["stride"] == 8
    assert main(["eval", "recon", "--model", str(run / "model"), "--num", "4", "--fid-features", "none"]) == 0
