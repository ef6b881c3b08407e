"""The recommendation: which parallelism strategy to use on this machine, and a verdict per suspected cause.

Pure functions over the report dict (docs/report-contract.md): no hardware, no torch, no NVML, so the
rules are tested on recorded reports. Every figure quoted comes from the report and carries a
JSON-path-like `source` ("probes.cycle.data.strategies[3].cycles_per_s"); a fact the report does not
hold is `not_measured` with the reason, never a default. Reports of older shape, with probes skipped
or failed, or with keys missing, give a recommendation with less in it, never an exception.
The rules are described for users in docs/recommendation.md.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

# ------------------------------------------------------------------------------------ thresholds

# Cycle rows carry no spread, and two runs of one strategy on a busy desktop differ by a few
# percent; a strategy less than this much faster than a simpler one is not worth its complexity
# (or its extra memory), so the simpler one is recommended and the rule says so.
NOISE_MARGIN_FRACTION = 0.05

# Simplest first: what a user has to change in their loop to adopt each strategy. Used only to
# break near-ties (NOISE_MARGIN_FRACTION); fewer workers is simpler within one strategy.
SIMPLICITY = ("serial", "deferred_sync", "batched", "cuda_graph", "streams", "threads", "processes")

# GIL: threads are GIL-bound when they reach less than this share of what processes reach on the
# same GIL-holding work with the same worker count (1.0 = threads scale as well as processes).
# 0.75 leaves room for the normal 5-15 % thread/process difference on GIL-free work.
GIL_THREAD_TO_PROCESS_RATIO_MAX = 0.75
# Processes must themselves scale by this much before the GIL can be told apart from a lack of
# free cores (on one busy core nothing scales, and the GIL is then not what limits).
PARALLEL_HEADROOM_MIN_SPEEDUP = 1.2
# torch ops release the GIL when threads get at least this much from them.
TORCH_RELEASES_GIL_SPEEDUP = 1.3

# Context switching: the share of wall time lost over ideal time-slicing when processes share the
# GPU. Below 10 % the switching cost is smaller than ordinary run-to-run noise of GPU work.
CONTEXT_SWITCH_OVERHEAD_SUPPORTED = 0.10

# PCIe: a pinned host->device copy reaching less than half the link's theoretical per-direction
# rate is underdelivering (healthy links reach 70-90 %; research/methods.md section 5).
PCIE_EFFICIENCY_LOW = 0.5
# The loop is transfer-bound when host<->device copies take at least this share of a cycle.
PCIE_TRANSFER_SHARE_SUPPORTED = 0.25

# Host sync / idle gaps: the plain loop leaves the GPU idle this share of the time or more ...
HOST_IDLE_FRACTION_MIN = 0.2
# ... and most of that idle time (this share) is waiting on the host or on a sync ...
HOST_SYNC_SHARE_MIN = 0.5
# ... or taking syncs out of the loop (deferred_sync) buys at least this speedup.
DEFERRED_SYNC_GAIN_MIN = 1.10

# Driver model: host-side launch overhead per kernel above this (us) is the WDDM signature;
# native Linux launches a small torch op in roughly 5-10 us (methods.md section 6: "launch time
# on the CPU side is between 5-20 microseconds"), WDDM without hardware scheduling often more.
WDDM_LAUNCH_OVERHEAD_US = 15.0
# Launch overhead this high makes a loop of small ops launch-bound whatever the driver model.
LAUNCH_BOUND_OVERHEAD_US = 15.0

# Clock-event reasons that mean the GPU is held below its clocks by heat or power, not by idling
# or by an application setting.
THROTTLE_REASON_WORDS = ("thermal", "power", "hw_slowdown")

# Processes that draw the desktop itself: closing them is not advice anyone can follow; they are
# named in the gpu_shared verdict, and apps on top of them are what the user can close.
DESKTOP_PROCESS_NAMES = {
    "xorg", "x", "xwayland", "gnome-shell", "kwin_x11", "kwin_wayland", "kwin", "plasmashell",
    "sway", "hyprland", "weston", "mutter", "cinnamon", "xfwm4", "dwm", "csrss", "explorer",
    "winlogon", "systemsettings", "searchhost", "startmenuexperiencehost", "shellexperiencehost",
    "textinputhost", "lockapp",
}

# Finding codes of other probes that also establish an environment change when the data behind
# them is missing (older reports); the data is read first.
FINDING_CODES = {
    "launch_blocking": ("CUDA_LAUNCH_BLOCKING_ON",),
    "gpu_shared": ("GPU_SHARED_WITH_DISPLAY", "GPU_SHARED_WITH_APP", "GPU_SHARED_WITH_APPS", "GPU_SHARED"),
    "persistence": ("PERSISTENCE_MODE_OFF",),
    "throttle": ("GPU_THROTTLED", "CLOCKS_THROTTLED", "GPU_CLOCKS_THROTTLED"),
    # Not PCIE_LINK_BELOW_MAX: an idle link downtrains; only a reading under load (or a slot limit) counts.
    "pcie": ("PCIE_LINK_DEGRADED", "PCIE_LINK_DOWNGRADED", "PCIE_SLOT_LIMITS_CARD"),
}

CAUSES = ("gil_contention", "context_switch", "worker_memory", "pcie_bandwidth", "host_sync_idle",
          "gpu_shared", "driver_model")
CUDA_PROBES = ("launch", "contention", "pcie")


# ------------------------------------------------------------------------------ safe access

def _get(obj: Any, *keys: Any) -> Any:
    """obj[k1][k2]...; None as soon as a key or index is missing or the shape is wrong."""
    for k in keys:
        if isinstance(k, int) and not isinstance(k, bool):
            if not isinstance(obj, list) or not -len(obj) <= k < len(obj):
                return None
        elif not isinstance(obj, dict) or k not in obj:
            return None
        obj = obj[k]
    return obj


def _num(x: Any) -> Optional[float]:
    """A finite number, or None (bools, strings such as "n/a", NaN and None are not numbers)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _int(x: Any) -> Optional[int]:
    n = _num(x)
    return int(n) if n is not None and n == int(n) else None


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def _str(x: Any) -> Optional[str]:
    return x if isinstance(x, str) and x else None


def path(*parts: Any) -> str:
    """('probes', 'cycle', 'data', 'strategies', 3, 'cycles_per_s') -> probes.cycle.data.strategies[3].cycles_per_s"""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def evidence(claim: str, value: Any, unit: Optional[str], source: str) -> dict:
    return {"claim": claim, "value": value, "unit": unit, "source": source}


def _probe(report: dict, name: str) -> dict:
    return _dict(_get(report, "probes", name))


def _data(report: dict, name: str) -> dict:
    """A probe's data when it ran to the end (status ok); {} otherwise."""
    res = _probe(report, name)
    return _dict(res.get("data")) if res.get("status") == "ok" else {}


def not_run_reason(report: dict, name: str) -> str:
    """Why a probe gave no data, in words: 'the pcie probe was skipped: no CUDA device ...'."""
    res = _probe(report, name)
    status = res.get("status")
    why = _str(res.get("reason"))
    if not res:
        return f"the {name} probe is not in this report"
    if status == "skipped":
        return f"the {name} probe was skipped" + (f": {why}" if why else "")
    if status == "failed":
        return f"the {name} probe failed" + (f": {why}" if why else "")
    if status == "ok":
        return f"the {name} probe ran but did not record this"
    return f"the {name} probe has no usable result (status {status!r})"


# ------------------------------------------------------------------------------ formatting

def fmt_rate(x: Optional[float]) -> str:
    """Three significant figures without exponent: 41.3, 22.0, 165, 0.0452."""
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n/a"
    if abs(n) >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def fmt_pct(fraction: Optional[float]) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.0f} %"


def _base_name(name: Any) -> str:
    """'/usr/share/code/code' -> 'code'; 'C:\\...\\Code.exe' -> 'Code.exe'."""
    s = str(name or "?")
    return s.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or s


def link_text(gen: Optional[float], width: Optional[float]) -> str:
    """'Gen3 x16', 'Gen3', 'x8' or 'the link' from whatever of the two is known."""
    parts = ([f"Gen{gen:.0f}"] if gen is not None else []) + ([f"x{width:.0f}"] if width is not None else [])
    return " ".join(parts) or "the link"


def _is_desktop_process(name: str) -> bool:
    n = _base_name(name).lower()
    n = n.removesuffix(".exe")
    return n in DESKTOP_PROCESS_NAMES


def _verdict(cause: str, verdict: str, summary: str, reason: str = "",
             figures: Optional[dict] = None, sources: Optional[dict] = None) -> dict:
    return {"cause": cause, "verdict": verdict, "summary": summary, "reason": reason,
            "figures": figures or {}, "sources": sources or {}}


class _Figures:
    """Collects figures and, for those read straight from the report, the path they came from."""

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {}
        self.sources: Dict[str, str] = {}

    def read(self, name: str, report: dict, *keys: Any, kind=_num) -> Any:
        value = kind(_get(report, *keys))
        self.values[name] = value
        if value is not None:
            self.sources[name] = path(*keys)
        return value

    def put(self, name: str, value: Any) -> Any:
        """A derived figure (computed from others): no source path of its own."""
        self.values[name] = value
        return value


def _findings_with(report: dict, codes) -> List[Tuple[str, int, dict]]:
    out = []
    for pname, res in _dict(report.get("probes")).items():
        for i, f in enumerate(_list(_dict(res).get("findings"))):
            if isinstance(f, dict) and f.get("code") in codes:
                out.append((pname, i, f))
    return out


# ------------------------------------------------------------------------------ the tournament

def strategy_rows(report: dict) -> List[dict]:
    """The cycle probe's strategy rows, each with its index (for source paths) and parsed numbers."""
    rows = []
    for i, row in enumerate(_list(_get(_data(report, "cycle"), "strategies"))):
        if not isinstance(row, dict) or not _str(row.get("name")):
            continue
        rows.append({
            "index": i, "name": row["name"], "status": _str(row.get("status")),
            "reason": _str(row.get("reason")) or "", "workers": _int(row.get("workers")),
            "cycles_per_s": _num(row.get("cycles_per_s")),
            "speedup_vs_serial": _num(row.get("speedup_vs_serial")),
            "gpu_busy_fraction": _num(row.get("gpu_busy_fraction")),
        })
    return rows


def _row_path(row: dict, key: str) -> str:
    return path("probes", "cycle", "data", "strategies", row["index"], key)


def cycle_device(report: dict) -> Optional[str]:
    """'cuda' or 'cpu' (what the tournament ran on), None when unknown."""
    dev = _str(_get(_data(report, "cycle"), "workload", "device"))
    if dev is None:
        return None
    return "cuda" if dev.lower().startswith("cuda") else dev.lower()


def gpu_questions_answered(report: dict) -> bool:
    """True when a GPU was actually exercised: the cycle ran on CUDA or a CUDA probe measured."""
    return cycle_device(report) == "cuda" or any(_probe(report, p).get("status") == "ok" for p in CUDA_PROBES)


def memory_limits(report: dict) -> dict:
    """Per-worker memory, the budget and how many workers fit, with the paths they came from."""
    fig = _Figures()
    g = ("probes", "gil", "data", "memory")
    mem_ok = bool(_data(report, "gil"))  # a failed gil probe's figures are not used

    def r(name, *keys):
        return fig.read(name, report, *keys) if mem_ok else fig.put(name, None)

    r("per_worker_host_bytes", *g, "per_worker_host_bytes")
    r("per_worker_device_bytes", *g, "per_worker_device_bytes")
    r("budget_host_bytes", *g, "budget_host_bytes")
    r("budget_device_bytes", *g, "budget_device_bytes")
    r("fits_threads", *g, "fits", "threads")
    r("fits_processes", *g, "fits", "processes")
    v = fig.values
    if v["budget_host_bytes"] is None and _data(report, "system"):
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


def _pick(eligible: List[dict]) -> Tuple[Optional[dict], Optional[dict]]:
    """(chosen row, fastest row): the fastest, unless a simpler one is within NOISE_MARGIN_FRACTION."""
    if not eligible:
        return None, None
    fastest = max(eligible, key=lambda r: r["cycles_per_s"])
    near = [r for r in eligible if r["cycles_per_s"] >= fastest["cycles_per_s"] * (1 - NOISE_MARGIN_FRACTION)]

    def simplicity(r):
        rank = SIMPLICITY.index(r["name"]) if r["name"] in SIMPLICITY else len(SIMPLICITY)
        return (rank, r["workers"] or 1, -r["cycles_per_s"])

    return min(near, key=simplicity), fastest


def _label(name: str, workers: Optional[int]) -> str:
    if name in ("threads", "processes") and workers:
        return f"{name} with {workers} worker{'s' if workers != 1 else ''}"
    if name == "streams" and workers:
        return f"streams ({workers} cycles in flight)"
    if name in ("batched", "deferred_sync") and workers and workers > 1:
        return f"{name} (K={workers})"
    return name


def _slower_by(row: dict, best: dict) -> str:
    pct = 100 * (1 - row["cycles_per_s"] / best["cycles_per_s"])
    return (f"slower by {pct:.1f} % ({fmt_rate(row['cycles_per_s'])} against "
            f"{fmt_rate(best['cycles_per_s'])} cycles/s)")


# ------------------------------------------------------------------------------ verdicts

def verdict_gil_contention(report: dict) -> dict:
    """Do threads lose to processes on GIL-holding work? From the gil probe's scaling rows."""
    cause = "gil_contention"
    gil = _data(report, "gil")
    if not gil:
        return _verdict(cause, "not_measured", "The GIL was not measured.",
                        not_run_reason(report, "gil") + "; threads vs processes scaling needs it")
    fig = _Figures()
    rows = _list(gil.get("scaling"))
    by = {}  # (workload, mode, workers) -> index
    for i, row in enumerate(rows):
        if isinstance(row, dict) and _int(row.get("workers")) and _num(row.get("speedup")) is not None:
            by[(_str(row.get("workload")), _str(row.get("mode")), _int(row.get("workers")))] = i
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
    fig.read("gil_enabled", report, "probes", "gil", "data", "python", "gil_enabled", kind=_bool)
    fig.read("free_threaded_build", report, "probes", "gil", "data", "python", "free_threaded_build", kind=_bool)
    if not found:
        return _verdict(cause, "not_measured", "The gil probe recorded no threads-vs-processes pair "
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
        return _verdict(cause, "not_measured",
                        f"Processes did not scale either ({p:.2f}x with {n} workers on {what}), so the GIL's "
                        f"cost cannot be told apart from a lack of free cores here." + tail,
                        f"processes reached only {p:.2f}x with {n} workers (need {PARALLEL_HEADROOM_MIN_SPEEDUP}x "
                        f"to tell): too few free cores", fig.values, fig.sources)
    if ratio is not None and ratio < GIL_THREAD_TO_PROCESS_RATIO_MAX:
        return _verdict(cause, "supported",
                        f"GIL-bound: {n} threads run {what} {t:.2f}x as fast as 1 thread, {n} processes "
                        f"{p:.2f}x." + tail, rule, fig.values, fig.sources)
    return _verdict(cause, "refuted",
                    f"Threads scale like processes on {what} ({t:.2f}x vs {p:.2f}x with {n} workers): "
                    f"the GIL does not hold threads back here." + tail, rule, fig.values, fig.sources)


def _bool(x: Any) -> Optional[bool]:
    return x if isinstance(x, bool) else None


def verdict_context_switch(report: dict) -> dict:
    """Do processes sharing the GPU lose time to context switches? From the contention probe."""
    cause = "context_switch"
    con = _data(report, "contention")
    if not con:
        return _verdict(cause, "not_measured", "CUDA context-switch cost was not measured.",
                        not_run_reason(report, "contention") + "; it needs a CUDA device")
    fig = _Figures()
    base = ("probes", "contention", "data", "processes")
    best = None
    for i, row in enumerate(_list(con.get("processes"))):
        w = _int(_get(row, "workers"))
        has = _num(_get(row, "overhead_fraction")) is not None or _num(_get(row, "stretch")) is not None
        if w and w > 1 and has and (best is None or w > best[1]):
            best = (i, w)
    fig.read("mps_active", report, "probes", "contention", "data", "mps_active", kind=_bool)
    if best is None:
        return _verdict(cause, "not_measured", "The contention probe recorded no multi-process row.",
                        "no processes row with 2+ workers and a measured stretch", fig.values, fig.sources)
    i, w = best
    fig.put("workers", w)
    stretch = fig.read("stretch", report, *base, i, "stretch")
    over = fig.read("overhead_fraction", report, *base, i, "overhead_fraction")
    if over is None and stretch:
        over = fig.put("overhead_fraction", round(1 - 1 / stretch, 4))
    cost = fig.read("switch_cost_us_est", report, *base, i, "switch_cost_us_est")
    slice_ms = fig.read("timeslice_ms_est", report, *base, i, "timeslice_ms_est")
    for j, row in enumerate(_list(con.get("threads"))):
        if _int(_get(row, "workers")) == w:
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
        return _verdict(cause, "supported", detail + ": context switching costs real time here; "
                        "prefer one process (threads, streams, graphs) driving the GPU.", rule,
                        fig.values, fig.sources)
    return _verdict(cause, "refuted", detail + ": context switching costs little here.", rule,
                    fig.values, fig.sources)


def verdict_worker_memory(report: dict, limits: Optional[dict] = None) -> dict:
    """Would the workers the user (or the tournament) wants fit in memory; were processes OOM-killed?"""
    cause = "worker_memory"
    limits = limits or memory_limits(report)
    fig = _Figures()
    fig.values.update(limits["values"])
    fig.sources.update(limits["sources"])
    mem = ("probes", "system", "data", "memory")
    sys_ok = bool(_data(report, "system"))
    for name in ("oom_kills_since_boot", "cgroup_oom_kills"):
        fig.read(name, report, *mem, name) if sys_ok else fig.put(name, None)
    v = fig.values
    # How many workers are at stake: the most the tournament tried, else gil's largest, else cores.
    wanted, wanted_src = None, None
    for r in strategy_rows(report):
        if r["name"] == "processes" and r["workers"] and (wanted is None or r["workers"] > wanted):
            wanted, wanted_src = r["workers"], _row_path(r, "workers")
    if wanted is None:
        for i, row in enumerate(_list(_get(_data(report, "gil"), "scaling"))):
            w = _int(_get(row, "workers"))
            if _get(row, "mode") == "processes" and w and (wanted is None or w > wanted):
                wanted, wanted_src = w, path("probes", "gil", "data", "scaling", i, "workers")
    if wanted is None and sys_ok:
        w = _int(_get(report, "probes", "system", "data", "cpu", "logical_cores"))
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
            return _verdict(cause, "supported", "Out-of-memory kills happened on this machine." + kill_text +
                            " Per-worker memory was not measured, so how many workers fit is unknown.",
                            "OOM kills recorded; per-worker figures missing ("
                            + not_run_reason(report, "gil") + ")", v, fig.sources)
        return _verdict(cause, "not_measured", "Per-worker memory was not measured.",
                        (not_run_reason(report, "gil") if not _data(report, "gil")
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
        return _verdict(cause, "supported",
                        f"OOM risk: {arithmetic}; only {int(fits)} fit." + kill_text, rule, v, fig.sources)
    return _verdict(cause, "refuted", f"Memory is not the limit: {arithmetic}; {int(fits)} fit." + kill_text,
                    rule, v, fig.sources)


def verdict_pcie_bandwidth(report: dict) -> dict:
    """Is the host<->device link slow, and does the loop spend its time in transfers?"""
    cause = "pcie_bandwidth"
    pc = _data(report, "pcie")
    fig = _Figures()
    # The share of cycle time spent copying is only known when the cycle timeline records it.
    cyc = ("probes", "cycle", "data", "idle", "serial", "transfer_fraction")
    share = fig.read("transfer_fraction_of_cycle", report, *cyc)
    if not pc:
        return _verdict(cause, "not_measured", "PCIe bandwidth was not measured.",
                        not_run_reason(report, "pcie") + "; it needs a CUDA device", fig.values, fig.sources)
    b = ("probes", "pcie", "data")
    eff = fig.read("h2d_pinned_efficiency", report, *b, "efficiency", "h2d_pinned")
    peak = fig.read("h2d_pinned_gbps", report, *b, "peak", "h2d_pinned_gbps")
    theo = fig.read("theoretical_gbps_per_direction", report, *b, "theoretical_gbps_per_direction")
    gen = fig.read("link_gen", report, *b, "link", "gen")
    width = fig.read("link_width", report, *b, "link", "width")
    gen_max = fig.read("link_gen_max", report, *b, "link", "gen_max")
    width_max = fig.read("link_width_max", report, *b, "link", "width_max")
    loaded = fig.read("link_read_under_load", report, *b, "link", "read_under_load", kind=_bool)
    degraded = bool(loaded) and ((gen is not None and gen_max is not None and gen < gen_max) or
                                 (width is not None and width_max is not None and width < width_max))
    fig.put("link_degraded", degraded)
    link = link_text(gen, width)
    if degraded:
        link += f" (capable of {link_text(gen_max, width_max)})"
    speed = (f"pinned host->device copies reach {peak:.1f} GB/s" if peak is not None else "copy speed unknown")
    if theo is not None:
        speed += f" of {theo:.1f} GB/s theoretical for {link}"
    if eff is not None:
        speed += f" ({fmt_pct(eff)})"
    if share is not None:
        rule = f"rule: supported when copies take {fmt_pct(PCIE_TRANSFER_SHARE_SUPPORTED)} or more of a cycle"
        text = f"Host<->device copies take {fmt_pct(share)} of a cycle; {speed}."
        if share >= PCIE_TRANSFER_SHARE_SUPPORTED:
            return _verdict(cause, "supported", "Transfer-bound: " + text, rule, fig.values, fig.sources)
        return _verdict(cause, "refuted", text + " Transfers are not what limits the loop.", rule,
                        fig.values, fig.sources)
    needed = ("the share of cycle time spent in host<->device copies was not measured; it needs the copy "
              "time per cycle from the cycle probe's GPU timeline (idle.serial.transfer_fraction)")
    if degraded or (eff is not None and eff < PCIE_EFFICIENCY_LOW):
        why = "the link runs below what the card supports" if degraded else \
            f"copies reach less than {fmt_pct(PCIE_EFFICIENCY_LOW)} of the link's rate"
        return _verdict(cause, "supported", f"The link underdelivers: {speed}; {why}. How much of each "
                        "cycle waits on it was not measured.",
                        f"rule: supported when the link is degraded or below {fmt_pct(PCIE_EFFICIENCY_LOW)} "
                        f"efficiency; {needed}", fig.values, fig.sources)
    return _verdict(cause, "not_measured", f"The link is healthy: {speed}. Whether the loop waits on it is open.",
                    needed, fig.values, fig.sources)


def verdict_host_sync_idle(report: dict) -> dict:
    """Does the plain loop leave the GPU idle while Python works or waits on a sync?"""
    cause = "host_sync_idle"
    cyc = _data(report, "cycle")
    if not cyc:
        return _verdict(cause, "not_measured", "GPU idle gaps were not measured.",
                        not_run_reason(report, "cycle"))
    if cycle_device(report) not in (None, "cuda"):
        return _verdict(cause, "not_measured", "The cycle ran on the CPU: there is no GPU to sit idle.",
                        f"the cycle ran on device {cycle_device(report)!r}; idle gaps need a CUDA device")
    fig = _Figures()
    t = ("probes", "cycle", "data", "idle", "serial")
    busy = fig.read("serial_busy_fraction", report, *t, "busy_fraction")
    fig.read("timeline_method", report, *t, "method", kind=_str)
    host = fig.read("host_wait_ms", report, *t, "breakdown_ms", "host_wait")
    sync = fig.read("sync_wait_ms", report, *t, "breakdown_ms", "sync_wait")
    launch = fig.read("launch_overhead_ms", report, *t, "breakdown_ms", "launch_overhead")
    fig.read("gap_count", report, *t, "gaps", "count")
    fig.read("nvml_median_percent", report, "probes", "cycle", "data", "nvml_utilization", "median_percent")
    idle = fig.put("serial_idle_fraction", round(1 - busy, 4) if busy is not None else None)
    parts = [x for x in (host, sync, launch) if x is not None]
    share = fig.put("host_and_sync_share_of_idle",
                    round(((host or 0) + (sync or 0)) / sum(parts), 4) if parts and sum(parts) > 0 else None)
    rows = {r["name"]: r for r in strategy_rows(report) if r["status"] == "ok"}
    gain = None
    d, s = rows.get("deferred_sync"), rows.get("serial")
    if d:
        gain = fig.read("deferred_sync_speedup", report, "probes", "cycle", "data", "strategies", d["index"],
                        "speedup_vs_serial")
        if gain is None and s and d["cycles_per_s"] and s["cycles_per_s"]:
            gain = fig.put("deferred_sync_speedup", round(d["cycles_per_s"] / s["cycles_per_s"], 3))
    if busy is None and gain is None:
        return _verdict(cause, "not_measured", "Neither a GPU timeline of the plain loop nor deferred_sync was "
                        "measured.", "no idle.serial timeline and no deferred_sync row; "
                        + _strategy_reason(report, "deferred_sync"), fig.values, fig.sources)
    bits = []
    if busy is not None:
        bits.append(f"the plain loop keeps the GPU busy {fmt_pct(busy)} of the time")
    if parts:
        bits.append(f"idle time splits into host wait {host or 0:.0f} ms, sync wait {sync or 0:.0f} ms and "
                    f"launch overhead {launch or 0:.0f} ms")
    if gain is not None:
        bits.append(f"syncing once every few cycles (deferred_sync) runs {gain:.2f}x the plain loop")
    nv = fig.values.get("nvml_median_percent")
    if nv is not None:
        bits.append(f"NVML showed {nv:.0f} % utilisation (what nvidia-smi would show)")
    text = "; ".join(bits) + "."
    rule = (f"rule: supported when idle >= {fmt_pct(HOST_IDLE_FRACTION_MIN)} with host+sync >= "
            f"{fmt_pct(HOST_SYNC_SHARE_MIN)} of it, or deferred_sync >= {DEFERRED_SYNC_GAIN_MIN}x")
    by_gaps = idle is not None and idle >= HOST_IDLE_FRACTION_MIN and share is not None and share >= HOST_SYNC_SHARE_MIN
    by_gain = gain is not None and gain >= DEFERRED_SYNC_GAIN_MIN
    if by_gaps or by_gain:
        return _verdict(cause, "supported", "Host round trips leave the GPU idle: " + text, rule,
                        fig.values, fig.sources)
    note = ""
    if launch is not None and parts and launch / sum(parts) >= 0.5:
        note = " Most idle time is launch overhead: fewer, larger launches (CUDA graphs, batching) address that."
    return _verdict(cause, "refuted", text[0].upper() + text[1:] + note, rule, fig.values, fig.sources)


def _strategy_reason(report: dict, name: str) -> str:
    for r in strategy_rows(report):
        if r["name"] == name:
            return f"{name} {r['status']}" + (f": {r['reason']}" if r["reason"] else "")
    return f"no {name} row in the cycle probe"


def gpu_processes(report: dict) -> Tuple[Optional[List[dict]], List[str]]:
    """Other processes on the GPU(s) from the driver probe: (list or None when unreadable, sources)."""
    drv = _data(report, "driver")
    found, readable, sources = [], False, []
    for gi, gpu in enumerate(_list(drv.get("gpus"))):
        for kind in ("graphics", "compute"):
            procs = _get(gpu, "processes", kind)
            if not isinstance(procs, list):
                continue
            readable = True
            for pi, p in enumerate(procs):
                if not isinstance(p, dict):
                    continue
                found.append({"gpu": _get(gpu, "index") if _int(_get(gpu, "index")) is not None else gi,
                              "kind": kind, "name": _base_name(p.get("name")),
                              "used_memory_bytes": _num(p.get("used_memory_bytes"))})
                sources.append(path("probes", "driver", "data", "gpus", gi, "processes", kind, pi, "name"))
    return (found if readable else None), sources


def verdict_gpu_shared(report: dict) -> dict:
    """Does another process (desktop, editor, browser, another job) use the GPU?"""
    cause = "gpu_shared"
    fig = _Figures()
    flagged = _findings_with(report, FINDING_CODES["gpu_shared"])
    if not _data(report, "driver"):
        if flagged:
            p, i, f = flagged[0]
            fig.put("finding", f.get("code"))
            fig.sources["finding"] = path("probes", p, "findings", i, "code")
            return _verdict(cause, "supported", str(f.get("message") or f.get("code")),
                            f"from finding {f.get('code')}; the driver probe's process list is missing",
                            fig.values, fig.sources)
        return _verdict(cause, "not_measured", "Other processes on the GPU were not listed.",
                        not_run_reason(report, "driver") + "; it needs the NVIDIA driver (NVML)")
    procs, _ = gpu_processes(report)
    fig.put("processes", procs)
    for gi, gpu in enumerate(_list(_data(report, "driver").get("gpus"))):
        if _num(_get(gpu, "utilization_gpu_percent")) is not None:
            fig.read(f"gpu{gi}_utilization_percent", report, "probes", "driver", "data", "gpus", gi,
                     "utilization_gpu_percent")
    nv = fig.read("nvml_median_percent", report, "probes", "cycle", "data", "nvml_utilization", "median_percent")
    if procs is None and not flagged:
        return _verdict(cause, "not_measured", "NVML gave no process list for this GPU.",
                        "the driver probe recorded no process list: NVML did not give one (common under WSL2) "
                        "or the report is from an older gpudiag; on Windows, Task Manager's GPU column shows them",
                        fig.values, fig.sources)
    if not procs and not flagged:
        return _verdict(cause, "refuted", "No other process held the GPU when gpudiag looked.",
                        "NVML listed no graphics or compute processes", fig.values, fig.sources)
    names = ", ".join(f"{p['name']} ({p['kind']}"
                      + (f", {fmt_bytes(p['used_memory_bytes'])}" if p["used_memory_bytes"] is not None else "")
                      + ")" for p in (procs or []))
    apps = [p for p in (procs or []) if p["kind"] == "compute" or not _is_desktop_process(p["name"])]
    text = f"The GPU is shared: {names}." if names else str(flagged[0][2].get("message") or "The GPU is shared.")
    if procs and not apps:
        text += " Only the desktop itself draws on it: it costs display refreshes, little compute."
    if nv is not None:
        text += f" NVML showed {nv:.0f} % utilisation during the plain loop."
    return _verdict(cause, "supported", text, "rule: supported when NVML lists any other process on the GPU",
                    fig.values, fig.sources)


def verdict_driver_model(report: dict) -> dict:
    """Does the driver model (WDDM, incl. WSL2) add launch latency here?"""
    cause = "driver_model"
    drv, launch = _data(report, "driver"), _data(report, "launch")
    fig = _Figures()
    model, model_src = None, None
    for gi, gpu in enumerate(_list(drv.get("gpus"))):
        m = _str(_get(gpu, "driver_model", "current"))
        if m and m.lower() != "n/a":
            model, model_src = m.upper(), path("probes", "driver", "data", "gpus", gi, "driver_model", "current")
            break
    fig.put("driver_model", model)
    if model_src:
        fig.sources["driver_model"] = model_src
    wsl = fig.read("wsl", report, "probes", "system", "data", "os", "wsl", kind=_int)
    os_name = fig.read("os", report, "probes", "system", "data", "os", "name", kind=_str)
    lo = fig.read("launch_overhead_us_median", report, "probes", "launch", "data", "launch_overhead_us", "median")
    fig.read("sync_latency_us_median", report, "probes", "launch", "data", "sync_latency_us", "median")
    gs = fig.read("graph_speedup", report, "probes", "launch", "data", "graph", "speedup")
    fig.read("hags_enabled", report, "probes", "driver", "data", "windows", "hags", "enabled", kind=_bool)
    if not drv and not launch:
        return _verdict(cause, "not_measured", "The driver model and launch latency were not measured.",
                        not_run_reason(report, "driver") + "; " + not_run_reason(report, "launch"),
                        fig.values, fig.sources)
    wddm = model == "WDDM" or wsl == 2
    lo_text = f"launch overhead {lo:.1f} us per kernel" if lo is not None else ""
    graph = f"; CUDA graphs measured {gs:.2f}x on small ops" if gs is not None else ""
    rule = f"rule: supported when WDDM (or WSL2) and launch overhead >= {WDDM_LAUNCH_OVERHEAD_US:g} us"
    if wddm:
        where = "WSL2 (a paravirtualised WDDM device)" if wsl == 2 else "WDDM"
        if lo is None:
            return _verdict(cause, "not_measured", f"The GPU runs under {where}, but launch latency was not "
                            "measured.", not_run_reason(report, "launch"), fig.values, fig.sources)
        if lo >= WDDM_LAUNCH_OVERHEAD_US:
            return _verdict(cause, "supported", f"{where} adds latency: {lo_text}{graph}. Fewer, larger "
                            "launches (CUDA graphs, batching) hide it; a compute-only card can use MCDM/TCC.",
                            rule, fig.values, fig.sources)
        return _verdict(cause, "refuted", f"The GPU runs under {where}, but {lo_text} is low: the driver "
                        "model is not what limits.", rule, fig.values, fig.sources)
    if model in ("TCC", "WDM", "MCDM"):
        return _verdict(cause, "refuted", f"The GPU runs in {model} (compute driver model, no WDDM "
                        f"batching)" + (f"; {lo_text}" if lo_text else "") + ".", rule, fig.values, fig.sources)
    linux_module = bool(_str(_get(drv, "kernel_module", "flavour")) or _str(_get(drv, "kernel_module", "version")))
    if (os_name == "Linux" and not wsl) or (os_name is None and not wsl and linux_module):
        text = "Native Linux driver: no WDDM layer is involved"
        if lo is not None and lo >= LAUNCH_BOUND_OVERHEAD_US:
            text += (f"; {lo_text} is high, but that is per-op dispatch cost, not the driver model{graph}")
        elif lo_text:
            text += f"; {lo_text}"
        return _verdict(cause, "refuted", text + ".", rule, fig.values, fig.sources)
    return _verdict(cause, "not_measured", "The driver model could not be determined.",
                    "no driver model reported and the OS is not native Linux", fig.values, fig.sources)


VERDICTS = (
    ("gil_contention", verdict_gil_contention),
    ("context_switch", verdict_context_switch),
    ("worker_memory", verdict_worker_memory),
    ("pcie_bandwidth", verdict_pcie_bandwidth),
    ("host_sync_idle", verdict_host_sync_idle),
    ("gpu_shared", verdict_gpu_shared),
    ("driver_model", verdict_driver_model),
)


# ------------------------------------------------------------------------------ environment

def environment_changes(report: dict) -> List[dict]:
    """Changes to the machine's setup that the report's data (or another probe's finding) supports."""
    out: List[dict] = []

    def from_finding(key: str):
        hits = _findings_with(report, FINDING_CODES[key])
        if not hits:
            return None
        p, i, f = hits[0]
        return f, [evidence(str(f.get("message") or f.get("code")), f.get("code"), None,
                            path("probes", p, "findings", i, "code"))]

    # CUDA_LAUNCH_BLOCKING=1: every launch waits for its kernel; a debugging switch left on.
    clb = _str(_get(_data(report, "system"), "env", "CUDA_LAUNCH_BLOCKING"))
    if clb is not None and clb.strip() not in ("", "0"):
        out.append({"code": "UNSET_CUDA_LAUNCH_BLOCKING",
                    "change": f"Unset CUDA_LAUNCH_BLOCKING (it is {clb.strip()}): every kernel launch then waits "
                              "for the kernel to finish, which serialises the GPU; it is a debugging switch.",
                    "evidence": [evidence("CUDA_LAUNCH_BLOCKING is set", clb, None,
                                          path("probes", "system", "data", "env", "CUDA_LAUNCH_BLOCKING"))]})
    elif clb is None and from_finding("launch_blocking"):
        f, ev = from_finding("launch_blocking")
        out.append({"code": "UNSET_CUDA_LAUNCH_BLOCKING",
                    "change": str(f.get("fix") or "Unset CUDA_LAUNCH_BLOCKING: it serialises every kernel launch."),
                    "evidence": ev})

    # Other processes on the GPU: desktop apps and other compute jobs can be closed; the compositor can't.
    procs, srcs = gpu_processes(report)
    closable = [(p, s) for p, s in zip(procs or [], srcs)
                if p["kind"] == "compute" or not _is_desktop_process(p["name"])]
    if closable:
        names = sorted({p["name"] for p, _ in closable})
        out.append({"code": "CLOSE_GPU_APPS",
                    "change": f"Close {', '.join(names)} (or turn off their hardware acceleration) while the run "
                              "goes: they share the GPU with it.",
                    "evidence": [evidence(f"{p['name']} holds GPU {p['gpu']} ({p['kind']})",
                                          _get(report, *_split(s)), None, s) for p, s in closable]})
    elif procs is None and from_finding("gpu_shared"):
        f, ev = from_finding("gpu_shared")
        out.append({"code": "CLOSE_GPU_APPS", "change": str(f.get("fix") or f.get("message")), "evidence": ev})

    gpus = _list(_get(_data(report, "driver"), "gpus"))
    os_name = _str(_get(_data(report, "system"), "os", "name"))
    wsl = _int(_get(_data(report, "system"), "os", "wsl"))
    # Persistence mode (Linux only): off, the driver tears down and re-initialises the GPU whenever
    # no client holds it, which every new worker process then pays for.
    pm_ev = [evidence(f"GPU {gi} persistence mode is off", False, None,
                      path("probes", "driver", "data", "gpus", gi, "persistence_mode"))
             for gi, g in enumerate(gpus) if _get(g, "persistence_mode") is False]
    if pm_ev and os_name in (None, "Linux") and not wsl:
        out.append({"code": "ENABLE_PERSISTENCE_MODE",
                    "change": "Turn persistence mode on (`sudo nvidia-smi -pm 1`, or enable nvidia-persistenced) "
                              "so each new worker process does not pay for driver initialisation.",
                    "evidence": pm_ev})
    elif not gpus and from_finding("persistence"):
        f, ev = from_finding("persistence")
        out.append({"code": "ENABLE_PERSISTENCE_MODE", "change": str(f.get("fix") or f.get("message")),
                    "evidence": ev})

    # Clocks held down by heat or power.
    th_ev = []
    for gi, g in enumerate(gpus):
        active = _list(_get(g, "clock_event_reasons", "active"))
        bad = [a for a in active if isinstance(a, str) and any(w in a.lower() for w in THROTTLE_REASON_WORDS)]
        if bad:
            th_ev.append(evidence(f"GPU {gi} clocks held down by {', '.join(bad)}", active, None,
                                  path("probes", "driver", "data", "gpus", gi, "clock_event_reasons", "active")))
    if th_ev:
        out.append({"code": "FIX_GPU_THROTTLING",
                    "change": "The GPU's clocks are held down by power or temperature: plug the laptop in, use a "
                              "performance power profile, improve cooling, then measure again.",
                    "evidence": th_ev})
    elif not gpus and from_finding("throttle"):
        f, ev = from_finding("throttle")
        out.append({"code": "FIX_GPU_THROTTLING", "change": str(f.get("fix") or f.get("message")), "evidence": ev})

    # A link below what card and slot support, read while a copy ran (idle links downtrain).
    pv = verdict_pcie_bandwidth(report)["figures"]
    if pv.get("link_degraded"):
        b = ("probes", "pcie", "data", "link")
        out.append({"code": "FIX_PCIE_LINK",
                    "change": f"The PCIe link runs at {link_text(pv['link_gen'], pv['link_width'])} under load "
                              f"but supports {link_text(pv['link_gen_max'], pv['link_width_max'])}: reseat the card, "
                              "move it to a full-width slot, check BIOS PCIe settings and risers.",
                    "evidence": [
                        evidence("link generation under load", _get(report, *b, "gen"), None, path(*b, "gen")),
                        evidence("link width under load", _get(report, *b, "width"), "lanes", path(*b, "width"))]})
    elif from_finding("pcie") and not _data(report, "pcie"):
        f, ev = from_finding("pcie")
        out.append({"code": "FIX_PCIE_LINK", "change": str(f.get("fix") or f.get("message")), "evidence": ev})
    return out


def _split(p: str) -> List[Any]:
    """Inverse of path(): 'a.b[2].c' -> ['a', 'b', 2, 'c']."""
    keys: List[Any] = []
    for part in p.split("."):
        name, _, rest = part.partition("[")
        if name:
            keys.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            keys.append(int(idx))
            rest = rest.removeprefix("[")
    return keys


# ------------------------------------------------------------------------------ the recommendation

def recommend(report: Any) -> dict:
    """report dict -> the `recommendation` object of docs/report-contract.md. Never raises on missing data."""
    report = report if isinstance(report, dict) else {}
    rows = strategy_rows(report)
    limits = memory_limits(report)
    device = cycle_device(report)
    answered = gpu_questions_answered(report)

    eligible, runners, fit_notes = [], [], {}
    for r in rows:
        if r["status"] != "ok":
            continue
        if r["cycles_per_s"] is None or r["cycles_per_s"] <= 0:
            continue
        fits, why = worker_fit(r["name"], r["workers"], limits)
        fit_notes[r["index"]] = why
        if fits is False:
            continue
        eligible.append(r)
    chosen, fastest = _pick(eligible)
    serial = next((r for r in rows if r["name"] == "serial" and r["status"] == "ok" and r["cycles_per_s"]), None)

    ev: List[dict] = []
    speedup = None
    if chosen:
        ev.append(evidence(f"{_label(chosen['name'], chosen['workers'])} ran {fmt_rate(chosen['cycles_per_s'])} "
                           "cycles/s", _get(report, *_split(_row_path(chosen, "cycles_per_s"))), "cycles/s",
                           _row_path(chosen, "cycles_per_s")))
        if serial and serial is not chosen:
            ev.append(evidence(f"the plain loop (serial) ran {fmt_rate(serial['cycles_per_s'])} cycles/s",
                               _get(report, *_split(_row_path(serial, "cycles_per_s"))), "cycles/s",
                               _row_path(serial, "cycles_per_s")))
        if chosen["speedup_vs_serial"] is not None:
            speedup = chosen["speedup_vs_serial"]
            ev.append(evidence(f"{chosen['name']} is {speedup:.2f}x the plain loop",
                               _get(report, *_split(_row_path(chosen, "speedup_vs_serial"))), "x",
                               _row_path(chosen, "speedup_vs_serial")))
        elif serial:
            speedup = round(chosen["cycles_per_s"] / serial["cycles_per_s"], 3)
        if chosen["name"] in ("threads", "processes"):
            key = "fits_" + chosen["name"]
            if key in limits["sources"]:
                n = limits["values"][key]
                kind = "process" if chosen["name"] == "processes" else "thread"
                ev.append(evidence(f"{int(n)} {kind} workers fit in memory", _get(report, *_split(
                    limits["sources"][key])), "workers", limits["sources"][key]))
        for r in ([serial] if serial is not chosen else []) + [chosen]:
            if r and r["gpu_busy_fraction"] is not None:
                ev.append(evidence(f"{r['name']} kept the GPU busy {fmt_pct(r['gpu_busy_fraction'])} of the time",
                                   _get(report, *_split(_row_path(r, "gpu_busy_fraction"))), "fraction",
                                   _row_path(r, "gpu_busy_fraction")))
        if device:
            ev.append(evidence(f"the cycle workload ran on {device}",
                               _get(report, "probes", "cycle", "data", "workload", "device"), None,
                               path("probes", "cycle", "data", "workload", "device")))

    # Runners-up: every other row, and why it lost.
    for r in rows:
        if r is chosen:
            continue
        entry = {"strategy": r["name"], "workers": r["workers"], "cycles_per_s": r["cycles_per_s"],
                 "status": r["status"]}
        if r["status"] != "ok":
            entry["why_not"] = f"{r['status'] or 'no status'}: {r['reason'] or 'no reason recorded'}"
        elif r["cycles_per_s"] is None or r["cycles_per_s"] <= 0:
            entry["why_not"] = "no cycles/s recorded"
        elif r not in eligible:
            entry["why_not"] = fit_notes.get(r["index"]) or "does not fit in memory"
            if chosen and r["cycles_per_s"] > chosen["cycles_per_s"]:
                entry["why_not"] = (f"fastest measured ({fmt_rate(r['cycles_per_s'])} cycles/s) but "
                                    + entry["why_not"])
        elif chosen and r["cycles_per_s"] >= chosen["cycles_per_s"]:
            pct = 100 * (r["cycles_per_s"] / chosen["cycles_per_s"] - 1)
            entry["why_not"] = (f"only {pct:.1f} % faster than {chosen['name']}, within the "
                                f"{fmt_pct(NOISE_MARGIN_FRACTION)} noise margin; {chosen['name']} is simpler")
        else:
            entry["why_not"] = _slower_by(r, chosen)
        runners.append(entry)
    order = {"ok": 0}
    runners.sort(key=lambda e: (order.get(e["status"], 1), -(e["cycles_per_s"] or 0)))

    verdicts = []
    for _cause, fn in VERDICTS:
        verdicts.append(fn(report, limits) if fn is verdict_worker_memory else fn(report))

    gpu_note = "" if answered else (" GPU questions were not answered here: no CUDA device was measured "
                                    "(the verdicts say why).")
    where = "On this machine" if device in (None, "cuda") else "On this machine's CPU (the cycle ran without a GPU)"
    if chosen:
        rule = "fastest measured"
        if fastest is not chosen:
            rule = (f"simplest within {fmt_pct(NOISE_MARGIN_FRACTION)} of the fastest "
                    f"({_label(fastest['name'], fastest['workers'])}, {fmt_rate(fastest['cycles_per_s'])} cycles/s)")
        if chosen["name"] == "serial":
            best_other = max((r for r in eligible if r is not chosen), key=lambda r: r["cycles_per_s"], default=None)
            headline = (f"{where}, keep the plain loop (serial): measured {fmt_rate(chosen['cycles_per_s'])} cycles/s"
                        + (f"; the best alternative, {_label(best_other['name'], best_other['workers'])}, ran "
                           f"{fmt_rate(best_other['cycles_per_s'])}."
                           if best_other else "; nothing else was measured."))
        elif serial:
            headline = (f"{where}, use {_label(chosen['name'], chosen['workers'])}: measured "
                        f"{fmt_rate(chosen['cycles_per_s'])} cycles/s against {fmt_rate(serial['cycles_per_s'])} "
                        f"for the plain loop ({speedup:.2f}x).")
        else:
            headline = (f"{where}, use {_label(chosen['name'], chosen['workers'])}: measured "
                        f"{fmt_rate(chosen['cycles_per_s'])} cycles/s; the plain loop was not measured ("
                        f"{_strategy_reason(report, 'serial')}), so there is no speedup figure.")
    else:
        rule = None
        if not _data(report, "cycle"):
            why = not_run_reason(report, "cycle")
        elif not rows:
            why = "the cycle probe recorded no strategies"
        elif any(r["status"] == "ok" and r["cycles_per_s"] for r in rows):
            why = "every strategy measured needs more memory than this machine has for its workers"
        else:
            why = "no strategy finished its measurement"
        headline = f"No strategy to recommend: {why}."
    return {
        "strategy": chosen["name"] if chosen else None,
        "workers": chosen["workers"] if chosen else None,
        "cycles_per_s": chosen["cycles_per_s"] if chosen else None,
        "serial_cycles_per_s": serial["cycles_per_s"] if serial else None,
        "speedup": speedup,
        "device": device,
        "choice_rule": rule,
        "headline": headline + gpu_note,
        "evidence": ev,
        "runners_up": runners,
        "environment_changes": environment_changes(report),
        "verdicts": verdicts,
        "gpu_questions_answered": answered,
    }
