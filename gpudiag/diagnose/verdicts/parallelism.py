"""Verdicts on CPU-side parallelism: is the GIL what limits threads, and do the workers fit in memory."""

from __future__ import annotations

from typing import Optional

from gpudiag.diagnose.access import (
    Figures,
    as_bool,
    as_int,
    as_list,
    as_str,
    fmt_bytes,
    get,
    not_run_reason,
    num,
    path,
    probe_data,
    row_path,
    strategy_rows,
    verdict_entry,
)
from gpudiag.diagnose.memory_fit import memory_limits
from gpudiag.diagnose.thresholds import (
    GIL_THREAD_TO_PROCESS_RATIO_MAX,
    PARALLEL_HEADROOM_MIN_SPEEDUP,
    TORCH_RELEASES_GIL_SPEEDUP,
)


def verdict_gil_contention(report: dict) -> dict:
    """Do threads lose to processes on GIL-holding work? From the gil probe's scaling rows."""
    cause = "gil_contention"
    gil = probe_data(report, "gil")
    if not gil:
        return verdict_entry(cause, "not_measured", "The GIL was not measured.",
                        not_run_reason(report, "gil") + "; threads vs processes scaling needs it")
    fig = Figures()
    rows = as_list(gil.get("scaling"))
    by = {}  # (workload, mode, workers) -> index
    for i, row in enumerate(rows):
        if isinstance(row, dict) and as_int(row.get("workers")) and num(row.get("speedup")) is not None:
            by[(as_str(row.get("workload")), as_str(row.get("mode")), as_int(row.get("workers")))] = i
    base = ("probes", "gil", "data", "scaling")

    def pair(workload):
        common = [w for (wl, m, w) in by if wl == workload and m == "threads" and w > 1
                  and (workload, "processes", w) in by]
        if not common:
            return None
        n = max(common)
        return n, by[(workload, "threads", n)], by[(workload, "processes", n)]

    workload, found = None, None
    for wl in ("python", "torch_dispatch"):
        found = pair(wl)
        if found:
            workload = wl
            break
    fig.read("gil_enabled", report, "probes", "gil", "data", "python", "gil_enabled", kind=as_bool)
    fig.read("free_threaded_build", report, "probes", "gil", "data", "python", "free_threaded_build", kind=as_bool)
    if not found:
        return verdict_entry(cause, "not_measured", "The gil probe recorded no threads-vs-processes pair "
                        "with more than one worker.",
                        "no scaling rows for the python or torch_dispatch workload with 2+ workers "
                        "in both modes (one core, or the rows are missing)", fig.values, fig.sources)
    n, ti, pi = found
    fig.put("workload", workload)
    fig.put("workers", n)
    t = fig.read("threads_speedup", report, *base, ti, "speedup")
    p = fig.read("processes_speedup", report, *base, pi, "speedup")
    torch_op = pair("torch_op")
    top = fig.read("torch_op_threads_speedup", report, *base, torch_op[1], "speedup") if torch_op else None
    ratio = fig.put("thread_to_process_ratio", round(t / p, 3) if p else None)
    rows_c = {r["name"]: r for r in strategy_rows(report) if r["status"] == "ok"}
    for mode in ("threads", "processes"):  # the same question on the user's own loop
        r = rows_c.get(mode)
        if r and r["speedup_vs_serial"] is not None:
            fig.read(f"cycle_{mode}_speedup", report, "probes", "cycle", "data", "strategies",
                     r["index"], "speedup_vs_serial")
    what = "pure-Python work" if workload == "python" else "tiny torch ops (dispatch under the GIL)"
    tail = ""
    if top is not None and top >= TORCH_RELEASES_GIL_SPEEDUP:
        tail += f" torch ops release the GIL: threads scale {top:.2f}x on them."
    ct, cp = fig.values.get("cycle_threads_speedup"), fig.values.get("cycle_processes_speedup")
    if ct is not None or cp is not None:
        tail += (" In the cycle tournament threads reached " + (f"{ct:.2f}x" if ct is not None else "n/a")
                 + " and processes " + (f"{cp:.2f}x" if cp is not None else "n/a") + " of the plain loop.")
    if fig.values["gil_enabled"] is False:
        tail += " This Python runs without the GIL (free-threaded build), so threads can run Python in parallel."
    rule = (f"rule: threads/processes speedup ratio below {GIL_THREAD_TO_PROCESS_RATIO_MAX} "
            f"with processes above {PARALLEL_HEADROOM_MIN_SPEEDUP}x")
    if p is None or p < PARALLEL_HEADROOM_MIN_SPEEDUP:
        return verdict_entry(cause, "not_measured",
                        f"Processes did not scale either ({p:.2f}x with {n} workers on {what}), so the GIL's "
                        f"cost cannot be told apart from a lack of free cores here." + tail,
                        f"processes reached only {p:.2f}x with {n} workers (need {PARALLEL_HEADROOM_MIN_SPEEDUP}x "
                        f"to tell): too few free cores", fig.values, fig.sources)
    if ratio is not None and ratio < GIL_THREAD_TO_PROCESS_RATIO_MAX:
        return verdict_entry(cause, "supported",
                        f"GIL-bound: {n} threads run {what} {t:.2f}x as fast as 1 thread, {n} processes "
                        f"{p:.2f}x." + tail, rule, fig.values, fig.sources)
    return verdict_entry(cause, "refuted",
                    f"Threads scale like processes on {what} ({t:.2f}x vs {p:.2f}x with {n} workers): "
                    f"the GIL does not hold threads back here." + tail, rule, fig.values, fig.sources)


def verdict_worker_memory(report: dict, limits: Optional[dict] = None) -> dict:
    """Would the workers the user (or the tournament) wants fit in memory; were processes OOM-killed?"""
    cause = "worker_memory"
    limits = limits or memory_limits(report)
    fig = Figures()
    fig.values.update(limits["values"])
    fig.sources.update(limits["sources"])
    mem = ("probes", "system", "data", "memory")
    sys_ok = bool(probe_data(report, "system"))
    for name in ("oom_kills_since_boot", "cgroup_oom_kills"):
        fig.read(name, report, *mem, name) if sys_ok else fig.put(name, None)
    v = fig.values
    # How many workers are at stake: the most the tournament tried, else gil's largest, else cores.
    wanted, wanted_src = None, None
    for r in strategy_rows(report):
        if r["name"] == "processes" and r["workers"] and (wanted is None or r["workers"] > wanted):
            wanted, wanted_src = r["workers"], row_path(r, "workers")
    if wanted is None:
        for i, row in enumerate(as_list(get(probe_data(report, "gil"), "scaling"))):
            w = as_int(get(row, "workers"))
            if get(row, "mode") == "processes" and w and (wanted is None or w > wanted):
                wanted, wanted_src = w, path("probes", "gil", "data", "scaling", i, "workers")
    if wanted is None and sys_ok:
        w = as_int(get(report, "probes", "system", "data", "cpu", "logical_cores"))
        if w:
            wanted, wanted_src = w, path("probes", "system", "data", "cpu", "logical_cores")
    fig.put("workers_considered", wanted)
    if wanted_src:
        fig.sources["workers_considered"] = wanted_src
    kills = [k for k in (v["oom_kills_since_boot"], v["cgroup_oom_kills"]) if k]
    kill_text = ""
    if v["oom_kills_since_boot"]:
        kill_text += f" The kernel OOM killer has killed {int(v['oom_kills_since_boot'])} process(es) since boot."
    if v["cgroup_oom_kills"]:
        kill_text += f" {int(v['cgroup_oom_kills'])} OOM kill(s) in this cgroup."
    fits, per, budget = v["fits_processes"], v["per_worker_host_bytes"], v["budget_host_bytes"]
    if fits is None or wanted is None:
        if kills:
            return verdict_entry(cause, "supported", "Out-of-memory kills happened on this machine." + kill_text +
                            " Per-worker memory was not measured, so how many workers fit is unknown.",
                            "OOM kills recorded; per-worker figures missing ("
                            + not_run_reason(report, "gil") + ")", v, fig.sources)
        return verdict_entry(cause, "not_measured", "Per-worker memory was not measured.",
                        (not_run_reason(report, "gil") if not probe_data(report, "gil")
                         else "the gil probe recorded no per-worker figures or budget")
                        + "; with no OOM kills recorded either", v, fig.sources)
    need = fig.put("needed_host_bytes", per * wanted if per else None)
    arithmetic = (f"{wanted} process workers x {fmt_bytes(per)} = {fmt_bytes(need)} against a budget of "
                  f"{fmt_bytes(budget)}" if per and budget is not None else f"{wanted} process workers")
    if v["per_worker_device_bytes"] and v["budget_device_bytes"] is not None:
        arithmetic += (f" (GPU: {fmt_bytes(v['per_worker_device_bytes'])} per context, "
                       f"{fmt_bytes(v['budget_device_bytes'])} budget)")
    rule = "rule: supported when the workers considered exceed how many fit (gil memory.fits.processes)"
    if wanted > fits:
        return verdict_entry(cause, "supported",
                        f"OOM risk: {arithmetic}; only {int(fits)} fit." + kill_text, rule, v, fig.sources)
    return verdict_entry(cause, "refuted", f"Memory is not the limit: {arithmetic}; {int(fits)} fit." + kill_text,
                    rule, v, fig.sources)
