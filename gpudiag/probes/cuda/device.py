"""Shared CUDA plumbing for the `launch`, `contention` and `pcie` probes, and the spawned
`contention` worker.

Imported only inside a probe's isolated child (and by the workers it spawns): torch is imported
inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Dict, List, Optional

from gpudiag.capabilities import CUDA_BUILD_HINT, TORCH_HINT
from gpudiag.probes.base import ProbeSkip
from gpudiag.units import fmt_bytes


def require_cuda(min_free_bytes: int = 0):
    """torch, when it can use CUDA device 0 with at least `min_free_bytes` free; else ProbeSkip saying why."""
    try:
        import torch
    except ImportError:
        raise ProbeSkip(f"torch is not installed: {TORCH_HINT}") from None
    hip = getattr(torch.version, "hip", None)
    if getattr(torch.version, "cuda", None) is None:
        if hip:
            raise ProbeSkip(f"the installed torch {torch.__version__} is a ROCm build (HIP {hip}): its torch.cuda "
                            "drives an AMD GPU, and this probe measures NVIDIA GPUs through CUDA")
        raise ProbeSkip(f"the installed torch {torch.__version__} has no CUDA support (a CPU-only "
                        f"build): {CUDA_BUILD_HINT}")
    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        raise ProbeSkip("torch sees no usable CUDA device (torch.cuda.is_available() is False): check the "
                        "NVIDIA driver, that it is new enough for this torch's CUDA "
                        f"{torch.version.cuda}, and CUDA_VISIBLE_DEVICES")
    free, total = torch.cuda.mem_get_info(0)
    if free < min_free_bytes:
        raise ProbeSkip(f"only {fmt_bytes(free)} of {fmt_bytes(total)} GPU memory is free; "
                        f"this measurement needs {fmt_bytes(min_free_bytes)}: close other GPU programs")
    return torch


@contextlib.contextmanager
def out_of_memory_as_skip(torch):
    """Turns torch.cuda.OutOfMemoryError (torch >= 1.13; a RuntimeError) raised inside into ProbeSkip with the
    reason: another program took the memory the probe checked for, which is the machine's state, not a fault."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    if oom is None:  # older than the floor: nothing to tell it from other RuntimeErrors
        yield
        return
    try:
        yield
    except oom as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProbeSkip(f"the GPU ran out of memory while measuring ({first[:200]}): close other GPU programs "
                        "and run it again") from None


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


# A spin kernel queued ahead of a start event, so that the event is recorded behind device work and not on an
# idle stream (where it takes its timestamp at once, and the interval then includes the host's time to
# launch what it times). 0.2 ms is ten times the host time of a record + launch + record on a quick system;
# where the host is slower, the lead doubles (up to LEAD_MAX_MS) and the sample is taken again.
LEAD_MS = 0.2
LEAD_MAX_MS = 5.0
_LEAD_MARGIN = 0.8  # a sample counts when the host enqueued it within this share of the lead


class DeviceTimer:
    """Device time of work enqueued on one stream, between two CUDA events with a spin-kernel lead before them.

    CUDA timestamps an event when the GPU reaches it: on an idle GPU that is the moment it is recorded, so
    `start.record(); op(); end.record()` measures the host's launch of op plus op. Queuing a spin kernel
    first keeps the GPU busy while the host records the start, launches the op and records the end; the
    start event then fires when the spin ends, right before the op. The host's own time for the sequence
    is checked against the lead: a sample whose lead ran out before the end event was enqueued is dropped
    (counted in `dropped`) and the lead doubled.
    """

    def __init__(self, torch, lead_ms: float = LEAD_MS):
        self.torch = torch
        self.lead_ms = lead_ms
        self.dropped = 0
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        probe_cycles = 1_000_000
        torch.cuda._sleep(probe_cycles)  # load the spin kernel before timing it
        torch.cuda.synchronize()
        ms = min(timed_sleep_ms(torch, probe_cycles) for _ in range(3))  # a 1 ms kernel: the idle start is noise
        self.cycles_per_ms = probe_cycles / ms if ms > 0 else 1e6

    def time(self, work: Callable[[], Any], stream: Any = None) -> Optional[float]:
        """Device ms from the start event to the end event around work() on `stream` (None: the current one),
        or None when the host took too long to enqueue it for the lead to hold (the lead is doubled)."""
        torch = self.torch
        cycles = max(1000, int(self.cycles_per_ms * self.lead_ms))
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with ctx:
            t0 = time.perf_counter()
            torch.cuda._sleep(cycles)
            self.start.record(stream)
            work()
            self.end.record(stream)
            host_ms = (time.perf_counter() - t0) * 1e3
        self.end.synchronize()
        if host_ms > _LEAD_MARGIN * self.lead_ms:
            self.dropped += 1
            self.lead_ms = min(LEAD_MAX_MS, self.lead_ms * 2)
            return None
        return self.start.elapsed_time(self.end)

    def samples(self, work: Callable[[], Any], n: int, stream: Any = None) -> List[float]:
        """Up to `n` timed samples of work() (ms), trying at most 2n + 10 times."""
        out: List[float] = []
        for _ in range(2 * n + 10):
            if len(out) >= n:
                break
            ms = self.time(work, stream)
            if ms is not None:
                out.append(ms)
        return out

    def info(self) -> Dict[str, Any]:
        """What the report says about the method: the lead the last samples had and how many were dropped."""
        return {"method": "CUDA events behind a torch.cuda._sleep lead", "lead_ms": round(self.lead_ms, 3),
                "dropped": self.dropped}


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


def matmul_buffers(torch, n: int) -> tuple:
    """(a, b, out): float32 n x n matrices on the device, for work_kernels."""
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    return a, b, torch.empty(n, n, device="cuda")


def work_kernels(torch, buffers: tuple, kernels: int) -> List[float]:
    """Launch `kernels` matmuls (torch.mm into one output) back to back on the current stream, each between two
    CUDA events, and return their device times (ms).

    A kernel of fixed *work*, unlike a spin kernel: when time-slicing switches its context out, it resumes
    with the work it had left, so its event time grows by exactly the time it waited. A spin kernel
    (torch.cuda._sleep) waits for a clock that keeps running while it is switched out and ends on
    resuming: it hides part of the wait, and the time-slice and switch-cost estimates came out low by up
    to a kernel's length (tests/probes/test_cuda_analysis.py simulates both).
    """
    a, b, out = buffers
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(kernels)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(kernels)]
    for s, e in zip(starts, ends):
        s.record()
        torch.mm(a, b, out=out)
        e.record()
    ends[-1].synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def contention_worker(index: int, matrix_n: int, kernels: int, ready_q, start_evt, result_q,
                      start_timeout_s: float) -> None:
    """One process with its own CUDA context: report readiness, wait for the start, then run
    `kernels` matmuls of matrix_n x matrix_n back to back (work_kernels), timing each with CUDA events.

    Puts ("ready", index, {create_s}) then ("done", index, {t_start, t_end, elapsed_ms}) on the
    queues, or ("error", index, "message"). Timestamps are time.perf_counter(), a system-wide
    monotonic clock on Linux and Windows, so the parent can compare them across processes.
    """
    try:
        import torch

        t0 = time.perf_counter()
        torch.cuda.init()
        buffers = matmul_buffers(torch, matrix_n)  # the context exists once memory is allocated
        torch.cuda.synchronize()
        create_s = time.perf_counter() - t0
        for _ in range(3):  # load the kernel and raise clocks before the clock starts
            torch.mm(buffers[0], buffers[1], out=buffers[2])
        torch.cuda.synchronize()
        ready_q.put(("ready", index, {"create_s": create_s}))
        if not start_evt.wait(start_timeout_s):
            result_q.put(("error", index, "start signal never came"))
            return
        t_start = time.perf_counter()
        elapsed = work_kernels(torch, buffers, kernels)
        t_end = time.perf_counter()
        del buffers
        result_q.put(("done", index, {"t_start": t_start, "t_end": t_end, "elapsed_ms": elapsed}))
    except (ImportError, OSError, AssertionError, RuntimeError) as exc:
        # Reported to the parent, which turns it into a reason. What stops a worker here: torch missing
        # or its CUDA libraries failing to load (ImportError, OSError), a CPU-only torch ("Torch not
        # compiled with CUDA enabled" is an AssertionError), CUDA errors and out of memory (RuntimeError
        # and torch's subclasses of it). Anything else is a bug and propagates: the parent still sees
        # the worker exit non-zero and says so.
        result_q.put(("error", index, f"{type(exc).__name__}: {exc}"))
