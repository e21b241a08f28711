"""Sampling speed of this checkout against an earlier revision of vgt, in the same run, and its throughput against
the matmul peak.

    python benchmarks/sampling_speedup.py [--baseline e116af6] [--rounds 5] [--threads 1] [--model DIR]
    python benchmarks/sampling_speedup.py --rounds 1 --throughput-rounds 1 --images 4    # reduced run

The baseline's `src/` is extracted with `git archive` into a temporary folder. Two worker processes (this script
with --worker), one importing the baseline and one this checkout, each load the model once and then take turns:
every job runs in one worker while the other waits, baseline and current alternately, so a change in machine load
hits both alike, and each ratio is taken pair by pair (min and median reported).

1. Latency: one image, default settings (tokens_per_step 1), the same seed for both in a round; the images of each
   pair are compared (largest difference in [0, 1] and the share of 8-bit pixels that are equal).
2. Throughput: --images per call at tokens_per_step 1 and 16, fp32. FLOPs are counted once per setting with
   `torch.utils.flop_counter` (matmuls, convolutions, attention); the fp32 matmul peak is sampled in the worker
   right before each timed call, and each call's FLOP/s is divided by its own peak (median, min-max over pairs).
3. bf16 against fp32 weights (this checkout only) at 1, 4 and --images images per call.
Time covers the whole pipeline call: prompt encoding, decoding with guidance, the VGT-AE decoder.
"""

import argparse
import functools
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["two red circles", "a blue square to the left of a yellow triangle", "three green triangles",
           "a purple circle", "a yellow square above a red circle", "four blue circles"]


def worker(model: str, threads: int) -> None:
    """Answer one JSON job per input line with a `RESULT {json}` line."""
    from speed_common import flop_counter, matmul_peak

    from vgt.pipeline import VGTPipeline

    torch.set_num_threads(threads)
    pipes = {}
    for line in sys.stdin:
        job = json.loads(line)
        dtype = torch.bfloat16 if job["dtype"] == "bf16" else torch.float32
        if job["dtype"] not in pipes:
            pipes[job["dtype"]] = VGTPipeline.from_pretrained(model, dtype=dtype)
        pipe = pipes[job["dtype"]]
        prompts = (PROMPTS * job["images"])[: job["images"]]
        call = functools.partial(pipe, prompts, tokens_per_step=job["k"], num_inference_steps=job.get("steps"),
                                 generator=torch.Generator().manual_seed(job["seed"]), output_type="np")

        result = {}
        if job.get("count_flops"):
            with flop_counter() as counter:
                call()
            result["flops"] = counter.get_total_flops()
        else:
            result["peak"] = matmul_peak(dtype)
            start = time.perf_counter()
            images = call().images
            result["seconds"] = time.perf_counter() - start
            if job.get("save"):
                np.save(job["save"], images)
        print("RESULT " + json.dumps(result), flush=True)


class Worker:
    def __init__(self, src: Path, model: str, threads: int):
        env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, __file__, "--worker", "--threads", str(threads), "--model", model]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        stderr=subprocess.DEVNULL)

    def run(self, **job) -> dict:
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise RuntimeError(f"the worker exited with {self.process.wait()} before answering {job}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def extract_baseline(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision, "src"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(statistics.median(values))} (min {fmt.format(min(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="e116af6", help="git revision to compare with (default e116af6)")
    parser.add_argument("--model", help="pipeline folder (default: $VGT_MODEL, else the shipped model)")
    parser.add_argument("--rounds", type=int, default=5, help="latency pairs (one image per call)")
    parser.add_argument("--throughput-rounds", type=int, default=2, help="pairs per throughput setting")
    parser.add_argument("--images", type=int, default=16, help="images per call for the throughput settings")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in both workers (default 1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.model, args.threads)

    from vgt.pretrained import resolve_model_dir

    model = str(resolve_model_dir(args.model))  # both versions load the same model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        workers = {"baseline": Worker(extract_baseline(args.baseline, tmp / "baseline"), model, args.threads),
                   "current": Worker(ROOT / "src", model, args.threads)}
        for w in workers.values():
            w.run(dtype="fp32", images=1, k=1, seed=0, steps=2)  # warm-up: loading, first-call allocations
        print(f"baseline {args.baseline} vs this checkout, {args.threads} thread(s); medians (min) over pairs")

        ratios, seconds, diffs, equal = [], {"baseline": [], "current": []}, [], []
        for r in range(args.rounds):
            for name, w in workers.items():
                seconds[name].append(w.run(dtype="fp32", images=1, k=1, seed=r, save=str(tmp / f"{name}.npy"))
                                     ["seconds"])
            ratios.append(seconds["baseline"][-1] / seconds["current"][-1])
            a, b = np.load(tmp / "baseline.npy"), np.load(tmp / "current.npy")
            diffs.append(float(np.abs(a - b).max()))
            equal.append(float((np.round(a * 255) == np.round(b * 255)).mean()))
        print(f"\n1. one image, default settings, {args.rounds} pairs")
        print(f"   s/image: baseline {spread(seconds['baseline'])}, current {spread(seconds['current'])}")
        print(f"   speed-up (baseline / current, pair by pair): median {statistics.median(ratios):.2f}x, "
              f"min {min(ratios):.2f}x; fastest runs: {min(seconds['baseline']) / min(seconds['current']):.2f}x")
        print(f"   same seed, same images: largest difference {max(diffs):.2e} (pixels in [0, 1]); "
              f"8-bit pixels equal: {100 * min(equal):.3f}% (worst pair)")

        print(f"\n2. throughput, {args.images} images per call, fp32")
        print(f"   {'tokens/step':<12} {'version':<9} {'s/call':>7} {'images/s':>9} {'GFLOP/call':>11} "
              f"{'GFLOP/s':>8} {'of fp32 peak (min-max)':>22} {'speed-up (min-max)':>18}")
        for k in (1, 16):
            flops = {n: w.run(dtype="fp32", images=args.images, k=k, seed=0, count_flops=True)["flops"]
                     for n, w in workers.items()}
            timed = {n: [] for n in workers}
            for _ in range(args.throughput_rounds):
                for name, w in workers.items():
                    timed[name].append(w.run(dtype="fp32", images=args.images, k=k, seed=0))
            for name in workers:
                s = statistics.median(t["seconds"] for t in timed[name])
                fractions = [100 * flops[name] / t["seconds"] / t["peak"] for t in timed[name]]
                fraction = f"{statistics.median(fractions):.1f}% ({min(fractions):.1f}-{max(fractions):.1f})"
                ratios = [b["seconds"] / c["seconds"] for b, c in zip(timed["baseline"], timed["current"], strict=True)]
                ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                print(f"   {k:<12} {name:<9} {s:7.2f} {args.images / s:9.2f} {flops[name] / 1e9:11.2f} "
                      f"{flops[name] / s / 1e9:8.1f} {fraction:>19} {ratio if name == 'current' else '':>18}")

        print("\n3. bf16 vs fp32 weights (current), tokens_per_step 1")
        current = workers["current"]
        current.run(dtype="bf16", images=1, k=1, seed=0, steps=2)
        for images in sorted({1, 4, args.images}):
            pairs = [(current.run(dtype="fp32", images=images, k=1, seed=0)["seconds"],
                      current.run(dtype="bf16", images=images, k=1, seed=0)["seconds"])
                     for _ in range(args.throughput_rounds)]
            fp32, bf16 = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            ratios = [a / b for a, b in pairs]
            print(f"   {images:>2} images/call: fp32 {fp32:.2f} s, bf16 {bf16:.2f} s, bf16 speed-up "
                  f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
        for w in workers.values():
            w.close()


if __name__ == "__main__":
    main()
