"""What the benchmarks measure with: a device's clock, and the peak tensor memory of a call."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile


def sync(device: str) -> None:
    """Wait for the device, so that a clock read afterwards counts the work queued before."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(call: Callable[[], object], device: str) -> float:
    """Wall time of ``call()``, with the device's queued work waited for on both sides."""
    sync(device)
    start = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """The profiler's native library (Kineto) logs every start and stop, and on a machine without
    a GPU a device-count error, straight to the process's stderr, between a benchmark's rows."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(call: Callable[[], object], device: str) -> float:
    """The high-water mark of tensor memory allocated during ``call()``, in bytes: CUDA's own peak
    counter, or on the CPU replayed from the allocations and frees torch's profiler records."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - base)
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    current = peak = 0
    for _, change in sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if not e.cpu_children):
        current += change
        peak = max(peak, current)
    return float(peak)
