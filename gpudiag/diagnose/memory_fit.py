"""How many workers fit in memory: per-worker figures from the gil probe against the machine's budget."""

from __future__ import annotations

from typing import Optional, Tuple

from gpudiag.diagnose.access import Figures, fmt_bytes, probe_data


def memory_limits(report: dict) -> dict:
    """Per-worker memory, the budget and how many workers fit, with the paths they came from."""
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
    # gil gives `fits`; if it did not, work it out from the per-worker figures and the budgets.
    if v["fits_processes"] is None and v["per_worker_host_bytes"] and v["budget_host_bytes"] is not None:
        n = int(v["budget_host_bytes"] // v["per_worker_host_bytes"])
        if v["per_worker_device_bytes"] and v["budget_device_bytes"] is not None:
            n = min(n, int(v["budget_device_bytes"] // v["per_worker_device_bytes"]))
        fig.put("fits_processes", max(n, 0))
    return {"values": v, "sources": fig.sources}


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
    if name == "processes" and v.get("per_worker_host_bytes") and v.get("budget_host_bytes") is not None:
        per, budget = v["per_worker_host_bytes"], v["budget_host_bytes"]
        why = (f"does not fit in memory: {workers} workers x {fmt_bytes(per)} = {fmt_bytes(per * workers)} "
               f"against a budget of {fmt_bytes(budget)}; {int(fits)} fit")
    else:
        why = f"does not fit in memory: {workers} {name} workers, but only {int(fits)} fit"
    if 0 < fits < workers:
        why += f" ({int(fits)} workers would fit but were not measured)"
    return False, why
