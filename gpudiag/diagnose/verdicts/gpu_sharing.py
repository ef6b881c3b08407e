"""Verdicts on sharing the GPU: context switching between processes, other processes on the GPU, the driver model."""

from __future__ import annotations

from typing import List, Optional, Tuple

from gpudiag.diagnose.access import (
    Figures,
    base_name,
    findings_with,
    is_desktop_process,
    not_run_reason,
    path,
    verdict_entry,
)
from gpudiag.diagnose.thresholds import (
    CONTEXT_SWITCH_OVERHEAD_SUPPORTED,
    FINDING_CODES,
    LAUNCH_BOUND_OVERHEAD_US,
    WDDM_LAUNCH_OVERHEAD_US,
)
from gpudiag.report.values import as_bool, as_int, as_list, as_str, get, num, probe_data
from gpudiag.units import fmt_bytes, fmt_pct


def verdict_context_switch(report: dict) -> dict:
    """Do processes sharing the GPU lose time to context switches? From the contention probe."""
    cause = "context_switch"
    con = probe_data(report, "contention")
    if not con:
        return verdict_entry(cause, "not_measured", "CUDA context-switch cost was not measured.",
                        not_run_reason(report, "contention") + "; it needs a CUDA device")
    fig = Figures()
    base = ("probes", "contention", "data", "processes")
    best = None
    for i, row in enumerate(as_list(con.get("processes"))):
        w = as_int(get(row, "workers"))
        has = num(get(row, "overhead_fraction")) is not None or num(get(row, "stretch")) is not None
        if w and w > 1 and has and (best is None or w > best[1]):
            best = (i, w)
    fig.read("mps_active", report, "probes", "contention", "data", "mps_active", kind=as_bool)
    if best is None:
        return verdict_entry(cause, "not_measured", "The contention probe recorded no multi-process row.",
                        "no processes row with 2+ workers and a measured stretch", fig.values, fig.sources)
    i, w = best
    fig.put("workers", w)
    stretch = fig.read("stretch", report, *base, i, "stretch")
    over = fig.read("overhead_fraction", report, *base, i, "overhead_fraction")
    if over is None and stretch:
        over = fig.put("overhead_fraction", round(1 - 1 / stretch, 4))
    cost = fig.read("switch_cost_us_est", report, *base, i, "switch_cost_us_est")
    slice_ms = fig.read("timeslice_ms_est", report, *base, i, "timeslice_ms_est")
    for j, row in enumerate(as_list(con.get("threads"))):
        if as_int(get(row, "workers")) == w:
            fig.read("threads_throughput_vs_one", report, "probes", "contention", "data", "threads", j,
                     "throughput_vs_one")
    detail = f"{w} processes sharing the GPU took "
    detail += f"{stretch:.2f}x the ideal time-sliced time" if stretch else "longer than ideal"
    detail += f" ({fmt_pct(over)} lost to switching"
    if cost is not None:
        detail += f"; about {cost:.0f} us per switch"
    if slice_ms is not None:
        detail += f", time slice about {slice_ms:.1f} ms"
    detail += ")"
    if fig.values["mps_active"]:
        detail += "; an MPS daemon was active, which shares one context between processes"
    rule = f"rule: supported when {fmt_pct(CONTEXT_SWITCH_OVERHEAD_SUPPORTED)} or more of the time is lost"
    if over >= CONTEXT_SWITCH_OVERHEAD_SUPPORTED:
        return verdict_entry(cause, "supported", detail + ": context switching costs real time here; "
                        "prefer one process (threads, streams, graphs) driving the GPU.", rule,
                        fig.values, fig.sources)
    return verdict_entry(cause, "refuted", detail + ": context switching costs little here.", rule,
                    fig.values, fig.sources)


def gpu_processes(report: dict) -> Tuple[Optional[List[dict]], List[str]]:
    """Other processes on the GPU(s) from the driver probe: (list or None when unreadable, sources).

    One entry per process and GPU: a process NVML lists as both graphics and compute (every
    desktop program under WDDM) is one entry of kind "compute+graphics". `desktop` is the driver
    probe's own classification (category "display": display server, compositor, shell).
    """
    drv = probe_data(report, "driver")
    found: List[dict] = []
    sources: List[str] = []
    readable = False
    for gi, gpu in enumerate(as_list(drv.get("gpus"))):
        index = get(gpu, "index") if as_int(get(gpu, "index")) is not None else gi
        by_key = {}
        for kind in ("graphics", "compute"):
            procs = get(gpu, "processes", kind)
            if not isinstance(procs, list):
                continue
            readable = True
            for pi, p in enumerate(procs):
                if not isinstance(p, dict):
                    continue
                name = base_name(p.get("name"))
                pid = as_int(p.get("pid"))
                key = pid if pid is not None else ("name", name)
                if key in by_key:
                    e = by_key[key]
                    if kind not in e["kind"]:
                        e["kind"] = "compute+graphics"
                    mem = num(p.get("used_memory_bytes"))
                    if mem is not None and (e["used_memory_bytes"] is None or mem > e["used_memory_bytes"]):
                        e["used_memory_bytes"] = mem
                    continue
                category = as_str(p.get("category"))
                e = {"gpu": index, "pid": pid, "kind": kind, "name": name,
                     "category": category, "desktop": is_desktop_process(name, category),
                     "used_memory_bytes": num(p.get("used_memory_bytes"))}
                by_key[key] = e
                found.append(e)
                sources.append(path("probes", "driver", "data", "gpus", gi, "processes", kind, pi, "name"))
    return (found if readable else None), sources


def closable(p: dict) -> bool:
    """A process the user can close or stop: not part of the desktop itself, not the MPS daemon."""
    return not p["desktop"] and p.get("category") != "mps"


def verdict_gpu_shared(report: dict) -> dict:
    """Does another process (desktop, editor, browser, another job) use the GPU?"""
    cause = "gpu_shared"
    fig = Figures()
    flagged = findings_with(report, FINDING_CODES["gpu_shared"])
    if not probe_data(report, "driver"):
        if flagged:
            p, i, f = flagged[0]
            fig.put("finding", f.get("code"))
            fig.sources["finding"] = path("probes", p, "findings", i, "code")
            return verdict_entry(cause, "supported", str(f.get("message") or f.get("code")),
                            f"from finding {f.get('code')}; the driver probe's process list is missing",
                            fig.values, fig.sources)
        return verdict_entry(cause, "not_measured", "Other processes on the GPU were not listed.",
                        not_run_reason(report, "driver") + "; it needs the NVIDIA driver (NVML)")
    procs, _ = gpu_processes(report)
    fig.put("processes", [p["name"] for p in procs] if procs else procs)
    for gi, gpu in enumerate(as_list(probe_data(report, "driver").get("gpus"))):
        if num(get(gpu, "utilization_gpu_percent")) is not None:
            fig.read(f"gpu{gi}_utilization_percent", report, "probes", "driver", "data", "gpus", gi,
                     "utilization_gpu_percent")
    nv = fig.read("nvml_median_percent", report, "probes", "cycle", "data", "nvml_utilization", "median_percent")
    if procs is None and not flagged:
        return verdict_entry(cause, "not_measured", "NVML gave no process list for this GPU.",
                        "the driver probe recorded no process list: NVML did not give one (common under WSL2) "
                        "or the report is from an older gpudiag; on Windows, Task Manager's GPU column shows them",
                        fig.values, fig.sources)
    if not procs and not flagged:
        return verdict_entry(cause, "refuted", "No other process held the GPU when gpudiag looked.",
                        "NVML listed no graphics or compute processes", fig.values, fig.sources)

    def describe(group: List[dict]) -> str:
        return ", ".join(f"{p['name']} ({p['kind']}"
                         + (f", {fmt_bytes(p['used_memory_bytes'])}" if p["used_memory_bytes"] is not None else "")
                         + ")" for p in group)

    desktop = [p for p in (procs or []) if not closable(p)]
    apps = [p for p in (procs or []) if closable(p)]
    fig.put("desktop_processes", [p["name"] for p in desktop])
    fig.put("closable_processes", [p["name"] for p in apps])
    if procs:
        parts = []
        if apps:
            parts.append(f"programs you can close or stop: {describe(apps)}")
        if desktop:
            parts.append(f"the desktop itself: {describe(desktop)}")
        text = "The GPU is shared with " + "; and ".join(parts) + "."
    else:
        text = str(flagged[0][2].get("message") or "The GPU is shared.")
    if procs and not apps:
        text += " Only the desktop itself draws on it: it costs display refreshes, little compute."
    if nv is not None:
        text += f" NVML showed {nv:.0f} % utilisation during the plain loop."
    return verdict_entry(cause, "supported", text, "rule: supported when NVML lists any other process on the GPU",
                    fig.values, fig.sources)


def verdict_driver_model(report: dict) -> dict:
    """Does the driver model (WDDM, incl. WSL2) add launch latency here?"""
    cause = "driver_model"
    drv, launch = probe_data(report, "driver"), probe_data(report, "launch")
    fig = Figures()
    model, model_src = None, None
    for gi, gpu in enumerate(as_list(drv.get("gpus"))):
        m = as_str(get(gpu, "driver_model", "current"))
        if m and m.lower() != "n/a":
            model, model_src = m.upper(), path("probes", "driver", "data", "gpus", gi, "driver_model", "current")
            break
    fig.put("driver_model", model)
    if model_src:
        fig.sources["driver_model"] = model_src
    wsl = fig.read("wsl", report, "probes", "system", "data", "os", "wsl", kind=as_int)
    os_name = fig.read("os", report, "probes", "system", "data", "os", "name", kind=as_str)
    lo = fig.read("launch_overhead_us_median", report, "probes", "launch", "data", "launch_overhead_us", "median")
    fig.read("sync_latency_us_median", report, "probes", "launch", "data", "sync_latency_us", "median")
    gs = fig.read("graph_speedup", report, "probes", "launch", "data", "graph", "speedup")
    fig.read("hags_enabled", report, "probes", "driver", "data", "windows", "hags", "enabled", kind=as_bool)
    if not drv and not launch:
        return verdict_entry(cause, "not_measured", "The driver model and launch latency were not measured.",
                        not_run_reason(report, "driver") + "; " + not_run_reason(report, "launch"),
                        fig.values, fig.sources)
    wddm = model == "WDDM" or wsl == 2
    lo_text = f"launch overhead {lo:.1f} us per kernel" if lo is not None else ""
    graph = f"; CUDA graphs measured {gs:.2f}x on small ops" if gs is not None else ""
    rule = f"rule: supported when WDDM (or WSL2) and launch overhead >= {WDDM_LAUNCH_OVERHEAD_US:g} us"
    if wddm:
        where = "WSL2 (a paravirtualised WDDM device)" if wsl == 2 else "WDDM"
        if lo is None:
            return verdict_entry(cause, "not_measured", f"The GPU runs under {where}, but launch latency was not "
                            "measured.", not_run_reason(report, "launch"), fig.values, fig.sources)
        if lo >= WDDM_LAUNCH_OVERHEAD_US:
            return verdict_entry(cause, "supported", f"{where} adds latency: {lo_text}{graph}. Fewer, larger "
                            "launches (CUDA graphs, batching) hide it; a compute-only card can use MCDM/TCC.",
                            rule, fig.values, fig.sources)
        return verdict_entry(cause, "refuted", f"The GPU runs under {where}, but {lo_text} is low: the driver "
                        "model is not what limits.", rule, fig.values, fig.sources)
    if model in ("TCC", "WDM", "MCDM"):
        return verdict_entry(cause, "refuted", f"The GPU runs in {model} (compute driver model, no WDDM "
                        f"batching)" + (f"; {lo_text}" if lo_text else "") + ".", rule, fig.values, fig.sources)
    linux_module = bool(as_str(get(drv, "kernel_module", "flavour")) or as_str(get(drv, "kernel_module", "version")))
    if (os_name == "Linux" and not wsl) or (os_name is None and not wsl and linux_module):
        text = "Native Linux driver: no WDDM layer is involved"
        if lo is not None and lo >= LAUNCH_BOUND_OVERHEAD_US:
            text += (f"; {lo_text} is high, but that is per-op dispatch cost, not the driver model{graph}")
        elif lo_text:
            text += f"; {lo_text}"
        return verdict_entry(cause, "refuted", text + ".", rule, fig.values, fig.sources)
    return verdict_entry(cause, "not_measured", "The driver model could not be determined.",
                    "no driver model reported and the OS is not native Linux", fig.values, fig.sources)
