"""VGT-AE commands: `vgt train ae`, `vgt reconstruct`, `vgt eval recon`, `vgt eval ae-understanding`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vgt.argtypes import finite_float, non_negative_int, positive_int

# Optimizer settings of the CPU-scale stages (the full-scale ones are the engine's ae-stage1/ae-stage2 presets).
CPU_TRAIN = {
    1: dict(steps=600, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=30, weight_decay=1e-4, log_every=20,
            save_every=200, eval_every=100),
    2: dict(steps=300, batch_size=8, lr=3e-4, min_lr=3e-5, warmup_steps=10, weight_decay=1e-4, log_every=20,
            save_every=100, eval_every=100),
}
MODEL_PRESETS = {("cpu", "vlm"): "small-cpu", ("cpu", "pixel"): "pixel-small-cpu",
                 ("full", "vlm"): "internvl3-f32c32", ("full", "pixel"): "pixel-f32c32"}
#: world seed of held-out ShapesWorld images (training streams use world seed 0)
HELDOUT_WORLD_SEED = 7_000_001


# ---------------------------------------------------------------------------------------------- shared helpers

def _load_backbone(name: str, path: str | None):
    from vgt.backbones.registry import load_backbone

    if path is None:
        return None
    backbone = load_backbone(name, path)
    backbone.requires_grad_(False)
    return backbone.eval()


def _load_ae(args: argparse.Namespace):
    """The exported VGT-AE in --model, and the VLM in --backbone-path (None when not given; the AE loads without
    it, the evaluations that need the VLM say so)."""
    from vgt.ae.config import AEConfig
    from vgt.ae.model import CONFIG_NAME, VGTAutoencoder
    from vgt.io import read_json

    config_file = Path(args.model) / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{args.model} is not a VGT-AE folder (no {CONFIG_NAME}); pass RUN_DIR/model")
    values = read_json(config_file)
    config = AEConfig.from_dict(values)
    # older exports recorded their VLM folder, relative to the AE folder (as VGTAutoencoder.from_pretrained reads it)
    recorded = Path(args.model) / values["backbone_path"] if values.get("backbone_path") else None
    path = getattr(args, "backbone_path", None) or recorded
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"the VLM folder {str(path)!r} is missing; pass --backbone-path")
    backbone = _load_backbone(config.backbone or "auto", path) if path and Path(path).is_dir() else None
    ae = VGTAutoencoder.from_pretrained(args.model, backbone=backbone).eval().requires_grad_(False)
    return ae, backbone


def _save_image(image, path: Path) -> None:
    """Atomic PNG write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def side_by_side(originals, reconstructions, pairs_per_row: int = 4):
    """A grid of (original | reconstruction) pairs from [B, 3, H, W] tensors in [-1, 1]."""
    from vgt.ar.pipeline import image_grid, to_pil

    tiles = [t for pair in zip(to_pil(originals), to_pil(reconstructions), strict=True) for t in pair]
    return image_grid(tiles, columns=2 * min(pairs_per_row, len(originals)))


def _heldout_images(spec: list[str] | None, resolution: int, num: int, seed: int):
    """`num` images: held-out ShapesWorld scenes for the default `shapes` data, else the start of the source."""
    import torch

    from vgt.data.sources import ShapesSource, build_source, readable

    specs = spec or ["shapes"]
    if specs == ["shapes"]:
        source = ShapesSource(resolution, world_seed=HELDOUT_WORLD_SEED)
    else:
        source = build_source(specs, resolution)
    images = []
    for _, item in readable(source.stream(0, 1, seed=seed, repeat=False), source.label()):
        if isinstance(item, dict):
            images.append(item["image"])
        if len(images) == num:
            break
    if not images:
        raise ValueError(f"no readable images in {specs}")
    return torch.stack(images)


# ---------------------------------------------------------------------------------------------- train ae

class ReconstructionHook:
    """Reconstruct a fixed held-out batch with the evaluation weights: logs PSNR/SSIM, saves a side-by-side grid."""

    def __init__(self, images):
        self.images = images

    def __call__(self, ctx) -> dict:
        import torch

        from vgt.ae.metrics import psnr_per_image, ssim_per_image

        with ctx.eval_model() as module, torch.no_grad():
            images = self.images.to(ctx.accelerator.device)
            recon = torch.cat([module.ae(images[i : i + 16]).sample.float() for i in range(0, len(images), 16)])
        _save_image(side_by_side(images[:8], recon[:8]), ctx.run_dir / "samples" / f"step_{ctx.step:08d}.png")
        return {"psnr": psnr_per_image(recon, images).mean().item(),
                "ssim": ssim_per_image(recon, images).mean().item()}


def _stage_config(args: argparse.Namespace):
    from vgt.ae.config import stage_preset

    overrides = {k: v for k, v in {
        "noise_gamma": args.noise_gamma, "distill_weight": args.distill_weight, "perceptual": args.perceptual,
        "perceptual_weight": args.perceptual_weight, "gan_weight": args.gan_weight, "gan_start": args.gan_start,
        "lecam_weight": args.lecam_weight, "discriminator_lr": args.discriminator_lr,
        "encoder_lr_mult": args.encoder_lr_mult, "image_size": args.image_size,
    }.items() if v is not None}
    if args.freeze_encoder:
        overrides["freeze_encoder"] = True
    if args.channel_norm is not None:
        overrides["channel_norm"] = args.channel_norm == "on"
    if args.encoder == "pixel":  # pixel losses only
        overrides.setdefault("distill_weight", 0.0)
        overrides.setdefault("perceptual", "none")
    return stage_preset(f"{args.scale}-stage{args.stage}", **overrides)


def _build_ae(args: argparse.Namespace, backbone):
    from vgt.ae.config import ae_preset
    from vgt.ae.dcae import DCAE_PRESETS
    from vgt.ae.model import VGTAutoencoder

    if args.init:
        if args.dcae or args.dcae_preset:
            raise ValueError("--init continues an existing VGT-AE; --dcae/--dcae-preset apply to a fresh one")
        ae = VGTAutoencoder.from_pretrained(args.init, backbone=backbone)
        if ae.config.encoder != args.encoder:
            raise ValueError(f"--init {args.init} holds a {ae.config.encoder!r}-encoder VGT-AE, not --encoder "
                             f"{args.encoder}")
        return ae
    if args.stage == 2:
        raise ValueError("stage 2 continues a stage-1 model: pass --init STAGE1_RUN_DIR/model")
    overrides = {}
    if args.latent_channels:
        overrides["latent_channels"] = args.latent_channels
    if args.dcae_preset:
        overrides["dcae"] = {**DCAE_PRESETS[args.dcae_preset], "latent_channels": args.latent_channels or 32}
    if args.encoder == "pixel":
        stride = args.stride or (backbone.vision.stride if backbone is not None else None)
        if stride:
            overrides["stride"] = stride
    config = ae_preset(MODEL_PRESETS[(args.scale, args.encoder)], **overrides)
    return VGTAutoencoder.from_backbone(backbone if args.encoder == "vlm" else None, config, dcae_path=args.dcae)


def run_train_ae(args: argparse.Namespace) -> int:
    import torch

    from vgt.ae.discriminator import DiscriminatorConfig
    from vgt.ae.trainer import AETrainingModule, ae_loss_fn, export_autoencoder
    from vgt.data.sources import build_source
    from vgt.train import PRESETS, Hook, config_from_args, train

    if args.encoder == "vlm" and not args.backbone_path:
        raise SystemExit("vgt train ae: --backbone-path DIR (the VLM whose vision path is tuned) is required")
    backbone = _load_backbone(args.backbone, args.backbone_path)
    stage = _stage_config(args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed if args.seed is not None else 0)
        ae = _build_ae(args, backbone)
        module = AETrainingModule(ae, stage, teacher=backbone.vision if backbone is not None else None,
                                  discriminator=DiscriminatorConfig(base_channels=args.disc_channels))
    ae.grid_size(stage.image_size, stage.image_size)  # a clear error before training when the size does not fit
    default_preset = args.preset is None
    if default_preset:
        args.preset = f"ae-stage{args.stage}" if args.scale == "full" else "toy"
    train_overrides = dict(CPU_TRAIN[args.stage]) if default_preset and args.scale == "cpu" else {}
    lr = args.lr or train_overrides.get("lr", PRESETS[args.preset]["lr"])
    train_overrides["lr_multipliers"] = module.lr_multipliers(lr)
    cfg = config_from_args(args, **train_overrides)
    source = build_source(args.data or ["shapes"], stage.image_size)
    hooks = [Hook(ReconstructionHook(_heldout_images(args.data, stage.image_size, 32, seed=12345)), name="heldout")]
    extra = {"ae": ae.config.to_dict(), "ae_stage": stage.to_dict(), "data": args.data or ["shapes"]}
    result = train(module, ae_loss_fn, source, cfg, hooks=hooks, extra_config=extra, find_unused_parameters=True)
    out = Path(cfg.run_dir) / "model"
    from accelerate import PartialState

    if result.checkpoint is not None and PartialState().is_main_process:
        which = export_autoencoder(module, result.checkpoint, out)
        shown = {k: v for k, v in result.metrics.items() if k in ("loss", "rec_mse", "psnr", "distill")}
        print(f"step {result.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        print(f"exported the VGT-AE ({which} weights) to {out}")
    return 0


# ---------------------------------------------------------------------------------------------- reconstruct

def run_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from vgt.data.transforms import to_pil, to_rgb, to_tensor

    ae, _ = _load_ae(args)
    out_dir = Path(args.out)
    for path in map(Path, args.images):
        with Image.open(path) as image:
            image = to_rgb(image).copy()  # loaded before the file closes
        width, height = image.size
        if args.size:
            width = height = args.size
        size = (max(ae.stride, round(width / ae.stride) * ae.stride),
                max(ae.stride, round(height / ae.stride) * ae.stride))
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        with torch.no_grad():
            recon = ae(to_tensor(image)[None]).sample[0]
        target = out_dir / f"{path.stem}_recon.png"
        _save_image(to_pil(recon), target)
        print(f"{path} -> {target} ({size[0]}x{size[1]})")
    return 0


# ---------------------------------------------------------------------------------------------- eval recon

def _fid_features(args: argparse.Namespace, ae, backbone):
    from vgt.ae.metrics import PooledTokenFeatures, TorchScriptFeatures

    if args.fid_features == "none":
        return None, "none"
    if args.fid_features == "vision":
        if backbone is None:
            raise ValueError("--fid-features vision needs a VLM: pass --backbone-path (or --fid-features none / "
                             "a TorchScript file)")
        return PooledTokenFeatures(backbone.vision, backbone.vision.out_dim), f"{backbone.name} vision tower (pooled)"
    return TorchScriptFeatures(args.fid_features), f"TorchScript {args.fid_features}"


def run_eval_recon(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from vgt.ae.metrics import SSIM_DATA_RANGE, frechet_distance, psnr_per_image, ssim_per_image
    from vgt.io import write_json

    ae, backbone = _load_ae(args)
    size = args.image_size or ae.config.image_size
    if size is None:
        raise ValueError("pass --image-size (the model does not record a training resolution)")
    images = _heldout_images(args.data, size, args.num, args.seed)
    feature_net, feature_name = _fid_features(args, ae, backbone)
    fid = frechet_distance(feature_net) if feature_net is not None else None
    psnr, ssim, recons = [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), args.batch_size), desc="reconstruct"):
            x = images[start : start + args.batch_size]
            recon = ae(x).sample.float().clamp(-1, 1)
            psnr.append(psnr_per_image(recon, x))
            ssim.append(ssim_per_image(recon, x))
            if fid is not None:
                fid.update((x + 1) / 2, real=True)
                fid.update((recon + 1) / 2, real=False)
            if start == 0:
                recons = recon[:8]
    psnr, ssim = torch.cat(psnr), torch.cat(ssim)
    result = {
        "model": str(args.model), "data": args.data or ["shapes (held-out world seed)"], "num_images": len(images),
        "image_size": size, "psnr_db": psnr.mean().item(), "ssim": ssim.mean().item(),
        "ssim_data_range": SSIM_DATA_RANGE, "fid": fid.compute().item() if fid is not None else None,
        "fid_features": feature_name,
    }
    print(f"PSNR {result['psnr_db']:.2f} dB (per image on [0, 1], mean of {len(images)})")
    print(f"SSIM {result['ssim']:.4f} (data_range={SSIM_DATA_RANGE:g} on [0, 1] images, per-image mean)")
    if fid is not None:
        print(f"FID  {result['fid']:.4g} (features: {feature_name}; compare only runs with the same features)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recon_metrics.json", result)
        _save_image(side_by_side(images[: len(recons)], recons), out / "recon_grid.png")
        print(f"wrote {out / 'recon_metrics.json'} and {out / 'recon_grid.png'}")
    return 0


# ---------------------------------------------------------------------------------------------- understanding

def run_eval_ae_understanding(args: argparse.Namespace) -> int:
    from vgt.ae.understanding import backbone_with_tuned_vision
    from vgt.backbones.understanding import evaluate_understanding

    ae, backbone = _load_ae(args)
    if backbone is None:
        raise ValueError("understanding needs the VLM: pass --backbone-path")
    original = evaluate_understanding(backbone, num_images=args.num, batch_size=args.batch_size)
    tuned = evaluate_understanding(backbone_with_tuned_vision(backbone, ae), num_images=args.num,
                                   batch_size=args.batch_size)
    for name, result in (("original VLM", original), ("tuned VGT-AE encoder", tuned)):
        print(f"{name:22s} exact {100 * result['exact']:.1f}%  " + "  ".join(
            f"{k} {100 * result[k]:.1f}%" for k in ("shapes", "colors", "locations", "count")))
    print(f"drop in exact-scene accuracy: {100 * (original['exact'] - tuned['exact']):.1f} points")
    if args.out:
        from vgt.io import write_json

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out) / "understanding.json", {"original": original, "tuned": tuned})
    return 0


# ---------------------------------------------------------------------------------------------- registration

def add_commands(tree) -> None:
    from vgt.train.config import add_train_args

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
    p.add_argument("--dcae-preset", choices=("small-cpu", "f32c32-sana-1.1"), help="decoder architecture")
    p.add_argument("--latent-channels", type=positive_int, help="latent channels (default 32)")
    p.add_argument("--stride", type=positive_int, help="pixel encoder: pixels per latent (default: the VLM's stride)")
    p.add_argument("--data", action="append", help="data spec, repeatable: shapes (default), folder:DIR, wds:SHARDS")
    p.add_argument("--image-size", type=positive_int, help="training resolution (a multiple of the stride)")
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
    add_train_args(p, default_preset=None)

    p = tree.command("reconstruct", run_reconstruct, "Encode and decode images with a VGT-AE.")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="exported VGT-AE folder (RUN_DIR/model)")
    p.add_argument("--out", default="reconstructions", help="output folder")
    p.add_argument("--size", type=positive_int,
                       help="resize to SIZE x SIZE first (default: nearest multiple of the stride)")
    p.add_argument("--backbone-path", help="the VLM folder (for what needs the VLM itself: vision FID features, "
                   "understanding)")

    p = tree.command("eval recon", run_eval_recon, "Reconstruction quality of a VGT-AE: PSNR, SSIM, FID, a grid.")
    p.add_argument("--model", required=True, help="exported VGT-AE folder (RUN_DIR/model)")
    p.add_argument("--data", action="append", help="data spec (default: held-out ShapesWorld scenes)")
    p.add_argument("--num", type=positive_int, default=256, help="images to evaluate")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--image-size", type=positive_int, help="resolution (default: the model's training resolution)")
    p.add_argument("--fid-features", default="vision",
                   help="FID feature network: vision (the VLM's frozen vision tower), none, or a TorchScript file "
                        "mapping [N, 3, H, W] images in [0, 1] to [N, d] features (e.g. Inception)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="data order seed")
    p.add_argument("--out", help="folder for recon_metrics.json and recon_grid.png")
    p.add_argument("--backbone-path", help="the VLM folder (for what needs the VLM itself: vision FID features, "
                   "understanding)")

    p = tree.command("eval ae-understanding", run_eval_ae_understanding,
                     "ShapesWorld understanding of the VLM with its original vs the VGT-AE-tuned vision path.")
    p.add_argument("--model", required=True, help="exported VGT-AE folder (RUN_DIR/model)")
    p.add_argument("--num", type=positive_int, default=200, help="held-out scenes")
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--out", help="folder for understanding.json")
    p.add_argument("--backbone-path", help="the VLM folder (for what needs the VLM itself: vision FID features, "
                   "understanding)")
