"""`vgt cache-latents`: encode a data set once with a trained VGT-AE (`vgt.ae.cache.cache_latents`), so VGT-AR
trains without running the AE."""

from __future__ import annotations

import argparse

from vgt.argtypes import finite_float, non_negative_int, positive_int


def run_cache_latents(args: argparse.Namespace) -> int:
    from vgt.ae.cache import cache_latents

    out = cache_latents(args.model, args.data, args.out, backbone_path=args.backbone_path, size=args.size,
                        num_samples=args.num_samples, data_weights=args.data_weights, batch_size=args.batch_size,
                        shard_size=args.shard_size, seed=args.seed, dtype=args.dtype, device=args.device,
                        overwrite=args.overwrite)
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
    p.add_argument("--size", type=positive_int, help="image size (default: the AE's training resolution)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per encoder call")
    p.add_argument("--shard-size", type=positive_int, default=1000,
                       help="samples per tar shard (>= one shard per reader)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random crops")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored latent precision")
    p.add_argument("--device", default="cpu", help="device to encode on, e.g. cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache directory")
