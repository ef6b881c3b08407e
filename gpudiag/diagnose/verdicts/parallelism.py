"""Verdicts on CPU-side parallelism: is the GIL what limits threads, and do the workers fit in memory."""

from __future__ import annotations

from typing import Optional

from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose import gil_scaling
from gpudiag.diagnose.access import (
    Figures,
    cycle_device,
    not_run_reason,
    path,
    row_path,
    strategy_rows,
    verdict_entry,
)
from gpudiag.diagnose.memory_fit import limit_text, memory_limits
from gpudiag.diagnose.thresholds import NOISE_MARGIN_FRACTION
from gpudiag.report.values import as_bool, as_dict, as_int, as_list, as_str, get, num, probe_data
from gpudiag.units import fmt_pct


def _micro(report: dict, gil: dict, fig: Figures) -> Optional[dict]:
    """The gil probe's own judgement of its micro-benchmark (python, else torch_dispatch), with figures."""
    stored = as_dict(gil.get("verdict"))
    if not stored:  # an older report: the same rules, re-applied to its rows
        try:
            stored = gil_scaling.judge(gil, usable_cores=as_int(get(gil, "cpu", "usable_cores")))["verdict"]
        except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError):
            stored = {}
    for wl in ("python", "torch_dispatch"):
        v = as_dict(stored.get(wl))
        if as_str(v.get("verdict")) in (None, gil_scaling.NOT_MEASURED) and num(v.get("threads_speedup")) is None:
            continue
        base = ("probes", "gil", "data", "verdict", wl)
        if gil.get("verdict"):
            t = fig.read("gil_threads_speedup", report, *base, "threads_speedup")
            p = fig.read("gil_processes_speedup", report, *base, "processes_speedup")
        else:
            t = fig.put("gil_threads_speedup", num(v.get("threads_speedup")))
            p = fig.put("gil_processes_speedup", num(v.get("processes_speedup")))
        fig.put("gil_workload", wl)
        fig.put("gil_workers", as_int(v.get("workers")))
        fig.put("gil_probe_verdict", as_str(v.get("verdict")))
        return {"workload": wl, "workers": as_int(v.get("workers")), "t": t, "p": p,
                "verdict": as_str(v.get("verdict")), "reason": as_str(v.get("reason")) or ""}
    return None


def _micro_text(m: Optional[dict]) -> str:
    """' The gil micro-benchmark: GIL-bound on pure-Python work (2 threads 0.98x, ...).' or ''."""
    if not m:
        return ""
    what = "pure-Python work" if m["workload"] == "python" else "tiny torch ops"
    figs = (f" ({m['workers']} threads {m['t']:.2f}x, {m['workers']} processes {m['p']:.2f}x)"
            if m["t"] is not None and m["p"] is not None and m["workers"] else "")
    words = {gil_scaling.ONLY_PROCESSES: f"GIL-bound on {what}", gil_scaling.BOTH_SCALE: f"threads scale on {what}",
             gil_scaling.ONLY_THREADS: f"threads scale on {what}", gil_scaling.NEITHER: f"nothing scaled on {what}",
             gil_scaling.INCONCLUSIVE: f"inconclusive on {what}" + (f": {m['reason']}" if m["reason"] else "")}
    return f" The gil micro-benchmark: {words.get(m['verdict'], m['verdict'] or 'no verdict')}{figs}."


def _loop_pair(report: dict, fig: Figures) -> Optional[dict]:
    """Threads and processes in the user's loop (cycle) at the largest worker count both measured."""
    rows = {r["name"]: r for r in strategy_rows(report) if r["status"] == "ok" and r["cycles_per_s"]}
    t, p = rows.get("threads"), rows.get("processes")
    if not t or not p or "serial" not in rows:
        return None

    def points(r):
        # The row's spread belongs to its headline count (a sweep entry has its rounds, not a spread).
        pts = {e["workers"]: (e["cycles_per_s"], e["speedup_ci95"], ("sweep", e["sweep_index"]), e["rates"],
                              r["spread_fraction"] if e["workers"] == r["workers"] else None) for e in r["sweep"]}
        if r["workers"] and r["workers"] not in pts:
            pts[r["workers"]] = (r["cycles_per_s"], r["speedup_ci95"], None, r["rates"], r["spread_fraction"])
        return pts

    tp, pp = points(t), points(p)
    common = sorted(set(tp) & set(pp))
    n = common[-1] if common else None
    serial = rows["serial"]
    base = serial["cycles_per_s"]
    out = {"workers": n, "serial": {"name": "serial", "speedup": 1.0, "speedup_ci95": None, "rates": serial["rates"],
                                    "spread_fraction": serial["spread_fraction"], "workers": 1}}
    for mode, row, pts in (("threads", t, tp), ("processes", p, pp)):
        cps, ci, where, rates, spread = pts[n] if n else (row["cycles_per_s"], row["speedup_ci95"], None,
                                                          row["rates"], row["spread_fraction"])
        keys = ("probes", "cycle", "data", "strategies", row["index"]) + ((where[0], where[1]) if where else ())
        fig.read(f"cycle_{mode}_cycles_per_s", report, *keys, "cycles_per_s")
        s = fig.put(f"cycle_{mode}_speedup", round(cps / base, 3))
        fig.put(f"cycle_{mode}_speedup_ci95", list(ci) if ci else None)
        if spread is not None:
            fig.read(f"cycle_{mode}_spread_fraction", report, "probes", "cycle", "data", "strategies", row["index"],
                     "spread_fraction")
        out[mode] = {"name": mode, "speedup": s, "speedup_ci95": ci, "rates": rates, "spread_fraction": spread,
                     "workers": n or row["workers"]}
    fig.put("cycle_workers", n)
    return out


def verdict_gil_contention(report: dict) -> dict:
    """Does the GIL hold threads back in the user's loop? From the cycle's threads vs processes rows,
    with the gil probe's own judgement of its micro-benchmark as context (or as the answer when the
    loop did not measure both)."""
    from gpudiag.diagnose.confidence import clearly_above, cycle_quality, ratio_bounds, surely_not_above

    cause = "gil_contention"
    gil = probe_data(report, "gil")
    cyc = probe_data(report, "cycle")
    fig = Figures()
    fig.read("gil_enabled", report, "probes", "gil", "data", "python", "gil_enabled", kind=as_bool)
    fig.read("free_threaded_build", report, "probes", "gil", "data", "python", "free_threaded_build", kind=as_bool)
    micro = _micro(report, gil, fig) if gil else None
    loop = _loop_pair(report, fig) if cyc else None
    mtext = _micro_text(micro)
    if fig.values["gil_enabled"] is False:
        mtext += " This Python runs without the GIL (free-threaded build)."
    margin = NOISE_MARGIN_FRACTION
    rule = (f"rule: in the loop, processes surely {fmt_pct(margin)} or more faster than threads and than the plain "
            "loop (paired rounds, else intervals, else spreads): supported; threads surely gaining and processes "
            "not surely ahead of them, or neither surely gaining: refuted")
    if loop:
        quality = cycle_quality(cyc, strategy_rows(report), report)
        t, p, n, s = loop["threads"], loop["processes"], loop["workers"], loop["serial"]
        what = (f"in your loop {n} threads ran {_x(t)} and {n} processes {_x(p)} of the plain loop" if n else
                f"in your loop threads ({t['workers']} workers) ran {_x(t)} and processes ({p['workers']}) {_x(p)}")
        if quality["reasons"]:
            return verdict_entry(cause, "inconclusive", "Cannot tell from your loop: " + "; ".join(quality["reasons"])
                                 + "." + mtext, "the cycle probe's figures are too noisy to judge (its busy-machine "
                                 "or noise findings)", fig.values, fig.sources)
        if quality["throttled"]:  # the workers took turns inside the quota: threads vs processes says nothing of the GIL
            return verdict_entry(cause, "inconclusive", f"Cannot tell from your loop: it ran "
                                 f"{quality['throttled_text']}, so its workers took turns inside the quota." + mtext,
                                 "a throttled tournament lowers the confidence of what it compares", fig.values,
                                 fig.sources)
        p_over_t = clearly_above(p, t, margin)
        lo, hi, kind = ratio_bounds(p, t)
        if lo is not None:
            fig.put("cycle_processes_over_threads", [round(lo, 3), round(hi, 3)])
            fig.put("cycle_processes_over_threads_from", kind)
        if p_over_t and clearly_above(p, s, margin):
            return verdict_entry(cause, "supported", f"GIL-bound: {what}; the GIL holds the threads back." + mtext,
                                 rule, fig.values, fig.sources)
        if clearly_above(t, s, margin) and not p_over_t and surely_not_above(p, t, margin):
            return verdict_entry(cause, "refuted", f"Threads gain like processes: {what}; the GIL does not limit "
                                 "your loop (its heavy work runs in torch ops that release it)." + mtext,
                                 rule, fig.values, fig.sources)
        if surely_not_above(t, s, margin) and surely_not_above(p, s, margin):
            limit = ("the GPU (or the loop's serial part): more workers only queue more work for it"
                     if cycle_device(report) == "cuda" else
                     "the CPU cores, which the plain loop already keeps busy with torch's own threads")
            return verdict_entry(cause, "refuted", f"Nothing scales: {what}. The GIL is not what limits your "
                                 f"loop; {limit}." + mtext, rule, fig.values, fig.sources)
        return verdict_entry(cause, "inconclusive", f"Cannot tell: {what}; the intervals do not separate "
                             f"threads from processes by the {fmt_pct(margin)} margin." + mtext, rule,
                             fig.values, fig.sources)
    if not gil:
        return verdict_entry(cause, "not_measured", "The GIL was not measured.",
                             not_run_reason(report, "gil") + "; and the cycle tournament did not measure threads "
                             "and processes on your loop", fig.values, fig.sources)
    if micro is None:
        limit = get(gil, "cpu", "limit")
        if cpu_limit.usable_cores(limit) == 1 and cpu_limit.limit_text(limit):
            return verdict_entry(cause, "not_measured", "The gil probe measured only 1 worker: more workers cannot "
                                 "help here.", f"{cpu_limit.usable_text(limit)}: threads and processes cannot run side "
                                 "by side", fig.values, fig.sources)
        return verdict_entry(cause, "not_measured", "The gil probe recorded no threads-vs-processes pair "
                             "with more than one worker.",
                             "no scaling rows for the python or torch_dispatch workload with 2+ workers "
                             "in both modes (one core, or the rows are missing)", fig.values, fig.sources)
    tail = " The cycle tournament did not measure threads and processes on your loop, so this is the micro-benchmark."
    v = micro["verdict"]
    if v == gil_scaling.ONLY_PROCESSES:
        return verdict_entry(cause, "supported", "GIL-bound." + mtext + tail, "the gil probe's verdict: only "
                             "processes scale", fig.values, fig.sources)
    if v in (gil_scaling.BOTH_SCALE, gil_scaling.ONLY_THREADS):
        return verdict_entry(cause, "refuted", "Threads scale here." + mtext + tail, "the gil probe's verdict: "
                             "threads scale", fig.values, fig.sources)
    if v == gil_scaling.NEITHER:
        return verdict_entry(cause, "inconclusive", "Neither threads nor processes scaled, so the GIL cannot be "
                             "told apart from a lack of free cores." + mtext, "the gil probe's verdict: neither "
                             "scales (too few free cores to tell)", fig.values, fig.sources)
    if v == gil_scaling.INCONCLUSIVE:
        return verdict_entry(cause, "inconclusive", "The gil probe could not judge its figures." + mtext,
                             f"the gil probe's verdict: inconclusive ({micro['reason'] or 'no reason recorded'})",
                             fig.values, fig.sources)
    return verdict_entry(cause, "not_measured", "The GIL was not measured." + mtext,
                         micro["reason"] or "the gil probe has no verdict for this workload", fig.values, fig.sources)


def _x(c: dict) -> str:
    ci = c.get("speedup_ci95")
    return f"{c['speedup']:.2f}x" + (f" ({ci[0]:.2f}-{ci[1]:.2f}x)" if ci else "")


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
    # How many workers are at stake: the most the tournament tried, else gil's largest, else usable cores.
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
        # One worker per usable core (affinity, cpuset and a CPU quota counted), else per logical core.
        for keys in (("cpu", "limit", "usable_cores"), ("cpu", "logical_cores")):
            w = as_int(get(report, "probes", "system", "data", *keys))
            if w:
                wanted, wanted_src = w, path("probes", "system", "data", *keys)
                break
    fig.put("workers_considered", wanted)
    if wanted_src:
        fig.sources["workers_considered"] = wanted_src
    kills = [k for k in (v["oom_kills_since_boot"], v["cgroup_oom_kills"]) if k]
    kill_text = ""
    if v["oom_kills_since_boot"]:
        kill_text += f" The kernel OOM killer has killed {int(v['oom_kills_since_boot'])} process(es) since boot."
    if v["cgroup_oom_kills"]:
        kill_text += f" {int(v['cgroup_oom_kills'])} OOM kill(s) in this cgroup."
    fits, per = v["fits_processes"], v["per_worker_host_bytes"]
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
    fig.put("needed_host_bytes", per * wanted if per else None)
    arithmetic = limit_text(limits, wanted)
    binding = v.get("binding_limit")
    where = limits.get("limit_names", {}).get(binding or "host", "memory")
    rule = ("rule: supported when the workers considered exceed how many fit in the binding limit "
            f"({where}: gil memory.fits.processes)")
    if wanted > fits:
        return verdict_entry(cause, "supported",
                        f"OOM risk: {arithmetic}; {where} is the limit." + kill_text, rule, v, fig.sources)
    return verdict_entry(cause, "refuted", f"Memory is not the limit: {arithmetic}." + kill_text,
                    rule, v, fig.sources)
