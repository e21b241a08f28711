"""Claim 2 (paper Table 5: stage 1 only 0.36 GenEval; + channel LayerNorm 0.52; + noise 0.54; reconstruction
degrades slightly with each regulariser, and monotonically with the noise level).

VGT-AE variants, all from the recipe's stage-1 model: stage 1 only (no stage 2), stage 2 with per-token channel
LayerNorm and no noise, and stage 2 with LayerNorm and noise gamma in --gammas (the recipe's own stage 2 serves for
its gamma unless --ae-steps changes the stage lengths). For each: reconstruction PSNR on
held-out ShapesWorld images (`vgt eval recon`), then the same VGT-AR budget on its latents and (reduced) ShapesEval.

    python benchmarks/claims_latent_regularisation.py --recipe runs/shapes --work runs/claims/latent-reg
    python benchmarks/claims_latent_regularisation.py --recipe runs/quick --work /tmp/reg --ar-steps 10 \\
        --ae-steps 10 5 --cache-samples 64 --recon-images 16 --eval-prompts-per-category 1 --eval-images 1
"""

import argparse

from claims_common import Experiment, add_common_args, score_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.1, 0.3, 0.5], help="noise levels")
    parser.add_argument("--recon-images", type=int, default=256, help="held-out images for the PSNR")
    args = parser.parse_args()
    exp = Experiment(args)
    stage1 = exp.recipe / "ae1" / "model"
    variants = [("stage 1 only", "off", None, stage1)]
    variants.append(("+ channel LN", "on", 0.0, exp.train_ae("ae2-ln", 2, channel_norm=True, noise_gamma=0.0,
                                                             init=stage1)))
    for gamma in args.gammas:
        if gamma == exp.config["noise_gamma"] and args.ae_steps is None:
            ae = exp.ae  # the recipe's own stage 2 is this variant
        else:
            ae = exp.train_ae(f"ae2-ln-noise{gamma:g}", 2, channel_norm=True, noise_gamma=gamma, init=stage1)
        variants.append((f"+ LN + noise {gamma:g}", "on", gamma, ae))

    rows = []
    for label, norm, gamma, ae in variants:
        key = label.replace(" ", "").replace("+", "_")
        psnr = exp.recon_psnr(f"recon-{key}", ae, args.recon_images)
        run = exp.train_ar(f"ar-{key}", ae, exp.cache(f"cache-{key}", ae))
        scores = exp.shapes_eval(run / "model", exp.work / f"eval-{key}")
        rows.append({"variant": label, "channel_norm": norm, "noise_gamma": gamma, "psnr_db": psnr,
                     "shapes_eval": scores["overall"], "interval": scores["interval"]["overall"],
                     "score_text": score_text(scores), "ae": str(ae)})

    print(f"Latent regularisation ({exp.describe()}; PSNR on {args.recon_images} held-out images)")
    print(f"{'variant':<22} {'PSNR dB':>8} {'ShapesEval':>21}")
    for row in rows:
        print(f"{row['variant']:<22} {row['psnr_db']:8.2f} {row['score_text']:>21}")
    exp.write_results({"rows": rows, "setup": exp.describe()})


if __name__ == "__main__":
    main()
