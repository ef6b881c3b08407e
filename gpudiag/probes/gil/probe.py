"""Probe `gil`: threads vs processes on the same work, and what each process worker costs in memory.

Runs in its own spawned child (the runner's isolation). Inside it:
1. Python build facts (free-threaded build, GIL enabled after importing torch, switch interval).
2. Spawned measurement workers start while this process imports torch, as a user's main process
   would (all of them at once when even 2 GiB each would fit and no CUDA context is made, else one
   first): worker 0 records its start-up time and its memory before/after `import torch` (and
   after CUDA init + a first op when CUDA is available). From that and the memory budget the probe
   computes how many process workers fit, and never spawns more than that.
3. Per workload, a per-task size is calibrated once so that one task takes `task_s`; then the same
   total work (top-N tasks) is split over N threads and over N processes of one long-lived pool
   (gpudiag.measure.workers), warm-up first, then interleaved rounds over every (mode, N) until the
   speedups' intervals are settled or the budget is spent (gpudiag.measure.rounds); median, spread,
   a 95 % interval per speedup, and the CPU other programs used meanwhile.
4. gpudiag.probes.gil.analysis turns the rows into a verdict and findings (pure, tested on recordings).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import sysconfig
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from gpudiag import platform
from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.thresholds import GIL_FLAT_MIN_TOLERANCE, GIL_SCALE_FRACTION
from gpudiag.probes.gil import analysis
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput
from gpudiag.measure import stats
from gpudiag.measure import torch_import
from gpudiag.measure.load import CpuMeter
from gpudiag.measure.rounds import RoundsPlan, run_rounds
from gpudiag.measure.workers import run_threads
from gpudiag.units import fmt_bytes

# task_s: one worker's share of one task; rounds: interleaved rounds per workload (at least, at
# most, seconds of budget; gpudiag.measure.rounds); cap: most workers measured.
SIZES = {
    "tiny": {"task_s": 0.004, "rounds": RoundsPlan(2, 2, 1.0), "cap": 2, "matmul": 64},  # tests only
    "quick": {"task_s": 0.02, "rounds": RoundsPlan(3, 8, 0.6), "cap": 4, "matmul": 256},
    "full": {"task_s": 0.1, "rounds": RoundsPlan(7, 20, 8.0), "cap": 8, "matmul": 256},
}
# Rounds stop early once every speedup's 95 % interval is this narrow (hi/lo; 1.15 = about +-7 %)
# or lies inside one of the classification bands (flat / scales), where more rounds change nothing.
SETTLED_WIDTH_RATIO = 1.15
MIN_HOST_BUDGET_BYTES = 512 * 1024 * 1024  # below this the probe does not spawn even one worker
CONSERVATIVE_HOST_BYTES_PER_WORKER = 2 * 2**30  # before one worker is measured: torch + CUDA, generously
_SPEND_FRACTION = 0.7  # of the probe timeout: past it, remaining workloads are skipped, not killed

WORKLOAD_INFO = {
    "python": {"description": "pure-Python integer loop; holds the GIL", "unit": "loop iterations"},
    "torch_op": {"description": "CPU matmul, one intra-op thread per worker; releases the GIL inside the op",
                 "unit": "matmuls"},
    "torch_dispatch": {"description": "in-place add on a 1-element CPU tensor; dispatch overhead dominates",
                       "unit": "ops"},
    "cuda_launch": {"description": "in-place add on a 1-element CUDA tensor, synchronised at the end of a task; "
                                   "kernel-launch overhead dominates", "unit": "kernel launches"},
}


# ---------------------------------------------------------------------------------- workloads
# Module-level so spawned workers can import them; each returns something so the work is not elided.
def work_python(n: int) -> int:
    """Pure-Python loop of n iterations (its checksum, so it is not optimised away): work that holds the GIL,
    the case where threads cannot scale and processes can."""
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def work_torch_op(n: int, size: int) -> float:
    """n CPU matmuls of size x size (one element of the result): a torch op long enough that it releases the
    GIL, the case where threads scale like processes."""
    import torch

    a = torch.full((size, size), 0.5)
    b = torch.full((size, size), 0.25)
    c = a
    for _ in range(n):
        c = torch.mm(a, b)
    return float(c[0, 0])


def work_torch_dispatch(n: int) -> float:
    """n in-place adds on a 1-element CPU tensor (its value): tiny ops where torch's Python dispatch, which holds
    the GIL, dominates the arithmetic."""
    import torch

    x = torch.zeros(1)
    for _ in range(n):
        x.add_(1)
    return float(x)


def work_cuda_launch(n: int) -> float:
    """n 1-element CUDA adds, synchronised once at the end (the value): kernel-launch overhead, the per-cycle cost
    CUDA graphs and batching remove."""
    import torch

    x = torch.zeros(1, device="cuda")
    for _ in range(n):
        x.add_(1)
    torch.cuda.synchronize()
    return float(x.item())


def _work_args(workload: str, n: int, size: int) -> tuple:
    """The positional arguments of one task of `workload`: (n, size) for the matmul workload, (n,) for the rest."""
    return (n, size) if workload == "torch_op" else (n,)


_WORK: Dict[str, Callable[..., Any]] = {"python": work_python, "torch_op": work_torch_op,
                                        "torch_dispatch": work_torch_dispatch, "cuda_launch": work_cuda_launch}


# ---------------------------------------------------------------------------------- memory
def _memory_now() -> Dict[str, Optional[int]]:
    """{"rss", "uss"} of this process in bytes (uss None where psutil cannot read it): what one worker costs,
    USS counting only the pages it alone holds."""
    import psutil

    proc = psutil.Process()
    rss = proc.memory_info().rss
    try:
        uss: Optional[int] = proc.memory_full_info().uss  # Linux/macOS/Windows; slower, so only here
    except (psutil.Error, AttributeError, OSError):
        uss = None
    return {"rss": int(rss), "uss": int(uss) if uss is not None else None}


def _nvml_free_by_uuid() -> Dict[str, Any]:
    """{uuid: free_bytes} for every GPU NVML sees, read without creating a CUDA context."""
    from gpudiag.backends import nvml

    out: Dict[str, Any] = {}
    try:
        with nvml.session() as n:
            for i in range(n.device_count()):
                h = n.handle(i)
                uuid, info = n.call("nvmlDeviceGetUUID", h), n.call("nvmlDeviceGetMemoryInfo", h)
                if isinstance(uuid, str) and info is not nvml.NA:
                    out[uuid] = int(info.free)
    except (nvml.NvmlUnavailable, nvml.NvmlError):  # NVML absent or broken: the other measurements still stand
        return {}
    return out


def _nvml_own_usage(uuid: str) -> Optional[int]:
    """This process's used GPU memory per NVML (None under WDDM, in containers with other PID namespaces...)."""
    from gpudiag.backends import nvml

    try:
        with nvml.session() as n:
            for i in range(n.device_count()):
                h = n.handle(i)
                if n.call("nvmlDeviceGetUUID", h) != uuid:
                    continue
                procs = n.first(["nvmlDeviceGetComputeRunningProcesses",
                                 "nvmlDeviceGetComputeRunningProcesses_v2"], h, default=[])
                for p in procs if isinstance(procs, list) else []:
                    if getattr(p, "pid", None) == os.getpid():
                        used = getattr(p, "usedGpuMemory", None)
                        return int(used) if isinstance(used, int) else None
    except (nvml.NvmlUnavailable, nvml.NvmlError):  # no NVML, or no handle for a GPU: no per-process figure
        return None
    return None


def worker_init(use_torch: bool, use_cuda: bool) -> Dict[str, Any]:
    """Initializer of every process worker: import torch (and init CUDA) once; report what it cost.

    A worker forked from a probe process that came from the start server (gpudiag.startserver) has torch
    already and shares the server's pages until it writes them: what a spawned worker pays to import torch,
    and the memory it then holds, are the server's own figures (gpudiag.measure.torch_import), measured in
    its fresh interpreter; CUDA's cost is measured here and added to them.
    """
    out: Dict[str, Any] = {"pid": os.getpid()}
    rec = torch_import.record() if use_torch else None
    before = _memory_now()
    if rec is not None:
        out.update({k: rec[k] for k in ("rss_before_torch_bytes", "uss_before_torch_bytes", "rss_after_torch_bytes",
                                        "uss_after_torch_bytes", "import_torch_s")})
        out["figures_from"] = "start server"
    else:
        out["rss_before_torch_bytes"], out["uss_before_torch_bytes"] = before["rss"], before["uss"]
    if not use_torch:
        return out
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)  # one intra-op thread per worker: N workers use N cores, not N x cores
    if rec is None:
        out["import_torch_s"] = time.perf_counter() - t0
        after = _memory_now()
        out["rss_after_torch_bytes"], out["uss_after_torch_bytes"] = after["rss"], after["uss"]
    if use_cuda:
        try:
            out.update(_cuda_init_cost(torch))
        except Exception as exc:  # no usable device after all: the CPU figures still stand
            out["cuda_error"] = f"{type(exc).__name__}: {exc}"
        else:
            if rec is not None:  # what CUDA added here, on top of the server's fresh-interpreter figures
                for kind in ("rss", "uss"):
                    here, base = out.get(f"{kind}_after_cuda_bytes"), out.get(f"{kind}_after_torch_bytes")
                    if here is not None and base is not None and before[kind] is not None:
                        out[f"{kind}_after_cuda_bytes"] = base + max(0, here - before[kind])
    return out


def _cuda_init_cost(torch) -> Dict[str, Any]:
    """Host and device memory of this process's CUDA context plus a first op."""
    out: Dict[str, Any] = {}
    free_before = _nvml_free_by_uuid()
    t0 = time.perf_counter()
    torch.cuda.init()
    x = torch.ones(1, device="cuda")
    float((x + 1).sum().item())
    torch.cuda.synchronize()
    out["cuda_init_s"] = time.perf_counter() - t0
    free_torch, total = torch.cuda.mem_get_info()
    mem = _memory_now()
    out["rss_after_cuda_bytes"], out["uss_after_cuda_bytes"] = mem["rss"], mem["uss"]
    uuid = None
    try:
        raw = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        uuid = raw if raw.startswith(("GPU-", "MIG-")) else f"GPU-{raw}"
    except (AttributeError, RuntimeError):  # a torch without .uuid, or the device query failing: NVML figures skipped
        pass
    free_after = _nvml_free_by_uuid()
    per_proc = _nvml_own_usage(uuid) if uuid else None
    if per_proc:
        out["device_bytes_per_context"], out["device_bytes_source"] = per_proc, "NVML per-process used memory"
    elif uuid in free_before and uuid in free_after and free_before[uuid] > free_after[uuid]:
        out["device_bytes_per_context"] = free_before[uuid] - free_after[uuid]
        out["device_bytes_source"] = "NVML free-memory delta across CUDA init"
    else:
        out["device_bytes_per_context"] = None
        out["device_bytes_source"] = None
        out["reason_device"] = "NVML gave neither a per-process value nor a free-memory delta for this GPU"
    # Room for more contexts: free memory before this one was created (NVML), else torch's free + ours.
    if uuid in free_before:
        out["device_budget_bytes"] = free_before[uuid]
    elif out["device_bytes_per_context"]:
        out["device_budget_bytes"] = int(free_torch) + out["device_bytes_per_context"]
    else:
        out["device_budget_bytes"] = int(free_torch)
    out["device_total_bytes"] = int(total)
    return out


def memory_snapshot() -> Dict[str, Optional[int]]:
    """Run in each worker after the measurements: what a worker holds once it has done real work."""
    return _memory_now()


def _available_now() -> Optional[int]:
    """Host bytes new workers may take now: psutil's available memory, capped by the cgroup memory limit minus
    usage where one applies (a container's limit is hit long before the machine's)."""
    import psutil

    cg = platform.cgroup_memory()
    avail = int(psutil.virtual_memory().available)
    if cg["limit_bytes"] is not None and cg["usage_bytes"] is not None:
        avail = min(avail, max(0, cg["limit_bytes"] - cg["usage_bytes"]))
    return avail


# ---------------------------------------------------------------------------------- timing
def calibrate(fn: Callable[..., Any], make_args: Callable[[int], tuple], target_s: float, start: int = 64) -> int:
    """Units of work that take about target_s in one thread here (grow until measurable, then scale)."""
    n = start
    for _ in range(40):
        t0 = time.perf_counter()
        fn(*make_args(n))
        dt = time.perf_counter() - t0
        if dt >= max(target_s / 4, 0.002):
            n = max(1, int(n * target_s / dt))
            t0 = time.perf_counter()  # one refinement at the estimated size
            fn(*make_args(n))
            dt = time.perf_counter() - t0
            return max(1, int(n * target_s / dt)) if dt > 0 else n
        n *= 4
    return n


def measure_thread_cost(n: int, fn: Callable[..., Any], args: tuple) -> Optional[int]:
    """Host memory one more thread adds (stack, allocator arena, torch thread state), RSS delta / n."""
    import psutil

    if n < 1:
        return None
    # No collection between the two readings (one freeing memory there would shrink the delta); the young
    # garbage is collected first. A full collection instead took 0.1-0.2 s with torch's objects in the heap.
    gc.collect(1)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        ready, hold = threading.Barrier(n + 1), threading.Event()

        def target():
            """Thread body: do the work once, then hold at the barrier so every thread is alive when RSS is read."""
            fn(*args)
            ready.wait()
            hold.wait()

        threads = [threading.Thread(target=target, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        ready.wait()
        rss1 = proc.memory_info().rss
        hold.set()
        for t in threads:
            t.join()
    finally:
        if was_enabled:
            gc.enable()
    return max(0, rss1 - rss0) // n


# ---------------------------------------------------------------------------------- probe
def python_facts() -> Dict[str, Any]:
    """Python version, implementation, free-threaded build, GIL state and switch interval: whether threads can
    scale at all depends on them, so they are reported with the measurements."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return {
        "version": sys.version.split()[0],
        "implementation": sys.implementation.name,
        # Truthiness, not `is not None`: regular Windows builds report 0 (cpython#143423).
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": bool(is_enabled()) if is_enabled else True,
        "gil_checked_after_torch": False,
        "switch_interval_s": sys.getswitchinterval(),
    }


def run(ctx: ProbeContext) -> ProbeOutput:
    """The gil probe's data (per workload and worker count: threads and processes rates, speedups with intervals,
    per-worker memory) and the verdict and findings gpudiag.probes.gil.analysis draws from it."""
    from gpudiag import capabilities
    from gpudiag.measure.workers import WorkerError

    started = time.monotonic()
    size = SIZES[ctx.options.get("gil_sizes") or ("quick" if ctx.quick else "full")]
    spend_by = started + _SPEND_FRACTION * ctx.timeout_s
    # Worker counts from the cores this process can really use (affinity, cpuset and a CPU quota): under
    # a 1-CPU quota only 1 worker is measured, since more can only take turns inside the quota.
    limit = platform.cpu_limit()
    usable = limit["usable_cores"]
    throttle = platform.ThrottleMeter()
    points = analysis.worker_points(usable, quick=ctx.quick, cap=size["cap"], quick_cap=size["cap"])
    top = points[-1]
    py = python_facts()
    absent: Dict[str, str] = {}
    skipped_points: List[Dict[str, Any]] = []

    budget = _host_budget(ctx)  # taken before this probe spawns anything

    torch_ok = importlib.util.find_spec("torch") is not None and not ctx.options.get("gil_without_torch")
    if not torch_ok:
        why = capabilities.detect()["torch"].reason or "torch is not installed"
        for w in ("torch_op", "torch_dispatch", "cuda_launch"):
            absent[w] = why

    pool = None
    mem: Dict[str, Any] = {"budget_host_bytes": budget["bytes"], "budget_host_source": budget["source"]}
    startup: Dict[str, Any] = {"spawn_s": None, "import_torch_s": None, "total_s": None}
    try:
        # Start the measurement workers first so they overlap this process's own torch import.
        pool, use_cuda, together = _start_workers(budget["bytes"], torch_ok, top, skipped_points)
        if torch_ok:
            _import_torch_here(py, absent)
        if pool is not None:
            pool.wait_ready(timeout_s=max(5.0, spend_by - time.monotonic()))
            w0 = pool.init_results[0]
            startup = _startup_figures(pool)
            if w0.get("cuda_error"):
                use_cuda = False
                absent.setdefault("cuda_launch", f"CUDA initialisation failed in a worker: {w0['cuda_error']}")
            mem.update(_memory_figures(w0, torch_ok, use_cuda, absent))
        fit_host = analysis.fits(mem.get("per_worker_host_bytes"), budget["bytes"])
        fit_dev = analysis.fits(mem.get("per_worker_device_bytes"), mem.get("budget_device_bytes"))
        known = [x for x in (fit_host, fit_dev) if x is not None]

        workloads = [w for w in analysis.WORKLOADS if w not in absent]
        per_task = _calibrate_all(workloads, size)
        cost_fn, cost_args = ((work_torch_op, (1, size["matmul"])) if torch_ok else (work_python, (1000,)))
        per_thread = measure_thread_cost(top, cost_fn, cost_args)
        mem["per_thread_host_bytes"] = per_thread
        mem["fits"] = {"threads": analysis.fits(per_thread, budget["bytes"]), "processes": min(known) if known else None}

        proc_points: List[int] = []
        if pool is not None:
            proc_points = _process_points(pool, points, mem, budget["bytes"], fit_host, fit_dev, skipped_points)
            if proc_points:  # grow the pool to the largest count that fits
                pool.grow(proc_points[-1], timeout_s=max(5.0, spend_by - time.monotonic()))
                if proc_points[-1] > max(together, 1):
                    startup["parallel_start"] = {"workers": proc_points[-1] - together,
                                                 "total_s": round(max(s["ready_s"] for s in pool.startup[together:]), 3)}
        timed = _measure_workloads(ctx, pool, size, workloads, per_task, points, proc_points, absent, throttle,
                                   spend_by)
        if pool is not None and proc_points:
            mem.update(_memory_after_work(pool))
    except WorkerError as exc:
        raise RuntimeError(f"process workers failed: {exc}") from exc
    finally:
        if pool is not None:
            pool.close()

    workload_meta = {w: dict(WORKLOAD_INFO[w], items_per_task=per_task[w], task_s_target=size["task_s"],
                             **({"matrix_size": size["matmul"]} if w == "torch_op" else {}))
                     for w in per_task if w not in absent}
    data: Dict[str, Any] = {
        "python": {k: py[k] for k in ("free_threaded_build", "gil_enabled", "gil_checked_after_torch",
                                      "switch_interval_s", "version", "implementation")},
        "cpu": {"logical_cores": os.cpu_count(), "usable_cores": usable, "worker_points": points,
                "process_points": proc_points, "limit": cpu_limit.recorded(limit),
                # Per workload, over its rounds: CPU-quota throttling (None where no quota applies).
                "throttling": timed["throttling"]},
        "size": ctx.options.get("gil_sizes") or ctx.mode,
        "workloads": workload_meta,
        "scaling": analysis.scaling_rows(timed["measurements"]),
        "absent": absent,
        "skipped_points": skipped_points,
        "startup": startup,
        "memory": mem,
        # Cores' worth of CPU that *other* processes used while each workload was measured.
        "other_busy_cores": timed["other_load"],
        "rounds": timed["rounds"],  # per workload: {rounds, stopped_because, elapsed_s}
        "speedup_baseline": "same workload and mode with 1 worker",
    }
    result = analysis.analyse(data, usable_cores=usable)
    data["verdict"] = result["verdict"]
    return ProbeOutput(data, result["findings"])


def _host_budget(ctx: ProbeContext) -> Dict[str, Any]:
    """{"bytes", "source"}: the host memory the process workers may take (the system probe's budget where it ran,
    else available memory, capped by the cgroup's limit; gpudiag.probes.gil.analysis.host_budget)."""
    import psutil

    sys_mem = (ctx.results.get("system") or {}).get("memory") or {}
    cg = platform.cgroup_memory()
    return analysis.host_budget(sys_mem.get("budget_bytes"), psutil.virtual_memory().available,
                                cg["limit_bytes"], cg["usage_bytes"])


def _calibrate_all(workloads: List[str], size: Dict[str, Any]) -> Dict[str, int]:
    """Per workload, the units of work one task holds (size["task_s"] in one thread), calibrated once in this
    process: the same interpreter speed as the workers'."""
    return {w: calibrate(_WORK[w], lambda n, w=w: _work_args(w, n, size["matmul"]), size["task_s"],
                         start=4 if w == "torch_op" else 256)
            for w in workloads}


def _memory_after_work(pool) -> Dict[str, Optional[int]]:
    """The median worker's RSS and USS once the measurements are done (USS None where the OS gives none)."""
    after = pool.run_all(memory_snapshot, [()] * pool.size, timeout_s=30)
    usses = sorted(a["uss"] for a in after if a["uss"] is not None)
    return {"rss_after_work_bytes": int(sorted(a["rss"] for a in after)[len(after) // 2]),
            "uss_after_work_bytes": int(usses[len(usses) // 2]) if usses else None}


def _start_workers(budget_bytes: Optional[int], torch_ok: bool, top: int,
                   skipped_points: List[Dict[str, Any]]) -> Tuple[Any, bool, int]:
    """(the measurement workers' pool or None, whether they make a CUDA context, how many started together).

    None, with a skipped point saying why, when the host budget is below MIN_HOST_BUDGET_BYTES."""
    from gpudiag import capabilities
    from gpudiag.measure.workers import WorkerPool

    if budget_bytes is not None and budget_bytes < MIN_HOST_BUDGET_BYTES:
        skipped_points.append({"mode": "processes", "workers": 1,
                               "reason": f"only {fmt_bytes(budget_bytes)} of memory available: "
                                         "not spawning process workers"})
        return None, False, 0
    # Decided without importing torch here; confirmed once torch is imported.
    use_cuda = torch_ok and capabilities.detect()["cuda"].available
    # Forked while that is safe when this process came from the start server with torch imported (then
    # the start-up and memory figures are the server's, see worker_init); spawned otherwise.
    forked = torch_ok and torch_import.record() is not None
    pool = WorkerPool(0, initializer=worker_init, initargs=(torch_ok, use_cuda), name="gpudiag-gil",
                      fork_when=platform.fork_is_safe if forked else None)
    # All workers at once when even a conservative per-worker cost fits (and no CUDA context
    # is created: its device memory is only known once one worker has made one); else one
    # first, measured, and the rest only as far as they fit.
    together = top if (not use_cuda and budget_bytes is not None
                       and budget_bytes >= top * CONSERVATIVE_HOST_BYTES_PER_WORKER) else 1
    pool.start(together)
    return pool, use_cuda, together


def _import_torch_here(py: Dict[str, Any], absent: Dict[str, str]) -> None:
    """Import torch in the probe process (the threads mode's), recording the GIL state after it and, without a
    usable CUDA device, why the cuda_launch workload is absent."""
    import torch

    from gpudiag import capabilities

    torch.set_num_threads(1)  # threads mode: one intra-op thread per Python thread
    py["gil_enabled"] = bool(sys._is_gil_enabled()) if hasattr(sys, "_is_gil_enabled") else True
    py["gil_checked_after_torch"] = True
    if not torch.cuda.is_available():
        absent["cuda_launch"] = (capabilities.detect()["cuda"].reason
                                 or "torch.cuda.is_available() is False: no usable CUDA device")


def _startup_figures(pool) -> Dict[str, Any]:
    """The contract's startup block from worker 0 of a ready pool: a spawned worker's start-up, or, when the
    workers were forked from a start-server child, the start server's fresh-interpreter figures."""
    w0, s0 = pool.init_results[0], pool.startup[0]
    startup = {"spawn_s": round(s0["spawn_s"], 3),
               "import_torch_s": round(w0["import_torch_s"], 3) if "import_torch_s" in w0 else None,
               "cuda_init_s": round(w0["cuda_init_s"], 3) if "cuda_init_s" in w0 else None,
               "total_s": round(s0["ready_s"], 3),
               "workers_started_together": pool.size,
               "method": s0.get("method", "spawn"),
               "note": (f"worker 0 of {pool.size} started together" if pool.size > 1 else "one worker")
                       + ", while the probe process imported torch"}
    rec = torch_import.record()
    if w0.get("figures_from") == "start server" and rec is not None:
        # The workers were forked: a spawned worker's start-up is the start server's fresh interpreter.
        total = (rec["spawn_s"] or 0.0) + rec["import_torch_s"] + (w0.get("cuda_init_s") or 0.0)
        startup.update({"spawn_s": round(rec["spawn_s"], 3) if rec["spawn_s"] is not None else None,
                        "import_torch_s": round(rec["import_torch_s"], 3), "total_s": round(total, 3),
                        "forked_ready_s": round(s0["ready_s"], 3),
                        "note": "measured in a fresh interpreter (the start server this probe's process was "
                                "forked from); the measurement workers were forked from this process"
                                + (", and worker 0 initialised CUDA" if w0.get("cuda_init_s") else "")})
    return startup


def _process_points(pool, points: List[int], mem: Dict[str, Any], budget_bytes: Optional[int],
                    fit_host: Optional[int], fit_dev: Optional[int],
                    skipped_points: List[Dict[str, Any]]) -> List[int]:
    """The worker counts the processes mode measures: each of `points` up to the first that does not fit the
    budget, the GPU or the memory available right now (that one recorded in skipped_points, with why)."""
    out: List[int] = []
    for n in points:
        why = None
        if fit_host is not None and n > fit_host:
            why = (f"{n} processes x {fmt_bytes(mem['per_worker_host_bytes'])} do not fit in the "
                   f"{fmt_bytes(budget_bytes)} host memory budget (fits {fit_host})")
        elif fit_dev is not None and n > fit_dev:
            why = (f"{n} processes x {fmt_bytes(mem['per_worker_device_bytes'])} of GPU memory per CUDA context "
                   f"do not fit in {fmt_bytes(mem['budget_device_bytes'])} free (fits {fit_dev})")
        if why is None:
            why = analysis.process_fit_check(n, mem.get("per_worker_host_bytes"), _available_now(),
                                             already_running=pool.size)
        if why:
            skipped_points.append({"mode": "processes", "workers": n, "reason": why})
            break
        out.append(n)
    return out


def _measure_workloads(ctx: ProbeContext, pool, size: Dict[str, Any], workloads: List[str],
                       per_task: Dict[str, int], points: List[int], proc_points: List[int],
                       absent: Dict[str, str], throttle: "platform.ThrottleMeter", spend_by: float) -> Dict[str, Any]:
    """Per workload, a warm-up, then interleaved rounds over every (mode, N) until settled or out of budget:
    {"measurements": rows for scaling_rows, "other_load", "throttling", "rounds"} (the last three per workload).
    A workload reached after the probe's spending deadline is recorded in `absent` instead."""
    top = points[-1]
    measurements: List[Dict[str, Any]] = []
    other_load: Dict[str, Optional[float]] = {}
    throttling: Dict[str, Optional[dict]] = {}
    rounds_info: Dict[str, Any] = {}
    meter = CpuMeter(lambda: pool.pids if pool is not None else (), family=True,
                     descendants=platform.descendant_pids)
    for w in workloads:
        if time.monotonic() > spend_by:
            absent[w] = f"probe time budget ({ctx.timeout_s:g} s) used up before this workload"
            continue
        fn, total = _WORK[w], per_task[w] * top
        plan = [("threads", n) for n in points] + [("processes", n) for n in proc_points]
        walls: Dict[tuple, List[float]] = {p: [] for p in plan}
        # Warm-up at the largest count in each mode (first calls, allocator, caches).
        _measure_once(pool, fn, w, "threads", top, total, size["matmul"])
        if proc_points:
            _measure_once(pool, fn, w, "processes", proc_points[-1], total, size["matmul"])
        load0, thr0 = meter.read(), throttle.read()
        rounds_info[w] = run_rounds(
            plan, lambda key, walls=walls, fn=fn, w=w, total=total: walls[key].append(
                _measure_once(pool, fn, w, key[0], key[1], total, size["matmul"])),
            size["rounds"], settled=lambda walls=walls: _settled(walls), deadline=spend_by)
        other_load[w] = _round2(meter.other_cores(load0, meter.read()))
        throttling[w] = platform.ThrottleMeter.delta(thr0, throttle.read())
        for (mode, n), ws in walls.items():
            measurements.append({"workload": w, "mode": mode, "workers": n, "items": total, "wall_s": ws})
    return {"measurements": measurements, "other_load": other_load, "throttling": throttling,
            "rounds": rounds_info}


def _round2(x: Optional[float]) -> Optional[float]:
    """x rounded to 2 decimals, None kept: for reported ratios."""
    return None if x is None else round(x, 2)


def _settled(walls: Dict[tuple, List[float]]) -> bool:
    """True when every N-worker speedup's interval is narrow or inside one classification band."""
    for (mode, n), ws in walls.items():
        base = walls.get((mode, 1))
        if n == 1 or not base:
            continue
        ci = stats.bootstrap_ratio_ci([1.0 / x for x in ws if x > 0], [1.0 / x for x in base if x > 0],
                                      resamples=400)
        if ci is None:
            return False
        need = 1 + GIL_SCALE_FRACTION * (n - 1)
        narrow = ci[1] / ci[0] <= SETTLED_WIDTH_RATIO
        if not (narrow or ci[1] < 1 + GIL_FLAT_MIN_TOLERANCE or ci[0] >= need):
            return False
    return True


def _measure_once(pool, fn, workload: str, mode: str, n: int, total: int, matmul: int) -> float:
    """Wall seconds of one timed run: `total` units of work split over n threads (run_threads) or n of the pool's
    processes (120 s deadline), the same work for every worker count so rates compare."""
    args = [_work_args(workload, share, matmul) for share in analysis.split_work(total, n)]
    if mode == "threads":
        return run_threads(fn, args)
    return pool.run_timed(fn, args, timeout_s=120).wall_s


def _memory_figures(w0: Dict[str, Any], torch_ok: bool, use_cuda: bool, absent: Dict[str, str]) -> Dict[str, Any]:
    """The contract's memory block from the measurement worker's own report."""
    m: Dict[str, Any] = {k: w0.get(k) for k in ("rss_before_torch_bytes", "uss_before_torch_bytes",
                                                   "rss_after_torch_bytes", "uss_after_torch_bytes",
                                                   "rss_after_cuda_bytes", "uss_after_cuda_bytes")}
    m["device_bytes_per_context"] = w0.get("device_bytes_per_context")
    m["device_bytes_source"] = w0.get("device_bytes_source")
    m["reason_cuda"] = None if use_cuda else absent.get("cuda_launch", "CUDA not available")
    if use_cuda and w0.get("reason_device"):
        m["reason_cuda"] = w0["reason_device"]
    # What one more worker costs: USS (pages only it holds) where the OS gives it, else RSS (which also
    # counts shared library pages, so it overstates the cost of each additional worker).
    last = "cuda" if use_cuda else ("torch" if torch_ok else None)
    if last:
        uss, rss = w0.get(f"uss_after_{last}_bytes"), w0.get(f"rss_after_{last}_bytes")
    else:
        uss, rss = w0.get("uss_before_torch_bytes"), w0.get("rss_before_torch_bytes")
    m["per_worker_host_bytes"] = uss if uss else rss
    m["per_worker_host_source"] = ("USS" if uss else "RSS") + (f" after {'CUDA init' if last == 'cuda' else 'import torch'}"
                                                             if last else " of a plain Python worker")
    m["per_worker_device_bytes"] = w0.get("device_bytes_per_context") if use_cuda else None
    m["budget_device_bytes"] = w0.get("device_budget_bytes") if use_cuda else None
    return m


PROBE = Probe(
    name="gil",
    title="GIL: threads vs processes",
    summary="Same work as N threads and N processes (Python, torch ops, tiny ops); per-worker memory",
    run=run,
    needs=(),  # the pure-Python workload runs without torch; torch workloads say why they are absent
    isolate=True,
    preload=True,
    timeout_s=30,
    full_timeout_s=180,
)
