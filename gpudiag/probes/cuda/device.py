"""Shared CUDA plumbing for the `launch`, `contention` and `pcie` probes, and the spawned
`contention` worker.

Imported only inside a probe's isolated child (and by the workers it spawns): torch is imported
inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from gpudiag.capabilities import CUDA_BUILD_HINT, TORCH_HINT
from gpudiag.probes.base import ProbeSkip


def require_cuda(min_free_bytes: int = 0):
    """torch, when it can use CUDA device 0 with at least `min_free_bytes` free; else ProbeSkip saying why."""
    try:
        import torch
    except ImportError:
        raise ProbeSkip(f"torch is not installed: {TORCH_HINT}") from None
    if getattr(torch.version, "cuda", None) is None:
        raise ProbeSkip(f"the installed torch {torch.__version__} has no CUDA support (a CPU-only or "
                        f"ROCm build): {CUDA_BUILD_HINT}")
    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        raise ProbeSkip("torch sees no usable CUDA device (torch.cuda.is_available() is False): check the "
                        "NVIDIA driver, that it is new enough for this torch's CUDA "
                        f"{torch.version.cuda}, and CUDA_VISIBLE_DEVICES")
    free, total = torch.cuda.mem_get_info(0)
    if free < min_free_bytes:
        raise ProbeSkip(f"only {free / 2 ** 20:.0f} MiB of {total / 2 ** 20:.0f} MiB GPU memory is free; "
                        f"this measurement needs {min_free_bytes / 2 ** 20:.0f} MiB: close other GPU programs")
    return torch


def device_info(torch) -> Dict[str, Any]:
    """Name, memory and compute capability of device 0 (no identifiers)."""
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    return {"index": 0, "name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_total_bytes": int(total), "memory_free_bytes": int(free)}


def timed_sleep_ms(torch, cycles: int) -> float:
    """Device time (ms) of one spin kernel of `cycles` clock cycles, timed with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def spin_kernels(torch, cycles: int, kernels: int) -> List[float]:
    """Launch `kernels` spin kernels back to back on the current stream, each between two CUDA
    events, and return their device times (ms). Back to back, each start event completes when the
    previous kernel ends, so a kernel's time includes any time its context was switched out."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(kernels)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(kernels)]
    for s, e in zip(starts, ends):
        s.record()
        torch.cuda._sleep(cycles)
        e.record()
    ends[-1].synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def contention_worker(index: int, cycles: int, kernels: int, ready_q, start_evt, result_q,
                      start_timeout_s: float) -> None:
    """One process with its own CUDA context: report readiness, wait for the start, then run
    `kernels` spin kernels of `cycles` back to back, timing each with CUDA events.

    Puts ("ready", index, {create_s}) then ("done", index, {t_start, t_end, elapsed_ms}) on the
    queues, or ("error", index, "message"). Timestamps are time.perf_counter(), a system-wide
    monotonic clock on Linux and Windows, so the parent can compare them across processes.
    """
    try:
        import torch

        t0 = time.perf_counter()
        torch.cuda.init()
        probe = torch.zeros(1, device="cuda")  # the context exists once memory is allocated
        torch.cuda.synchronize()
        create_s = time.perf_counter() - t0
        for _ in range(3):  # load the spin kernel and raise clocks before the clock starts
            torch.cuda._sleep(cycles)
        torch.cuda.synchronize()
        ready_q.put(("ready", index, {"create_s": create_s}))
        if not start_evt.wait(start_timeout_s):
            result_q.put(("error", index, "start signal never came"))
            return
        t_start = time.perf_counter()
        elapsed = spin_kernels(torch, cycles, kernels)
        t_end = time.perf_counter()
        del probe
        result_q.put(("done", index, {"t_start": t_start, "t_end": t_end, "elapsed_ms": elapsed}))
    except (ImportError, OSError, AssertionError, RuntimeError) as exc:
        # Reported to the parent, which turns it into a reason. What stops a worker here: torch missing
        # or its CUDA libraries failing to load (ImportError, OSError), a CPU-only torch ("Torch not
        # compiled with CUDA enabled" is an AssertionError), CUDA errors and out of memory (RuntimeError
        # and torch's subclasses of it). Anything else is a bug and propagates: the parent still sees
        # the worker exit non-zero and says so.
        result_q.put(("error", index, f"{type(exc).__name__}: {exc}"))
