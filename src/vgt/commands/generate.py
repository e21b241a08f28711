"""`vgt generate` (text -> images), `vgt sample-benchmark` (a prompt file in GenEval's layout) and
`vgt sampling-defaults` (the sampling settings saved with a model).

The sampling flags are named after `VGTPipeline.__call__`'s arguments (`--guidance-scale`, `--num-inference-steps`,
`--height`/`--width`, ...) and declared once, in `SAMPLING_FLAGS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int

#: the pipeline's sampling arguments, each a flag of the same name (unset: the model's saved default)
SAMPLING_FLAGS: dict[str, dict] = {
    "num_inference_steps": dict(type=positive_int, metavar="N", help="flow-head sampler steps per token group"),
    "guidance_scale": dict(type=finite_float, aliases=("--cfg",), metavar="SCALE",
                           help="classifier-free guidance scale (1 disables guidance)"),
    "cfg_schedule": dict(choices=("constant", "linear"), help="guidance over the decoding groups"),
    "tokens_per_step": dict(type=positive_int, metavar="N",
                            help="latent positions decoded per forward pass (1 = training order)"),
    "order": dict(choices=("random", "raster"), help="generation order of the latent positions"),
    "sampler": dict(choices=("sde", "euler", "heun"), help="flow-head sampler"),
    "temperature": dict(type=finite_float, metavar="T", help="scale of the flow-head sampler's noise (1: as trained)"),
}


def add_sampling_flags(group, names=tuple(SAMPLING_FLAGS)) -> None:
    for name in names:
        spec = dict(SAMPLING_FLAGS[name])
        group.add_argument(f"--{name.replace('_', '-')}", *spec.pop("aliases", ()), dest=name, **spec)


def sampling_arguments(args: argparse.Namespace) -> dict:
    """The pipeline arguments the user set (`--size` sets both height and width)."""
    chosen = {name: getattr(args, name) for name in SAMPLING_FLAGS}
    chosen.update(height=args.height or args.size, width=args.width or args.size)
    return {name: value for name, value in chosen.items() if value is not None}


def add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    """The model, sampling and device flags of every command that samples a pipeline."""
    g = p.add_argument_group("sampling (unset: the model's saved defaults)")
    g.add_argument("--model", help="VGT pipeline folder (default: $VGT_MODEL, else the model shipped with vgt)")
    add_sampling_flags(g)
    g.add_argument("--size", type=positive_int, help="image height and width in pixels (a multiple of the AE stride)")
    g.add_argument("--height", type=positive_int, help="image height in pixels (default: --size)")
    g.add_argument("--width", type=positive_int, help="image width in pixels (default: --size)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    g.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="weight precision")
    g.add_argument("--threads", type=int,
                   help="CPU threads (default: $OMP_NUM_THREADS if set, else 1 below 8 images per call, else the idle "
                        "cores)")


def _load_pipeline(args: argparse.Namespace, images_per_call: int):
    from vgt.eval.benchmark import load_sampling_pipeline

    return load_sampling_pipeline(args.model, args.device, args.dtype, args.threads, images_per_call)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from vgt.images import image_grid, save_png

    per_prompt = args.num_images_per_prompt
    pipe = _load_pipeline(args, images_per_call=len(args.prompt) * per_prompt)
    generator = torch.Generator().manual_seed(args.seed)
    images = pipe(args.prompt, negative_prompt=args.negative_prompt, num_images_per_prompt=per_prompt,
                  generator=generator, **sampling_arguments(args)).images
    out = Path(args.out)
    if args.grid or len(images) == 1:
        save_png(image_grid(images, columns=per_prompt if len(args.prompt) > 1 else None), out)
        written = [out]
    else:
        written = [out.with_name(f"{out.stem}-{i:03d}{out.suffix or '.png'}") for i in range(len(images))]
        for image, path in zip(images, written, strict=True):
            save_png(image, path)
    print("\n".join(str(p) for p in written))
    return 0


def run_sample_benchmark(args: argparse.Namespace) -> int:
    from vgt.eval.benchmark import write_benchmark_samples
    from vgt.eval.shapes import read_prompts

    per_prompt = args.num_images_per_prompt
    prompts = read_prompts(args.prompts)
    pipe = _load_pipeline(args, images_per_call=args.batch_prompts * per_prompt)
    done = write_benchmark_samples(pipe, list(enumerate(prompts)), args.out, per_prompt, seed=args.seed,
                                   overwrite=args.overwrite, prompts_per_batch=args.batch_prompts,
                                   **sampling_arguments(args))
    print(f"wrote {done} prompt(s) ({len(prompts) - done} already present) to {args.out}")
    return 0


def run_sampling_defaults(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from vgt.ar.config import ARConfig
    from vgt.ar.model import VGTForGeneration
    from vgt.loading import CONFIG_NAME
    from vgt.pipeline import GENERATOR_DIR
    from vgt.pretrained import PIPELINE_FILE

    if not (Path(args.model) / PIPELINE_FILE).is_file():
        raise SystemExit(f"{args.model} is not a VGT pipeline folder (no {PIPELINE_FILE})")
    folder = Path(args.model) / GENERATOR_DIR
    config = ARConfig.load(folder / CONFIG_NAME)
    changes = {name: getattr(args, name) for name in (*SAMPLING_FLAGS, "grid_size") if getattr(args, name) is not None}
    if changes:
        config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, **changes))
        VGTForGeneration.write_config(config, folder)
    print(json.dumps(dataclasses.asdict(config.sampling), indent=2))
    return 0


def add_commands(tree) -> None:
    p = tree.command("generate", run_generate, "Generate images from text with a VGT model.")
    p.add_argument("prompt", nargs="+", help="one or more prompts, e.g. \"two red circles\"")
    p.add_argument("--out", default="out.png", help="output PNG (several images: OUT-000.png, ... or one --grid)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed: same seed, same images")
    p.add_argument("--num-images-per-prompt", "-n", type=positive_int, default=1, help="images per prompt")
    p.add_argument("--grid", action="store_true", help="save all images tiled into the one --out file")
    p.add_argument("--negative-prompt", help="prompt for the unconditional branch of guidance")
    add_pipeline_flags(p)

    p = tree.command("sample-benchmark", run_sample_benchmark,
                     "Generate images for a prompt file in GenEval's layout (OUT/<index>/samples/<k>.png).")
    p.add_argument("--prompts", required=True, help="prompt file, one JSON object per line (GenEval/ShapesEval)")
    p.add_argument("--out", required=True,
                   help="output folder; prompts already there with --num-images-per-prompt images are skipped (resume)")
    p.add_argument("--num-images-per-prompt", "-n", type=positive_int, default=4, help="images per prompt")
    p.add_argument("--seed", type=non_negative_int, default=0, help="base seed (every image has its own generator)")
    p.add_argument("--batch-prompts", type=positive_int, default=1,
                   help="prompts per forward batch (faster; same seeds)")
    p.add_argument("--overwrite", action="store_true", help="regenerate prompts that already exist")
    add_pipeline_flags(p)

    p = tree.command("sampling-defaults", run_sampling_defaults,
                     "Show or change the sampling settings a VGT model uses when a caller does not give them.")
    p.add_argument("--model", required=True, help="VGT pipeline folder")
    add_sampling_flags(p)
    p.add_argument("--grid-size", type=positive_int, help="default latent grid side (image side = grid x AE stride)")
