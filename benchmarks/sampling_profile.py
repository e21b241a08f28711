"""Where the time of one sampling call goes: the language model, the flow head, and the glue in between.

    python benchmarks/sampling_profile.py [--images 16] [--tokens-per-step 1] [--dtype fp32] [--rounds 3]

Wall time of each part is taken with `torch.profiler.record_function` ranges around `run_llm` (the language
model), `GuidedVelocity` (the head: per-group constants and every evaluation) and the VGT-AE decoder; the rest of
the call is glue (prompt encoding, the sampler's updates and noise, token bookkeeping). Each round is one pipeline
call under the profiler (which adds some overhead per op); the table gives the median share over rounds, then the
top ops by self CPU time of the last round.
"""

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from vgt.ar import sampling
from vgt.ar.model import VGTForGeneration
from vgt.pipeline import VGTPipeline
from vgt.pretrained import resolve_model_dir

PROMPTS = ["two red circles", "a blue square to the left of a yellow triangle", "three green triangles",
           "a purple circle", "a yellow square above a red circle", "four blue circles"]
PARTS = ("llm", "head constants", "head evaluations", "ae decode")


def instrument(pipe: VGTPipeline) -> None:
    """Wrap the parts of a call in named profiler ranges."""
    run_llm = VGTForGeneration.run_llm

    def llm(self, *args, **kwargs):
        with record_function("llm"):
            return run_llm(self, *args, **kwargs)

    VGTForGeneration.run_llm = llm
    guided = sampling.GuidedVelocity
    init, call = guided.__init__, guided.__call__

    def constants(self, *args, **kwargs):
        with record_function("head constants"):
            init(self, *args, **kwargs)

    def evaluation(self, *args, **kwargs):
        with record_function("head evaluations"):
            return call(self, *args, **kwargs)

    guided.__init__, guided.__call__ = constants, evaluation
    decode = pipe.ae.decode

    def ae_decode(*args, **kwargs):
        with record_function("ae decode"):
            return decode(*args, **kwargs)

    pipe.ae.decode = ae_decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder (default: $VGT_MODEL, else the shipped model)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--tokens-per-step", type=int, default=1)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="ops listed by self CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    pipe = VGTPipeline.from_pretrained(resolve_model_dir(args.model), dtype=dtype)
    prompts = (PROMPTS * args.images)[: args.images]

    def call():
        return pipe(prompts, tokens_per_step=args.tokens_per_step, generator=torch.Generator().manual_seed(0),
                    output_type="np")

    call()  # warm-up
    instrument(pipe)
    shares = {part: [] for part in (*PARTS, "glue")}
    walls = []
    for _ in range(args.rounds):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            call()
            wall = time.perf_counter() - start
        walls.append(wall)
        totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in PARTS}
        for part in PARTS:
            shares[part].append(totals.get(part, 0.0) / wall)
        shares["glue"].append(1 - sum(totals.values()) / wall)
    print(f"{args.images} images/call, tokens_per_step {args.tokens_per_step}, {args.dtype}, {args.threads} thread(s); "
          f"profiled wall {statistics.median(walls):.2f} s (median of {args.rounds}, min {min(walls):.2f})")
    for part, values in shares.items():
        low, high = 100 * min(values), 100 * max(values)
        print(f"  {part:<17} {100 * statistics.median(values):5.1f}%  ({low:.1f}-{high:.1f})")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
