"""Gathering the facts the checks read, cheaply: NVML through the driver probe's collector (platform.gpu_driver),
memory from the platform layer, torch's build from its files, saved reports, disk. Never imports torch, never
initialises CUDA.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from gpudiag.diagnose.preflight.model import ENV_NAMES, MAX_REPORTS_READ, REPORT_GLOB, Plan, display_path, num


def _gather_driver(facts: Dict[str, Any], nvml_session: Optional[Callable[[], Any]],
                   driver_collect: Optional[Callable[[Any], Dict[str, Any]]]) -> None:
    """Fill facts["nvml"] (reachable, reason) and facts["driver"] (the driver probe's data) or why not."""
    from gpudiag.backends import nvml
    from gpudiag.platform import gpu_driver

    session = nvml_session or nvml.session
    collect = driver_collect or gpu_driver.collect
    try:
        with session() as n:
            facts["nvml"] = {"reachable": True, "reason": None}
            try:
                facts["driver"] = collect(n)
            except Exception as exc:  # broad on purpose: a best-effort fact
                # NVML's own errors are already "n/a" in the data (Nvml.call), so this is an unforeseen failure
                # or a bug in the readers: the driver facts go missing with this reason, the other checks go on.
                facts["driver_reason"] = f"reading the driver failed: {type(exc).__name__}: {exc}"
    except nvml.NvmlUnavailable as exc:
        facts["nvml"] = {"reachable": False, "reason": str(exc)}
    except Exception as exc:  # broad on purpose: a best-effort fact
        # NvmlUnavailable (no driver) is handled above; this is NVML or its binding failing some other way
        # (a non-NVML error from nvmlInit or nvmlShutdown): preflight reports it as a reason, it does not crash.
        if facts.get("nvml", {}).get("reachable"):
            facts.setdefault("driver_reason", f"NVML session error: {type(exc).__name__}: {exc}")
        else:
            facts["nvml"] = {"reachable": False, "reason": f"{type(exc).__name__}: {exc}"}


def _gather_memory(facts: Dict[str, Any], memory_facts: Optional[Callable[[], Dict[str, Any]]]) -> None:
    """facts["memory"]: RAM, swap, cgroup and WSL limits from the platform layer, or why they are missing."""
    from gpudiag import platform

    try:
        facts["memory"] = (memory_facts or platform.memory_facts)()
    except (OSError, ValueError) as exc:  # unreadable /proc or /sys files
        facts["memory"] = None
        facts["memory_reason"] = f"{type(exc).__name__}: {exc}"


def _gather_cpu_limit(facts: Dict[str, Any], cpu_limit: Optional[Callable[[], Dict[str, Any]]]) -> None:
    """facts["cpu_limit"]: this process's CPU affinity, cpuset and quota (platform.cpu_limit: sources by kind,
    never a cgroup path) and the usable cores they leave; facts["logical_cpus"]: the machine's."""
    from gpudiag import platform

    facts["logical_cpus"] = os.cpu_count()
    try:
        facts["cpu_limit"] = (cpu_limit or platform.cpu_limit)()
    except (OSError, ValueError) as exc:  # unreadable /proc or /sys files: the check says so and skips
        facts["cpu_limit"] = None
        facts["cpu_limit_reason"] = f"{type(exc).__name__}: {exc}"


def _report_figures(rep: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Per-worker host and device bytes (and per-thread host bytes) the `gil` probe measured in a saved
    report, or None when it has neither: these replace the defaults in the memory checks."""
    mem = ((((rep.get("probes") or {}).get("gil") or {}).get("data") or {}).get("memory") or {})
    host, dev = num(mem.get("per_worker_host_bytes")), num(mem.get("per_worker_device_bytes"))
    if not host and not dev:
        return None
    return {"host_bytes": host, "device_bytes": dev, "thread_host_bytes": num(mem.get("per_thread_host_bytes")),
            "host_without_cuda": host is not None and mem.get("rss_after_cuda_bytes") is None}


def find_saved_report(search_dir: Optional[str], explicit: Sequence[str] = ()) -> Dict[str, Any]:
    """The newest saved report (by created_at) that has per-worker memory figures.

    Explicit paths that cannot be read raise ValueError (the user asked for them); unreadable files
    found by the folder search are skipped and counted.
    """
    from gpudiag.report.contract import ReportError, load_report

    found: List[str] = []
    if search_dir:
        def mtime(path: str) -> float:
            """Modification time for sorting newest first; 0 for a file that vanished meanwhile."""
            try:
                return os.path.getmtime(path)
            except OSError:  # removed while we looked
                return 0.0

        found = sorted(glob.glob(os.path.join(glob.escape(search_dir), REPORT_GLOB)),
                       key=mtime, reverse=True)[:MAX_REPORTS_READ]
    candidates, unreadable = [], 0
    for path in list(explicit) + [p for p in found if p not in explicit]:
        try:
            rep = load_report(path)
        except ReportError as exc:
            if path in explicit:
                raise ValueError(f"--report {exc}") from None
            unreadable += 1
            continue
        candidates.append((str(rep.get("created_at")), path, rep))
    candidates.sort(key=lambda c: c[0], reverse=True)
    for created, path, rep in candidates:
        fig = _report_figures(rep)
        if fig:
            return {"saved_report": dict(fig, file=display_path(path), created_at=created),
                    "reports_seen": len(candidates), "reports_unreadable": unreadable}
    return {"saved_report": None, "reports_seen": len(candidates), "reports_unreadable": unreadable}


def _start_method() -> Tuple[str, str]:
    """The start method new processes will use, without fixing it (get_context() would set it and
    make the caller's later set_start_method fail)."""
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True)
    if method:
        return method, "set by this program"
    return multiprocessing.get_all_start_methods()[0], "the platform default"


def _gather_disk(path: str) -> Dict[str, Any]:
    """Free and total bytes and writability of the checkpoint folder (display path only; free/total None
    with the OS's reason where it cannot be read)."""
    import shutil

    out: Dict[str, Any] = {"path": display_path(path), "writable": os.access(path, os.W_OK)}
    try:
        usage = shutil.disk_usage(path)
        out.update(free_bytes=usage.free, total_bytes=usage.total)
    except OSError as exc:
        out.update(free_bytes=None, total_bytes=None, reason=exc.strerror or str(exc))
    return out


def gather_facts(plan: Plan, *, environ: Optional[Mapping[str, str]] = None,
                 nvml_session: Optional[Callable[[], Any]] = None,
                 driver_collect: Optional[Callable[[Any], Dict[str, Any]]] = None,
                 memory_facts: Optional[Callable[[], Dict[str, Any]]] = None,
                 cpu_limit: Optional[Callable[[], Dict[str, Any]]] = None,
                 reports: Sequence[str] = (), search_dir: Optional[str] = ".") -> Dict[str, Any]:
    """Everything the checks read, collected cheaply: no torch import, no CUDA initialisation.

    The keyword arguments are seams for tests: `nvml_session()` returns a context manager yielding an
    Nvml wrapper (default gpudiag.backends.nvml.session), `driver_collect(n)` returns the `driver`
    data, `memory_facts()` the `system.memory` data, `cpu_limit()` the `system.cpu.limit` data.
    """
    from gpudiag import platform
    from gpudiag.backends import torch_meta

    environ = os.environ if environ is None else environ
    facts: Dict[str, Any] = {
        "platform": platform.KIND,
        "pid": os.getpid(),
        "env": {k: environ[k] for k in ENV_NAMES if k in environ},
        "driver": None,
    }
    _gather_driver(facts, nvml_session, driver_collect)
    _gather_memory(facts, memory_facts)
    _gather_cpu_limit(facts, cpu_limit)
    facts["torch"] = {"version": torch_meta.torch_version(), "cuda": torch_meta.torch_cuda_version(),
                      "hip": torch_meta.torch_hip_version()}
    facts["start_method"], facts["start_method_source"] = _start_method()
    facts.update(find_saved_report(search_dir, reports))
    if plan.checkpoint_dir:
        facts["disk"] = _gather_disk(plan.checkpoint_dir)
    return facts
