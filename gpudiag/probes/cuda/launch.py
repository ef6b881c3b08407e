"""Probe `launch`: what one kernel launch costs here, and what CUDA graphs save.

Measures, on device 0 with a 1-element tensor (so the GPU work itself is negligible):
- host-side launch overhead: wall time of back-to-back `x.add_(1)` launches / launches, in batches well
  under CUDA's queue of pending launches (about 1024), so the host never waits for a full queue;
- end-to-end latency of one tiny kernel: launch + torch.cuda.synchronize();
- device time of one tiny kernel (CUDA events behind a spin-kernel lead: device.DeviceTimer);
- torch.cuda.synchronize() on an idle stream;
- the same N tiny ops launched one by one vs captured once in a CUDA graph and replayed.
Analysis (findings) lives in gpudiag.probes.cuda.analysis.
"""

from __future__ import annotations

import os
import time

from gpudiag.probes.cuda import analysis as cuda_analysis
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput
from gpudiag.measure.stats import summarize

GRAPH_OPS = 100
# Launches per timed batch: far below the ~1024 pending launches CUDA queues before a launch blocks, so a
# batch measures the host's cost to launch even where the kernels run slower than they are launched.
LAUNCH_BATCH = 200


def _plan(quick: bool) -> dict:
    """Launches and repeats for each measurement (quick: fewer repeats, the same kinds of figure)."""
    if quick:
        return {"launches": LAUNCH_BATCH, "launch_repeats": 100, "latency_repeats": 200, "sync_repeats": 500,
                "graph_repeats": 30}
    return {"launches": LAUNCH_BATCH, "launch_repeats": 600, "latency_repeats": 1000, "sync_repeats": 2000,
            "graph_repeats": 200}


def _round_stats(values, ndigits: int = 3) -> dict:
    """summarize(values) with floats rounded to `ndigits`: microsecond figures need no more."""
    return {k: (round(v, ndigits) if isinstance(v, float) else v) for k, v in summarize(values).items()}


def _graph_vs_eager(torch, x, repeats: int, timer) -> dict:
    """GRAPH_OPS tiny ops launched one by one vs captured once in a CUDA graph and replayed,
    both ending in a synchronize (wall clock), plus the graph's device time (CUDA events, `timer`)."""
    perf, sync = time.perf_counter, torch.cuda.synchronize
    g = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream before capture, as the docs ask
        for _ in range(3):
            x.add_(1)
    torch.cuda.current_stream().wait_stream(side)
    sync()
    with torch.cuda.graph(g):
        for _ in range(GRAPH_OPS):
            x.add_(1)
    for _ in range(3):
        g.replay()
    sync()
    eager_s, graph_s = [], []
    for _ in range(repeats):
        t0 = perf()
        for _ in range(GRAPH_OPS):
            x.add_(1)
        sync()
        eager_s.append(perf() - t0)
        t0 = perf()
        g.replay()
        sync()
        graph_s.append(perf() - t0)
    eager = summarize(cuda_analysis.per_op_us(eager_s, GRAPH_OPS))["median"]
    graphed = summarize(cuda_analysis.per_op_us(graph_s, GRAPH_OPS))["median"]
    device_ms = timer.samples(g.replay, 5)
    device_per_op_us = summarize(device_ms)["median"] * 1e3 / GRAPH_OPS if device_ms else None
    return {"ops_per_graph": GRAPH_OPS, "eager_per_op_us": round(eager, 3),
            "graph_per_op_us": round(graphed, 3),
            "graph_device_per_op_us": round(device_per_op_us, 3) if device_per_op_us is not None else None,
            "speedup": cuda_analysis.graph_speedup(eager, graphed), "reason": ""}


def run(ctx: ProbeContext) -> ProbeOutput:
    """The `launch` data and findings: launch overhead, tiny-kernel latency and device time, idle
    synchronize, eager vs CUDA graph (all in microseconds; graph left out with a reason if capture fails)."""
    from gpudiag.probes.cuda.device import out_of_memory_as_skip, require_cuda

    torch = require_cuda(min_free_bytes=64 * 2 ** 20)  # a few tiny tensors and a graph pool
    with out_of_memory_as_skip(torch):
        return _run(ctx, torch)


def _run(ctx: ProbeContext, torch) -> ProbeOutput:
    """run()'s measurements, on the torch require_cuda gave (out of memory becomes a skip there)."""
    from gpudiag.probes.cuda.device import DeviceTimer, device_info

    plan = _plan(ctx.quick)
    perf = time.perf_counter
    sync = torch.cuda.synchronize
    x = torch.zeros(1, device="cuda")
    for _ in range(200):  # warm-up: load the kernel, raise clocks, fill allocator caches
        x.add_(1)
    sync()

    # Host-side launch overhead: the CPU time to enqueue, not the GPU time to run.
    launch_s = []
    for _ in range(plan["launch_repeats"]):
        t0 = perf()
        for _ in range(plan["launches"]):
            x.add_(1)
        launch_s.append(perf() - t0)
        sync()
    launch_us = cuda_analysis.per_op_us(launch_s, plan["launches"])

    # End-to-end latency (launch + wait) and device time of one tiny kernel.
    latency_us = []
    for _ in range(plan["latency_repeats"]):
        t0 = perf()
        x.add_(1)
        sync()
        latency_us.append((perf() - t0) * 1e6)
    timer = DeviceTimer(torch)
    device_us = [ms * 1e3 for ms in timer.samples(lambda: x.add_(1), plan["latency_repeats"])]

    # synchronize() with nothing in flight: the round trip to the driver.
    sync_us = []
    for _ in range(plan["sync_repeats"]):
        t0 = perf()
        sync()
        sync_us.append((perf() - t0) * 1e6)

    try:
        graph = _graph_vs_eager(torch, x, plan["graph_repeats"], timer)
    except RuntimeError as exc:  # e.g. capture refused under CUDA_LAUNCH_BLOCKING or an old driver
        graph = {"ops_per_graph": GRAPH_OPS, "eager_per_op_us": None, "graph_per_op_us": None,
                 "graph_device_per_op_us": None, "speedup": None,
                 "reason": f"CUDA graph capture failed: {type(exc).__name__}: {str(exc)[:200]}"}

    data = {
        "device": device_info(torch),
        "cuda_launch_blocking": os.environ.get("CUDA_LAUNCH_BLOCKING", "").strip() not in ("", "0"),
        "plan": dict(plan, graph_ops=GRAPH_OPS),
        "launch_overhead_us": _round_stats(launch_us),
        "kernel_latency_us": _round_stats(latency_us),
        "kernel_device_us": _round_stats(device_us),
        "device_timing": timer.info(),
        "sync_latency_us": _round_stats(sync_us),
        "graph": graph,
    }
    return ProbeOutput(data, cuda_analysis.launch_findings(data))


PROBE = Probe(
    name="launch",
    title="Kernel launch and CUDA graph overhead",
    summary="Per-kernel launch overhead, tiny-kernel and synchronize latency, CUDA graph speedup",
    run=run,
    needs=("cuda",),
    isolate=True,
    timeout_s=60.0,
    full_timeout_s=120.0,
)
