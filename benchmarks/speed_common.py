"""Shared by the speed benchmarks: the matmul peak of this machine right now, and FLOP counting that includes the
CPU attention kernel (torch's counter only knows the CUDA ones and would count CPU attention as free)."""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


aten = torch.ops.aten
CPU_ATTENTION_FLOPS = {  # arguments arrive as shapes
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}


def flop_counter() -> FlopCounterMode:
    """`FlopCounterMode` that also counts the CPU flash-attention kernel (forward and backward)."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Best FLOP/s of a size x size x size matmul in `dtype` (one sample of a shared machine's current speed)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
