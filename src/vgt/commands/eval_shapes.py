"""`vgt eval shapes OUT`: score generated images in GenEval layout with the ShapesEval judge."""

from __future__ import annotations

import argparse


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


def add_commands(tree) -> None:
    p = tree.command("eval shapes", _eval_shapes, "Score images in GenEval layout (OUT/<index>/samples/*.png) "
                     "with the ShapesEval judge.")
    p.add_argument("out", help="generation output directory in GenEval layout")
    p.add_argument("--json", help="write {overall, categories, n_images, interval} here")
    p.add_argument("--per-image", help="write one JSON line per image (correct, reason, objects found) here")
    p.add_argument("--rules", choices=("strict", "geneval"), default="strict",
                   help="strict: exact counts and nothing else in the image; geneval: GenEval's own rules")
