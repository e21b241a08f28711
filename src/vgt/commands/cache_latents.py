"""`vgt cache-latents`: encode a data set once with a trained VGT-AE, so VGT-AR trains without running the AE."""

from __future__ import annotations

import argparse

from vgt.argtypes import finite_float, non_negative_int, positive_int


def run_cache_latents(args: argparse.Namespace) -> int:
    import torch

    from vgt.ae.model import VGTAutoencoder
    from vgt.data.latents import write_latent_cache
    from vgt.data.sources import build_source
    from vgt.devices import resolve_device
    from vgt.io import check_replaceable

    args.device = resolve_device(args.device)

    # the cache may not replace (or be written into) the model or the data it is made from
    inputs = [args.model, *(spec.partition(":")[2] for spec in args.data if ":" in spec and
                            not spec.startswith("shapes"))]
    check_replaceable(args.out, args.overwrite, protect=[p for p in inputs if p])
    ae = VGTAutoencoder.from_pretrained(args.model, backbone_path=args.backbone_path).to(args.device).eval()
    resolution = args.resolution or ae.config.image_size
    if resolution is None:
        raise SystemExit(f"vgt cache-latents: {args.model} records no training resolution; pass --resolution")
    ae.grid_size(resolution, resolution)  # a clear error when the size does not fit the stride
    source = build_source(args.data, resolution, args.data_weights)

    def encode(images: torch.Tensor) -> torch.Tensor:
        return ae.encode(images).latent

    out = write_latent_cache(
        source, encode, args.out, num_samples=args.num_samples, batch_size=args.batch_size,
        shard_size=args.shard_size, seed=args.seed, device=args.device, dtype=args.dtype,
        description=f"VGT-AE {args.model} at {resolution}px", overwrite=args.overwrite,
    )
    print(f"wrote latent cache {out}; train from it with --data latents:{out}")
    return 0


def add_commands(tree) -> None:
    p = tree.command("cache-latents", run_cache_latents,
                     "Encode images once with a trained VGT-AE and write latent + caption shards.")
    p.add_argument("--model", required=True, help="VGT-AE folder (written by `vgt train ae`)")
    p.add_argument("--backbone-path", help="VLM folder, when the AE's recorded path moved")
    p.add_argument("--data", action="append", required=True,
                   help="data spec, repeatable for a mix: shapes[:prompt|caption], folder:DIR, wds:SHARDS")
    p.add_argument("--data-weights", type=finite_float, nargs="+", help="mix weights, one per --data")
    p.add_argument("--out", required=True, help="cache directory to create")
    p.add_argument("--num-samples", type=positive_int,
                       help="samples to encode (required for endless sources like shapes)")
    p.add_argument("--resolution", type=positive_int, help="image size (default: the AE's training resolution)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per encoder call")
    p.add_argument("--shard-size", type=positive_int, default=1000,
                       help="samples per tar shard (>= one shard per reader)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random crops")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored latent precision")
    p.add_argument("--device", default="cpu", help="device to encode on, e.g. cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache directory")
