"""Timers that are correct on CUDA: synchronise before reading the clock, warm up, report the median.

CUDA kernels run asynchronously, so a clock read without ``torch.cuda.synchronize()`` measures the launch,
not the work. ``cuda_perf_counter`` is a drop-in pytest-benchmark timer::

    pytest benchmark/ --benchmark-only --benchmark-timer ifer.bench.timers.cuda_perf_counter

``measure`` is the same discipline outside pytest (used where two paths are compared in one run)::

    python -c "import torch; from ifer.bench.timers import measure; \
print(measure(lambda: torch.randn(256, 256) @ torch.randn(256, 256), warmup=2, iters=5))"
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["synchronize", "cuda_perf_counter", "measure", "measure_interleaved"]


def synchronize() -> None:
    """Wait for all queued CUDA work; a no-op when CUDA was never initialised (CPU runs)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def cuda_perf_counter() -> float:
    """``time.perf_counter()`` after synchronising CUDA, so an interval covers the GPU work it launched."""
    synchronize()
    return time.perf_counter()


def _quantile(sorted_values: list[float], q: float) -> float:
    # linear interpolation between closest ranks (numpy's default), defined for a single value too
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _summary(times: list[float], batch_size: int, out: Any) -> dict:
    ordered = sorted(times)
    median = statistics.median(ordered)
    return {"median_s": median, "p10": _quantile(ordered, 0.1), "p90": _quantile(ordered, 0.9),
            "images_per_s": batch_size / median, "times_s": times, "output": out}


def measure_interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 3, iters: int = 10,
                        batch_size: int = 1) -> dict[str, dict]:
    """``measure`` for several callables at once, alternating them call by call.

    Alternation makes slow drifts of the machine (other processes, thermal state) hit every callable
    alike, so the *ratio* of their medians is trustworthy even on a noisy shared runner.
    """
    if iters < 1:
        raise ValueError("iters must be >= 1")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize()
    times: dict[str, list[float]] = {name: [] for name in fns}
    outs: dict[str, Any] = {}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = cuda_perf_counter()
            outs[name] = fn()
            times[name].append(cuda_perf_counter() - t0)
    return {name: _summary(times[name], batch_size, outs[name]) for name in fns}


def measure(fn: Callable[[], Any], warmup: int = 3, iters: int = 10, batch_size: int = 1) -> dict:
    """Time ``fn()`` ``iters`` times after ``warmup`` untimed calls; return the median and spread.

    Warm-up absorbs ``torch.compile`` compilation, cuDNN autotuning, oneDNN weight packing and allocator
    growth, so none of it reaches the timings (``warmup`` must be >= 1 for a compiled ``fn``). Each call is
    bracketed by synchronising clock reads. Returns ``median_s``, ``p10``, ``p90`` (seconds per call),
    ``images_per_s`` (``batch_size / median_s``), ``times_s`` and ``output`` (the last timed call's result,
    so the caller can check that what was timed is correct).
    """
    return measure_interleaved({"fn": fn}, warmup, iters, batch_size)["fn"]
