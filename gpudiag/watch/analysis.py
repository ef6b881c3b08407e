"""From raw samples to `probes.watch.data`: gil, memory, cpu, gpu and input_wait sections.

Pure functions over plain lists and dicts (what the samplers collected), so every figure is
tested on literal samples. Units live in field names; a figure that could not be measured is
None with a `reason`, never a default. Docs: docs/watch.md.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from gpudiag.backends.nvml import THROTTLING_REASONS, decode_clock_event_reasons
from gpudiag.measure.stats import percentile, summarize
from gpudiag.watch import growth as growth_mod
from gpudiag.watch.pyspy import HOLDS, RUNS, WAITS

# A thread "wants" the GIL when it holds it or waits for it in at least this share of samples.
WANTS_GIL_MIN_FRACTION = 0.2
# Series kept in the report for charts (the analysis uses every sample).
MAX_SERIES_POINTS = 240
MAX_TIMELINE_SAMPLES = 600
MAX_GAPS_LISTED = 8


def part(status: str, reason: str = "", **data: Any) -> Dict[str, Any]:
    """A report part {status, reason, **data}: every section of probes.watch.data has this shape,
    so views and verdicts look at `status` alone."""
    return dict({"status": status, "reason": reason}, **data)


def _ratio(a: float, b: float) -> Optional[float]:
    """a / b, or None when b is 0: a share of zero samples is unmeasured, not 0."""
    return a / b if b else None


# ------------------------------------------------------------------ GIL

def gil_section(samples: Sequence[dict], main: Optional[dict], workers: Dict[int, Sequence[dict]],
                thread_cpu: Optional[Dict[int, float]] = None) -> Dict[str, Any]:
    """The `gil` section from the main process's dumps ([{t, native, threads: compact}]).

    main: {pid, name, label}. thread_cpu: {native thread id: CPU cores used on average} from psutil.
    """
    n = len(samples)
    if n == 0:
        return part("failed", "py-spy returned no sample of the job's Python process")
    native = [s for s in samples if s.get("native")]
    held = sum(1 for s in samples if any(t["state"] == HOLDS for t in s["threads"]))
    threads: Dict[Any, Dict[str, Any]] = {}
    wanted = contended = waiting_total = 0
    for s in samples:
        waits = sum(1 for t in s["threads"] if t["state"] == WAITS)
        holds = any(t["state"] == HOLDS for t in s["threads"])
        if s.get("native"):
            wanted += 1 if (holds or waits) else 0
            contended += 1 if (holds and waits) else 0
            waiting_total += waits
        for t in s["threads"]:
            key = t.get("id") if t.get("id") is not None else t.get("tid")
            row = threads.setdefault(key, {"name": t.get("name"), "native_id": t.get("tid"), "present": 0,
                                           "native_present": 0, "holds": 0, "waits": 0, "active": 0, "runs": 0,
                                           "native_holds": 0})
            if row["name"] is None:  # the first dumps of a starting interpreter may not name its threads yet
                row["name"] = t.get("name")
            row["present"] += 1
            row["holds"] += t["state"] == HOLDS
            row["active"] += bool(t.get("active"))
            row["runs"] += t["state"] == RUNS
            if s.get("native"):
                row["native_present"] += 1
                row["waits"] += t["state"] == WAITS
                row["native_holds"] += t["state"] == HOLDS
    rows = []
    for row in threads.values():
        wait_f = _ratio(row["waits"], row["native_present"])
        gil_f = row["holds"] / row["present"]
        rows.append({
            "name": row["name"], "native_id": row["native_id"], "samples": row["present"],
            "gil_fraction": gil_f, "active_fraction": row["active"] / row["present"],
            "gil_wait_fraction": wait_f, "runs_without_gil_fraction": row["runs"] / row["present"],
            "wants_gil_fraction": _ratio(row["native_holds"] + row["waits"], row["native_present"]),
            "cpu_cores": (thread_cpu or {}).get(row["native_id"]),
        })
    rows.sort(key=lambda r: (-(r["gil_fraction"] + (r["gil_wait_fraction"] or 0)), str(r["name"])))
    wanting = [r for r in rows if (r["wants_gil_fraction"] if r["wants_gil_fraction"] is not None
                                   else r["gil_fraction"]) >= WANTS_GIL_MIN_FRACTION]
    timeline = []
    for s in samples:
        holder = next((t.get("name") for t in s["threads"] if t["state"] == HOLDS), None)
        timeline.append({"t_s": round(s["t"], 3), "holder": holder,
                         "waiting": sum(1 for t in s["threads"] if t["state"] == WAITS) if s.get("native") else None})
    ci = growth_mod.wilson_interval(held, n)
    out = part(
        "ok", "", process=main, samples=n, native_samples=len(native),
        wait_detection="native stacks (py-spy --native)" if native else None,
        wait_detection_reason=None if native else "py-spy could not read native stacks here: waiting for the GIL "
                                                  "is not told apart from sleeping",
        held_fraction=held / n, held_ci95=list(ci) if ci else None,
        wanted_fraction=_ratio(wanted, len(native)),
        wanted_ci95=list(growth_mod.wilson_interval(wanted, len(native)) or ()) or None,
        contended_fraction=_ratio(contended, len(native)),
        contended_ci95=list(growth_mod.wilson_interval(contended, len(native)) or ()) or None,
        mean_waiting_threads=_ratio(waiting_total, len(native)),
        python_threads=len(rows), threads_wanting_gil=len(wanting),
        threads=rows, timeline=growth_mod.thin([(r["t_s"], r) for r in timeline], MAX_TIMELINE_SAMPLES),
    )
    out["timeline"] = [r for _, r in out["timeline"]]
    out["workers"] = []
    for pid, ws in workers.items():
        if ws:
            w_held = sum(1 for s in ws if any(t["state"] == HOLDS for t in s["threads"]))
            out["workers"].append({"pid": pid, "samples": len(ws), "held_fraction": w_held / len(ws)})
    return out


def input_wait_section(samples: Sequence[dict]) -> Dict[str, Any]:
    """Share of the main process's samples in which its main thread waited for a DataLoader batch, and
    the share in which it loaded batches itself (num_workers=0).

    The loading share that predicts what DataLoader workers would gain (`loading_share`) counts only the
    loop: the samples from the first to the last one in which the main thread was in the DataLoader, so
    imports and start-up before the first batch (seconds of a short job) do not dilute it.
    """
    main_states = []
    for s in samples:
        main = next((t for t in s["threads"] if t.get("name") == "MainThread"), None)
        if main is None and s["threads"]:
            main = s["threads"][-1]  # py-spy lists the main thread last
        if main is not None:
            main_states.append((s.get("t"), main.get("loader")))
    n = len(main_states)
    if n == 0:
        return part("skipped", "no sample of the job's main thread (the GIL part did not run)")
    waiting = sum(1 for _, x in main_states if x == "waiting")
    loading = sum(1 for _, x in main_states if x == "loading")
    seen = waiting + loading > 0
    ci = growth_mod.wilson_interval(waiting, n)
    out = part("ok", "" if seen else "no torch DataLoader was seen in the main thread's stack",
                loader_seen=seen, samples=n, fraction=waiting / n, ci95=list(ci) if ci else None,
                main_thread_loading_fraction=loading / n)
    in_loader = [i for i, (_, x) in enumerate(main_states) if x is not None]
    if in_loader:
        loop = main_states[in_loader[0]:in_loader[-1] + 1]
        ts = [t for t, _ in loop if isinstance(t, (int, float))]
        lci = growth_mod.wilson_interval(loading, len(loop))
        out.update(loop_samples=len(loop), loop_s=round(ts[-1] - ts[0], 3) if len(ts) >= 2 else None,
                   loading_samples=loading, loading_share=loading / len(loop),
                   loading_share_ci95=list(lci) if lci else None)
    return out


# ------------------------------------------------------------------ memory and CPU

def _metric_points(rec: dict, key: str) -> List[Tuple[float, float]]:
    """[(t_s, bytes)] of one memory metric (rss, uss or pss) over a process's samples,
    leaving out the ticks where it could not be read."""
    return [(r["t"], r[key]) for r in rec.get("samples", []) if isinstance(r.get(key), (int, float))]


def _peak(rec: dict, key: str) -> Optional[int]:
    """The largest value (bytes) of one metric over a process's samples, or None when never read."""
    vals = [r[key] for r in rec.get("samples", []) if isinstance(r.get(key), (int, float))]
    return int(max(vals)) if vals else None


def _last(rec: dict, key: str) -> Optional[int]:
    """The last value (bytes) of one metric read for a process, or None: the projection starts there."""
    vals = [r[key] for r in rec.get("samples", []) if isinstance(r.get(key), (int, float))]
    return int(vals[-1]) if vals else None


def label_processes(procs: Dict[int, dict]) -> Dict[int, str]:
    """'main', 'worker 1', 'worker 2', ... by the order they appeared; helpers and children likewise."""
    counts: Dict[str, int] = {}
    labels = {}
    for rec in sorted(procs.values(), key=lambda r: r.get("order", 0)):
        role = rec.get("role") or "child"
        counts[role] = counts.get(role, 0) + 1
        labels[rec["pid"]] = role if role in ("main", "launcher") and counts[role] == 1 else f"{role} {counts[role]}"
    return labels


def limit_from_facts(mem: Optional[dict]) -> Optional[Dict[str, Any]]:
    """The binding memory limit {limit_bytes, limit_source, headroom_bytes} from platform.memory_facts.

    RAM counts MemAvailable as headroom (in WSL2 the VM's RAM is the cap, named so); a cgroup
    counts memory.max - memory.current. The smaller headroom binds: the OOM killer fires there.
    """
    if not isinstance(mem, dict):
        return None
    cands = []
    if isinstance(mem.get("available_bytes"), int):
        src = "wsl_cap" if mem.get("wsl_memory_cap_bytes") else "ram"
        cands.append({"limit_bytes": mem.get("total_bytes"), "limit_source": src,
                      "headroom_bytes": mem["available_bytes"]})
    if isinstance(mem.get("cgroup_limit_bytes"), int) and isinstance(mem.get("cgroup_usage_bytes"), int):
        cands.append({"limit_bytes": mem["cgroup_limit_bytes"], "limit_source": "cgroup",
                      "headroom_bytes": max(0, mem["cgroup_limit_bytes"] - mem["cgroup_usage_bytes"])})
    return min(cands, key=lambda c: c["headroom_bytes"]) if cands else None


def memory_section(procs: Dict[int, dict], mem_facts: Optional[dict], denied: Dict[str, str]) -> Dict[str, Any]:
    """Per process peaks and growth; the job's total; the projection to the memory limit."""
    if not procs or not any(r.get("samples") for r in procs.values()):
        why = denied.get("memory")
        return part("skipped" if why else "failed",
                     f"the operating system refused to read the job's memory ({why})" if why
                     else "no memory sample of the job was taken (it ended before the first tick?)")
    labels = label_processes(procs)
    rows = []
    seen = [r["last_seen_s"] for r in procs.values() if r.get("samples")]
    t_end = max(seen)
    span = t_end - min(r["first_seen_s"] for r in procs.values() if r.get("samples"))
    for rec in sorted(procs.values(), key=lambda r: r.get("order", 0)):
        if not rec.get("samples"):
            continue
        metric = next((k for k in ("pss", "uss", "rss") if len(_metric_points(rec, k)) >= growth_mod.MIN_FIT_POINTS),
                      "rss")
        g = growth_mod.growth(_metric_points(rec, metric))
        rows.append({
            "pid": rec["pid"], "name": rec.get("name"), "label": labels.get(rec["pid"]), "role": rec.get("role"),
            "ppid": rec.get("ppid"), "first_seen_s": rec.get("first_seen_s"), "ended_s": rec.get("ended_s"),
            "alive": rec.get("alive"), "samples": len(rec["samples"]),
            # Still there when the watch last saw the job: a job that just ended is projected as if
            # it had gone on; a worker that finished mid-run is not.
            "present_at_end": rec["last_seen_s"] >= t_end - max(0.5, 0.05 * span),
            "peak_rss_bytes": _peak(rec, "rss"), "peak_uss_bytes": _peak(rec, "uss"), "peak_pss_bytes": _peak(rec, "pss"),
            "last_bytes": _last(rec, metric), "growth_metric": metric,
            "growth_bytes_per_s": g["growth_bytes_per_s"], "growth_ci95": g["growth_ci95"],
            "growth_window_s": g["growth_window_s"], "growth_samples": g["growth_samples"],
            "growing": g["growing"], "growth_reason": g["reason"],
            "cmdline": rec.get("cmdline"),
        })
    # The job's total at each tick: PSS where known (shared pages counted once), else RSS.
    totals: Dict[float, float] = {}
    for rec in procs.values():
        for r in rec.get("samples", []):
            v = r.get("pss") if isinstance(r.get("pss"), (int, float)) else r.get("rss")
            if isinstance(v, (int, float)):
                totals[r["t"]] = totals.get(r["t"], 0.0) + v
    total_pts = sorted(totals.items())
    projection = growth_mod.project([dict(r, alive=r["present_at_end"]) for r in rows], limit_from_facts(mem_facts))
    projection["as_of_s"] = round(t_end, 3)
    series = [{"pid": r["pid"], "label": r["label"], "metric": r["growth_metric"],
               "points": [[round(t, 3), int(b)] for t, b in growth_mod.thin(
                   _metric_points(procs[r["pid"]], r["growth_metric"]), MAX_SERIES_POINTS)]} for r in rows]
    notes = []
    if "uss" in denied:
        notes.append(f"USS/PSS were not readable ({denied['uss']}): figures are RSS, which counts shared pages "
                     "in every process")
    return part("ok", "", processes=rows, metric_note="growth is fitted on PSS where the OS gives it (shared pages "
                 "split between the processes sharing them), else USS, else RSS",
                 job_peak_bytes=int(max(totals.values())) if totals else None,
                 job_total=[[round(t, 3), int(b)] for t, b in growth_mod.thin(total_pts, MAX_SERIES_POINTS)],
                 projection=projection, series=series, notes=notes,
                 limits={k: (mem_facts or {}).get(k) for k in ("total_bytes", "available_bytes", "cgroup_limit_bytes",
                                                                "cgroup_usage_bytes", "wsl_memory_cap_bytes",
                                                                "swap_total_bytes")})


def cpu_section(procs: Dict[int, dict], thread_names: Dict[Any, str], machine: Sequence[tuple],
                watcher_cpu_s: Optional[float], logical_cores: int, others: Optional[List[dict]],
                denied: Dict[str, str]) -> Dict[str, Any]:
    """CPU per process and per thread (cores used on average), the job's total, the machine's other load."""
    labels = label_processes(procs)
    rows = []
    job_cpu = 0.0
    for rec in sorted(procs.values(), key=lambda r: r.get("order", 0)):
        pts = [(r["t"], r["cpu"]) for r in rec.get("samples", []) if isinstance(r.get("cpu"), (int, float))]
        if len(pts) < 2:
            continue
        span = pts[-1][0] - pts[0][0]
        used = pts[-1][1] - pts[0][1]
        job_cpu += used
        threads = []
        for tid, series in rec.get("threads", {}).items():
            if len(series) >= 2 and series[-1][0] > series[0][0]:
                threads.append({"native_id": tid, "name": thread_names.get(tid),
                                "cpu_s": series[-1][1] - series[0][1],
                                "cpu_cores": (series[-1][1] - series[0][1]) / (series[-1][0] - series[0][0])})
        threads.sort(key=lambda r: -r["cpu_s"])
        rows.append({"pid": rec["pid"], "label": labels.get(rec["pid"]), "role": rec.get("role"),
                     "cpu_s": used, "cpu_cores": used / span if span > 0 else None, "threads": threads[:32],
                     "threads_total": len(threads)})
    if not rows:
        why = denied.get("cpu") or denied.get("memory")
        return part("skipped" if why else "failed", f"CPU times of the job were not readable ({why})" if why
                     else "fewer than two samples of the job's CPU time")
    out = part("ok", "", processes=rows, job_cpu_s=job_cpu, logical_cores=logical_cores)
    if len(machine) >= 2:
        wall = machine[-1][0] - machine[0][0]
        busy = machine[-1][1] - machine[0][1]
        other = busy - job_cpu - (watcher_cpu_s or 0.0)
        out["job_cpu_cores"] = job_cpu / wall if wall > 0 else None
        out["background_cpu_cores"] = max(0.0, other / wall) if wall > 0 else None
        out["machine_busy_cores"] = busy / wall if wall > 0 else None
    out["busiest_other_processes"] = others or []
    return out


# ------------------------------------------------------------------ GPU

def _runs_of_zero(points: Sequence[Tuple[float, float]], period_s: float) -> List[Tuple[float, float]]:
    """(start_s, duration_s) of each run of consecutive 0 % samples."""
    gaps, start, last = [], None, None
    for t, v in points:
        if v <= 0:
            if start is None:
                start = t
            last = t
        elif start is not None:
            gaps.append((start, last - start + period_s))
            start = None
    if start is not None:
        gaps.append((start, last - start + period_s))
    return gaps


def gpu_device_section(dev: dict, job_pids: set, names: Dict[int, Optional[str]],
                       ps_names: Dict[int, Optional[str]]) -> Dict[str, Any]:
    """One GPU: utilisation and idle gaps, memory, PCIe, clock-event reasons, processes."""
    rows = dev.get("samples") or []
    util_pts = [(r["t"], float(r["util"])) for r in rows if isinstance(r.get("util"), (int, float))]
    ring = [(t, v) for t, v in dev.get("ring") or [] if t >= 0]
    source = "ring buffer" if len(ring) >= max(4, len(util_pts)) else "utilization rates"
    pts = ring if source == "ring buffer" else util_pts
    period = None
    if len(pts) >= 2:
        period = percentile([b[0] - a[0] for a, b in zip(pts, pts[1:]) if b[0] > a[0]] or [0.0], 50)
    out: Dict[str, Any] = {"index": dev.get("index"), "name": dev.get("name"),
                           "driver_model": (dev.get("driver_model") or [None])[0]
                           if isinstance(dev.get("driver_model"), list) else None,
                           "ticks": len(rows), "utilization_source": source if pts else None,
                           "ring_buffer_samples": len(ring) if dev.get("ring_supported") else None,
                           "ring_buffer_reason": None if dev.get("ring_supported") else "this GPU/driver keeps no "
                           "utilisation sample buffer (nvmlDeviceGetSamples not supported)",
                           "sample_period_s": period}
    if pts:
        vals = [v for _, v in pts]
        st = summarize(vals)
        out["utilization_percent"] = {k: st[k] for k in ("n", "mean", "median", "p10", "p90", "max")}
        out["busy_fraction"] = st["mean"] / 100.0
        out["idle_fraction"] = sum(1 for v in vals if v <= 0) / len(vals)
        gaps = _runs_of_zero(pts, period or 0.0)
        out["idle_gaps"] = {"count": len(gaps), "total_s": sum(d for _, d in gaps),
                            "longest": [{"start_s": round(s, 3), "duration_s": round(d, 3)}
                                        for s, d in sorted(gaps, key=lambda g: -g[1])[:MAX_GAPS_LISTED]]}
    else:
        out["utilization_percent"] = None
        out["utilization_reason"] = "NVML gave no utilisation on this GPU (not supported here, e.g. MIG or WSL2)"
    used = [r["mem_used"] for r in rows if isinstance(r.get("mem_used"), int)]
    out["memory_used_peak_bytes"] = max(used) if used else None
    out["memory_total_bytes"] = dev.get("mem_total")
    for key in ("pcie_tx_kbps", "pcie_rx_kbps"):
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        out[key] = {"mean": sum(vals) / len(vals), "peak": max(vals), "n": len(vals)} if vals else None
    reason_counts: Dict[str, int] = {}
    masks = [r["reasons"] for r in rows if isinstance(r.get("reasons"), int)]
    for m in masks:
        for name in decode_clock_event_reasons(m):
            reason_counts[name] = reason_counts.get(name, 0) + 1
    out["clock_event_reasons"] = {k: v / len(masks) for k, v in sorted(reason_counts.items())} if masks else None
    out["throttled_fraction"] = (sum(1 for m in masks if set(decode_clock_event_reasons(m)) & THROTTLING_REASONS)
                                 / len(masks)) if masks else None
    # processes: the job's own and everyone else's, with when they were seen
    first_t = rows[0]["t"] if rows else 0.0
    seen: Dict[int, dict] = {}
    listed = any(r.get("procs_listed") for r in rows)
    for r in rows:
        for pid, p in (r.get("procs") or {}).items():
            cur = seen.setdefault(pid, {"pid": pid, "kinds": set(), "first_seen_s": r["t"], "last_seen_s": r["t"],
                                        "used_memory_peak_bytes": None})
            cur["kinds"].update(p.get("kinds") or [])
            cur["last_seen_s"] = r["t"]
            if isinstance(p.get("used"), int):
                cur["used_memory_peak_bytes"] = max(cur["used_memory_peak_bytes"] or 0, p["used"])
    job_rows, other_rows = [], []
    for pid, cur in sorted(seen.items(), key=lambda kv: kv[1]["first_seen_s"]):
        cur["kinds"] = sorted(cur["kinds"])
        cur["name"] = names.get(pid) or ps_names.get(pid)
        if pid in job_pids:
            job_rows.append(cur)
        else:
            cur["present_at_start"] = cur["first_seen_s"] <= first_t
            cur["appeared_mid_run"] = not cur["present_at_start"]
            other_rows.append(cur)
    out["processes_listed"] = listed
    out["job_processes"] = job_rows
    out["other_processes"] = other_rows
    wddm = out["driver_model"] == "WDDM"
    if job_rows and all(r["used_memory_peak_bytes"] is None for r in job_rows):
        out["job_memory_reason"] = ("n/a under WDDM: Windows manages GPU memory, NVML cannot attribute it per process"
                                    if wddm else "NVML did not report per-process memory here")
    out["timeline"] = [[round(r["t"], 3), r.get("util"), r.get("mem_used")] for _, r in
                       growth_mod.thin([(r["t"], r) for r in rows], MAX_SERIES_POINTS)]
    out["ring"] = [[round(t, 3), v] for t, v in growth_mod.thin(ring, MAX_SERIES_POINTS)] if ring else []
    return out


def gpu_section(devices: Optional[List[dict]], reason: str, job_pids: set, names: Dict[int, Optional[str]],
                ps_names: Dict[int, Optional[str]]) -> Dict[str, Any]:
    """All GPUs, or skipped with the reason (no NVML, no GPU)."""
    if devices is None:
        return part("skipped", reason)
    if not devices:
        return part("skipped", "NVML lists no GPU on this machine")
    return part("ok", "", devices=[gpu_device_section(d, job_pids, names, ps_names) for d in devices])

