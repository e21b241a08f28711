"""VGT-AR commands: `vgt generate`, `vgt sample-benchmark`, `vgt train ar`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int


def _device(name: str):
    from vgt.devices import resolve_device

    return resolve_device(name)


def _load_pipeline(args: argparse.Namespace, images_per_call: int):
    import torch

    from vgt.pipeline import VGTPipeline
    from vgt.pretrained import default_model_dir
    from vgt.threads import set_sampling_threads

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = _device(args.device)
    try:
        set_sampling_threads(args.threads, images_per_call, device)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return VGTPipeline.from_pretrained(args.model or default_model_dir(), torch_dtype=dtype).to(device)


def _sampling_kwargs(args: argparse.Namespace) -> dict:
    """Pipeline arguments from the shared sampling flags (None keeps the model's saved default)."""
    return dict(guidance_scale=args.cfg, num_inference_steps=args.steps, tokens_per_step=args.tokens_per_step,
                order=args.order, sampler=args.sampler, cfg_schedule=args.cfg_schedule, temperature=args.temperature,
                height=args.size, width=args.size)


def _save_png(image, path: Path) -> None:
    """Atomic PNG write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from vgt.ar.pipeline import image_grid

    pipe = _load_pipeline(args, images_per_call=len(args.prompt) * args.num_images)
    generator = torch.Generator().manual_seed(args.seed)
    images = pipe(args.prompt, negative_prompt=args.negative_prompt, num_images_per_prompt=args.num_images,
                  generator=generator, **_sampling_kwargs(args)).images
    out = Path(args.out)
    if args.grid or len(images) == 1:
        _save_png(image_grid(images, columns=args.num_images if len(args.prompt) > 1 else None), out)
        written = [out]
    else:
        written = [out.with_name(f"{out.stem}-{i:03d}{out.suffix or '.png'}") for i in range(len(images))]
        for image, path in zip(images, written, strict=True):
            _save_png(image, path)
    print("\n".join(str(p) for p in written))
    return 0


def run_sample_benchmark(args: argparse.Namespace) -> int:
    from vgt.ar.benchmark import write_benchmark_samples
    from vgt.eval.shapes import read_prompts

    if args.n_per_prompt < 1:
        raise SystemExit(f"--n-per-prompt must be >= 1, got {args.n_per_prompt}")
    prompts = read_prompts(args.prompts)
    pipe = _load_pipeline(args, images_per_call=args.batch_prompts * args.n_per_prompt)
    done = write_benchmark_samples(pipe, list(enumerate(prompts)), args.out, args.n_per_prompt, seed=args.seed,
                                   overwrite=args.overwrite, prompts_per_batch=args.batch_prompts,
                                   **_sampling_kwargs(args))
    print(f"wrote {done} prompt(s) ({len(prompts) - done} already present) to {args.out}")
    return 0


def run_sampling_defaults(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from vgt.ar.config import ARConfig, SamplingConfig
    from vgt.loading import CONFIG_NAME
    from vgt.pipeline import GENERATOR_DIR
    from vgt.pretrained import PIPELINE_FILE

    if not (Path(args.model) / PIPELINE_FILE).is_file():
        raise SystemExit(f"{args.model} is not a VGT pipeline folder (no {PIPELINE_FILE})")
    path = Path(args.model) / GENERATOR_DIR / CONFIG_NAME
    config = ARConfig.load(path)
    changes = {name: value for name, value in (
        ("guidance_scale", args.cfg), ("cfg_schedule", args.cfg_schedule), ("num_inference_steps", args.steps),
        ("sampler", args.sampler), ("tokens_per_step", args.tokens_per_step), ("order", args.order),
        ("temperature", args.temperature), ("grid_size", args.grid_size)) if value is not None}
    if changes:
        config.sampling = SamplingConfig(**{**dataclasses.asdict(config.sampling), **changes})
        config.save(path)
    print(json.dumps(dataclasses.asdict(config.sampling), indent=2))
    return 0


def run_train_ar(args: argparse.Namespace) -> int:
    import dataclasses

    import torch
    from accelerate import PartialState

    from vgt.ae.model import VGTAutoencoder
    from vgt.ar.benchmark import ShapesEvalHook, evenly_spaced
    from vgt.ar.config import ar_preset
    from vgt.ar.training import CPU_SMALL_TRAIN, ARLoss, SampleImages, build_generator
    from vgt.backbones.registry import load_backbone
    from vgt.data.sources import build_source
    from vgt.eval.shapes import read_prompts
    from vgt.io import check_replaceable, holds
    from vgt.pipeline import VGTPipeline
    from vgt.pretrained import PIPELINE_FILE
    from vgt.text import check_prompt
    from vgt.train import Hook, Trainer, config_from_args, load_checkpoint_weights

    backbone = load_backbone(args.backbone, args.backbone_path)
    ae = VGTAutoencoder.from_pretrained(args.ae, backbone=backbone).eval().requires_grad_(False)
    if args.resolution is None:  # the AE's training resolution, else the preset's default grid
        args.resolution = (getattr(ae.config, "image_size", None)
                           or ar_preset(args.model_preset, 1).sampling.grid_size * ae.stride)
    grid = ae.grid_size(args.resolution, args.resolution)[0]  # a clear error before training when it does not fit
    specs = args.data or ["shapes"]
    source = build_source(specs, args.resolution, args.data_weights)
    cache = getattr(source, "index", None)  # a latent cache knows its latent shape; images follow --resolution
    if cache is not None:
        channels, grid = cache["latent_shape"][0], cache["latent_shape"][1]
        if channels != ae.latent_channels:
            raise SystemExit(f"the latent cache holds {channels}-channel latents, the AE in {args.ae} makes "
                             f"{ae.latent_channels}: cache the data with this AE (`vgt cache-latents --model ...`)")
    default_preset = args.preset is None
    if default_preset:
        args.preset = "toy" if args.model_preset == "cpu-small" else "ar-pretrain"
    overrides = dict(CPU_SMALL_TRAIN) if default_preset and args.model_preset == "cpu-small" else {}
    cfg = config_from_args(args, **overrides)
    model = build_generator(backbone, ae, args.model_preset, seed=cfg.seed, grid_size=grid,
                            position_init=args.position_init)
    if args.uncond_prob is not None:
        model.config.uncond_prob = args.uncond_prob
    if args.timestep_shift is not None:
        model.config.timestep_shift = args.timestep_shift
    if args.sampling_temperature is not None:
        model.config.sampling = dataclasses.replace(model.config.sampling, temperature=args.sampling_temperature)
    hooks = []
    if args.sample_prompts:  # prompts outside the vocabulary fail now, not at the first hook
        sample_prompts = [check_prompt(backbone.tokenizer, p) for p in args.sample_prompts]
        hooks.append(Hook(SampleImages(ae, sample_prompts, seed=0), name="samples"))
    if args.eval_prompts:
        prompts = evenly_spaced(read_prompts(args.eval_prompts), args.eval_max_prompts)
        for _, row in prompts:
            check_prompt(backbone.tokenizer, row["prompt"])
        hooks.append(Hook(ShapesEvalHook(ae, prompts, n_per_prompt=args.eval_per_prompt), name="shapes_eval"))
    extra = {"ar": model.config.to_dict(), "data": specs, "resolution": args.resolution,
             "backbone_path": str(args.backbone_path), "ae": str(args.ae)}
    out = Path(args.export or Path(cfg.run_dir) / "model")
    # before training, not after hours of it: never replace a foreign folder, the run's checkpoints or the inputs
    check_replaceable(out, args.overwrite, holds(PIPELINE_FILE),
                      protect=[Path(cfg.run_dir) / "checkpoints", args.ae, args.backbone_path])
    trainer = Trainer(model, ARLoss(ae), source, cfg, hooks, extra_config=extra)
    result = trainer.train()
    if result.checkpoint is not None and PartialState().is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        which = load_checkpoint_weights(model, result.checkpoint, use_ema=True)
        VGTPipeline.from_generator(model.to(torch.device("cpu")), ae.to(torch.device("cpu"))).save_pretrained(
            out, args.overwrite)
        loss = result.metrics.get("loss")
        print(f"step {result.step}: loss {loss:.4g}" if loss is not None else f"step {result.step}")
        print(f"exported the VGT pipeline ({which} weights) to {out}")
    return 0


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (unset: the model's saved defaults)")
    g.add_argument("--model", help="VGT pipeline folder (default: $VGT_MODEL, else the model shipped with vgt)")
    g.add_argument("--steps", type=positive_int, help="flow-head sampler steps per token group")
    g.add_argument("--cfg", type=finite_float, help="classifier-free guidance scale (1 disables guidance)")
    g.add_argument("--cfg-schedule", choices=("constant", "linear"), help="guidance over the decoding groups")
    g.add_argument("--tokens-per-step", type=positive_int,
                       help="latent positions decoded per forward pass (1 = training order)")
    g.add_argument("--order", choices=("random", "raster"), help="generation order of the latent positions")
    g.add_argument("--sampler", choices=("sde", "euler", "heun"), help="flow-head sampler")
    g.add_argument("--temperature", type=finite_float, help="scale of the flow-head sampler's noise (1: as trained)")
    g.add_argument("--size", type=positive_int, help="image height and width in pixels (a multiple of the AE stride)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    g.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="weight precision")
    g.add_argument("--threads", type=int,
                   help="CPU threads (default: $OMP_NUM_THREADS if set, else 1 below 8 images per call, else the idle "
                        "cores)")


def add_commands(tree) -> None:
    from vgt.train.config import add_train_args

    p = tree.command("generate", run_generate, "Generate images from text with a VGT model.")
    p.add_argument("prompt", nargs="+", help="one or more prompts, e.g. \"two red circles\"")
    p.add_argument("--out", default="out.png", help="output PNG (several images: OUT-000.png, ... or one --grid)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed: same seed, same images")
    p.add_argument("--num-images", type=positive_int, default=1, help="images per prompt")
    p.add_argument("--grid", action="store_true", help="save all images tiled into the one --out file")
    p.add_argument("--negative-prompt", help="prompt for the unconditional branch of guidance")
    _add_sampling_args(p)

    p = tree.command("sample-benchmark", run_sample_benchmark,
                     "Generate images for a prompt file in GenEval's layout (OUT/<index>/samples/<k>.png).")
    p.add_argument("--prompts", required=True, help="prompt file, one JSON object per line (GenEval/ShapesEval)")
    p.add_argument("--out", required=True,
                   help="output folder; prompts already there with --n-per-prompt images are skipped (resume)")
    p.add_argument("--n-per-prompt", type=positive_int, default=4, help="images per prompt")
    p.add_argument("--seed", type=non_negative_int, default=0, help="base seed (every image has its own generator)")
    p.add_argument("--batch-prompts", type=positive_int, default=1,
                       help="prompts per forward batch (faster; same seeds)")
    p.add_argument("--overwrite", action="store_true", help="regenerate prompts that already exist")
    _add_sampling_args(p)

    p = tree.command("sampling-defaults", run_sampling_defaults,
                     "Show or change the sampling settings a VGT model uses when a caller does not give them.")
    p.add_argument("--model", required=True, help="VGT pipeline folder")
    p.add_argument("--cfg", type=finite_float, help="guidance scale")
    p.add_argument("--cfg-schedule", choices=("constant", "linear"))
    p.add_argument("--steps", type=positive_int, help="flow-head sampler steps")
    p.add_argument("--sampler", choices=("sde", "euler", "heun"))
    p.add_argument("--temperature", type=finite_float, help="scale of the flow-head sampler's noise")
    p.add_argument("--tokens-per-step", type=positive_int)
    p.add_argument("--order", choices=("random", "raster"))
    p.add_argument("--grid-size", type=positive_int, help="default latent grid side (image side = grid x AE stride)")

    p = tree.command("train ar", run_train_ar,
                     "Train VGT-AR: tune the VLM's language model to generate VGT-AE latents (QueryAR).")
    p.add_argument("--backbone-path", required=True, help="folder of the VLM whose language model is tuned")
    p.add_argument("--backbone", default="auto", help="backbone name (internvl, qwen2_5_vl, tiny, auto)")
    p.add_argument("--ae", required=True, help="exported VGT-AE folder (its RUN_DIR/model)")
    p.add_argument("--model-preset", default="cpu-small", choices=("cpu-small", "vgt-0.6b", "vgt-1.6b"),
                   help="generator architecture; cpu-small also picks CPU-sized training settings unless --preset")
    p.add_argument("--data", action="append",
                   help="data spec, repeatable: shapes (default), folder:DIR, wds:SHARDS, latents:DIR")
    p.add_argument("--data-weights", type=finite_float, nargs="+", help="mix weights, one per --data")
    p.add_argument("--resolution", type=positive_int,
                       help="training image size (default: the AE's training resolution)")
    p.add_argument("--uncond-prob", type=finite_float,
                       help="caption dropout for classifier-free guidance (default 0.1)")
    p.add_argument("--timestep-shift", type=finite_float, help="logit-normal timestep shift (default 1.4)")
    p.add_argument("--position-init", choices=("sincos", "normal"),
                   help="start of the position grid: sine-cosine codes (default) or trunc-normal 0.02 (the authors')")
    p.add_argument("--sampling-temperature", type=finite_float,
                   help="default sampling temperature saved with the exported model (default 1; see sampling-defaults)")
    p.add_argument("--sample-prompts", nargs="+", help="prompts rendered into RUN_DIR/samples every --eval-every")
    p.add_argument("--eval-prompts", help="prompt file (`vgt shapes prompts`): ShapesEval every --eval-every steps")
    p.add_argument("--eval-max-prompts", type=positive_int,
                       help="evaluate this many prompts, evenly spread over the file")
    p.add_argument("--eval-per-prompt", type=positive_int, default=1,
                       help="images per prompt in the training-time eval")
    p.add_argument("--export", help="pipeline folder written at the end (default RUN_DIR/model)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --export replace an existing folder that is not a VGT pipeline (and everything in it)")
    add_train_args(p, default_preset=None)
