"""`gpudiag compare`: the same metrics from several reports side by side, and which differences
are large enough to explain a slowdown.

Works from report JSON alone. Reports of other versions, or with other probes, still compare: a
metric a report does not hold is shown as missing with the reason (probe skipped/failed and why,
probe not in the report, or the field not in that report's schema version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from gpudiag.report.values import as_dict, as_list, is_num
from gpudiag.views import charts, render
from gpudiag.units import fmt_byte_rate, fmt_bytes, fmt_pct
from gpudiag.views.format import chart, cut_rows, fmt_num, fmt_x, table

# How different a metric must be from the first report's before it is named as able to explain a
# slowdown. Ratios are other/first; "drop"/"rise" are absolute differences of fractions.
LATENCY_RATIO_LIMIT = 1.5        # launch latency or context-switch cost 1.5x the first's or more
SCALING_RATIO_LIMIT = 0.67       # thread/process speedup at most 2/3 of the first's
PCIE_EFFICIENCY_DROP_LIMIT = 0.15  # 15 percentage points less of the link's theoretical rate
IDLE_FRACTION_RISE_LIMIT = 0.10    # GPU idle 10 percentage points more of the time
THROUGHPUT_RATIO_LIMIT = 0.8     # cycles/s at most 80 % of the first's
BANDWIDTH_RATIO_LIMIT = 0.67     # PCIe peak GB/s at most 2/3 of the first's

Value = Tuple[Any, Optional[str]]  # (value, why missing)


@dataclass(frozen=True)
class Metric:
    """One row of the comparison table: how to read it from a report, format it, and when a difference between two machines is large enough to explain a slowdown."""
    key: str
    label: str
    extract: Callable[[Dict[str, Any]], Value]
    fmt: Callable[[Any], str] = fmt_num
    better: Optional[str] = None        # "higher" | "lower" | None (a fact, not a score)
    explains: Optional[Callable[[float, float], bool]] = None  # (first, other) -> large enough?
    meaning: str = ""                   # why such a difference slows things down


# ---------------------------------------------------------------- extraction helpers

def _schema(report: Dict[str, Any]) -> str:
    """"schema vN, gpudiag X.Y" for a report's header: reports from different versions may lack fields."""
    return f"schema v{report.get('schema_version', '?')}, gpudiag {report.get('gpudiag_version', '?')}"


def probe_data(report: Dict[str, Any], probe: str) -> Tuple[Optional[dict], Optional[str]]:
    """The probe's data, or None and why it is not there."""
    res = as_dict(report.get("probes")).get(probe)
    if not isinstance(res, dict):
        return None, f"probe {probe} not in this report ({_schema(report)})"
    status = res.get("status")
    if status != "ok":
        return None, f"{probe} {status}: {res.get('reason') or 'no reason given'}"
    return as_dict(res.get("data")), None


def field(report: Dict[str, Any], probe: str, path: Sequence[Any], reason_keys: Sequence[str] = ()) -> Value:
    """A value at path inside a probe's data; missing -> the reason (a sibling *_reason when given)."""
    data, why = probe_data(report, probe)
    if data is None:
        return None, why
    cur: Any = data
    for p in path:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return None, f"{probe}.{'.'.join(map(str, path))} not in this report ({_schema(report)})"
    if cur is None or cur == "n/a":
        for k in reason_keys:
            if data.get(k):
                return None, str(data[k])
        return None, f"{probe} did not measure {'.'.join(map(str, path))}"
    return cur, None


def _os(report: Dict[str, Any]) -> Value:
    """(OS name, with the WSL version when under WSL, or None with why): WSL changes how the GPU is reached."""
    h = as_dict(report.get("host"))
    if not h.get("os"):
        return None, "host.os not in this report"
    return str(h["os"]) + (f" (WSL{h['wsl']})" if h.get("wsl") else ""), None


def _driver_model(report: Dict[str, Any]) -> Value:
    """(Windows driver model, else the Linux kernel module, or None with why): WDDM vs TCC changes launch latency."""
    h = as_dict(report.get("host"))
    if h.get("driver_model"):
        return h["driver_model"], None
    if h.get("kernel_module"):
        return f"Linux ({h['kernel_module']} module)", None
    _, why = probe_data(report, "driver")
    return None, why or "driver gave no driver model"


def _gil_speedup(workload: str, mode: str) -> Callable[[Dict[str, Any]], Value]:
    """Extractor for the gil probe's speedup at the most workers for one workload and mode: ({speedup, workers}, None) or (None, why)."""
    def get(report):
        """({speedup, workers} at the most workers measured, or None with why)."""
        data, why = probe_data(report, "gil")
        if data is None:
            return None, why
        absent = as_dict(data.get("absent"))
        rows = [r for r in as_list(data.get("scaling")) if isinstance(r, dict) and r.get("workload") == workload
                and r.get("mode") == mode and is_num(r.get("speedup")) and is_num(r.get("workers"))]
        if not rows:
            return None, absent.get(workload) or f"gil measured no {workload}/{mode} rows"
        best = max(rows, key=lambda r: r["workers"])
        return {"speedup": best["speedup"], "workers": best["workers"]}, None
    return get


def _speedup_fmt(v: Any) -> str:
    """"3.2x (4 workers)" for a gil speedup cell; the worker count says how far each machine scaled."""
    if not isinstance(v, dict):
        return fmt_x(v)
    return f"{fmt_x(v['speedup'])} ({v['workers']} worker{'' if v['workers'] == 1 else 's'})"


def _switch_cost(report: Dict[str, Any]) -> Value:
    """(estimated context-switch cost in µs at the most worker processes, or None with why): high on oversubscribed or virtualised hosts."""
    data, why = probe_data(report, "contention")
    if data is None:
        return None, why
    rows = [r for r in (data.get("processes") if isinstance(data.get("processes"), list) else [])
            if isinstance(r, dict) and is_num(r.get("switch_cost_us_est"))
            and is_num(r.get("workers"))]
    if not rows:
        return None, "contention estimated no context-switch cost"
    return max(rows, key=lambda r: r["workers"])["switch_cost_us_est"], None


def _idle_fraction(report: Dict[str, Any]) -> Value:
    """(fraction 0..1 of time the GPU sat idle in the serial loop, or None with why): the headline symptom gpudiag explains."""
    data, why = probe_data(report, "cycle")
    if data is None:
        return None, why
    busy = as_dict(as_dict(data.get("idle")).get("serial")).get("busy_fraction")
    serial = next((s for s in as_list(data.get("strategies")) if isinstance(s, dict) and s.get("name") == "serial"), {})
    if not is_num(busy):
        busy = serial.get("gpu_busy_fraction")
    if not is_num(busy):
        return None, serial.get("gpu_busy_reason") or "cycle measured no GPU timeline for the serial loop"
    return 1.0 - busy, None


def _rec(key: str) -> Callable[[Dict[str, Any]], Value]:
    """Extractor for report.recommendation[key]: (value, None), or (None, why there is no recommendation)."""
    def get(report):
        """(report.recommendation[key], or None with why)."""
        rec = report.get("recommendation")
        if not isinstance(rec, dict):
            _, why = probe_data(report, "cycle")
            return None, "no recommendation in this report" + (f"; {why}" if why else "")
        v = rec.get(key)
        return (v, None) if v is not None else (None, f"recommendation.{key} not in this report")
    return get


def _recommended(report: Dict[str, Any]) -> Value:
    """("strategy xN" the report recommends, with "(a tie with ...: the simplest)" when it is the simplest of a
    tie rather than the fastest; or None with why): the comparison's bottom line per machine."""
    v, why = _rec("strategy")(report)
    if v is None:
        return None, why
    rec = as_dict(report.get("recommendation"))
    w = rec.get("workers")
    text = f"{v} x{w}" if is_num(w) else str(v)
    tied = [str(t) for t in as_list(rec.get("tied_with"))]
    if rec.get("confidence") == "tie" and tied:
        text += f" (a tie with {', '.join(tied)}: the simplest)"
    return text, None


def _cpu(report: Dict[str, Any]) -> Value:
    """("N logical cores", plus how many gpudiag may use when affinity limits it, or None with why)."""
    logical = as_dict(report.get("host")).get("logical_cores")
    if not logical:
        return None, "host.logical_cores not in this report"
    cpu = as_dict(field(report, "system", ("cpu",))[0])
    limit = as_dict(cpu.get("limit"))
    usable = limit.get("usable_cores", cpu.get("affinity_cores"))  # a CPU quota counted, where recorded
    text = f"{logical} logical cores"
    if is_num(usable) and (usable != logical or limit.get("limited_by")):
        from gpudiag.diagnose import cpu_limit

        why = cpu_limit.limit_text(limit)
        text += f", {usable} usable by gpudiag under {why}" if why else f" ({usable} usable by gpudiag)"
    return text, None


def _us(v: Any) -> str:
    """A duration cell in microseconds ("n/a" when not a number)."""
    return f"{fmt_num(v)} µs" if is_num(v) else "n/a"


METRICS: Tuple[Metric, ...] = (
    Metric("os", "OS", _os),
    Metric("cpu", "CPU threads", _cpu),
    Metric("gpus", "GPU(s)", lambda r: (", ".join(map(str, as_list(as_dict(r.get("host")).get("gpus")))) or None,
                                        None if as_dict(r.get("host")).get("gpus") else "no NVIDIA GPU seen")),
    Metric("driver_model", "Driver model", _driver_model),
    Metric("python_threads", "GIL scaling: Python threads", _gil_speedup("python", "threads"), _speedup_fmt,
           "higher", lambda a, b: b / a <= SCALING_RATIO_LIMIT, "threads gain less from more workers"),
    Metric("python_processes", "GIL scaling: Python processes", _gil_speedup("python", "processes"), _speedup_fmt,
           "higher", lambda a, b: b / a <= SCALING_RATIO_LIMIT, "processes gain less from more workers"),
    Metric("launch_us", "Launch latency (median)", lambda r: field(r, "launch", ("launch_overhead_us", "median")),
           _us, "lower", lambda a, b: b / a >= LATENCY_RATIO_LIMIT, "every kernel launch costs more host time"),
    Metric("switch_us", "Context-switch cost (est.)", _switch_cost, _us, "lower",
           lambda a, b: b / a >= LATENCY_RATIO_LIMIT, "processes sharing the GPU lose more time per switch"),
    Metric("pcie_eff", "PCIe efficiency (h2d pinned)", lambda r: field(r, "pcie", ("efficiency", "h2d_pinned")),
           fmt_pct, "higher", lambda a, b: a - b >= PCIE_EFFICIENCY_DROP_LIMIT, "host->device copies get less of the link"),
    Metric("pcie_gbps", "PCIe h2d pinned peak", lambda r: field(r, "pcie", ("peak", "h2d_pinned_gbps")),
           lambda v: f"{fmt_num(v)} GB/s" if is_num(v) else "n/a", "higher",
           lambda a, b: b / a <= BANDWIDTH_RATIO_LIMIT, "host->device copies take longer"),
    Metric("idle", "GPU idle fraction (serial loop)", _idle_fraction, fmt_pct, "lower",
           lambda a, b: b - a >= IDLE_FRACTION_RISE_LIMIT, "the GPU waits for the host more of the time"),
    Metric("recommended", "Recommended strategy", _recommended),
    Metric("recommended_cps", "Recommended strategy's cycles/s", _rec("cycles_per_s"), fmt_num, "higher",
           lambda a, b: b / a <= THROUGHPUT_RATIO_LIMIT, "the recommended strategy completes fewer cycles"),
    Metric("serial_cps", "Plain loop (serial) cycles/s", _rec("serial_cycles_per_s"), fmt_num, "higher",
           lambda a, b: b / a <= THROUGHPUT_RATIO_LIMIT, "the plain loop completes fewer cycles"),
    Metric("speedup", "Recommended strategy's speedup over serial", _rec("speedup"), fmt_x, "higher", None),
)

THRESHOLDS = (
    ("LATENCY_RATIO_LIMIT", LATENCY_RATIO_LIMIT, "launch latency / context-switch cost ratio to the first report"),
    ("SCALING_RATIO_LIMIT", SCALING_RATIO_LIMIT, "thread / process speedup ratio to the first report"),
    ("PCIE_EFFICIENCY_DROP_LIMIT", PCIE_EFFICIENCY_DROP_LIMIT, "drop in PCIe efficiency (fraction of the link)"),
    ("IDLE_FRACTION_RISE_LIMIT", IDLE_FRACTION_RISE_LIMIT, "rise in the GPU idle fraction"),
    ("THROUGHPUT_RATIO_LIMIT", THROUGHPUT_RATIO_LIMIT, "cycles/s ratio to the first report"),
    ("BANDWIDTH_RATIO_LIMIT", BANDWIDTH_RATIO_LIMIT, "PCIe peak bandwidth ratio to the first report"),
)


def _scalar(v: Any) -> Optional[float]:
    """The number a metric value compares by (a speedup dict's speedup), or None when not a number."""
    if isinstance(v, dict):
        v = v.get("speedup")
    return float(v) if is_num(v) else None


def report_name(path: str) -> str:
    """The report's file name without folder or extension: the column heading a reader recognises."""
    return os.path.splitext(os.path.basename(path))[0] or path


def unique_names(paths: Sequence[str]) -> List[str]:
    """Column names from the file names; a repeated name gets #2, #3 so columns stay apart."""
    out: List[str] = []
    for p in paths:
        name = report_name(p)
        n, cand = 1, name
        while cand in out:
            n += 1
            cand = f"{name} #{n}"
        out.append(cand)
    return out


class KindMismatch(ValueError):
    """Reports of different kinds (a fleet, a watched job, one machine): nothing to set side by side."""


KIND_WORDS = {"machine": "a machine report (gpudiag report)", "fleet": "a fleet report (gpudiag fleet)",
              "watch": "a watch report (gpudiag watch)"}


def common_kind(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> str:
    """The kind every report is ("machine", "fleet", "watch"); KindMismatch naming the first that differs."""
    kinds = [render.report_kind(r) for r in reports]
    for name, kind in zip(names[1:], kinds[1:]):
        if kind != kinds[0]:
            raise KindMismatch(f"compare needs reports of one kind: {names[0]} is {KIND_WORDS[kinds[0]]}, "
                               f"{name} is {KIND_WORDS[kind]}")
    return kinds[0]


def compare(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """The comparison view model: per metric one cell per report, ratios to the first, explanations (for
    fleet reports also which nodes got slower or were excluded, for watch reports the job's GIL share,
    memory growth and input wait). KindMismatch for reports of different kinds."""
    if len(reports) < 2:
        raise ValueError("compare needs at least two reports")
    kind = common_kind(reports, names)
    if kind == "fleet":
        return fleet_compare(reports, names)
    if kind == "watch":
        ctx = _side_by_side(reports, names, WATCH_METRICS)
        ctx.update(thresholds=WATCH_THRESHOLDS, chart=_watch_chart(reports, names), kind="watch")
        return ctx
    ctx = _side_by_side(reports, names, METRICS)
    findings_notes, env_notes = _finding_differences(reports, names), _env_differences(reports, names)
    ctx["explanations"] += [text for severity, text in findings_notes if severity == "critical"]
    ctx["differences"] += [text for severity, text in findings_notes if severity != "critical"] + env_notes
    ctx.update(thresholds=THRESHOLDS, chart=_chart(reports, names), kind="machine")
    return ctx


def _side_by_side(reports: Sequence[Dict[str, Any]], names: Sequence[str], metrics: Sequence[Metric]) -> Dict[str, Any]:
    """rows (one per metric: a cell per report, its ratio to the first, whether it explains a slowdown),
    explanations, differences (facts that differ) and the reports' heads."""
    first = names[0]
    rows, explanations, differences = [], [], []
    for m in metrics:
        values = [m.extract(r) for r in reports]
        base = _scalar(values[0][0])
        cells = []
        for i, (v, why) in enumerate(values):
            cell = {"text": m.fmt(v) if v is not None and not isinstance(v, str) else (v if v is not None else "missing"),
                    "missing": v is None, "why": why if v is None else "", "ratio": "", "flag": False}
            x = _scalar(v)
            if i > 0 and x is not None and base:
                cell["ratio"] = fmt_x(x / base)
            if i > 0 and x is not None and base is not None and m.explains and m.explains(base, x):
                cell["flag"] = True
                explanations.append(f"{m.label}: {names[i]} {m.fmt(v)} against {m.fmt(values[0][0])} in {first} "
                                    f"- {m.meaning}.")
            cells.append(cell)
        if m.better is None:
            present = {c["text"] for c in cells if not c["missing"]}
            if len(present) > 1:
                differences.append(f"{m.label} differs: " + "; ".join(
                    f"{n}: {c['text']}" for n, c in zip(names, cells) if not c["missing"]))
        reasons = list(dict.fromkeys(c["why"] for c in cells))
        rows.append({"key": m.key, "label": m.label, "all_missing": all(c["missing"] for c in cells),
                     "reasons": reasons,
                     "better": {"higher": "higher is better", "lower": "lower is better"}.get(m.better or "", ""),
                     "cells": cells})
    heads = [{"name": n, "os": as_dict(r.get("host")).get("os") or "n/a", "created_at": r.get("created_at"),
              "mode": r.get("mode"), "version": _schema(r)} for n, r in zip(names, reports)]
    return {"reports": heads, "rows": rows, "explanations": explanations, "differences": differences, "tables": []}


# Findings about the GPU side: they can slow down only what ran on a GPU.
GPU_PROBES = ("driver", "launch", "contention", "pcie")


def _findings(report: Dict[str, Any]) -> Dict[str, dict]:
    """Warning and critical findings by code, each with the probe it came from."""
    out = {}
    for probe, res in as_dict(report.get("probes")).items():
        for f in as_list(as_dict(res).get("findings")):
            if isinstance(f, dict) and f.get("severity") in ("critical", "warning") and f.get("code"):
                out.setdefault(str(f["code"]), dict(f, probe=probe))
    return out


def _gpu_side(f: dict) -> bool:
    """True for a finding about the GPU (a GPU probe's, or a CUDA_ code): it cannot explain numbers measured without one."""
    return f.get("probe") in GPU_PROBES or str(f.get("code")).startswith("CUDA_")


def _finding_differences(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> List[Tuple[str, str]]:
    """Warnings and critical findings a report has that the first does not: (severity, sentence).

    A critical one (e.g. CUDA_LAUNCH_BLOCKING_ON) is by itself able to explain a slowdown, unless it
    is about the GPU and that report measured nothing on a GPU: then it is a difference in setup
    (severity "info" here), since it cannot explain numbers measured without one.
    """
    from gpudiag.diagnose.access import gpu_questions_answered

    first = _findings(reports[0])
    out = []
    for name, rep in zip(names[1:], reports[1:]):
        gpu_measured = gpu_questions_answered(rep)
        for code, f in _findings(rep).items():
            if code in first:
                continue
            text = f"{code} ({f['severity']}) in {name}, not in {names[0]}: {f.get('message') or ''}"
            if _gpu_side(f) and not gpu_measured:
                out.append(("info", text.rstrip() + f" (nothing ran on a GPU in {name}, so it cannot explain "
                                                    "these numbers)"))
            else:
                out.append((f["severity"], text))
    return out


def _env_differences(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> List[str]:
    """Allowlisted environment variables that differ (e.g. CUDA_LAUNCH_BLOCKING, OMP_NUM_THREADS)."""
    envs = [as_dict(as_dict(field(r, "system", ("env",))[0])) for r in reports]
    keys = sorted({k for e in envs for k in e})
    out = []
    for k in keys:
        vals = [e.get(k) for e in envs]
        if len(set(map(str, vals))) > 1:
            out.append(f"environment {k} differs: " + "; ".join(
                f"{n}: {v if v is not None else 'unset'}" for n, v in zip(names, vals)))
    return out


def _chart(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> dict:
    """Chart block of serial and recommended cycles/s per report (SVG, or only the table when values cannot be scaled)."""
    serial = [_scalar(_rec("serial_cycles_per_s")(r)[0]) for r in reports]
    best = [_scalar(_rec("cycles_per_s")(r)[0]) for r in reports]
    try:
        svg = _bars(names, serial, best)
    except (OverflowError, ValueError, ZeroDivisionError):  # values no chart can scale (1e308): the table stays
        svg = None
    tbl = table("Cycles per second", ["report", "serial#", "recommended#"],
                       [[n, fmt_num(s), fmt_num(b)] for n, s, b in zip(names, serial, best)])
    return chart("chart-compare", "Cycles per second per report", svg,
                        "The plain loop and the recommended strategy on each machine. Cycles differ between "
                        "machines only if the workload was the same size; check the cycle workload in each report.", tbl)


def _bars(names: Sequence[str], serial: List[Optional[float]], best: List[Optional[float]]) -> Optional[str]:
    """SVG grouped bars of serial vs recommended cycles/s per report, or None without numbers."""
    return charts.grouped_bars(list(names), [{"name": "plain loop (serial)", "values": serial},
                                            {"name": "recommended strategy", "values": best}],
                              title="Cycles per second per report", y_label="cycles/s", x_label="report")


# ---------------------------------------------------------------- two watched jobs

GIL_SHARE_RISE_LIMIT = 0.15      # the GIL held (or wanted) 15 percentage points more of the time
INPUT_WAIT_RISE_LIMIT = 0.10     # the main thread waiting for input 10 percentage points more
MEMORY_GROWTH_RATIO_LIMIT = 1.5  # memory growing 1.5x as fast as in the first job...
MEMORY_GROWTH_MIN_BPS = 2**20    # ...and at least 1 MiB/s faster (slopes near zero are noise)
PEAK_MEMORY_RATIO_LIMIT = 1.5
GPU_BUSY_DROP_LIMIT = 0.10

WATCH_THRESHOLDS = (
    ("GIL_SHARE_RISE_LIMIT", GIL_SHARE_RISE_LIMIT, "rise in the share of samples a thread held (or wanted) the GIL"),
    ("INPUT_WAIT_RISE_LIMIT", INPUT_WAIT_RISE_LIMIT, "rise in the share of samples the main thread waited for input"),
    ("MEMORY_GROWTH_RATIO_LIMIT", MEMORY_GROWTH_RATIO_LIMIT, "memory growth ratio to the first job (and at least "
                                                           "1 MiB/s more)"),
    ("PEAK_MEMORY_RATIO_LIMIT", PEAK_MEMORY_RATIO_LIMIT, "peak memory ratio to the first job"),
    ("GPU_BUSY_DROP_LIMIT", GPU_BUSY_DROP_LIMIT, "drop in the share of samples the GPU was busy"),
)


def _watch(part: str, path: Sequence[Any]) -> Callable[[Dict[str, Any]], Value]:
    """Extractor for probes.watch.data[part][path...]: the part must have measured (its own status ok)."""
    def get(report):
        """(value, None), or (None, why the job's report has none)."""
        data, why = probe_data(report, "watch")
        if data is None:
            return None, why
        cur: Any = as_dict(data.get(part))
        if cur.get("status") not in (None, "ok"):
            return None, f"{part} {cur.get('status')}: {cur.get('reason') or 'no reason given'}"
        for p in path:
            cur = as_dict(cur).get(p) if not isinstance(p, int) else (as_list(cur)[p] if len(as_list(cur)) > p else None)
        return (cur, None) if cur is not None else (None, f"watch.{part}.{'.'.join(map(str, path))} not in this report")
    return get


def _watch_job(report: Dict[str, Any]) -> Value:
    """("python train.py --epochs 3 (launched pid 41)", or None with why)."""
    from gpudiag.views.watch_view import job_command

    data, why = probe_data(report, "watch")
    if data is None:
        return None, why
    cmd, how = job_command(as_dict(data.get("job")))
    return f"{cmd} ({how})", None


def _growth_explains(a: float, b: float) -> bool:
    return b - a >= MEMORY_GROWTH_MIN_BPS and (a <= 0 or b / a >= MEMORY_GROWTH_RATIO_LIMIT)


WATCH_METRICS: Tuple[Metric, ...] = (
    Metric("job", "Job", _watch_job),
    Metric("duration", "Duration", _watch("job", ("duration_s",)), lambda v: f"{fmt_num(v)} s"),
    Metric("gil_held", "GIL held (share of samples)", _watch("gil", ("held_fraction",)), fmt_pct, "lower",
           lambda a, b: b - a >= GIL_SHARE_RISE_LIMIT, "its threads hold the GIL more of the time, so less of it runs "
                                                       "at once"),
    Metric("gil_wanted", "GIL wanted (held or waited for)", _watch("gil", ("wanted_fraction",)), fmt_pct, "lower",
           lambda a, b: b - a >= GIL_SHARE_RISE_LIMIT, "its threads wait for the GIL more of the time"),
    Metric("input_wait", "Main thread waiting for input", _watch("input_wait", ("fraction",)), fmt_pct, "lower",
           lambda a, b: b - a >= INPUT_WAIT_RISE_LIMIT, "the main thread waits for its input (DataLoader) more"),
    Metric("mem_growth", "Memory growth", _watch("memory", ("projection", "job_growth_bytes_per_s")), fmt_byte_rate, "lower",
           _growth_explains, "its memory grows faster: it reaches the limit sooner"),
    Metric("mem_peak", "Peak memory", _watch("memory", ("job_peak_bytes",)), fmt_bytes, "lower",
           lambda a, b: b / a >= PEAK_MEMORY_RATIO_LIMIT, "it needs more memory at its peak"),
    Metric("job_cpu", "Job CPU (cores' worth)", _watch("cpu", ("job_cpu_cores",)), fmt_num),
    Metric("gpu_busy", "GPU busy (first GPU)", _watch("gpu", ("devices", 0, "busy_fraction")), fmt_pct, "higher",
           lambda a, b: a - b >= GPU_BUSY_DROP_LIMIT, "the GPU sits idle more of the time"),
    Metric("recommended", "Recommended change", _recommended),
)


def _watch_chart(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> dict:
    """Grouped bars: GIL held, GIL wanted and input wait per job (shares of samples)."""
    parts = [("GIL held", "gil_held"), ("GIL wanted", "gil_wanted"), ("waiting for input", "input_wait")]
    by_key = {m.key: m for m in WATCH_METRICS}
    series = [{"name": label, "values": [_scalar(by_key[key].extract(r)[0]) for r in reports]} for label, key in parts]
    try:
        svg = charts.grouped_bars(list(names), series, title="Where each job's threads spent their samples",
                                  y_label="share of samples", x_label="job")
    except (OverflowError, ValueError, ZeroDivisionError):
        svg = None
    tbl = table("Shares of samples", ["job"] + [f"{label}#" for label, _ in parts],
                    [[n] + [fmt_pct(s["values"][i]) for s in series] for i, n in enumerate(names)])
    return chart("chart-compare", "GIL and input wait per job", svg,
                     "The share of py-spy's samples in which a thread of the job held the GIL, held or waited for "
                     "it, and in which the main thread waited for its input.", tbl)


# ---------------------------------------------------------------- two fleet runs

NODE_SLOWER_LIMIT = 0.90  # a node at most 0.90x its own figure in the first run is named as slower
NODE_LIST = 20            # nodes named one by one in the explanations (the table has them all)
FLEET_THRESHOLDS = (
    ("NODE_SLOWER_LIMIT", NODE_SLOWER_LIMIT, "a node's figure (the median of its ranks) against its own in the "
                                             "first run, slower way round"),
    ("THROUGHPUT_RATIO_LIMIT", THROUGHPUT_RATIO_LIMIT, "the fleet's median figure against the first run's"),
)
FLEET_FIGURES = (("matmul_gflops", "matmul GFLOP/s", True), ("launch_us", "launch µs", False),
                 ("h2d_gbps", "H2D GB/s", True), ("intra_busbw_gbps", "intra-node busbw GB/s", True))


def _fleet(report: Dict[str, Any]) -> dict:
    """A fleet report's data ({} when its fleet probe holds none)."""
    return as_dict(as_dict(as_dict(report.get("probes")).get("fleet")).get("data"))


def _fleet_fact(key: str, show: Callable[[dict], Any]) -> Callable[[Dict[str, Any]], Value]:
    def get(report):
        """(the fleet fact, None) or (None, why)."""
        data = _fleet(report)
        if not data:
            return None, "no fleet data in this report"
        v = show(data)
        return (v, None) if v not in (None, "") else (None, f"fleet.{key} not in this report")
    return get


def _fleet_median(metric: str) -> Callable[[Dict[str, Any]], Value]:
    """The median over the fleet's nodes of a node figure."""
    def get(report):
        """(median over nodes, None) or (None, why)."""
        vals = [as_dict(as_dict(n).get("scores")).get(metric) for n in as_list(_fleet(report).get("nodes"))]
        vals = [as_dict(v).get("value") for v in vals if is_num(as_dict(v).get("value"))]
        if not vals:
            return None, f"no node has the figure {metric}"
        vals.sort()
        mid = len(vals) // 2
        return (vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2), None
    return get


FLEET_METRICS: Tuple[Metric, ...] = (
    Metric("verdict", "Verdict", _fleet_fact("verdict", lambda d: d.get("verdict"))),
    Metric("ranks", "Ranks answered", _fleet_fact("answered", lambda d: f"{d.get('answered')} of {d.get('world_size')}"
                                                  if d.get("world_size") is not None else None)),
    Metric("nodes", "Nodes", _fleet_fact("nodes", lambda d: str(len(as_list(d.get("nodes")))))),
    Metric("exclude", "Excluded nodes", _fleet_fact("exclude", lambda d: ", ".join(
        as_list(as_dict(d.get("exclude")).get("hosts"))) or "none")),
) + tuple(
    Metric(f"median_{m}", f"Median node: {label}", _fleet_median(m), fmt_num, "higher" if higher else "lower",
           (lambda a, b, h=higher: (b / a if h else a / b) <= THROUGHPUT_RATIO_LIMIT),
           "the fleet as a whole is slower" if higher else "the fleet as a whole takes longer")
    for m, label, higher in FLEET_FIGURES)


def _node_figures(report: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """{host: {metric: value}} of a fleet report's nodes."""
    out: Dict[str, Dict[str, float]] = {}
    for n in map(as_dict, as_list(_fleet(report).get("nodes"))):
        host = n.get("host")
        if isinstance(host, str):
            out[host] = {m: as_dict(v).get("value") for m, v in as_dict(n.get("scores")).items()
                         if is_num(as_dict(v).get("value"))}
    return out


def fleet_compare(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """Two (or more) fleet runs against the first: the fleets' figures side by side, then which nodes got
    slower (a figure at most NODE_SLOWER_LIMIT of its own in the first run), which were excluded that were
    not, which no longer are, and which nodes one run has and the other does not. Nodes are matched by their
    host label (the same hash in every run of one host)."""
    ctx = _side_by_side(reports, names, FLEET_METRICS)
    first = _node_figures(reports[0])
    first_ex = set(as_list(as_dict(_fleet(reports[0]).get("exclude")).get("hosts")))
    rows = []
    for name, rep in zip(names[1:], reports[1:]):
        nodes = _node_figures(rep)
        slower = []
        for host in sorted(set(first) & set(nodes)):
            for m, label, higher in FLEET_FIGURES:
                a, b = first[host].get(m), nodes[host].get(m)
                if not (is_num(a) and is_num(b)) or a <= 0 or b <= 0:
                    continue
                speed = b / a if higher else a / b
                if speed <= NODE_SLOWER_LIMIT:
                    slower.append((speed, host, label, a, b))
        slower.sort()
        for speed, host, label, a, b in slower[:NODE_LIST]:
            ctx["explanations"].append(f"node {host} in {name}: {label} {fmt_num(b)} against {fmt_num(a)} "
                                       f"in {names[0]} ({speed:.2f}x as fast)")
        if len(slower) > NODE_LIST:
            ctx["explanations"].append(f"{len(slower) - NODE_LIST} more slower node figures in {name}: see the table")
        rows += [[name, host, label, fmt_num(a), fmt_num(b), f"{speed:.2f}x"]
                 for speed, host, label, a, b in slower]
        ex = set(as_list(as_dict(_fleet(rep).get("exclude")).get("hosts")))
        reasons = as_dict(as_dict(_fleet(rep).get("exclude")).get("reasons"))
        newly = sorted(ex - first_ex)
        if newly:
            ctx["explanations"].append(f"excluded in {name}, not in {names[0]}: " + "; ".join(
                f"{h} ({', '.join(map(str, as_list(reasons.get(h)))) or 'see its report'})" for h in newly[:NODE_LIST])
                + (f" and {len(newly) - NODE_LIST} more" if len(newly) > NODE_LIST else ""))
        back = sorted(first_ex - ex)
        if back:
            ctx["differences"].append(f"excluded in {names[0]}, no longer in {name}: {', '.join(back[:NODE_LIST])}"
                                      + (f" and {len(back) - NODE_LIST} more" if len(back) > NODE_LIST else ""))
        only_first, only_this = sorted(set(first) - set(nodes)), sorted(set(nodes) - set(first))
        for hosts, where in ((only_first, f"only in {names[0]}"), (only_this, f"only in {name}")):
            if hosts:
                ctx["differences"].append(f"{len(hosts)} node(s) {where}: {', '.join(hosts[:NODE_LIST])}"
                                          + (f" and {len(hosts) - NODE_LIST} more" if len(hosts) > NODE_LIST else ""))
    ctx["tables"] = [table("Nodes slower than in the first run",
                               ["run", "host", "figure", f"{names[0]}#", "this run#", "as fast#"], rows,
                               f"A node's figure is the median of its ranks; listed where it is at most "
                               f"{NODE_SLOWER_LIMIT:.2f}x as fast as the same node in {names[0]}.")]
    ctx.update(thresholds=FLEET_THRESHOLDS, chart=_fleet_chart(rows), kind="fleet")
    return ctx


def _fleet_chart(rows: List[list]) -> dict:
    """The slowest node figures (against the first run) as bars; no chart without any."""
    shown = rows[:NODE_LIST]
    bars = [{"label": f"{r[1]} {r[2].split(' ')[0]}", "value": float(r[5].rstrip("x")), "cls": "hl-base"}
            for r in shown]
    svg = charts.horizontal_bars(bars, title="Node figures slower than in the first run",
                                 x_label="as fast as in the first run (1 = unchanged)",
                                 value_fmt=lambda v: f"{v:.2f}x", label_width=200) if bars else None
    return chart("chart-compare", "Slower nodes", svg,
                     "Each bar is one node's figure against the same node's in the first run.",
                     table("", ["node", "as fast#"], [[b["label"], f"{b['value']:.2f}x"] for b in bars]))


def render_compare(reports: Sequence[Dict[str, Any]], names: Sequence[str], fmt: str) -> str:
    """fmt: "html" or "md"."""
    ctx = compare(reports, names)
    if fmt == "html":
        env = render.jinja_env(True)
        css = env.loader.get_source(env, "style.css")[0]
        return env.get_template("compare.html.j2").render(css=css, c=ctx)
    md_ctx = dict(ctx, tables=[cut_rows(t, render.MARKDOWN_ROW_LIMITS[0]) for t in ctx["tables"]])
    text = render.jinja_env(False).get_template("compare.md.j2").render(c=md_ctx)
    if len(text) > render.MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, render.MARKDOWN_LIMIT - 200)
        text = text[:cut] + "\n\n_(truncated to stay under GitHub's comment limit)_\n"
    return text
