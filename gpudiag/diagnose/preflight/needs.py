"""Memory each worker will need: from a --ram/--vram-per-worker flag, a saved report, or a labelled default."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from gpudiag.diagnose.preflight.model import (
    DEFAULT_LABEL,
    DEFAULT_PROCESS_DEVICE_BYTES,
    DEFAULT_PROCESS_HOST_BYTES,
    DEFAULT_THREAD_DEVICE_BYTES,
    DEFAULT_THREAD_HOST_BYTES,
    Plan,
    num,
)
from gpudiag.diagnose.thresholds import TIGHT_FRACTION
from gpudiag.units import fmt_bytes


def worker_needs(facts: Mapping[str, Any], plan: Plan) -> Dict[str, Any]:
    """Host and device bytes the planned workers need, and where each figure comes from.

    processes: N x (one worker process: its interpreter, torch, CUDA context and data).
    threads:   one process (interpreter, torch, one shared CUDA context) + N x a per-thread extra.
    An explicit --ram/--vram-per-worker wins (the user knows their model and data; a saved report only
    measured torch and CUDA overhead); then the latest saved report; then the documented defaults.
    """
    rep = facts.get("saved_report") or {}
    rep_label = f"report {rep.get('file')}" if rep else None
    if rep and rep.get("host_without_cuda"):
        rep_host_label = f"{rep_label}, measured without CUDA initialised"
    else:
        rep_host_label = rep_label

    def pick(flag: Optional[int], flag_name: str, rep_value: Any, rep_src: Optional[str], default: int,
             default_src: str) -> Tuple[int, str]:
        """(bytes, where from): the flag when given, else the saved report's figure, else the labelled default."""
        if flag is not None:
            return flag, flag_name
        if num(rep_value) and rep_src:
            return int(rep_value), rep_src
        return default, default_src

    proc_host, proc_host_src = pick(None, "", rep.get("host_bytes"), rep_host_label,
                                    DEFAULT_PROCESS_HOST_BYTES, DEFAULT_LABEL)
    proc_dev, proc_dev_src = pick(None, "", rep.get("device_bytes"), rep_label,
                                  DEFAULT_PROCESS_DEVICE_BYTES, DEFAULT_LABEL)
    n = plan.workers
    if plan.strategy == "threads":
        host, host_src = pick(plan.ram_per_worker, "--ram-per-worker", rep.get("thread_host_bytes"), rep_label,
                              DEFAULT_THREAD_HOST_BYTES, DEFAULT_LABEL)
        dev, dev_src = pick(plan.vram_per_worker, "--vram-per-worker", None, None,
                            DEFAULT_THREAD_DEVICE_BYTES, DEFAULT_LABEL)
        shared_host, shared_dev = proc_host, proc_dev
        shared_src: Dict[str, Optional[str]] = {"host": proc_host_src, "device": proc_dev_src}
    else:
        host, host_src = pick(plan.ram_per_worker, "--ram-per-worker", rep.get("host_bytes"), rep_host_label,
                              DEFAULT_PROCESS_HOST_BYTES, DEFAULT_LABEL)
        dev, dev_src = pick(plan.vram_per_worker, "--vram-per-worker", rep.get("device_bytes"), rep_label,
                            DEFAULT_PROCESS_DEVICE_BYTES, DEFAULT_LABEL)
        shared_host = shared_dev = 0
        shared_src = {"host": None, "device": None}
    source = host_src if host_src == dev_src else f"host: {host_src}; device: {dev_src}"
    return {
        "host_bytes": host, "device_bytes": dev, "source": source,
        "host_source": host_src, "device_source": dev_src,
        "shared_host_bytes": shared_host, "shared_device_bytes": shared_dev,
        "shared_host_source": shared_src["host"], "shared_device_source": shared_src["device"],
        "total_host_bytes": shared_host + n * host, "total_device_bytes": shared_dev + n * dev,
    }


def need_text(need: Mapping[str, Any], plan: Plan, kind: str) -> str:
    """'4 workers x 2.0 GiB (default) = 8.0 GiB' or '1 process 2.0 GiB + 4 threads x 128 MiB = ...'."""
    per, src = need[f"{kind}_bytes"], need[f"{kind}_source"]
    total = need[f"total_{kind}_bytes"]
    if plan.strategy == "threads":
        shared, shared_src = need[f"shared_{kind}_bytes"], need[f"shared_{kind}_source"]
        return (f"1 process {fmt_bytes(shared)} ({shared_src}) + {plan.workers} thread"
                f"{'s' if plan.workers != 1 else ''} x {fmt_bytes(per)} ({src}) = {fmt_bytes(total)}")
    return (f"{plan.workers} worker{'s' if plan.workers != 1 else ''} x {fmt_bytes(per)} ({src}) "
            f"= {fmt_bytes(total)}")


def fit_status(need: float, have: float) -> str:
    """"fail" when `need` exceeds `have`, "warn" above TIGHT_FRACTION (90 %) of it, else "pass": the
    shared verdict of the RAM and VRAM checks."""
    if need > have:
        return "fail"
    if need > TIGHT_FRACTION * have:
        return "warn"
    return "pass"


def host_budget(mem: Mapping[str, Any]) -> Tuple[Optional[float], str]:
    """Bytes new workers may use, and what limits it (RAM available, or the cgroup limit)."""
    budget = num(mem.get("budget_bytes"))
    avail = num(mem.get("available_bytes"))
    limit, usage = num(mem.get("cgroup_limit_bytes")), num(mem.get("cgroup_usage_bytes"))
    cg_room = limit - usage if limit is not None and usage is not None else None
    if budget is None:
        candidates = [v for v in (avail, cg_room) if v is not None]
        budget = min(candidates) if candidates else None
    if cg_room is not None and (avail is None or cg_room <= avail):
        return budget, f"cgroup limit {fmt_bytes(limit)}, {fmt_bytes(usage)} used"
    return budget, "available RAM"
