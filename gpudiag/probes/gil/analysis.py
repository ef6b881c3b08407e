"""Pure statistics and findings for the `gil` probe: timings in, rows and findings out. No hardware.

Everything here works on plain numbers so it can be tested on recorded timings. Whether threads and
processes scale is a rule, and rules live in diagnose: gpudiag.diagnose.gil_scaling judges the rows (its
docstring states the rule and its thresholds); analyse() turns that judgement into the probe's findings.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose import gil_scaling
from gpudiag.diagnose.gil_scaling import BOTH_SCALE, MODES, NEITHER, ONLY_PROCESSES, ONLY_THREADS, WORKLOADS
from gpudiag.measure import stats
from gpudiag.measure.load import BUSY_MARGIN_CORES
from gpudiag.probes.base import finding
from gpudiag.units import fmt_bytes


# --------------------------------------------------------------------------------------- rows
def scaling_rows(measurements: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Raw repeats -> report rows.

    Each measurement: {workload, mode, workers, items (total work units per repeat), wall_s: [per round]}.
    Row: {workload, mode, workers, throughput_per_s (median over rounds), speedup, speedup_ci95,
    spread_fraction, repeats, samples, wall_s (median)}. `speedup` is against the same workload *and
    mode* with 1 worker, so each mode's own fixed costs (IPC for processes) cancel out; None when that
    baseline is missing. `speedup_ci95` is the paired-bootstrap 95 % interval of that ratio (rounds
    were interleaved, so round i of both rows saw the same moment); None for the 1-worker rows and
    with fewer than 3 rounds.
    """
    rows, rates = [], {}
    for m in measurements:
        walls = [w for w in m["wall_s"] if w and w > 0]
        tputs = [m["items"] / w for w in walls]
        key = (m["workload"], m["mode"], int(m["workers"]))
        rates[key] = tputs
        rows.append({
            "workload": m["workload"], "mode": m["mode"], "workers": int(m["workers"]),
            "throughput_per_s": _round(stats.median(tputs)),
            "speedup": None, "speedup_ci95": None,
            "spread_fraction": _round(stats.relative_spread(tputs), 4),
            "repeats": len(walls), "samples": len(walls),
            "wall_s": _round(stats.median(walls), 6),
        })
    base = {(r["workload"], r["mode"]): r["throughput_per_s"] for r in rows if r["workers"] == 1}
    for r in rows:
        b = base.get((r["workload"], r["mode"]))
        if b and r["throughput_per_s"] is not None:
            r["speedup"] = round(r["throughput_per_s"] / b, 3)
            if r["workers"] > 1:
                r["speedup_ci95"] = stats.rounded_interval(stats.bootstrap_ratio_ci(
                    rates[(r["workload"], r["mode"], r["workers"])], rates[(r["workload"], r["mode"], 1)]))
    rows.sort(key=lambda r: (_order(r["workload"], WORKLOADS), _order(r["mode"], MODES), r["workers"]))
    return rows


def _order(value: str, known: Sequence[str]) -> int:
    """Sort key of `value` in the `known` order (unknown ones last): rows read workload by workload, mode by mode."""
    return known.index(value) if value in known else len(known)


def _round(x: Optional[float], digits: int = 3) -> Optional[float]:
    """x rounded to `digits` decimals (None kept; whole numbers from 1e6 up): report figures without float noise."""
    if x is None:
        return None
    return round(x, digits) if abs(x) < 1e6 else round(x)


def worker_points(usable_cores: int, quick: bool, cap: int = 8, quick_cap: int = 4) -> List[int]:
    """Worker counts to measure: 1, 2, 4, ... up to the usable cores (capped), plus the top itself."""
    top = max(1, min(usable_cores, quick_cap if quick else cap))
    pts = []
    n = 1
    while n <= top:
        pts.append(n)
        n *= 2
    if pts[-1] != top:
        pts.append(top)
    if quick and len(pts) > 3:  # quick: 1, 2 and the top
        pts = [1, 2, top]
    return pts


def split_work(total: int, n: int) -> List[int]:
    """Split `total` units as evenly as possible over n workers (same total work for every n)."""
    q, r = divmod(total, n)
    return [q + (1 if i < r else 0) for i in range(n)]


# --------------------------------------------------------------------------------------- memory
def fits(per_worker_bytes: Optional[float], budget_bytes: Optional[float]) -> Optional[int]:
    """How many workers of a given per-worker cost fit into a budget; None when either is unknown."""
    if not per_worker_bytes or per_worker_bytes <= 0 or budget_bytes is None:
        return None
    return max(0, int(math.floor(budget_bytes / per_worker_bytes)))


def host_budget(system_budget: Optional[float], available: Optional[float], cgroup_limit: Optional[float],
                cgroup_usage: Optional[float]) -> Dict[str, Any]:
    """What new workers may use: the `system` probe's budget when present, else min(available, cgroup room)."""
    if system_budget:
        return {"bytes": int(system_budget), "source": "system probe memory.budget_bytes"}
    candidates = []
    if available:
        candidates.append((int(available), "available RAM (psutil)"))
    if cgroup_limit and cgroup_usage is not None:
        candidates.append((max(0, int(cgroup_limit - cgroup_usage)), "cgroup memory limit minus usage"))
    if not candidates:
        return {"bytes": None, "source": None}
    b, src = min(candidates)
    return {"bytes": b, "source": src}


def process_fit_check(n: int, per_worker_bytes: Optional[float], budget_bytes: Optional[float],
                      already_running: int = 0) -> Optional[str]:
    """None when n workers fit (counting ones already running as paid); otherwise the reason in words."""
    if per_worker_bytes is None or budget_bytes is None:
        return None  # unknown: the caller decides (it only spawns more when it knows)
    extra = max(0, n - already_running)
    need = extra * per_worker_bytes
    if need > budget_bytes:
        return (f"{n} processes would need {fmt_bytes(need)} more memory ({extra} x {fmt_bytes(per_worker_bytes)}) "
                f"but only {fmt_bytes(budget_bytes)} is available: not spawned")
    return None


# --------------------------------------------------------------------------------------- verdict
def analyse(data: Dict[str, Any], usable_cores: Optional[int] = None) -> Dict[str, Any]:
    """Probe data -> {"verdict": {...}, "findings": [...]}: pure, reads only the data given."""
    py = data.get("python") or {}
    mem = data.get("memory") or {}
    startup = data.get("startup") or {}
    limit = (data.get("cpu") or {}).get("limit") or None
    judged = gil_scaling.judge(data, usable_cores)
    verdict, busy, throttling = judged["verdict"], judged["busy"], judged["throttling"]
    cores, load = judged["cores"], judged["load"]
    findings: List[dict] = []

    v = verdict["python"]
    if v["verdict"] == ONLY_PROCESSES:
        findings.append(finding(
            "GIL_BOUND_PYTHON", "info",
            f"GIL-bound: {v['workers']} threads run pure-Python work at {v['threads_speedup']:.2f}x the speed of "
            f"1 thread; {v['workers']} processes at {v['processes_speedup']:.2f}x.",
            _evidence(v), "Run Python-heavy work per worker in processes (spawn), not threads."))
    elif v["verdict"] == BOTH_SCALE and py.get("gil_enabled") is False:
        pass  # reported under FREE_THREADED below
    elif v["verdict"] == NEITHER and "python" not in busy and "python" not in throttling:
        findings.append(finding(
            "CPU_PARALLELISM_LIMITED", "warning",
            f"Neither {v['workers']} threads ({v['threads_speedup']:.2f}x) nor {v['workers']} processes "
            f"({v['processes_speedup']:.2f}x) speed up pure-Python work: fewer cores are really available "
            f"than the {v['workers']} the OS reports (CPU quota, affinity, a busy or throttled machine).",
            _evidence(v), "Check the container/VM CPU quota and what else is running; size workers to real cores."))

    v = verdict["torch_op"]
    if v["verdict"] in (BOTH_SCALE, ONLY_THREADS):
        findings.append(finding(
            "TORCH_RELEASES_GIL", "info",
            f"torch ops release the GIL: {v['workers']} threads run a CPU matmul at {v['threads_speedup']:.2f}x "
            f"the speed of 1 thread ({v['workers']} processes at {v['processes_speedup']:.2f}x).",
            _evidence(v), None))
    elif v["verdict"] == ONLY_PROCESSES:
        findings.append(finding(
            "TORCH_OP_THREADS_DO_NOT_SCALE", "warning",
            f"{v['workers']} threads run large torch CPU ops only {v['threads_speedup']:.2f}x faster than 1 thread, "
            f"processes {v['processes_speedup']:.2f}x: something serialises the threads (GIL held, a global lock, "
            f"or intra-op threads oversubscribing the cores).",
            _evidence(v), "Set torch.set_num_threads(1) per worker thread, or use processes."))

    for name, what in (("torch_dispatch", "many tiny torch ops"), ("cuda_launch", "many tiny CUDA kernel launches")):
        v = verdict[name]
        if v["verdict"] == ONLY_PROCESSES:
            findings.append(finding(
                "DISPATCH_BOUND_UNDER_GIL", "warning",
                f"Launch-bound under the GIL ({name}): {v['workers']} threads run {what} at "
                f"{v['threads_speedup']:.2f}x the speed of 1 thread; {v['workers']} processes at {v['processes_speedup']:.2f}x. Python-side dispatch "
                "holds the GIL, so threads do not add throughput for loops of small ops.",
                _evidence(v), "Fewer, larger ops (batching), CUDA graphs, or one process per worker instead of threads."))

    if throttling:
        worst_t = max(throttling, key=lambda w: throttling[w]["throttled_share"])
        what = ("the workers took turns inside the quota, so their scaling says what this limit allows"
                if verdict.get(worst_t, {}).get("workers") else
                "even one worker wanted more CPU than the limit gives, so its rates describe this limit")
        findings.append(finding(
            "CPU_THROTTLED_DURING_MEASUREMENT", "warning",
            f"`{worst_t}` ran {cpu_limit.throttled_text(limit, throttling[worst_t])} (workloads affected: "
            f"{', '.join(sorted(throttling))}): {what}, and more workers cannot help.",
            {"throttling": throttling, "limit": limit},
            "Raise the CPU limit (docker --cpus, Kubernetes resources.limits.cpu) to measure more workers; "
            "under this limit size workers to its usable cores."))
    if busy:
        worst = max(busy, key=busy.get)
        of = f" of {usable_cores}" if usable_cores else ""
        findings.append(finding(
            "MACHINE_BUSY_DURING_MEASUREMENT", "warning",
            f"Other processes kept {busy[worst]:.1f}{of} cores busy while `{worst}` was measured "
            f"(workloads affected: {', '.join(sorted(busy))}): the scaling figures understate this machine when idle.",
            {"other_busy_cores": load, "usable_cores": cores, "run_cores": cpu_limit.run_cores(limit),
             "rule": f"busy when other programs leave fewer than N - {BUSY_MARGIN_CORES:g} of the usable cores "
                     "free for the N workers measured (under a CPU quota: of the cores the process may run on, "
                     "beyond what the quota lets it use)"},
            "Close other CPU-heavy work and run `gpudiag report --only gil` again."))

    findings.extend(_memory_findings(mem, verdict, usable_cores))
    findings.extend(_free_threaded_findings(py, verdict["python"], mem))

    if startup.get("total_s") is not None:
        parts = [f"spawn {startup['spawn_s']:.2f} s"] if startup.get("spawn_s") is not None else []
        if startup.get("import_torch_s") is not None:
            parts.append(f"import torch {startup['import_torch_s']:.2f} s")
        findings.append(finding(
            "PROCESS_STARTUP_COST", "info",
            f"Starting one spawned worker took {startup['total_s']:.2f} s ({', '.join(parts)}): a "
            "ProcessPoolExecutor or multiprocessing.Pool pays this per worker, not per task.",
            {"startup": startup}, "Keep process workers alive and reuse them across tasks."))
    return {"verdict": verdict, "findings": findings}


def _evidence(v: dict) -> dict:
    """The verdict fields a finding carries as evidence (speedups, intervals, tolerance, verdict)."""
    return {k: v.get(k) for k in ("workload", "workers", "threads_speedup", "processes_speedup", "threads_ci95",
                                  "processes_ci95", "tolerance", "verdict")}


def _memory_findings(mem: Dict[str, Any], verdict: Dict[str, Any], usable_cores: Optional[int]) -> List[dict]:
    """The WORKER_MEMORY_LIMITS finding (empty when figures are missing): how many process workers fit in host
    and GPU memory, critical when not even 2 fit, since a worker past the limit is what the OOM killer stops."""
    per = mem.get("per_worker_host_bytes")
    budget = mem.get("budget_host_bytes")
    fit = (mem.get("fits") or {}).get("processes")
    if not per or budget is None or fit is None:
        return []
    per_dev, budget_dev = mem.get("per_worker_device_bytes"), mem.get("budget_device_bytes")
    fit_dev = fits(per_dev, budget_dev)
    cuda = bool(mem.get("rss_after_cuda_bytes"))
    # The same figure under the same name as the report's view: per_worker_host_source says which it is.
    what = mem.get("per_worker_host_source") or ("after import torch" + (" and CUDA init" if cuda else ""))
    msg = (f"Each process worker costs {fmt_bytes(per)} of host memory ({what}); with {fmt_bytes(budget)} available "
           f"{fits(per, budget)} workers fit in RAM")
    if fit_dev is not None:
        msg += f", and with {fmt_bytes(per_dev)} of GPU memory per CUDA context and {fmt_bytes(budget_dev)} free, {fit_dev} fit on the GPU"
    msg += "."
    # One per usable core (a CPU quota counted): under a 1-CPU limit a second worker cannot add speed, so
    # memory for it is not at stake.
    want = usable_cores or 2
    if fit < min(2, want):
        sev = "critical"
        msg += (" Even 2 processes would not fit: a second worker is what the OOM killer stops." if want >= 2 else
                " Not even 1 process worker fits.")
    elif fit < want:
        sev = "warning"
        msg += (f" {want} workers (one per usable core) would need {fmt_bytes(want * per)}: beyond {fit} "
                "the OOM killer (Linux) or a paging crawl (Windows) is expected.")
    else:
        sev = "info"
    threads_fit = (mem.get("fits") or {}).get("threads")
    if mem.get("per_thread_host_bytes"):
        shared = "torch and CUDA context" if cuda else "torch"
        msg += f" A thread adds about {fmt_bytes(mem['per_thread_host_bytes'])} of RSS (it shares the process's {shared})"
        msg += f": {threads_fit} fit." if threads_fit is not None else "."
    return [finding("WORKER_MEMORY_LIMITS", sev, msg,
                    {k: mem.get(k) for k in ("per_worker_host_bytes", "budget_host_bytes", "budget_host_source",
                                             "per_worker_device_bytes", "budget_device_bytes",
                                             "per_thread_host_bytes", "fits")},
                    None if sev == "info" else
                    f"Use at most {fit} process workers here, or threads (one shared CUDA context), or free memory.")]


def _free_threaded_findings(py: Dict[str, Any], v: Dict[str, Any], mem: Dict[str, Any]) -> List[dict]:
    """The FREE_THREADED finding on a free-threaded build (empty otherwise): warns when an extension re-enabled
    the GIL at run time, else states what threads gain without it."""
    if not py.get("free_threaded_build"):
        return []
    if py.get("gil_enabled"):
        return [finding(
            "FREE_THREADED", "warning",
            "This is a free-threaded Python build, but the GIL is enabled at run time (after importing torch): "
            "an extension without free-threading support (or PYTHON_GIL=1 / -X gil=1) re-enabled it, so threads "
            "behave as on standard CPython.",
            {"python": py}, "Use a torch build that supports free threading, or processes.")]
    msg = "Free-threaded Python with the GIL disabled: pure-Python threads are not serialised by a GIL."
    if v.get("threads_speedup") is not None:
        msg += (f" Measured: {v['workers']} threads {v['threads_speedup']:.2f}x, {v['workers']} processes "
                f"{v['processes_speedup']:.2f}x on pure-Python work.")
    if mem.get("per_worker_host_bytes"):
        msg += f" Threads avoid the {fmt_bytes(mem['per_worker_host_bytes'])} each process worker costs."
    return [finding("FREE_THREADED", "info", msg, {"python": py, "python_scaling": v}, None)]
