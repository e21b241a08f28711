"""The processes of a training run: the `Accelerator` each builds (precision, and the launch checks that turn a
misconfigured multi-process start into one clear error), and the clean end of a multi-process run."""

from __future__ import annotations

import logging
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs


def _mixed_precision(precision: str) -> str:
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def make_accelerator(precision: str, find_unused_parameters: bool) -> Accelerator:
    """An Accelerator for this run. accelerate keeps process-wide state that refuses a second precision; a
    single-process program (a notebook, a script training two stages) may change it between runs."""
    from accelerate.state import AcceleratorState, PartialState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != _mixed_precision(precision) and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_CPU") == "True" and "MASTER_ADDR" in os.environ and launched == 1 and not any(
        v in os.environ for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    ):
        raise RuntimeError(
            "`accelerate launch --cpu --num_processes N` starts a single process (without mpirun accelerate cannot "
            "start several CPU processes). For N processes on CPU use `torchrun --standalone --nproc_per_node N "
            "-m vgt ...` or `accelerate launch --multi_gpu --num_processes N -m vgt ...` (CPU + gloo without GPUs)."
        )
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(precision),
        # torchrun on a machine without GPUs: accelerate only joins the process group when told to use the CPU
        cpu=launched > 1 and not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )
    if accelerator.num_processes != launched:
        raise RuntimeError(
            f"launched as {launched} processes but accelerate set up {accelerator.num_processes}; launch with "
            "torchrun or `accelerate launch --multi_gpu`, or check the distributed environment"
        )
    return accelerator


def end_distributed_process(code: int) -> None:
    """In a process of a multi-process run (torchrun, accelerate launch), leave the process group and exit now,
    skipping the interpreter's shutdown; otherwise return.

    DDP keeps the gloo process group, and its worker threads, alive to the very end, and those threads racing the
    interpreter's teardown abort the process ("terminate called without an active exception", SIGABRT) after
    work that succeeded. Call this last in your own scripts that train under torchrun; every file must be closed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
