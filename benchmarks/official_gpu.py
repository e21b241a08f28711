"""The InternVL3-1.6B-shaped pipeline (random weights, nothing downloaded) on a GPU, bfloat16: images per second
at 1, 8 and 32 images per call and 1, 4 and 16 tokens per step, and one VGT-AR training step at full size
(forward + backward + AdamW on a batch of 448 px latents, fp32 master weights under bf16 autocast).

    python benchmarks/official_gpu.py                               # the full table (device cuda)
    python benchmarks/official_gpu.py --batches 1 --tokens-per-step 16 --steps 10   # a quick check

Images/s counts the whole pipeline (prompts, decoding with guidance, DC-AE decode), after one warm-up call.
"""

import argparse
import json
import time

import torch

from vgt.official.architectures import random_release_pipeline


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(pipe, batch: int, tokens_per_step: int, steps: int) -> float:
    prompts = [f"a photo of object number {i}" for i in range(batch)]
    run = lambda: pipe(prompts, height=448, width=448, tokens_per_step=tokens_per_step,  # noqa: E731
                       num_inference_steps=steps, output_type="pt", generator=torch.Generator().manual_seed(0))
    run()
    synchronize(pipe.device)
    start = time.perf_counter()
    run()
    synchronize(pipe.device)
    return batch / (time.perf_counter() - start)


def training_step(pipe, batch: int) -> dict:
    """Seconds and peak memory of one optimizer step of the generator (LLM + grids + head) in fp32 + autocast."""
    model = pipe.generator.float().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    latents = torch.randn(batch, 32, 16, 16, device=pipe.device)
    captions = [f"a photo of object number {i}" for i in range(batch)]
    if pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipe.device)
    timings = []
    for _ in range(2):  # the first step allocates the optimizer state
        synchronize(pipe.device)
        start = time.perf_counter()
        with torch.autocast(pipe.device.type, dtype=torch.bfloat16):
            loss = model(latents, captions, generator=torch.Generator().manual_seed(0)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(pipe.device)
        timings.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(pipe.device) / 2**30 if pipe.device.type == "cuda" else None
    return {"train_batch": batch, "train_step_s": round(timings[-1], 3), "train_peak_gib": peak and round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--release", default="internvl3-1.6b")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens-per-step", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=30, help="flow-head steps per token group")
    parser.add_argument("--train-batch", type=int, default=8)
    args = parser.parse_args()
    pipe = random_release_pipeline(args.release)
    pipe.generator.to(torch.bfloat16)
    pipe.ae.to(torch.bfloat16)
    pipe.to(args.device)
    for batch in args.batches:
        for k in args.tokens_per_step:
            rate = images_per_second(pipe, batch, k, args.steps)
            print(json.dumps({"images_per_call": batch, "tokens_per_step": k, "images_per_s": round(rate, 3)}),
                  flush=True)
    print(json.dumps(training_step(pipe, args.train_batch)), flush=True)


if __name__ == "__main__":
    main()
