"""Training speed of a VGT-AR step: tokens/s and achieved FLOP/s as a fraction of the matmul peak measured in the
same run, in fp32 and with bf16 autocast (fp32 master weights, as `vgt train ar --precision bf16`).

    python benchmarks/training_speed.py [--batch-size 32] [--grid 8] [--steps 5] [--vlm-preset small]
    python benchmarks/training_speed.py --batch-size 4 --grid 4 --steps 2 --vlm-preset toy     # reduced run
    python benchmarks/training_speed.py --head-noise-samples 4      # K noise draws per token (--head-noise-samples)
    python benchmarks/training_speed.py --head-width 512             # a wider flow head (--head-width, --head-depth)

The model is the small VLM's architecture with random weights (speed does not depend on the weights) tuned as
VGT-AR with the `cpu-small` generator preset, trained on random normalised latents and ShapesWorld prompts. One
step = forward, backward and the AdamW update. FLOPs are counted by `torch.utils.flop_counter` on one forward +
backward (matmuls, convolutions, and attention, including the CPU flash-attention kernel torch's counter misses).
The peak (best of a few square matmuls of --peak-size) is sampled right before every timed step, and each step's
FLOP/s is divided by its own peak: on a shared machine both drift together, so the fraction of peak is reported as
the median with its min-max spread over the steps.
Tokens are the sequence tokens the language model processes (prompt without padding, <img>, N queries, N latents).
"""

import argparse
import statistics
import time

import torch
from speed_common import flop_counter, matmul_peak

from vgt.ae.model import VGTAutoencoder
from vgt.ar.training import build_generator
from vgt.data.shapes_world import ShapesWorld
from vgt.presets import SMALL_VLM_PRESETS, ae_preset
from vgt.vlm.model import build_small_vlm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vlm-preset", choices=sorted(SMALL_VLM_PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grid", type=int, default=8, help="latent grid side (8: 128 px with the small VLM)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision (after one warm-up step)")
    parser.add_argument("--peak-size", type=int, default=1024, help="side of the matmul that measures the peak")
    parser.add_argument("--head-noise-samples", type=int, default=1,
                        help="noise draws per latent token in the loss (`vgt train ar --head-noise-samples`)")
    parser.add_argument("--head-width", type=int, help="flow head width (`vgt train ar --head-width`; default 256)")
    parser.add_argument("--head-depth", type=int, help="flow head blocks (`vgt train ar --head-depth`; default 4)")
    parser.add_argument("--precision", choices=("both", "fp32", "bf16"), default="both",
                        help="time fp32, bf16 autocast or both (bf16 is slow on a CPU without fast bf16 matmuls)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    backbone = build_small_vlm(SMALL_VLM_PRESETS[args.vlm_preset], seed=0)
    ae = VGTAutoencoder.from_backbone(backbone, ae_preset("small-cpu", channel_norm=True)).requires_grad_(False)
    model = build_generator(backbone, ae, "cpu-small", seed=0, grid_size=args.grid,
                            head_noise_samples=args.head_noise_samples, head_width=args.head_width,
                            head_depth=args.head_depth).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    world = ShapesWorld(resolution=32, seed=0)
    captions = [world.sample(i).prompt for i in range(args.batch_size)]
    generator = torch.Generator().manual_seed(0)
    latents = VGTAutoencoder.normalize_latents(torch.randn(args.batch_size, ae.latent_channels, args.grid, args.grid,
                                                           generator=generator))
    with torch.no_grad():
        _, mask = model.prompt_embeddings(captions)
    tokens = int(mask.sum()) + args.batch_size * (1 + 2 * args.grid * args.grid)

    def step(dtype: torch.dtype) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(latents, captions, generator=torch.Generator().manual_seed(1)).loss
        loss.backward()
        optimizer.step()

    rows = []
    precisions = {"fp32": ("fp32", torch.float32), "bf16": ("bf16 autocast", torch.bfloat16)}
    for name, dtype in [v for k, v in precisions.items() if args.precision in (k, "both")]:
        step(dtype)  # warm-up
        counter = flop_counter()
        with counter:
            step(dtype)
        flops = counter.get_total_flops()
        seconds, fractions, peaks = [], [], []
        for _ in range(args.steps):
            peaks.append(matmul_peak(dtype, args.peak_size))
            start = time.perf_counter()
            step(dtype)
            seconds.append(time.perf_counter() - start)
            fractions.append(flops / seconds[-1] / peaks[-1])
        median = statistics.median(seconds)
        rows.append((name, median, tokens / median, flops, flops / median, statistics.median(peaks), fractions))

    n_params = sum(p.numel() for p in trainable)
    print(f"VGT-AR step: small VLM '{args.vlm_preset}' ({n_params / 1e6:.2f}M trainable parameters), batch "
          f"{args.batch_size}, {args.grid}x{args.grid} latents, {args.head_noise_samples} noise draws per token, "
          f"{tokens} tokens/step, {torch.get_num_threads()} threads, median of {args.steps} steps")
    print(f"{'precision':<14} {'s/step':>7} {'tokens/s':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} "
          f"{'matmul peak GFLOP/s':>20} {'of peak (median, min-max)':>26}")
    for name, median, tokens_per_s, flops, achieved, peak, fractions in rows:
        spread = f"{100 * statistics.median(fractions):.1f}% ({100 * min(fractions):.1f}-{100 * max(fractions):.1f})"
        print(f"{name:<14} {median:7.3f} {tokens_per_s:9.0f} {flops / 1e9:11.2f} {achieved / 1e9:8.1f} "
              f"{peak / 1e9:20.1f} {spread:>26}")


if __name__ == "__main__":
    main()
