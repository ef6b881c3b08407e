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

from gpudiag.report.contract import load_report
from gpudiag.report.values import as_dict, as_list, is_num
from gpudiag.views import charts, render
from gpudiag.views import format as fmt

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
    fmt: Callable[[Any], str] = fmt.fmt_num
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


def _host(key: str) -> Callable[[Dict[str, Any]], Value]:
    """Extractor for report.host[key]: (value, None), or (None, why it is missing)."""
    def get(report):
        """(report.host[key], None) or (None, why it is missing)."""
        v = as_dict(report.get("host")).get(key)
        return (v, None) if v not in (None, "", []) else (None, f"host.{key} not in this report")
    return get


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
        return fmt.fmt_x(v)
    return f"{fmt.fmt_x(v['speedup'])} ({v['workers']} worker{'' if v['workers'] == 1 else 's'})"


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


def _winner(report: Dict[str, Any]) -> Value:
    """("strategy xN" the report recommends, or None with why): the comparison's bottom line per machine."""
    v, why = _rec("strategy")(report)
    if v is None:
        return None, why
    w = as_dict(report.get("recommendation")).get("workers")
    return f"{v} x{w}" if is_num(w) else str(v), None


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
        from gpudiag.diagnose import cpu_limit as cl

        why = cl.limit_text(limit)
        text += f", {usable} usable by gpudiag under {why}" if why else f" ({usable} usable by gpudiag)"
    return text, None


def _pct(v: Any) -> str:
    """A fraction as a percentage cell ("n/a" when not a number)."""
    return fmt.fmt_pct(v)


def _us(v: Any) -> str:
    """A duration cell in microseconds ("n/a" when not a number)."""
    return f"{fmt.fmt_num(v)} µs" if is_num(v) else "n/a"


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
           _pct, "higher", lambda a, b: a - b >= PCIE_EFFICIENCY_DROP_LIMIT, "host->device copies get less of the link"),
    Metric("pcie_gbps", "PCIe h2d pinned peak", lambda r: field(r, "pcie", ("peak", "h2d_pinned_gbps")),
           lambda v: f"{fmt.fmt_num(v)} GB/s" if is_num(v) else "n/a", "higher",
           lambda a, b: b / a <= BANDWIDTH_RATIO_LIMIT, "host->device copies take longer"),
    Metric("idle", "GPU idle fraction (serial loop)", _idle_fraction, _pct, "lower",
           lambda a, b: b - a >= IDLE_FRACTION_RISE_LIMIT, "the GPU waits for the host more of the time"),
    Metric("winner", "Tournament winner", _winner),
    Metric("winner_cps", "Winner cycles/s", _rec("cycles_per_s"), fmt.fmt_num, "higher",
           lambda a, b: b / a <= THROUGHPUT_RATIO_LIMIT, "the best strategy completes fewer cycles"),
    Metric("serial_cps", "Plain loop (serial) cycles/s", _rec("serial_cycles_per_s"), fmt.fmt_num, "higher",
           lambda a, b: b / a <= THROUGHPUT_RATIO_LIMIT, "the plain loop completes fewer cycles"),
    Metric("speedup", "Winner speedup over serial", _rec("speedup"), fmt.fmt_x, "higher", None),
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


def compare(reports: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """The comparison view model: per metric one cell per report, ratios to the first, explanations."""
    if len(reports) < 2:
        raise ValueError("compare needs at least two reports")
    first = names[0]
    rows, explanations, differences = [], [], []
    for m in METRICS:
        values = [m.extract(r) for r in reports]
        base = _scalar(values[0][0])
        cells = []
        for i, (v, why) in enumerate(values):
            cell = {"text": m.fmt(v) if v is not None and not isinstance(v, str) else (v if v is not None else "missing"),
                    "missing": v is None, "why": why if v is None else "", "ratio": "", "flag": False}
            x = _scalar(v)
            if i > 0 and x is not None and base:
                cell["ratio"] = fmt.fmt_x(x / base)
            if i > 0 and x is not None and base is not None and m.explains and base != 0 and m.explains(base, x):
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
    findings_notes, env_notes = _finding_differences(reports, names), _env_differences(reports, names)
    explanations += [text for severity, text in findings_notes if severity == "critical"]
    differences += [text for severity, text in findings_notes if severity != "critical"] + env_notes
    heads = [{"name": n, "os": as_dict(r.get("host")).get("os") or "n/a", "created_at": r.get("created_at"),
              "mode": r.get("mode"), "version": _schema(r)} for n, r in zip(names, reports)]
    return {"reports": heads, "rows": rows, "explanations": explanations, "differences": differences,
            "thresholds": THRESHOLDS, "chart": _chart(reports, names)}


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
    tbl = fmt.table("Cycles per second", ["report", "serial#", "recommended#"],
                       [[n, fmt.fmt_num(s), fmt.fmt_num(b)] for n, s, b in zip(names, serial, best)])
    return fmt.chart("chart-compare", "Cycles per second per report", svg,
                        "The plain loop and the recommended strategy on each machine. Cycles differ between "
                        "machines only if the workload was the same size; check the cycle workload in each report.", tbl)


def _bars(names: Sequence[str], serial: List[Optional[float]], best: List[Optional[float]]) -> Optional[str]:
    """SVG grouped bars of serial vs recommended cycles/s per report, or None without numbers."""
    return charts.grouped_bars(list(names), [{"name": "plain loop (serial)", "values": serial},
                                            {"name": "recommended strategy", "values": best}],
                              title="Cycles per second per report", y_label="cycles/s", x_label="report")


def load_all(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """Every report, or ReportError naming the first bad file."""
    return [load_report(p) for p in paths]


def render_compare(reports: Sequence[Dict[str, Any]], names: Sequence[str], fmt: str) -> str:
    """fmt: "html" or "md"."""
    ctx = compare(reports, names)
    if fmt == "html":
        env = render._env(True)
        css = env.loader.get_source(env, "style.css")[0]
        return env.get_template("compare.html.j2").render(css=css, c=ctx)
    text = render._env(False).get_template("compare.md.j2").render(c=ctx)
    if len(text) > render.MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, render.MARKDOWN_LIMIT - 200)
        text = text[:cut] + "\n\n_(truncated to stay under GitHub's comment limit)_\n"
    return text
