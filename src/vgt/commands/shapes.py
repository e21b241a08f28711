"""`vgt shapes ...`: ShapesWorld data and the ShapesEval prompt set."""

from __future__ import annotations

import argparse
import json

from vgt.argtypes import non_negative_int, positive_int


def _export(args: argparse.Namespace) -> int:
    from vgt.data.shapes_world import export_split

    out = export_split(args.out, args.n, args.seed, args.size, args.tasks, start=args.start,
                       overwrite=args.overwrite)
    print(f"wrote {args.n} samples to {out} (metadata.jsonl + PNGs)")
    return 0


def _vocab(args: argparse.Namespace) -> int:
    from vgt.data.shapes import BACKGROUND, COLORS, SHAPES, vocabulary_words

    if args.json:
        print(json.dumps({"shapes": list(SHAPES), "colors": {name: list(rgb) for name, rgb in COLORS.items()},
                          "background": list(BACKGROUND), "words": vocabulary_words()}, indent=2))
    else:
        print("shapes: " + ", ".join(SHAPES))
        print("colors:")
        for name, rgb in COLORS.items():
            print(f"  {name:<7} {rgb}")
        print(f"background: {BACKGROUND}")
        print("words: " + " ".join(vocabulary_words()))
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from vgt.eval.shapes import PROMPT_SET_VERSION, shapes_eval_prompts
    from vgt.io import write_jsonl

    rows = shapes_eval_prompts()
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} prompts ({PROMPT_SET_VERSION}) to {args.out}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from vgt.eval.shapes import read_prompts, render_ground_truth

    prompts = read_prompts(args.prompts) if args.prompts else None
    out = render_ground_truth(args.out, prompts, args.samples, args.size, args.seed, overwrite=args.overwrite)
    print(f"rendered ground truth into {out}; score it with: vgt eval shapes {out}")
    return 0


def add_commands(tree) -> None:
    from vgt.data.shapes import GENEVAL_TAGS, TASKS

    tree.group("shapes", "ShapesWorld data and the ShapesEval prompt set.")
    p = tree.command("shapes export", _export, "Export a fixed ShapesWorld split: PNGs + metadata.jsonl (imagefolder).")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    p.add_argument("--n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--size", type=positive_int, default=128, help="image side in pixels")
    p.add_argument("--tasks", nargs="+", default=list(GENEVAL_TAGS), choices=TASKS, help="task types to draw from")
    p.add_argument("--start", type=non_negative_int, default=0,
                       help="first sample index (splits: disjoint index ranges)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")

    p = tree.command("shapes vocab", _vocab, "Print the shapes, colors (RGB) and every prompt/caption word.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = tree.command("shapes prompts", _prompts, "Write the fixed ShapesEval prompt set (GenEval metadata lines).")
    p.add_argument("--out", required=True, help="output .jsonl file")

    p = tree.command("shapes render", _render,
                     "Render ground-truth images for a prompt set into GenEval layout OUT/<index>/samples/.")
    p.add_argument("out", help="output directory")
    p.add_argument("--prompts", help="prompt .jsonl file (default: the built-in ShapesEval set)")
    p.add_argument("--samples", type=positive_int, default=4, help="images per prompt")
    p.add_argument("--size", type=positive_int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace prompt directories that exist")
