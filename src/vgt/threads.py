"""How many CPU threads torch should use for sampling.

Sampling is a long chain of small matmuls (a few rows each), where extra threads mostly add synchronisation: on a
shared 2-core machine 2 threads were measured 1.2-4x slower than 1. Large batches have enough work per matmul to
use the cores that are actually idle.
"""

from __future__ import annotations

import os

import torch

#: images per call from which sampling spreads over the idle cores (below it, one thread)
PARALLEL_FROM_IMAGES = 8


def idle_cores() -> int:
    """Cores this process may use minus the 1-minute load average (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - load)))


def default_threads(images_per_call: int) -> int:
    """One thread for small jobs, else the idle cores."""
    return 1 if images_per_call < PARALLEL_FROM_IMAGES else idle_cores()


def set_sampling_threads(threads: int | None, images_per_call: int, device: torch.device) -> int | None:
    """Apply `threads` (a --threads setting), else OMP_NUM_THREADS when the user set it, else `default_threads`;
    returns the count set (None on an accelerator, where CPU threads do not matter)."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if device.type != "cpu" and threads is None:
        return None
    if threads is None:
        omp = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(omp) if omp.isdigit() and int(omp) > 0 else default_threads(images_per_call)
    torch.set_num_threads(threads)
    return threads
