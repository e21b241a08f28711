"""`vgt eval shapes | model | compare | recon | understanding | ae-understanding`: score generated images, a whole
VGT model, the difference between two of its evaluations, a VGT-AE's reconstructions, and a VLM's understanding
(with its original or its VGT-AE-tuned vision path)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import non_negative_int, positive_int
from vgt.io import write_json

# ---------------------------------------------------------------------------------------------- eval shapes

def _eval_shapes(args: argparse.Namespace) -> int:
    from vgt.eval.shapes import evaluate_layout, format_scores
    from vgt.io import write_json, write_jsonl

    scores, results = evaluate_layout(args.out, rules=args.rules)
    print(format_scores(scores))
    if args.json:
        write_json(args.json, scores)
        print(f"scores written to {args.json}")
    if args.per_image:
        write_jsonl(args.per_image, results)
        print(f"per-image results written to {args.per_image}")
    return 0


# ---------------------------------------------------------------------------------------------- eval model

def run_eval_model(args: argparse.Namespace) -> int:
    from vgt.commands.generate import sampling_arguments
    from vgt.eval.benchmark import evaluate_pipeline_seeds
    from vgt.eval.shapes import format_scores

    chosen = sampling_arguments(args)
    scores = evaluate_pipeline_seeds(args.model, args.out, args.seeds, args.prompts_per_category,
                                     args.num_images_per_prompt, chosen, args.split, device=args.device,
                                     dtype=args.dtype, threads=args.threads)
    print(format_scores(scores))
    if args.split == "tune":
        print("split: tune (a prompt draw and seeds for choosing settings; report the chosen ones with --split report)")
    print("sampler: " + ", ".join(f"{k}={v}" for k, v in {**scores["sampler_defaults"], **chosen}.items()))
    print(f"scores written to {Path(args.out) / 'scores.json'} (per seed: {Path(args.out) / 'seed-S'})")
    return 0


def run_eval_compare(args: argparse.Namespace) -> int:
    from vgt.eval.shapes import detection_counts, format_comparison, paired_difference, read_judged

    (a, seeds_a), (b, seeds_b) = read_judged(args.a), read_judged(args.b)
    if seeds_a != seeds_b:
        raise ValueError(f"{args.a} holds {', '.join(seeds_a) or 'no seed folders'} but {args.b} holds "
                         f"{', '.join(seeds_b) or 'no seed folders'}: evaluate both with the same --seeds")
    report = paired_difference(a, b)
    print(format_comparison(report))
    report["counts"] = {"a": detection_counts(a), "b": detection_counts(b)}
    for name, path in (("a", args.a), ("b", args.b)):
        c = report["counts"][name]
        print(f"{name.upper()} = {path}: {c['blank']} of {c['images']} images blank, {c['unknown_shape']} of "
              f"{c['objects']} objects of no known shape")
    if args.json:
        write_json(args.json, report)
        print(f"comparison written to {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------- eval recon

def run_eval_recon(args: argparse.Namespace) -> int:
    from vgt.ae.evaluation import evaluate_reconstruction

    result = evaluate_reconstruction(args.model, args.data, args.num, args.batch_size, args.size, args.fid_features,
                                     args.seed, args.out, args.backbone_path)
    print(f"PSNR {result['psnr_db']:.2f} dB (per image on [0, 1], mean of {result['num_images']})")
    print(f"SSIM {result['ssim']:.4f} (data_range={result['ssim_data_range']:g} on [0, 1] images, per-image mean)")
    if result["fid"] is not None:
        print(f"FID  {result['fid']:.4g} (features: {result['fid_features']}; compare only runs with the same "
              "features)")
    if args.out:
        print(f"wrote {Path(args.out) / 'recon_metrics.json'} and {Path(args.out) / 'recon_grid.png'}")
    return 0


# ---------------------------------------------------------------------------------------------- ae-understanding

def run_eval_ae_understanding(args: argparse.Namespace) -> int:
    from vgt.ae.evaluation import evaluate_ae_understanding

    result = evaluate_ae_understanding(args.model, args.num, args.batch_size, args.out, args.backbone_path)
    for name, scores in (("original VLM", result["original"]), ("tuned VGT-AE encoder", result["tuned"])):
        print(f"{name:22s} exact {100 * scores['exact']:.1f}%  " + "  ".join(
            f"{k} {100 * scores[k]:.1f}%" for k in ("shapes", "colors", "locations", "count")))
    print(f"drop in exact-scene accuracy: {100 * (result['original']['exact'] - result['tuned']['exact']):.1f} points")
    return 0


# ---------------------------------------------------------------------------------------------- eval understanding

def eval_understanding(args: argparse.Namespace) -> int:
    from vgt.backbones import load_backbone
    from vgt.vlm.understanding import METRIC_KEYS, evaluate_understanding

    backbone = load_backbone(args.backbone, args.model).eval()
    metrics = evaluate_understanding(backbone, num_images=args.num_images, batch_size=args.batch_size)
    report = {"model": str(args.model), **metrics}
    out = Path(args.out) if args.out else Path(args.model) / "understanding.json"
    write_json(out, report)
    for key in METRIC_KEYS:
        print(f"{key:>10}: {100 * metrics[key]:.1f}%")
    print(f"({metrics['num_images']} held-out scenes, world seed {metrics['world_seed']}; exact_tol accepts a "
          f"neighbouring location within {metrics['location_tolerance']:.4f} of the side; report: {out})")
    return 0


# ---------------------------------------------------------------------------------------------- registration

def add_commands(tree) -> None:
    from vgt.commands.generate import add_pipeline_flags

    tree.group("eval", "Evaluate models and generated images.")
    p = tree.command("eval shapes", _eval_shapes, "Score images in GenEval layout (OUT/<index>/samples/*.png) "
                     "with the ShapesEval judge.")
    p.add_argument("out", help="generation output directory in GenEval layout")
    p.add_argument("--json", help="write {overall, categories, n_images, interval} here")
    p.add_argument("--per-image", help="write one JSON line per image (correct, reason, objects found) here")
    p.add_argument("--rules", choices=("strict", "geneval"), default="strict",
                   help="strict: exact counts and nothing else in the image; geneval: GenEval's own rules")

    p = tree.command("eval model", run_eval_model,
                     "ShapesEval of a VGT model: generate the prompt set (GenEval layout), judge it, print the scores.")
    p.add_argument("--out", required=True, help="folder for prompts.jsonl, samples/ and scores.json (resumable; "
                   "samples made with other settings are removed and generated again)")
    p.add_argument("--prompts-per-category", type=positive_int,
                   help="a reduced evaluation: this many prompts per category (default: the full ShapesEval set)")
    p.add_argument("--num-images-per-prompt", "-n", type=positive_int, default=4, help="images per prompt")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1],
                   help="sampling seeds (each image has its own generator from seed, prompt and sample index); the "
                        "score is their mean, reported with each seed's score and a 95%% interval")
    p.add_argument("--split", choices=("report", "tune"), default="report",  # vgt.eval.benchmark.SPLITS
                   help="report: the ShapesEval prompts a score is quoted on; tune: another prompt draw and other "
                        "seeds, to choose sampler settings on without touching the reported score")
    add_pipeline_flags(p)

    p = tree.command("eval compare", run_eval_compare,
                     "B minus A: two ShapesEval runs on the same prompts and seeds, with a paired 95% interval.")
    p.add_argument("a", help="`vgt eval model --out` folder (or per-image JSONL file) of the baseline")
    p.add_argument("b", help="the same for the candidate")
    p.add_argument("--json", help="write the scores, differences, intervals and blank/unknown counts here")

    p = tree.command("eval recon", run_eval_recon, "Reconstruction quality of a VGT-AE: PSNR, SSIM, FID, a grid.")
    p.add_argument("--model", required=True, help="exported VGT-AE folder (RUN_DIR/model)")
    p.add_argument("--data", action="append", help="data spec (default: held-out ShapesWorld scenes)")
    p.add_argument("--num", type=positive_int, default=256, help="images to evaluate")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--size", type=positive_int, help="image size (default: the model's training resolution)")
    p.add_argument("--fid-features", default="vision",
                   help="FID feature network: vision (the VLM's frozen vision tower), none, or a TorchScript file "
                        "mapping [N, 3, H, W] images in [0, 1] to [N, d] features (e.g. Inception)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="data order seed")
    p.add_argument("--out", help="folder for recon_metrics.json and recon_grid.png")
    p.add_argument("--backbone-path", help="the VLM folder, when it moved since training")

    p = tree.command("eval understanding", eval_understanding,
                     "Exact-scene and per-attribute accuracy of a VLM's captions on held-out ShapesWorld scenes.")
    p.add_argument("--model", required=True, help="VLM folder")
    p.add_argument("--backbone", default="auto", help="backbone name (auto: read from the folder)")
    p.add_argument("--num-images", type=positive_int, default=200)
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--out", help="JSON report path (default: MODEL/understanding.json)")

    p = tree.command("eval ae-understanding", run_eval_ae_understanding,
                     "ShapesWorld understanding of the VLM with its original vs the VGT-AE-tuned vision path.")
    p.add_argument("--model", required=True, help="exported VGT-AE folder (RUN_DIR/model)")
    p.add_argument("--num", type=positive_int, default=200, help="held-out scenes")
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--out", help="folder for understanding.json")
    p.add_argument("--backbone-path", help="the VLM folder, when it moved since training")
