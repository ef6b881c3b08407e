"""Probe `contention`: what sharing one GPU costs, between threads and between processes.

On device 0, with kernels of known duration calibrated with CUDA events:
- threads: one process, N threads each launching the same spin kernels (torch.cuda._sleep, one SM each) on
  its own stream, vs one thread;
- processes: N spawned processes, each with its own CUDA context, released together, each running
  matmuls of fixed work (a switched-out matmul resumes its work; a spin kernel would not): how much
  longer than ideal time-sharing, and from the per-kernel event times an estimate of the cost of
  one context switch and of the time slice (methods.md 4.3; gpudiag.probes.cuda.analysis);
- what a context costs: creation time and device memory; whether an MPS daemon runs.
Host RAM and free GPU memory are checked before spawning; workers are always terminated.
"""

from __future__ import annotations

import queue
import time
from typing import Any, Dict, List, Optional

from gpudiag.probes.cuda import analysis as cuda_analysis
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput
from gpudiag.measure.stats import median, summarize
from gpudiag.units import fmt_bytes

KERNEL_MS = 0.5  # shorter than a 1 ms Linux time slice, so a kernel is switched out at most once
_CONTEXT_GUESS_BYTES = 512 * 2 ** 20  # per context before one was measured (300-500 MiB typical)
_MAX_DEVICE_SHARE = 0.5  # contexts of all workers together may take this share of free GPU memory
_MAX_HOST_SHARE = 0.6


def _plan(quick: bool) -> dict:
    """Kernels per run and worker counts to try, for threads and processes (quick: fewer kernels, 2 workers)."""
    if quick:
        return {"thread_kernels": 400, "thread_workers": [2], "proc_kernels": 800, "proc_workers": [2]}
    return {"thread_kernels": 1000, "thread_workers": [2, 4], "proc_kernels": 2000, "proc_workers": [2, 4]}


def _stats(values, nd: int = 4) -> dict:
    """summarize(values) with floats rounded to `nd` digits, so the report does not carry float noise."""
    return {k: (round(v, nd) if isinstance(v, float) else v) for k, v in summarize(values).items()}


def _threads_wall(torch, cycles: int, kernels: int, workers: int) -> float:
    """Wall seconds for `workers` threads, each on its own stream, to run `kernels` spin kernels."""
    from gpudiag.measure.workers import run_threads

    streams = [torch.cuda.Stream() for _ in range(workers)]  # created before the clock starts

    def body(stream) -> None:
        """One thread's work: `kernels` spin kernels on its own stream, then wait for that stream."""
        with torch.cuda.stream(stream):
            for _ in range(kernels):
                torch.cuda._sleep(cycles)
        stream.synchronize()

    return run_threads(body, [(s,) for s in streams])


def _matmul_size(torch, timer) -> int:
    """The n whose float32 n x n matmul takes about KERNEL_MS on this GPU: from 1024, rescaled up to 4 times."""
    from gpudiag.probes.cuda.device import matmul_buffers

    n = 1024
    for _ in range(4):
        a, b, out = matmul_buffers(torch, n)
        took = timer.samples(lambda: torch.mm(a, b, out=out), 3)  # noqa: B023 - used before the loop moves on
        if not took:
            return n
        sized = cuda_analysis.matmul_n_for(KERNEL_MS, n, median(took))
        if sized == n:
            return n
        n = sized
    return n


def _stop(procs) -> None:
    """Terminate, then kill, every worker still alive, and reap them."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(3)
        if p.is_alive():
            p.kill()
            p.join(3)


def _run_processes(torch, matrix_n: int, kernels: int, workers: int, deadline: float) -> Dict[str, Any]:
    """Spawn `workers` CUDA processes, release them together, return their timings and context costs (the drop in
    free GPU memory per worker, less its matrices)."""
    import multiprocessing

    from gpudiag.probes.cuda.device import contention_worker

    mp = multiprocessing.get_context("spawn")  # CUDA does not survive fork
    ready_q, result_q, start_evt = mp.Queue(), mp.Queue(), mp.Event()
    free_before = torch.cuda.mem_get_info(0)[0]
    procs = [mp.Process(target=contention_worker, name=f"gpudiag-contention-{i}", daemon=True,
                        args=(i, matrix_n, kernels, ready_q, start_evt, result_q, max(5.0, deadline - time.monotonic())))
             for i in range(workers)]
    try:
        for p in procs:
            p.start()
        ready: Dict[int, dict] = {}
        done: Dict[int, dict] = {}

        def take(q, want: str, into: Dict[int, dict]) -> None:
            """Fill `into` with every worker's `want` message; raises RuntimeError on a worker's error or death and
            TimeoutError past the deadline, so a stuck worker never hangs the probe."""
            while len(into) < workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{workers} worker processes did not finish ({want}) in time")
                for src in (q, result_q) if q is not result_q else (result_q,):
                    try:
                        kind, idx, payload = src.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if kind == "error":
                        raise RuntimeError(f"worker {idx} failed: {payload}")
                    if kind == want:
                        into[idx] = payload
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"worker {dead[0].name} exited with code {dead[0].exitcode}")

        take(ready_q, "ready", ready)
        torch.cuda.synchronize()
        free_after = torch.cuda.mem_get_info(0)[0]
        start_evt.set()
        take(result_q, "done", done)
    finally:
        start_evt.set()
        _stop(procs)
        for q in (ready_q, result_q):
            q.close()
            q.cancel_join_thread()
    per_ctx = (free_before - free_after) / workers - 3 * matrix_n * matrix_n * 4
    return {
        "wall_s": max(d["t_end"] for d in done.values()) - min(d["t_start"] for d in done.values()),
        "elapsed_ms": [ms for d in done.values() for ms in d["elapsed_ms"]],
        "create_s": [r["create_s"] for r in ready.values()],
        "device_bytes": int(per_ctx) if per_ctx > 0 else None,
    }


def run(ctx: ProbeContext) -> ProbeOutput:
    """The `contention` data and findings: calibrated kernel, threads vs one thread, processes vs ideal
    time-sharing (each N skipped with a reason where memory or time does not allow), context costs."""
    from gpudiag.probes.cuda.device import out_of_memory_as_skip, require_cuda

    torch = require_cuda(min_free_bytes=2 * _CONTEXT_GUESS_BYTES)
    with out_of_memory_as_skip(torch):
        return _run(ctx, torch)


def _run(ctx: ProbeContext, torch) -> ProbeOutput:
    """run()'s measurements, on the torch require_cuda gave (out of memory becomes a skip there)."""
    import psutil

    from gpudiag.probes.cuda.device import (DeviceTimer, device_info, matmul_buffers, spin_kernels, timed_sleep_ms,
                                            work_kernels)
    from gpudiag.platform.nvidia import mps_daemon_running

    started = time.monotonic()
    budget_end = started + ctx.timeout_s * 0.85  # leave time to report before the runner's timeout
    plan = _plan(ctx.quick)

    # Calibrate the spin kernel once clocks are up (a spin kernel counts SM clock cycles).
    probe_cycles = 1_000_000
    for _ in range(50):
        torch.cuda._sleep(probe_cycles)
    torch.cuda.synchronize()
    cycles = cuda_analysis.sleep_cycles_for(KERNEL_MS, probe_cycles, median([timed_sleep_ms(torch, probe_cycles)
                                                                   for _ in range(5)]))
    spin_kernels(torch, cycles, 20)  # settle at the new length
    solo = spin_kernels(torch, cycles, 200)
    solo_ms = median(solo)

    # The processes' kernel: a float32 matmul of fixed work, sized to KERNEL_MS (timed behind a lead).
    matrix_n = _matmul_size(torch, DeviceTimer(torch))
    buffers = matmul_buffers(torch, matrix_n)
    work_kernels(torch, buffers, 20)  # settle
    proc_solo = work_kernels(torch, buffers, 200)
    proc_solo_ms = median(proc_solo)
    del buffers
    matrix_bytes = 3 * matrix_n * matrix_n * 4

    one = _threads_wall(torch, cycles, plan["thread_kernels"], 1)
    runs = {n: _threads_wall(torch, cycles, plan["thread_kernels"], n) for n in plan["thread_workers"]}
    threads = cuda_analysis.thread_rows(one, plan["thread_kernels"], solo_ms, runs)

    own_rss = psutil.Process().memory_info().rss  # a worker holds torch + a context, as this process does
    processes: List[dict] = []
    skipped: List[dict] = []
    create_s: List[float] = []
    ctx_bytes: List[int] = []
    for n in plan["proc_workers"]:
        free_dev = torch.cuda.mem_get_info(0)[0]
        per_ctx = (median(ctx_bytes) if ctx_bytes else _CONTEXT_GUESS_BYTES) + matrix_bytes
        avail = psutil.virtual_memory().available
        ideal_s = n * plan["proc_kernels"] * proc_solo_ms / 1e3
        why: Optional[str] = None
        if n * per_ctx > _MAX_DEVICE_SHARE * free_dev:
            why = (f"{n} contexts need ~{fmt_bytes(n * per_ctx)}, more than half of the "
                   f"{fmt_bytes(free_dev)} GPU memory free")
        elif n * own_rss > _MAX_HOST_SHARE * avail:
            why = (f"{n} workers need ~{fmt_bytes(n * own_rss)} of RAM, too much of the "
                   f"{fmt_bytes(avail)} available")
        elif time.monotonic() + 3 * ideal_s + 20 > budget_end:
            why = "not enough time left in this probe's budget"
        if why:
            skipped.append({"workers": n, "reason": why})
            continue
        try:
            res = _run_processes(torch, matrix_n, plan["proc_kernels"], n, budget_end)
        except (RuntimeError, TimeoutError, OSError) as exc:  # one failed N must not hide the others
            skipped.append({"workers": n, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        create_s += res["create_s"]
        if res["device_bytes"]:
            ctx_bytes.append(res["device_bytes"])
        processes.append(cuda_analysis.contention_estimate(n, plan["proc_kernels"], proc_solo_ms, res["wall_s"],
                                                res["elapsed_ms"]))

    data = {
        "device": device_info(torch),
        "kernel": {"kind": "torch.cuda._sleep spin kernel", "cycles": cycles, "target_ms": KERNEL_MS},
        "process_kernel": {"kind": "float32 matmul (torch.mm), fixed work", "matrix_n": matrix_n,
                           "target_ms": KERNEL_MS, "solo_ms": _stats(proc_solo)},
        "kernel_ms": round(solo_ms, 4),
        "solo_ms": _stats(solo),
        "threads": threads,
        "processes": processes,
        "processes_skipped": skipped,
        "context": {
            "create_s": round(median(create_s), 4) if create_s else None,
            "device_bytes": int(median(ctx_bytes)) if ctx_bytes else None,
            "reason": "" if ctx_bytes else "no worker process ran, or free GPU memory did not drop",
        },
        "mps_active": mps_daemon_running(),
    }
    return ProbeOutput(data, cuda_analysis.contention_findings(data))


PROBE = Probe(
    name="contention",
    title="GPU sharing: threads, processes and context switches",
    summary="Throughput of threads vs processes sharing the GPU; context-switch cost and time slice",
    run=run,
    needs=("cuda",),
    isolate=True,
    timeout_s=90.0,
    full_timeout_s=240.0,
)
