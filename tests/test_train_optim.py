"""Optimizer and schedule: AdamW groups without decay on 1-D parameters, warmup + cosine, the training presets
and flags."""

import math

import pytest
import torch
from torch import nn

from vgt.train import TrainConfig, build_optimizer, lr_at, param_groups
from vgt.train.optim import set_lr


def test_warmup_is_linear_then_cosine_reaches_the_floor():
    cfg = TrainConfig(steps=110, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert [lr_at(s, cfg) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)  # cosine starts at the peak
    # halfway through the decay (step 10 + 99/2) the rate is the midpoint of peak and floor
    assert lr_at(10 + 49.5, cfg) == pytest.approx(0.55)
    assert lr_at(109, cfg) == pytest.approx(0.1)  # the last step is at the floor
    expected = 0.1 + 0.45 * (1 + math.cos(math.pi * 30 / 99))
    assert lr_at(40, cfg) == pytest.approx(expected)
    values = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_no_warmup_starts_at_peak():
    cfg = TrainConfig(steps=5, lr=2e-4, min_lr=0.0, warmup_steps=0)
    assert lr_at(0, cfg) == pytest.approx(2e-4)
    assert lr_at(4, cfg) == pytest.approx(0.0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
        self.head = nn.Linear(8, 2)
        self.query = nn.Parameter(torch.zeros(3, 8))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return ["query"]


def test_groups_exclude_biases_norms_and_listed_params_from_decay_and_apply_multipliers():
    groups = param_groups(Net(), weight_decay=0.05, lr_multipliers={"encoder.": 0.5})
    by_name = {name: (g["weight_decay"], g["lr_mult"]) for g in groups for name in g["names"]}
    assert by_name == {
        "encoder.0.weight": (0.05, 0.5), "encoder.0.bias": (0.0, 0.5),
        "encoder.1.weight": (0.0, 0.5), "encoder.1.bias": (0.0, 0.5),
        "head.weight": (0.05, 1.0), "head.bias": (0.0, 1.0), "query": (0.0, 1.0),
    }  # frozen parameters are not optimized at all


def test_scheduled_rate_is_scaled_per_group():
    cfg = TrainConfig(steps=10, lr=1e-3, min_lr=1e-4, warmup_steps=2, weight_decay=0.1,
                      lr_multipliers={"encoder.": 0.5})
    opt = build_optimizer(Net(), cfg)
    base = set_lr(opt, 0, cfg)
    assert base == pytest.approx(5e-4)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([2.5e-4, 5e-4])


def test_unknown_prefix_and_low_precision_master_weights_are_rejected():
    with pytest.raises(ValueError, match="match no parameter"):
        param_groups(Net(), 0.0, {"decoder.": 0.5})
    with pytest.raises(ValueError, match="fp32 master weights"):
        build_optimizer(Net().to(torch.bfloat16), TrainConfig())


def test_config_validation_and_batch_split():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    cfg = TrainConfig(batch_size=12, grad_accum=2)
    assert cfg.micro_batch_size(3) == 2
    with pytest.raises(ValueError, match="divisible by 8"):
        cfg.micro_batch_size(4)


def test_cli_flags_override_the_named_preset_which_overrides_the_defaults():
    import argparse

    from vgt.presets import TRAIN_PRESETS
    from vgt.train import TrainConfig, add_train_args, config_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser, default_preset="ae-stage1")
    args = parser.parse_args(["--run-dir", "r", "--lr", "5e-4", "--lr-mult", "encoder.=0.5", "--betas", "0.8", "0.9"])
    cfg = config_from_args(args, "ae-stage1")
    assert cfg.lr == 5e-4 and cfg.betas == (0.8, 0.9) and cfg.run_dir == "r"
    assert cfg.lr_multipliers == {"encoder.": 0.5} and cfg.min_lr == TRAIN_PRESETS["ae-stage1"].min_lr
    assert cfg.ema_decay == TrainConfig().ema_decay  # a field the preset leaves alone keeps the default
    named = config_from_args(parser.parse_args(["--run-dir", "r", "--preset", "ar-cpu", "--max-steps", "7"]),
                             "ae-stage1")
    assert named == TrainConfig(**{**TRAIN_PRESETS["ar-cpu"].to_dict(), "steps": 7, "run_dir": "r"})
    with pytest.raises(SystemExit):
        parser.parse_args(["--run-dir", "r", "--lr-mult", "encoder"])


def test_an_unknown_preset_is_a_one_line_error_naming_the_choices(tmp_path, capsys):
    from vgt.cli import run

    assert run(["train", "toy", "--preset", "huge", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown training preset 'huge'; choose one of toy, vlm-small" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert run(["recipe", "shapes", "--preset", "huge", "--out", str(tmp_path / "recipe")]) == 2
    assert "unknown recipe preset 'huge'; choose one of full, quick" in capsys.readouterr().err


def test_the_cli_offers_exactly_the_named_presets():
    """`vgt --help` stays fast by not importing the registries (torch); its choices must still be their names."""
    import argparse

    from vgt.cli import build_parser
    from vgt.presets import AR_PRESETS, DCAE_PRESETS, SMALL_VLM_PRESETS

    def choices(path: str, dest: str) -> list:
        parser = build_parser()
        for word in path.split():
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        return sorted(next(a for a in parser._actions if a.dest == dest).choices)

    assert choices("train vlm", "vlm_preset") == sorted(SMALL_VLM_PRESETS)
    assert choices("train ae", "dcae_preset") == sorted(DCAE_PRESETS)
    assert choices("train ar", "model_preset") == sorted(AR_PRESETS)


def test_the_registries_that_name_other_presets_name_existing_ones():
    from vgt.presets import AE_PRESETS, AE_SCALE_PRESETS, AR_PRESETS, AR_TRAIN_PRESETS, TRAIN_PRESETS

    assert sorted(AR_TRAIN_PRESETS) == sorted(AR_PRESETS) and set(AR_TRAIN_PRESETS.values()) <= set(TRAIN_PRESETS)
    assert set(AE_SCALE_PRESETS.values()) == set(AE_PRESETS)
