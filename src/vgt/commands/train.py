"""`vgt train vlm | ae | ar | toy`: each parses its flags into the stage's typed configs (`*_arguments`) and calls the
library's stage function (`train_small_vlm`, `train_autoencoder`, `train_generator`, the engine for the toy).

The shared training flags (`vgt.train.flags.add_train_args`) pick a named schedule (`--preset`, default: the
stage's own) and change single values of it.
"""

from __future__ import annotations

import argparse
import json

from vgt.argtypes import finite_float, non_negative_int, positive_int

#: `vgt train ae` flags that set an `AEStageConfig` field of the same name (unset: the stage preset's value)
AE_STAGE_FLAGS = ("noise_gamma", "distill_weight", "perceptual", "perceptual_weight", "gan_weight", "gan_start",
                  "lecam_weight", "discriminator_lr", "encoder_lr_mult")


# ---------------------------------------------------------------------------------------------- train vlm

def vlm_arguments(args: argparse.Namespace) -> dict:
    """`train_small_vlm`'s arguments from `vgt train vlm` flags."""
    from vgt.train.flags import config_from_args

    return dict(preset=args.vlm_preset, cfg=config_from_args(args, f"vlm-{args.vlm_preset}"),
                eval_images=args.eval_images)


def run_train_vlm(args: argparse.Namespace) -> int:
    from vgt.vlm.pretrain import train_small_vlm

    result = train_small_vlm(**vlm_arguments(args), out=args.out, overwrite=args.overwrite)
    print(json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- train ae

def ae_arguments(args: argparse.Namespace) -> dict:
    """`train_autoencoder`'s arguments from `vgt train ae` flags."""
    from vgt.ae.trainer import AEModelSpec, ae_stage_config
    from vgt.presets import AE_SCALE_PRESETS
    from vgt.train.flags import config_from_args

    overrides = {name: getattr(args, name) for name in AE_STAGE_FLAGS if getattr(args, name) is not None}
    if args.size is not None:
        overrides["image_size"] = args.size
    if args.freeze_encoder:
        overrides["freeze_encoder"] = True
    if args.channel_norm is not None:
        overrides["channel_norm"] = args.channel_norm == "on"
    stage = ae_stage_config(args.stage, args.scale, args.encoder, **overrides)
    train_preset = f"ae-stage{args.stage}" + ("-cpu" if args.scale == "cpu" else "")
    model = AEModelSpec(encoder=args.encoder, preset=AE_SCALE_PRESETS[(args.scale, args.encoder)], init=args.init,
                        dcae_path=args.dcae, dcae_preset=args.dcae_preset, latent_channels=args.latent_channels,
                        stride=args.stride, disc_channels=args.disc_channels)
    return dict(stage=stage, train_config=config_from_args(args, train_preset), model=model,
                backbone_path=args.backbone_path, backbone=args.backbone, data=args.data)


def run_train_ae(args: argparse.Namespace) -> int:
    from vgt.ae.trainer import train_autoencoder

    result = train_autoencoder(**ae_arguments(args))
    if result.model_dir is not None:
        shown = {k: v for k, v in result.metrics.items() if k in ("loss", "rec_mse", "psnr", "distill")}
        print(f"step {result.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        print(f"exported the VGT-AE ({result.weights} weights) to {result.model_dir}")
    return 0


# ---------------------------------------------------------------------------------------------- train ar

def ar_arguments(args: argparse.Namespace) -> dict:
    """`train_generator`'s arguments from `vgt train ar` flags."""
    from vgt.ar.training import ARStageConfig
    from vgt.presets import AR_TRAIN_PRESETS
    from vgt.train.flags import config_from_args

    stage = ARStageConfig(
        backbone_path=args.backbone_path, ae=args.ae, backbone=args.backbone, model_preset=args.model_preset,
        data=tuple(args.data or ["shapes"]), data_weights=tuple(args.data_weights) if args.data_weights else None,
        size=args.size, uncond_prob=args.uncond_prob, timestep_shift=args.timestep_shift,
        head_noise_samples=args.head_noise_samples, head_width=args.head_width, head_depth=args.head_depth,
        position_init=args.position_init, sampling_temperature=args.sampling_temperature,
        export_weights=args.export_weights,
        sample_prompts=tuple(args.sample_prompts or ()), eval_prompts=args.eval_prompts,
        eval_max_prompts=args.eval_max_prompts, eval_per_prompt=args.eval_per_prompt)
    return dict(stage=stage, train_config=config_from_args(args, AR_TRAIN_PRESETS[args.model_preset]))


def run_train_ar(args: argparse.Namespace) -> int:
    from vgt.ar.training import train_generator

    result = train_generator(**ar_arguments(args), export=args.export, overwrite=args.overwrite)
    if result.model_dir is not None:
        loss = result.metrics.get("loss")
        print(f"step {result.step}: loss {loss:.4g}" if loss is not None else f"step {result.step}")
        print(f"exported the VGT pipeline ({result.weights} weights) to {result.model_dir}")
    return 0


# ---------------------------------------------------------------------------------------------- train toy

def run_train_toy(args: argparse.Namespace) -> int:
    from vgt.data.readers import build_source
    from vgt.data.sources import first_images
    from vgt.train import Hook, config_from_args, train
    from vgt.train.toy import DenoisingLoss, ReconstructionSamples, build_toy_model

    cfg = config_from_args(args, "toy")
    specs = args.data or ["shapes"]
    source = build_source(specs, args.size, args.data_weights)
    model = build_toy_model(args.width, args.dropout, cfg.seed)
    hooks = [Hook(ReconstructionSamples(first_images(source, 4)), name="samples")]
    toy = {"toy": {"data": specs, "data_weights": args.data_weights, "resolution": args.size,
                   "width": args.width, "dropout": args.dropout, "noise": args.noise}}
    result = train(model, DenoisingLoss(args.noise), source, cfg, hooks=hooks, extra_config=toy)
    if result.metrics and result.is_main_process:
        print(f"step {result.step}: loss {result.metrics['loss']:.5f}, skipped samples {result.skipped}, "
              f"checkpoint {result.checkpoint}")
    return 0


# ---------------------------------------------------------------------------------------------- registration

def _data_flags(p: argparse.ArgumentParser, kinds: str) -> None:
    p.add_argument("--data", action="append", help=f"data spec, repeatable for a mix: {kinds}")
    p.add_argument("--data-weights", type=finite_float, nargs="+", help="mix weights, one per --data")


def add_commands(tree) -> None:
    from vgt.train.flags import add_train_args

    tree.group("train", "Train a model (small VLM, VGT-AE, VGT-AR).")
    p = tree.command("train vlm", run_train_vlm, "Pretrain the small VLM for understanding on ShapesWorld (image -> "
                     "scene caption). Resumes from --run-dir; exports a HF folder at the end.")
    p.add_argument("--vlm-preset", default="small", choices=("small", "small-64", "small-s32", "toy"),
                   help="architecture (small: 128 px, stride 16; small-64: 64 px, stride 16; small-s32: 128 px, "
                   "stride 32; toy: smoke test); its schedule is vlm-PRESET")
    p.add_argument("--out", help="export folder of the trained VLM (default: RUN_DIR/model)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace an existing folder that vgt did not write (and everything in it)")
    p.add_argument("--eval-images", type=non_negative_int, default=100,
                   help="held-out scenes captioned at every --eval-every step (0: no evaluation during training)")
    add_train_args(p, default_preset="vlm-VLM_PRESET")

    p = tree.command("train ae", run_train_ae, "Train VGT-AE (stage 1: reconstruction + self-distillation; stage 2: "
                     "latent regularisation), or the pixel-VAE baseline with --encoder pixel.")
    p.add_argument("--stage", type=non_negative_int, choices=(1, 2), required=True, help="training stage")
    p.add_argument("--encoder", choices=("vlm", "pixel"), default="vlm",
                   help="vlm: tune the VLM's vision path; pixel: DC-AE conv encoder baseline on the same grid")
    p.add_argument("--scale", choices=("cpu", "full"), default="cpu",
                   help="presets: cpu (small VLM, small DC-AE) or full (authors' InternVL3 + DC-AE f32c32 settings)")
    p.add_argument("--backbone", default="auto", help="backbone name (internvl, qwen2_5_vl, tiny, auto)")
    p.add_argument("--backbone-path", help="folder of the VLM (required for --encoder vlm)")
    p.add_argument("--init", help="start from an exported VGT-AE folder (stage 2: STAGE1_RUN_DIR/model)")
    p.add_argument("--dcae", help="pretrained DC-AE folder (diffusers AutoencoderDC) to start the decoder from")
    p.add_argument("--dcae-preset", choices=("small-cpu", "small-cpu-f32", "f32c32-sana-1.1"),
                   help="decoder architecture")
    p.add_argument("--latent-channels", type=positive_int, help="latent channels (default 32)")
    p.add_argument("--stride", type=positive_int, help="pixel encoder: pixels per latent (default: the VLM's stride)")
    p.add_argument("--data", action="append", help="data spec, repeatable: shapes (default), folder:DIR, wds:SHARDS")
    p.add_argument("--size", type=positive_int, help="training image size (a multiple of the stride)")
    p.add_argument("--channel-norm", choices=("on", "off"), help="per-token channel LayerNorm (stage 2: on)")
    p.add_argument("--noise-gamma", type=finite_float, help="latent noise a ~ U[0, gamma] (stage 2: 0.1)")
    p.add_argument("--distill-weight", type=finite_float, help="self-distillation weight (stage 1: 1.0, stage 2: 0.1)")
    p.add_argument("--perceptual", choices=("none", "vision"), help="perceptual loss network")
    p.add_argument("--perceptual-weight", type=finite_float, help="perceptual loss weight")
    p.add_argument("--gan-weight", type=finite_float, help="hinge GAN generator weight (0 disables the GAN)")
    p.add_argument("--gan-start", type=non_negative_int, help="step at which the GAN starts")
    p.add_argument("--lecam-weight", type=finite_float, help="LeCam regularisation weight")
    p.add_argument("--discriminator-lr", type=finite_float, help="discriminator learning rate")
    p.add_argument("--disc-channels", type=positive_int, default=64, help="discriminator base channels")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="freeze the vision path (paper's stage 2) instead of training it at --encoder-lr-mult")
    p.add_argument("--encoder-lr-mult", type=finite_float, help="lr factor of the vision path (default 0.5)")
    add_train_args(p, default_preset="ae-stageSTAGE-cpu (--scale full: ae-stageSTAGE)")

    p = tree.command("train ar", run_train_ar,
                     "Train VGT-AR: tune the VLM's language model to generate VGT-AE latents (QueryAR).")
    p.add_argument("--backbone-path", required=True, help="folder of the VLM whose language model is tuned")
    p.add_argument("--backbone", default="auto", help="backbone name (internvl, qwen2_5_vl, tiny, auto)")
    p.add_argument("--ae", required=True, help="exported VGT-AE folder (its RUN_DIR/model)")
    p.add_argument("--model-preset", default="cpu-small", choices=("cpu-small", "vgt-0.6b", "vgt-1.6b"),
                   help="generator architecture; its schedule is ar-cpu for cpu-small, else ar-pretrain")
    _data_flags(p, "shapes (default), folder:DIR, wds:SHARDS, latents:DIR")
    p.add_argument("--size", type=positive_int, help="training image size (default: the AE's training resolution)")
    p.add_argument("--uncond-prob", type=finite_float,
                   help="caption dropout for classifier-free guidance (default 0.1)")
    p.add_argument("--timestep-shift", type=finite_float, help="logit-normal timestep shift (default 1.4)")
    p.add_argument("--head-noise-samples", type=positive_int,
                   help="noise draws per latent token in the loss, under one language-model pass (default 1)")
    p.add_argument("--head-width", type=positive_int, help="width of the flow head's blocks (default: the preset's)")
    p.add_argument("--head-depth", type=positive_int, help="residual blocks of the flow head (default: the preset's)")
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
    p.add_argument("--export-weights", choices=("ema", "online"), default="ema",
                   help="weights of the last checkpoint to export: its EMA (default, when kept) or the online "
                        "weights; rerun a finished run with --export OTHER_DIR --export-weights online for both")
    p.add_argument("--overwrite", action="store_true",
                   help="let --export replace an existing folder that is not a VGT pipeline (and everything in it)")
    add_train_args(p, default_preset="ar-cpu (--model-preset vgt-*: ar-pretrain)")

    p = tree.command("train toy", run_train_toy, "Train a tiny denoising autoencoder (engine demo and smoke test; "
                     "runs as one process or many: torchrun --standalone --nproc_per_node 2 -m vgt train toy ...).")
    _data_flags(p, "shapes[:prompt|caption] (default), folder:DIR, wds:SHARDS")
    p.add_argument("--size", type=positive_int, default=32, help="training image size")
    p.add_argument("--width", type=positive_int, default=16, help="channels of the toy model")
    p.add_argument("--dropout", type=finite_float, default=0.0, help="dropout in the toy encoder")
    p.add_argument("--noise", type=finite_float, default=0.1, help="std of the input noise (denoising objective)")
    add_train_args(p, default_preset="toy")
