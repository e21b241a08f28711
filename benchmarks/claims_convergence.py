"""Claim 1 (paper: VGT-AR converges up to 20x faster on VGT-AE latents than on a pixel VAE's latents).

The same VGT-AR (same small-VLM initialisation, data, steps, seed) is trained on the recipe's VGT-AE latents and
on the latents of the pixel-VAE baseline (DC-AE's convolutional encoder + the same decoder, same latent grid and
channels, trained with pixel losses only through both stages, `vgt train ae --encoder pixel`). Both runs keep a
checkpoint every --eval-every steps; each is judged with (reduced) ShapesEval. Reported: the scores at each step,
the baseline's best score and the step it was first reached at, the step at which the VGT-AE run first reaches it,
and their ratio.

    python benchmarks/claims_convergence.py --recipe runs/shapes --work runs/claims/convergence
    python benchmarks/claims_convergence.py --recipe runs/quick --work /tmp/conv --ar-steps 20 --eval-every 10 \\
        --ae-steps 20 10 --cache-samples 128 --eval-prompts-per-category 1 --eval-images 1     # reduced run
"""

import argparse
import json

from claims_common import Experiment, add_common_args, score_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--eval-every", type=int, help="VGT-AR steps between evaluated checkpoints "
                        "(default: a fifth of the AR steps)")
    args = parser.parse_args()
    exp = Experiment(args)
    every = args.eval_every or max(1, exp.ar_steps // 5)
    stride = json.loads((exp.ae / "config.json").read_text())["stride"]

    pixel1 = exp.train_ae("pixel-ae1", 1, encoder="pixel", stride=stride)
    pixel2 = exp.train_ae("pixel-ae2", 2, encoder="pixel", stride=stride, init=pixel1)
    scores = {}
    for name, ae in (("vgt-ae", exp.ae), ("pixel-vae", pixel2)):
        run = exp.train_ar(f"ar-{name}", ae, exp.cache(f"cache-{name}", ae), save_every=every)
        scores[name] = dict(exp.checkpoint_scores(run))
    curves = {name: {step: s["overall"] for step, s in by_step.items()} for name, by_step in scores.items()}
    steps = sorted(set(curves["vgt-ae"]) | set(curves["pixel-vae"]))
    print(f"VGT-AR on VGT-AE latents vs pixel-VAE latents ({exp.describe()}; pixel VAE stride {stride})")
    print(f"{'step':>7} {'VGT-AE':>21} {'pixel VAE':>21}")
    for step in steps:
        print(f"{step:7d} " + " ".join(f"{score_text(scores[n][step]) if step in scores[n] else '-':>21}"
                                        for n in ("vgt-ae", "pixel-vae")))
    baseline = curves["pixel-vae"]
    best = max(baseline.values())
    baseline_step = min(s for s, v in baseline.items() if v == best)
    reached = [s for s, v in sorted(curves["vgt-ae"].items()) if v >= best]
    result = {"curves": curves,
              "intervals": {n: {step: s["interval"]["overall"] for step, s in by_step.items()}
                            for n, by_step in scores.items()},
              "baseline_best": best, "baseline_best_step": baseline_step,
              "vgt_steps_to_baseline_best": reached[0] if reached else None,
              "speed_up": baseline_step / reached[0] if reached else None, "eval_every": every,
              "setup": exp.describe()}
    if reached:
        print(f"pixel-VAE best {best:.4f} first at step {baseline_step}; VGT-AE reaches it at step {reached[0]}: "
              f"{result['speed_up']:.1f}x fewer steps (resolution: {every} steps; read it against the intervals)")
    else:
        print(f"pixel-VAE best {best:.4f} at step {baseline_step}; the VGT-AE run does not reach it")
    exp.write_results(result)


if __name__ == "__main__":
    main()
