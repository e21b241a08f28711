"""`vgt train toy`: a tiny denoising autoencoder (vgt.train.toy) trained through the shared engine.

Same flags as the real stages; runs as one process or many
(`torchrun --standalone --nproc_per_node 2 -m vgt train toy ...`). An engine demo and smoke test.
"""

from __future__ import annotations

import argparse

from vgt.argtypes import finite_float, positive_int


def run_train_toy(args: argparse.Namespace) -> int:
    from vgt.data.sources import build_source
    from vgt.train import Hook, config_from_args, train
    from vgt.train.toy import DenoisingLoss, ReconstructionSamples, build_toy_model, first_images

    cfg = config_from_args(args, eval_every=100)  # reconstruction samples every 100 steps unless --eval-every
    specs = args.data or ["shapes"]
    source = build_source(specs, args.resolution, args.data_weights)
    model = build_toy_model(args.width, args.dropout, cfg.seed)
    hooks = [Hook(ReconstructionSamples(first_images(source, 4)), name="samples")]
    toy = {"toy": {"data": specs, "data_weights": args.data_weights, "resolution": args.resolution,
                   "width": args.width, "dropout": args.dropout, "noise": args.noise}}
    result = train(model, DenoisingLoss(args.noise), source, cfg, hooks=hooks, extra_config=toy)
    if result.metrics and result.is_main_process:
        print(f"step {result.step}: loss {result.metrics['loss']:.5f}, skipped samples {result.skipped}, "
              f"checkpoint {result.checkpoint}")
    return 0


def add_commands(tree) -> None:
    from vgt.train.config import add_train_args

    p = tree.command("train toy", run_train_toy, "Train a tiny denoising autoencoder (engine demo and smoke test).")
    p.add_argument("--data", action="append", default=None,
                   help="data spec, repeatable for a mix: shapes[:prompt|caption] (default), folder:DIR, wds:SHARDS")
    p.add_argument("--data-weights", type=finite_float, nargs="+", help="mix weights, one per --data")
    p.add_argument("--resolution", type=positive_int, default=32, help="training image size")
    p.add_argument("--width", type=positive_int, default=16, help="channels of the toy model")
    p.add_argument("--dropout", type=finite_float, default=0.0, help="dropout in the toy encoder")
    p.add_argument("--noise", type=finite_float, default=0.1, help="std of the input noise (denoising objective)")
    add_train_args(p, default_preset="toy")
