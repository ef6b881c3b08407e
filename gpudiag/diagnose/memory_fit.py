"""How many workers fit in memory: per-worker figures from the gil probe against the machine's budgets.

Two budgets can bind a process worker: host memory (whichever of available RAM, the cgroup limit,
the WSL VM's cap or the commit limit is tightest: the system probe names it) and, with CUDA, free
GPU memory for one more CUDA context each. The binding limit is the one that fits fewer workers,
and every text quotes that limit's own figures. A threads/processes row is judged at every worker
count its sweep measured, so a count that fits and was measured is used instead of the headline.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from gpudiag.diagnose.access import Figures
from gpudiag.report.values import as_str, get, probe_data
from gpudiag.units import fmt_bytes

# The system probe's budget_source -> what to call that limit in advice.
HOST_LIMIT_NAMES = {
    "ram_available": "available host RAM",
    "cgroup_limit_minus_usage": "the cgroup (container) memory limit",
    "commit_limit_minus_committed": "the commit limit (vm.overcommit_memory=2)",
}


def _host_limit_name(report: dict) -> str:
    sysd = probe_data(report, "system")
    src = as_str(get(sysd, "memory", "budget_source"))
    if get(sysd, "os", "wsl") == 2 and src in (None, "ram_available"):
        return "the WSL2 VM's memory cap (.wslconfig)"
    return HOST_LIMIT_NAMES.get(src or "", "host memory")


def memory_limits(report: dict) -> dict:
    """Per-worker memory, the budgets, how many workers fit and which limit binds, with sources."""
    fig = Figures()
    g = ("probes", "gil", "data", "memory")
    mem_ok = bool(probe_data(report, "gil"))  # a failed gil probe's figures are not used

    def r(name, *keys):
        return fig.read(name, report, *keys) if mem_ok else fig.put(name, None)

    r("per_worker_host_bytes", *g, "per_worker_host_bytes")
    r("per_worker_device_bytes", *g, "per_worker_device_bytes")
    r("budget_host_bytes", *g, "budget_host_bytes")
    r("budget_device_bytes", *g, "budget_device_bytes")
    r("fits_threads", *g, "fits", "threads")
    r("fits_processes", *g, "fits", "processes")
    v = fig.values
    if v["budget_host_bytes"] is None and probe_data(report, "system"):
        fig.read("budget_host_bytes", report, "probes", "system", "data", "memory", "budget_bytes")
    host_fit = dev_fit = None
    if v["per_worker_host_bytes"] and v["budget_host_bytes"] is not None:
        host_fit = max(0, int(v["budget_host_bytes"] // v["per_worker_host_bytes"]))
    if v["per_worker_device_bytes"] and v["budget_device_bytes"] is not None:
        dev_fit = max(0, int(v["budget_device_bytes"] // v["per_worker_device_bytes"]))
    fig.put("fits_processes_host", host_fit)
    fig.put("fits_processes_device", dev_fit)
    # gil gives `fits`; if it did not, work it out from the per-worker figures and the budgets.
    if v["fits_processes"] is None and host_fit is not None:
        fig.put("fits_processes", min(x for x in (host_fit, dev_fit) if x is not None))
    binding = None
    if dev_fit is not None and (host_fit is None or dev_fit < host_fit):
        binding = "device"
    elif host_fit is not None:
        binding = "host"
    fig.put("binding_limit", binding)
    names = {"host": _host_limit_name(report), "device": "free GPU memory"}
    return {"values": v, "sources": fig.sources, "limit_names": names}


def limit_text(limits: dict, workers: int) -> str:
    """'N workers x per = total against <binding limit> budget; k fit', with the binding limit's figures."""
    v = limits["values"]
    binding = v.get("binding_limit")
    if binding == "device":
        per, budget, fit = v["per_worker_device_bytes"], v["budget_device_bytes"], v["fits_processes_device"]
        what = "of GPU memory per CUDA context"
    else:
        per, budget, fit = v["per_worker_host_bytes"], v["budget_host_bytes"], v["fits_processes_host"]
        what = "of host memory"
    if not per or budget is None:
        fits = v.get("fits_processes")
        return f"{workers} process workers; {int(fits)} fit" if fits is not None else f"{workers} process workers"
    name = limits.get("limit_names", {}).get(binding or "host", "memory")
    return (f"{workers} workers x {fmt_bytes(per)} {what} = {fmt_bytes(per * workers)} against "
            f"{fmt_bytes(budget)} of {name}; {int(fit)} fit")


def worker_fit(name: str, workers: Optional[int], limits: dict) -> Tuple[Optional[bool], str]:
    """Whether `workers` workers of strategy `name` fit in memory: (True|False|None unknown, why)."""
    v = limits["values"]
    if name not in ("threads", "processes") or workers is None:
        return True, ""  # one process: it ran, so it fits
    fits = v.get("fits_processes") if name == "processes" else v.get("fits_threads")
    if fits is None:
        return None, "memory fit not checked: the gil probe's per-worker figures are missing"
    if workers <= fits:
        return True, f"{workers} {name} fit (up to {int(fits)})"
    if name == "processes":
        return False, "does not fit in memory: " + limit_text(limits, workers)
    return False, f"does not fit in memory: {workers} {name} workers, but only {int(fits)} fit"


def best_fitting(row: dict, limits: dict) -> Tuple[Optional[dict], str]:
    """The fastest worker count of a threads/processes row that fits: (entry or None, note).

    entry: {workers, cycles_per_s, speedup_ci95, samples, sweep_index (None for the headline)}. The
    headline count is used when it fits; otherwise the fastest measured count of the sweep that fits,
    and the note says so ("4 workers do not fit ...; 2 workers, measured, fit").
    """
    headline = {"workers": row["workers"], "cycles_per_s": row["cycles_per_s"],
                "speedup_ci95": row.get("speedup_ci95"), "samples": row.get("samples"), "rates": row.get("rates"),
                "sweep_index": None}
    fits, why = worker_fit(row["name"], row["workers"], limits)
    if fits is not False:
        return headline, why
    options: List[dict] = [e for e in row.get("sweep") or []
                           if e["workers"] != row["workers"] and worker_fit(row["name"], e["workers"], limits)[0]]
    if not options:
        maxfit = limits["values"].get("fits_processes" if row["name"] == "processes" else "fits_threads")
        measured = sorted({e["workers"] for e in row.get("sweep") or []} | {row["workers"]})
        if maxfit and maxfit >= 2:
            why += (f" ({int(maxfit)} workers would fit, but only "
                    + ", ".join(str(w) for w in measured) + " were measured)")
        return None, why
    best = max(options, key=lambda e: e["cycles_per_s"])
    note = (f"{row['workers']} workers {why}; {best['workers']} workers (measured in the sweep) fit and are "
            "used instead")
    return dict(best), note
