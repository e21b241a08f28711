"""`vgt recipe shapes` (the whole pipeline on ShapesWorld) and `vgt recipe pack` (ship a trained pipeline in the
package)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int


def _parse_override(text: str) -> tuple[str, object]:
    """FIELD=VALUE for a `RecipeConfig` field, VALUE parsed as JSON when it can be (numbers, null), else text."""
    from vgt.recipe_config import RecipeConfig

    name, sep, value = text.partition("=")
    fields = {f.name for f in dataclasses.fields(RecipeConfig)} - {"name"}
    if not sep or name not in fields:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}; "
                                         f"got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def run_recipe_shapes(args: argparse.Namespace) -> int:
    from vgt.presets import recipe_preset
    from vgt.recipe import run_recipe

    cfg = recipe_preset("quick" if args.quick else args.preset, **dict(args.set or []))
    state = run_recipe(cfg, args.out, stop_after=args.stop_after)
    for name, record in state["stages"].items():
        losses = record.get("losses") or {}
        loss = (f", loss {losses['first_loss']:.4g} (step {losses['first_step']}) -> {losses['last_loss']:.4g} "
                f"(step {losses['last_step']})") if losses else ""
        print(f"{name:>6}: {record['seconds'] / 60:6.1f} min{loss}")
    if "shapes_eval" in state:
        print(f"ShapesEval overall {state['shapes_eval']:.4f} ({Path(args.out) / 'eval' / 'scores.json'})")
    pipeline = Path(args.out) / "ar" / "model"
    if pipeline.is_dir():
        print(f"the pipeline: {pipeline}")
    else:
        print(f"stopped after {args.stop_after}; the same command without --stop-after continues the recipe")
    return 0


def run_recipe_pack(args: argparse.Namespace) -> int:
    from vgt.packing import compare_pipelines, pack_pipeline, record_comparison
    from vgt.pretrained import shipped_model_dir

    out = Path(args.out) if args.out else shipped_model_dir()
    report = pack_pipeline(args.model, out, dtype=args.dtype, max_relative_error=args.max_relative_error,
                           max_bytes=int(args.max_mb * 2**20), overwrite=args.overwrite)
    print(f"packed {args.model} -> {out}: {report.bytes_before / 2**20:.2f} MiB -> {report.bytes_after / 2**20:.2f} "
          f"MiB ({report.tensors_float16} tensors in {args.dtype}, {report.tensors_float32} in float32; largest "
          f"relative round-trip error {report.max_relative_error:.2e})")
    for name, reason in report.kept_float32.items():
        print(f"  kept float32: {name}: {reason}")
    if args.check_prompts_per_category > 0:
        comparison = compare_pipelines(args.model, out, args.check_prompts_per_category, args.check_images,
                                       work_dir=args.check_dir)
        record_comparison(out, comparison)
        print(f"same seeds, {comparison['images']} images: {comparison['identical_images']} identical, mean |pixel "
              f"difference| {comparison['mean_abs_pixel_diff']:.3f} / 255; ShapesEval (reduced) float32 "
              f"{comparison['shapes_eval_float32']:.4f} vs packed {comparison['shapes_eval_packed']:.4f}")
    return 0


def add_commands(tree) -> None:
    from vgt.recipe import STAGES

    tree.group("recipe", "End-to-end recipes: train every stage, ship the result.")
    p = tree.command("recipe shapes", run_recipe_shapes,
                     "Small VLM -> VGT-AE stage 1 -> stage 2 -> latent cache -> VGT-AR -> ShapesEval on ShapesWorld. "
                     "Re-run the same command to resume: finished stages are skipped, the current one continues from "
                     "its last checkpoint.")
    p.add_argument("--out", required=True, help="run folder (one sub-folder per stage)")
    p.add_argument("--preset", default="full", help="recipe size: a name in vgt.presets.RECIPES (full, quick)")
    p.add_argument("--quick", action="store_true", help="same as --preset quick: a few minutes, for CI")
    p.add_argument("--set", type=_parse_override, action="append", metavar="FIELD=VALUE",
                   help="override a preset field (repeatable), e.g. --set ar_steps=5000")
    p.add_argument("--stop-after", choices=STAGES, help="stop after this stage")

    p = tree.command("recipe pack", run_recipe_pack,
                     "Copy a trained pipeline into the package's default-model folder with float16 weights where "
                     "lossless enough, and measure the difference against the float32 model.")
    p.add_argument("--model", required=True, help="pipeline folder (e.g. RECIPE_OUT/ar/model)")
    p.add_argument("--out", help="destination (default: the package's assets/vgt-shapes)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage type of big tensors")
    p.add_argument("--max-relative-error", type=finite_float, default=1e-3,
                   help="a tensor whose float16 round trip changes it more than this (relative L2) stays float32")
    p.add_argument("--max-mb", type=finite_float, default=25.0, help="size budget of the packed folder in MiB")
    p.add_argument("--check-prompts-per-category", type=non_negative_int, default=10,
                   help="ShapesEval prompts per category generated by both models for the comparison (0: skip it)")
    p.add_argument("--check-images", type=positive_int, default=2, help="images per prompt in the comparison")
    p.add_argument("--check-dir", help="keep the comparison's images here (default: a temporary folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that is not a VGT pipeline folder (and everything in it)")
