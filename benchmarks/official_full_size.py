"""One 448 px image from the InternVL3-1.6B-shaped pipeline (random weights, nothing downloaded) on CPU: seconds
and peak memory (RSS), float32 and bfloat16, each dtype in its own process so that its peak is its own.

    python benchmarks/official_full_size.py                       # both dtypes, 30 head steps (GenEval setting)
    python benchmarks/official_full_size.py --dtype bf16 --steps 30 --release internvl3-1.6b

Settings: guidance 4.5 (two rows), 1 token per step (256 decoding steps), SDE head sampler, DC-AE f32c32 decode.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def measure(release: str, dtype: str, steps: int) -> dict:
    from vgt.official.architectures import random_release_pipeline

    start = time.perf_counter()
    pipe = random_release_pipeline(release)
    pipe.generator.to(DTYPES[dtype])
    pipe.ae.to(DTYPES[dtype])
    built = time.perf_counter() - start
    start = time.perf_counter()
    image = pipe("a red apple on a wooden table", height=448, width=448, num_inference_steps=steps,
                 generator=torch.Generator().manual_seed(0)).images[0]
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"release": release, "dtype": dtype, "head_steps": steps, "size": list(image.size),
            "build_s": round(built, 1), "generate_s": round(seconds, 1), "peak_rss_gib": round(peak_gib, 2),
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", default="internvl3-1.6b")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="one dtype in this process (default: both)")
    parser.add_argument("--steps", type=int, default=30, help="flow-head steps per token")
    args = parser.parse_args()
    if args.dtype:
        print(json.dumps(measure(args.release, args.dtype, args.steps)), flush=True)
        return
    for dtype in DTYPES:
        subprocess.run([sys.executable, __file__, "--release", args.release, "--dtype", dtype,
                        "--steps", str(args.steps)], check=True)


if __name__ == "__main__":
    main()
