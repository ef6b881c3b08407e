"""Views of a report (HTML, Markdown, terminal), rendered from the report JSON alone."""

from __future__ import annotations

import functools
import json
import math
from typing import Any, Callable, Dict, List, Optional

import jinja2
from markupsafe import Markup

from gpudiag import capabilities
from gpudiag.views import charts, env_fields, watch_view
from gpudiag.views.text import md_cell, md_code, md_text, terminal_safe
from gpudiag.report import contract as report_mod

MARKDOWN_LIMIT = 60_000
# Raw JSON of a probe without a structured view goes into the Markdown only below this size.
MARKDOWN_RAW_LIMIT = 4_000


def fmt_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "n/a"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_num(x: Any, digits: int = 3) -> str:
    """Significant-digit formatting for measured values; None/'n/a' read as n/a."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 10 ** digits:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def fmt_pct(x: Any, digits: int = 0) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "n/a"
    return f"{x * 100:.{digits}f} %"


def fmt_x(x: Any) -> str:
    """A speedup or ratio: 1.96x."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "n/a"
    return f"{x:.2f}x"


def fmt_ci(ci: Any) -> str:
    """A speedup's 95 % interval: '1.38-1.49x'; '' when there is none (baseline rows, too few rounds)."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(_num(v) for v in ci):
        return ""
    return f"{ci[0]:.2f}-{ci[1]:.2f}x"


# Units by the end of a figure's name (docs/report-contract.md: units live in field names).
_FIGURE_UNITS = (("_per_s", ""), ("_bytes", "bytes"), ("_fraction", "pct"), ("_percent", "percent"), ("_us", " µs"),
                 ("_ms", " ms"), ("_s", " s"), ("_gbps", " GB/s"), ("_cores", " cores"), ("_ci95", "ci"),
                 ("speedup", "x"), ("_ratio", "x"), ("stretch", "x"))


def figure_label(name: str) -> str:
    """'serial_busy_fraction' -> 'serial busy'; 'launch_overhead_us_median' -> 'launch overhead median'."""
    text = str(name).replace("_per_s", "/s")
    for suffix in ("_bytes", "_fraction", "_percent", "_us", "_ms", "_gbps", "_s"):
        text = text.replace(suffix + "_", "_") if suffix + "_" in text else text
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return text.replace("_ci95", " 95 % interval").replace("_", " ").strip()


def fmt_figure(name: str, value: Any) -> str:
    """A verdict figure with its unit, read from its name: 1.2 GiB, 44 %, 20.3 µs, 1.43x, 1.38-1.49x."""
    if value is None or value == "n/a":
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(_num(v) for v in value) and "ci95" in name:
            return fmt_ci(value)
        return ", ".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value) or "none"
    if not _num(value):
        return str(value)
    key = str(name)
    unit = next((u for suffix, u in _FIGURE_UNITS if key.endswith(suffix) or (suffix + "_") in key), None)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "pct":
        return fmt_pct(value)
    if unit == "percent":
        return f"{value:.0f} %"
    if unit == "x":
        return fmt_x(value)
    if unit:
        return f"{fmt_num(float(value))}{unit}"
    return fmt_num(float(value)) if isinstance(value, float) else fmt_num(value)


def to_json(x: Any) -> str:
    return json.dumps(x, indent=2, default=str)


def _md_finalize(value: Any) -> Markup:
    """Every `{{ }}` of a Markdown template is escaped unless a filter already made it safe."""
    return value if isinstance(value, Markup) else Markup(md_text(value))


def _safe(fn: Callable[[Any], str]) -> Callable[[Any], Markup]:
    return lambda x: Markup(fn(x))


# Install hints that every probe skipped for the same reason repeats. The report says each once,
# in the summary's torch row, and everywhere else refers to it.
INSTALL_HINTS = (": " + capabilities.CUDA_BUILD_HINT, ": " + capabilities.TORCH_HINT)
SEE_SUMMARY = " (see the summary)"
_KEEP_AS_MEASURED = ("raw", "evidence", "r", "probes", "host")  # data shown as it is, never reworded


def refer_to_summary(x: Any, hints: List[str]) -> Any:
    """A copy of a view-model value with each hint replaced by a reference to the summary.

    Raw data, finding evidence and chart SVG (Markup) are left as they are.
    """
    if isinstance(x, Markup):
        return x
    if isinstance(x, str):
        for h in hints:
            x = x.replace(h, SEE_SUMMARY)
        return x
    if isinstance(x, dict):
        return {k: v if k in _KEEP_AS_MEASURED else refer_to_summary(v, hints) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(refer_to_summary(v, hints) for v in x)
    return x


@functools.lru_cache(maxsize=2)
def _env(autoescape: bool) -> jinja2.Environment:
    """The HTML environment (autoescape=True), or the Markdown one (False: Markdown escaping on every value)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gpudiag.views", "templates"),
        # Markdown also autoescapes, with md_text instead of HTML escaping (see _md_finalize).
        autoescape=True,
        finalize=None if autoescape else _md_finalize,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(bytes=fmt_bytes, num=fmt_num, pct=fmt_pct, x=fmt_x, tojson_pretty=to_json)
    if autoescape:
        env.filters.update(md=md_cell, mdtext=md_text, mdcode=md_code)
    else:
        env.filters.update(md=_safe(md_cell), mdtext=_safe(md_text), mdcode=_safe(md_code))
    return env


def _context(report: Dict[str, Any]) -> Dict[str, Any]:
    probes = report.get("probes") or {}
    counts = {s: sum(1 for r in probes.values() if r.get("status") == s) for s in report_mod.STATUSES}
    findings = report_mod.all_findings(report)
    head = summary(report, findings)
    said = [h for h in INSTALL_HINTS if h in head["torch"]]
    rest = refer_to_summary({"findings": findings, "sections": probe_sections(report),
                             "recview": recommendation_view(report),
                             "summary": {k: v for k, v in head.items() if k != "torch"}}, said)
    rest["summary"]["torch"] = head["torch"]
    return {
        "r": report,
        "host": report.get("host") or {},
        "probes": probes,
        "counts": counts,
        "rec": report.get("recommendation"),
        **rest,
    }


def render_html(report: Dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script, no external resource)."""
    env = _env(True)
    css = env.loader.get_source(env, "style.css")[0]
    return env.get_template("report.html.j2").render(css=css, **_context(report))


def render_markdown(report: Dict[str, Any]) -> str:
    """The report as GitHub Markdown for an issue comment, cut to stay under GitHub's size limit."""
    text = _env(False).get_template("report.md.j2").render(raw_limit=MARKDOWN_RAW_LIMIT, **_context(report))
    if len(text) > MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, MARKDOWN_LIMIT - 200)
        text = text[:cut] + "\n\n_(truncated to stay under GitHub's comment limit; the JSON report has everything)_\n"
    return text


def render_terminal(report: Dict[str, Any], files: Optional[Dict[str, str]] = None) -> str:
    """The few lines `gpudiag report` prints at the end: machine, probe statuses, top findings, files written."""
    ctx = _context(report)
    lines = []
    head = ctx["summary"]
    lines.append(f"gpudiag {report.get('gpudiag_version')} ({report.get('mode')}): OS {head['os']}; GPUs {head['gpus']}")
    lines += [f"  ({note})" for note in head["unmeasured"]]
    for name, res in _d(ctx["probes"]).items():
        res = _d(res)
        status = str(res.get("status"))
        extra = f" - {res.get('reason')}" if res.get("reason") else ""
        duration = res.get("duration_s") if _num(res.get("duration_s")) else 0.0
        lines.append(f"  {str(name):<11} {status:<8} {duration:6.1f} s{extra}")
    top = [f for f in ctx["findings"] if f.get("severity") in ("critical", "warning")][:5]
    if top:
        lines.append("Findings:")
        for f in top:
            lines.append(f"  [{f.get('severity')}] {f.get('code')}: {f.get('message')}")
    rec = ctx["rec"]
    if rec and rec.get("headline"):
        lines.append(f"Recommendation: {rec['headline']}")
    if report.get("interrupted"):
        lines.append("Interrupted: probes that had not finished are marked 'not run'.")
    for kind, path in (files or {}).items():
        lines.append(f"Wrote {kind}: {path}")
    return terminal_safe("\n".join(lines))


# ====================================================================== the view model
# Turns report JSON into what the templates print: formatted cells, tables, charts with captions.
# Nothing is measured here; a value missing from the report stays "n/a" (with its reason when the
# report gives one). Reports come from other gpudiag versions and other machines, so every access
# checks types instead of trusting the shape.

PROBE_TITLES = {
    "system": "System", "driver": "NVIDIA driver and GPUs", "gil": "Threads vs processes (GIL)",
    "launch": "Kernel launch latency and CUDA graphs", "contention": "CUDA context switching",
    "pcie": "PCIe transfer bandwidth", "cycle": "Strategy tournament and GPU idle gaps",
    "fleet": "Fleet: every rank compared, collectives",
    "watch": "Your job, watched while it ran",
}
CAUSE_LABELS = {
    "gil_contention": "GIL contention between threads",
    "context_switch": "CUDA context-switch cost",
    "worker_memory": "Per-worker memory / OOM risk",
    "pcie_bandwidth": "PCIe bandwidth",
    "host_sync_idle": "Idle gaps from host syncs",
    "gpu_shared": "Another process sharing the GPU",
    "driver_model": "Driver model (WDDM / TCC)",
    "input_starvation": "Waiting for input (DataLoader)",
}
VERDICT_BADGES = {"supported": "v-supported", "refuted": "v-refuted", "inconclusive": "v-inconclusive",
                  "not_measured": "v-not_measured"}
CONFIDENCE_WORDS = {"clear": "clear winner", "tie": "a tie: the simplest is recommended",
                    "too_noisy": "too noisy to judge", "none": "nothing measured"}
TOP_FINDINGS = 3
_VIEW_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError, OverflowError)
# What rendering a hostile report can raise beyond a probe view's own fallback: the CLI turns these into one line.
RENDER_ERRORS = _VIEW_ERRORS + (RecursionError, jinja2.TemplateError)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def badge(text: Any, cls: str) -> dict:
    return {"badge": cls, "text": str(text)}


def table(title: str, cols: List[Any], rows: List[List[Any]], caption: str = "", stack: bool = False) -> dict:
    """cols: labels; a label ending in '#' is a numeric (right-aligned) column.

    A column that is empty in every row (e.g. `reason` when every verdict was measured) is dropped.
    stack: on a narrow screen, show each row as a small card of "label: value" lines (text-heavy tables).
    """
    cells = [[c if isinstance(c, dict) else ("n/a" if c is None else str(c)) for c in r] for r in rows]
    keep = [i for i in range(len(cols)) if not cells or any(i < len(r) and r[i] != "" for r in cells)]
    return {"title": title, "caption": caption, "stack": stack,
            "cols": [{"label": cols[i].rstrip("#"), "num": cols[i].endswith("#")} for i in keep],
            "rows": [[r[i] if i < len(r) else "" for i in keep] for r in cells]}


def chart(cid: str, title: str, svg: Optional[str], caption: str, tbl: Optional[dict]) -> dict:
    return {"id": cid, "title": title, "svg": Markup(svg) if svg else None, "caption": caption, "table": tbl}


def _na(value: Any, reason: Any = None) -> str:
    if value is None or value == "n/a":
        return f"n/a ({reason})" if reason else "n/a"
    return fmt_num(value) if not isinstance(value, str) else value


def _status_badge(status: Any) -> dict:
    return badge(status or "n/a", f"s-{status}" if status in report_mod.STATUSES else "s-skipped")


# ---------------------------------------------------------------------- summary card

def _text_or_none(x: Any) -> Any:
    """A host field as text: a report of another version (or a hostile one) may hold any JSON there."""
    if x is None or isinstance(x, str) or (isinstance(x, (int, float)) and not isinstance(x, bool)):
        return x
    return str(x) if x not in (False, [], {}) else None


def _label(table_: Dict[str, str], key: Any, default: Any = None) -> Any:
    """A lookup that tolerates an unhashable key (a list or object where a name was expected)."""
    return table_.get(key, default) if isinstance(key, str) else default


def not_measured(report: Dict[str, Any], probe: str) -> Optional[str]:
    """Why `probe` gave no facts in this report ("the system probe did not run"), or None if it ran ok.

    A partial report (`--only gil`) must say "not measured" for what it did not measure, never turn
    a probe that did not run into a false fact such as "unknown OS" or torch "not installed".
    """
    res = _d(_d(report.get("probes")).get(probe))
    if not res:
        return f"the {probe} probe did not run"
    status = res.get("status")
    if status == "ok":
        return None
    why = f": {res['reason']}" if res.get("reason") else ""
    return f"the {probe} probe {'was skipped' if status == 'skipped' else 'failed'}{why}"


def summary(report: Dict[str, Any], findings: List[dict]) -> Dict[str, Any]:
    host = {k: _text_or_none(v) if k not in ("gpus",) else v for k, v in _d(report.get("host")).items()}
    rec = _d(report.get("recommendation"))
    drv = _d(_d(report.get("probes")).get("driver"))
    # A skipped driver probe is a fact (no NVIDIA driver here); one that did not run or failed is not.
    why_system = not_measured(report, "system")
    why_driver = not_measured(report, "driver") if drv.get("status") != "skipped" else None
    unmeasured = [f"{what} not measured: {why}." for what, why in (
        ("Machine, OS, Python and torch", why_system), ("GPUs and driver", why_driver)) if why]
    no_system = "not measured" if why_system else None
    no_driver = "not measured" if why_driver else None
    os_text = str(host.get("os") or no_system or "n/a (not reported)")
    if host.get("wsl"):
        os_text += f" (WSL{host['wsl']})"
    if host.get("container"):
        os_text += f" in {host['container']}"
    if host.get("driver_model"):
        model = host["driver_model"]
    elif host.get("kernel_module"):
        model = f"Linux, {host['kernel_module']} kernel module"
    elif host.get("driver_version"):
        model = "n/a (not reported by the driver)"
    elif no_driver:
        model = no_driver
    else:
        model = f"n/a ({drv.get('reason')})" if drv.get("reason") else "n/a (no NVIDIA driver seen)"
    cores = ""
    if host.get("logical_cores"):
        cores = f"{host.get('physical_cores') or '?'} cores / {host['logical_cores']} threads"
    machine = " · ".join(str(x) for x in (host.get("cpu"), cores, fmt_bytes(host["ram_total_bytes"]) + " RAM"
                                          if _num(host.get("ram_total_bytes")) else None) if x) or no_system or "n/a"
    if host.get("torch"):
        torch = str(host["torch"]) + (f" · CUDA {host['torch_cuda']}" if host.get("torch_cuda")
                                 else f" · CPU-only build: {capabilities.CUDA_BUILD_HINT} to answer the GPU questions")
    else:
        missing = _d(_d(_d(_d(report.get("probes")).get("system")).get("data")).get("torch")).get("reason_missing")
        torch = no_system or (str(missing) if missing else "not installed")
    strategy = None
    if rec.get("strategy") and rec.get("source") != "watch":  # a watch names no speedup; its headline says it all
        ci = fmt_ci(rec.get("speedup_ci95"))
        strategy = {"name": rec["strategy"], "workers": rec.get("workers"),
                    "speedup": fmt_x(rec.get("speedup")) + (f" (95 % interval {ci})" if ci else ""),
                    "cycles_per_s": fmt_num(rec.get("cycles_per_s")),
                    "serial_cycles_per_s": fmt_num(rec.get("serial_cycles_per_s")),
                    "confidence": CONFIDENCE_WORDS.get(rec.get("confidence"), rec.get("confidence"))}
    top = findings[:TOP_FINDINGS]  # already most severe first
    return {
        "machine": machine, "os": os_text, "kernel": host.get("kernel") or no_system or "n/a",
        "gpus": ", ".join(str(g) for g in _l(host.get("gpus"))) or no_driver or "no NVIDIA GPU seen",
        "driver": host.get("driver_version") or no_driver or "n/a",
        "driver_model": model,
        "python": str(host.get("python") or no_system or "n/a")
        + (" (GIL disabled)" if _d(report.get("host")).get("gil") is False else ""),
        "torch": torch,
        "headline": rec.get("headline"), "strategy": strategy,
        "gpu_questions_answered": rec.get("gpu_questions_answered") if rec else None,
        "top_findings": top, "more_findings": max(len(findings) - len(top), 0),
        "unmeasured": unmeasured,
    }


# ---------------------------------------------------------------------- recommendation

def _figures(figs: Any) -> str:
    """A verdict's figures as 'label: value unit; ...' (units from the names; unmeasured ones left out)."""
    if not isinstance(figs, dict):
        return "" if figs is None else str(figs)
    return "; ".join(f"{figure_label(k)}: {fmt_figure(k, v)}" for k, v in figs.items() if v is not None)


def recommendation_view(report: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    rec = report.get("recommendation")
    if not isinstance(rec, dict):
        return None
    verdict_rows = []
    for v in _l(rec.get("verdicts")):
        v = _d(v)
        verdict = v.get("verdict")
        verdict_rows.append([_label(CAUSE_LABELS, v.get("cause"), str(v.get("cause"))),
                             badge(str(verdict).replace("_", " "), _label(VERDICT_BADGES, verdict, "v-not_measured")),
                             v.get("summary") or "", _figures(v.get("figures")),
                             v.get("reason") or ""])
    return {
        "headline": rec.get("headline"),
        "gpu_questions_answered": rec.get("gpu_questions_answered"),
        "choice": watch_view.choice_table(rec) if rec.get("source") == "watch" else table(
            "Recommended strategy", ["strategy", "workers#", "cycles/s#", "serial cycles/s#", "speedup#",
                                     "95 % interval#", "rounds#", "confidence", "tied with"],
                        [[rec.get("strategy") or "n/a", _na(rec.get("workers")), _na(rec.get("cycles_per_s")),
                          _na(rec.get("serial_cycles_per_s")), fmt_x(rec.get("speedup")),
                          fmt_ci(rec.get("speedup_ci95")), _na(rec.get("samples")) if rec.get("samples") else "",
                          CONFIDENCE_WORDS.get(rec.get("confidence"), rec.get("confidence") or ""),
                          ", ".join(str(t) for t in _l(rec.get("tied_with")))]],
                        "The interval is where the true speedup lies with 95 % confidence, from the spread of the "
                        "interleaved rounds (docs/recommendation.md).", stack=True),
        "verdicts": table("Suspected causes", ["cause", "verdict", "summary", "figures", "reason"], verdict_rows,
                          "Each cause from the user's story, judged on this machine's measurements: supported, "
                          "refuted, inconclusive (measured, but the figures cannot decide: the reason says why), "
                          "or not measured (with why).", stack=True),
        "evidence": table("Evidence", ["claim", "value#", "unit", "source"],
                          [[_d(e).get("claim") or "", _na(_d(e).get("value")), _d(e).get("unit") or "",
                            _d(e).get("source") or ""] for e in _l(rec.get("evidence"))], stack=True),
        "runners_up": table("Runners-up", ["strategy", "workers#", "cycles/s#", "speedup#", "95 % interval#", "why not"],
                            [[_d(r).get("strategy") or "", _na(_d(r).get("workers")), _na(_d(r).get("cycles_per_s")),
                              fmt_x(_d(r).get("speedup")) if _num(_d(r).get("speedup")) else "",
                              fmt_ci(_d(r).get("speedup_ci95")),
                              _d(r).get("why_not") or ""] for r in _l(rec.get("runners_up"))], stack=True),
        "changes": table("Environment changes", ["code", "change", "evidence"],
                         [[_d(c).get("code") or "", _d(c).get("change") or "", _figures(_d(c).get("evidence"))
                           if isinstance(_d(c).get("evidence"), dict) else str(_d(c).get("evidence") or "")]
                          for c in _l(rec.get("environment_changes"))], stack=True),
    }


# ---------------------------------------------------------------------- probe sections

def _stats_row(label: str, st: Any, unit: str) -> List[Any]:
    st = _d(st)
    return [label, _na(st.get("median")), _na(st.get("p10")), _na(st.get("p90")), _na(st.get("n")), unit]


def _view_system(data: dict) -> dict:
    os_, py, cpu, mem, torch = (_d(data.get(k)) for k in ("os", "python", "cpu", "memory", "torch"))
    kv = [
        ("OS", os_.get("pretty") or os_.get("name")), ("Distro", " ".join(str(x) for x in (
            os_.get("distro_id"), os_.get("distro_version")) if x) or None),
        ("Kernel", os_.get("kernel")), ("WSL", f"WSL{os_['wsl']}" if os_.get("wsl") else "no"),
        ("Container / VM", " / ".join(str(x) for x in (os_.get("container"), os_.get("virtualization")) if x) or "none seen"),
        ("Python", " ".join(str(x) for x in (py.get("implementation"), py.get("version")) if x) or None),
        ("Free-threaded build", fmt_num(py.get("free_threaded_build"))),
        ("GIL enabled", fmt_num(py.get("gil_enabled")) + (" (checked after importing torch)" if py.get("gil_checked_after_torch") else "")),
        ("Switch interval", f"{fmt_num(py.get('switch_interval_s'))} s" if _num(py.get("switch_interval_s")) else None),
        ("multiprocessing start method", py.get("mp_start_method")),
        ("CPU", cpu.get("brand")),
        ("Cores", f"{_na(cpu.get('physical_cores'))} physical / {_na(cpu.get('logical_cores'))} logical"
                  + (f" ({cpu['affinity_cores']} usable by this process)" if _num(cpu.get("affinity_cores")) else "")),
        ("RAM", f"{fmt_bytes(mem.get('total_bytes'))} total, {fmt_bytes(mem.get('available_bytes'))} available"),
        ("Swap", f"{fmt_bytes(mem.get('swap_total_bytes'))} ({fmt_bytes(mem.get('swap_used_bytes'))} used)"),
        ("Memory limits", "; ".join(f"{k} {fmt_bytes(mem[v])}" for k, v in (
            ("cgroup", "cgroup_limit_bytes"), ("WSL cap", "wsl_memory_cap_bytes")) if _num(mem.get(v))) or "none seen"),
        ("Budget for new workers", fmt_bytes(mem.get("budget_bytes"))),
        ("OOM kills since boot", _na(mem.get("oom_kills_since_boot"))),
        ("vm.overcommit_memory", _na(mem.get("overcommit_memory"))),
        ("torch", _na(torch.get("version"), torch.get("reason_missing"))
         + (f" · CUDA {torch['cuda_build']}" if torch.get("cuda_build") else "")
         + (f" · cuDNN {torch['cudnn']}" if torch.get("cudnn") else "")),
    ]
    env = _d(data.get("env"))
    tables = [table("Environment variables (allowlisted)", ["name", "value"], [[k, v] for k, v in env.items()])] if env else []
    # collect_env's fields, the CPU block and the packages (views/env_fields.py, shared with `gpudiag env`)
    kv += env_fields.cpu_feature_rows(data)
    tables += [table(title, cols, rows, stack=True) for title, cols, rows in env_fields.report_tables(data)]
    return {"kv": kv, "tables": tables}


def _view_driver(data: dict) -> dict:
    km = _d(data.get("kernel_module"))
    kv = [("Driver", data.get("driver_version")), ("CUDA driver API", data.get("cuda_driver_version")),
          ("NVML", data.get("nvml_version"))]
    if km.get("flavour") or km.get("version"):
        kv.append(("Kernel module", f"{km.get('flavour') or 'n/a'} {km.get('version') or ''}".strip()))
    if data.get("mps_daemon_running") is not None:
        kv.append(("MPS daemon running", fmt_num(data.get("mps_daemon_running"))))
    win = _d(data.get("windows"))
    if win:
        hags, tdr = _d(win.get("hags")), _d(win.get("tdr"))
        kv.append(("Hardware-accelerated GPU scheduling", _na(hags.get("enabled")) + f" (HwSchMode {_na(hags.get('raw'))})"))
        kv.append(("TDR", f"delay {_na(tdr.get('delay_s'))} s, DDI delay {_na(tdr.get('ddi_delay_s'))} s, level {_na(tdr.get('level'))}"))
    gpu_rows, proc_rows = [], []
    for g in _l(data.get("gpus")):
        g = _d(g)
        pcie, dm = _d(g.get("pcie")), _d(g.get("driver_model"))
        gpu_rows.append([
            _na(g.get("index")), g.get("name") or "n/a",
            f"{fmt_bytes(g.get('memory_used_bytes'))} / {fmt_bytes(g.get('memory_total_bytes'))}",
            _na(dm.get("current")) + (f" (pending {dm['pending']})" if dm.get("pending") not in (None, dm.get("current")) else ""),
            f"Gen{_na(pcie.get('gen_current'))} x{_na(pcie.get('width_current'))} "
            f"(max Gen{_na(pcie.get('gen_max_card'))} x{_na(pcie.get('width_max'))})",
            ", ".join(str(r) for r in _l(_d(g.get("clock_event_reasons")).get("active"))) or "none",
            _na(g.get("persistence_mode")), _na(g.get("display_active")),
            f"{_na(g.get('temperature_c'))} °C, {_na(g.get('power_draw_w'))} / {_na(g.get('power_limit_w'))} W"])
        procs = _d(g.get("processes"))
        for kind in ("compute", "graphics"):
            for p in _l(procs.get(kind)):
                p = _d(p)
                proc_rows.append([_na(g.get("index")), kind, str(p.get("pid", "n/a")), p.get("name") or "n/a",
                                  fmt_bytes(p.get("used_memory_bytes")) if _num(p.get("used_memory_bytes")) else "n/a"])
    tables = [table("GPUs", ["index#", "name", "memory used / total", "driver model", "PCIe link", "clock events",
                             "persistence", "display", "temp, power"], gpu_rows, stack=True)]
    tables.append(table("Processes on the GPU", ["gpu#", "kind", "pid#", "name", "memory#"], proc_rows,
                        "Graphics processes (the desktop, a browser, VS Code) share the GPU with your work.")
                  if proc_rows else table("Processes on the GPU", ["note"], [["none listed by the driver"]]))
    return {"kv": kv, "tables": tables}


def _worker_memory(mem: dict) -> str:
    """The one per-worker host figure (per_worker_host_bytes, USS where the OS gives it) under its name,
    with the same measure at the other steps: the finding and the recommendation quote the same figure."""
    source = str(mem.get("per_worker_host_source") or "")
    if not _num(mem.get("per_worker_host_bytes")):
        return "n/a"
    kind = "rss" if source.startswith("RSS") else "uss"
    steps = [f"{label}: {fmt_bytes(mem.get(f'{kind}_{key}_bytes'))}"
             for label, key in (("before torch", "before_torch"), ("after import torch", "after_torch"),
                                ("after CUDA init", "after_cuda"))
             if _num(mem.get(f"{kind}_{key}_bytes")) and not source.endswith(label)]
    if not _num(mem.get(f"{kind}_after_cuda_bytes")) and mem.get("reason_cuda"):
        steps.append(f"after CUDA init: n/a, {mem['reason_cuda']}")
    text = f"{fmt_bytes(mem['per_worker_host_bytes'])}" + (f", {source}" if source else "")
    return text + (f" ({'; '.join(steps)})" if steps else "")


def _view_gil(data: dict) -> dict:
    py, st, mem = _d(data.get("python")), _d(data.get("startup")), _d(data.get("memory"))
    rows = [_d(r) for r in _l(data.get("scaling"))]
    rows.sort(key=lambda r: (str(r.get("workload")), str(r.get("mode")), r.get("workers") if _num(r.get("workers")) else 0))
    scaling = table("Scaling", ["workload", "mode", "workers#", "throughput/s#", "speedup#", "95 % interval#",
                                "spread#", "rounds#"],
                    [[r.get("workload"), r.get("mode"), _na(r.get("workers")), _na(r.get("throughput_per_s")),
                      fmt_x(r.get("speedup")), fmt_ci(r.get("speedup_ci95")), fmt_pct(r.get("spread_fraction")),
                      _na(r.get("samples") if r.get("samples") is not None else r.get("repeats"))] for r in rows])
    fits = _d(mem.get("fits"))
    kv = [("GIL enabled", fmt_num(py.get("gil_enabled"))), ("Free-threaded build", fmt_num(py.get("free_threaded_build"))),
          ("Process worker start-up", f"{_na(st.get('total_s'))} s (spawn {_na(st.get('spawn_s'))} s + import torch {_na(st.get('import_torch_s'))} s)"),
          ("Host memory per process worker", _worker_memory(mem)),
          ("Device memory per CUDA context", fmt_bytes(mem.get("device_bytes_per_context")) if _num(mem.get("device_bytes_per_context"))
           else _na(None, mem.get("reason_cuda"))),
          ("Workers that fit", f"threads {_na(fits.get('threads'))}, processes {_na(fits.get('processes'))} "
                               f"(host budget {fmt_bytes(mem.get('budget_host_bytes'))}"
                               + (f", device budget {fmt_bytes(mem.get('budget_device_bytes'))})" if _num(mem.get("budget_device_bytes")) else ")"))]
    load = {k: v for k, v in _d(data.get("other_busy_cores")).items() if _num(v)}
    if load:
        cores = _d(data.get("cpu")).get("usable_cores")
        kv.append(("Other programs while measuring", ", ".join(f"{k} {v:.2f}" for k, v in load.items())
                   + " cores" + (f" of {cores}" if _num(cores) else "")))
    absent = _d(data.get("absent"))
    notes = [f"{k} not measured: {v}" for k, v in absent.items()]
    notes += [f"{w}: {_d(v).get('verdict')} - {_d(v).get('reason')}" for w, v in _d(data.get("verdict")).items()
              if _d(v).get("verdict") == "inconclusive" and _d(v).get("reason")]
    ch = chart("chart-gil", "Threads vs processes", charts.gil_chart(data),
               "Bars near 1x for threads mean the GIL serialises that workload; processes near the dashed "
               "ideal line mean the work itself scales. Compare the two bars of each workload. Whiskers are "
               "the 95 % interval; a bar above the ideal line by more than its interval means the 1-worker "
               "baseline was disturbed (the verdict then says inconclusive).", scaling)
    return {"kv": kv, "charts": [ch], "notes": notes}


def _view_launch(data: dict) -> dict:
    g = _d(data.get("graph"))
    lat = table("Latency", ["measure", "median#", "p10#", "p90#", "n#", "unit"],
                [_stats_row("launch overhead (host)", data.get("launch_overhead_us"), "µs"),
                 _stats_row("tiny kernel end to end", data.get("kernel_latency_us"), "µs"),
                 _stats_row("torch.cuda.synchronize()", data.get("sync_latency_us"), "µs")])
    kv = [("CUDA graph speedup", f"{fmt_x(g.get('speedup'))}: {_na(g.get('eager_per_op_us'))} µs per op eager, "
                                 f"{_na(g.get('graph_per_op_us'))} µs replayed ({_na(g.get('ops_per_graph'))} ops per graph)")]
    return {"kv": kv, "tables": [lat]}


def _view_contention(data: dict) -> dict:
    ctx = _d(data.get("context"))
    kv = [("Kernel length", f"{_na(data.get('kernel_ms'))} ms (alone: median {_na(_d(data.get('solo_ms')).get('median'))} ms)"),
          ("Context creation", f"{_na(ctx.get('create_s'))} s, {fmt_bytes(ctx.get('device_bytes'))} device memory"),
          ("MPS active", _na(data.get("mps_active")))]
    th = table("Threads, one context", ["workers#", "wall s#", "ideal s#", "throughput vs 1#"],
               [[_na(r.get("workers")), _na(r.get("wall_s")), _na(r.get("ideal_s")), fmt_x(r.get("throughput_vs_one"))]
                for r in map(_d, _l(data.get("threads")))])
    pr = table("Processes, one context each", ["workers#", "wall s#", "ideal s#", "stretch#", "overhead#",
                                               "switch cost µs#", "time slice ms#"],
               [[_na(r.get("workers")), _na(r.get("wall_s")), _na(r.get("ideal_s")), fmt_x(r.get("stretch")),
                 fmt_pct(r.get("overhead_fraction"), 1), _na(r.get("switch_cost_us_est")), _na(r.get("timeslice_ms_est"))]
                for r in map(_d, _l(data.get("processes")))],
               "Stretch = wall time / ideal time-sharing; the overhead beyond 1x is what context switches cost.")
    return {"kv": kv, "tables": [th, pr]}


def _view_pcie(data: dict) -> dict:
    link = _d(data.get("link"))
    theo = data.get("theoretical_gbps_per_direction")
    kv = [("Link", f"Gen{_na(link.get('gen'))} x{_na(link.get('width'))} (max Gen{_na(link.get('gen_max'))} "
                   f"x{_na(link.get('width_max'))})" + (", read during a copy" if link.get("read_under_load") else "")),
          ("Theoretical per direction", f"{_na(theo)} GB/s")]
    kv += [(f"Peak {k.replace('_gbps', '').replace('_', ' ')}", f"{_na(v)} GB/s") for k, v in _d(data.get("peak")).items()]
    kv += [(f"Efficiency {k.replace('_', ' ')}", fmt_pct(v)) for k, v in _d(data.get("efficiency")).items()]
    pts = [_d(p) for p in _l(data.get("points"))]
    order = {k: i for i, k in enumerate(("h2d", "d2h", "bidir", "pinned", "pageable"))}
    pts.sort(key=lambda p: (order.get(p.get("direction"), 9), order.get(p.get("memory"), 9),
                            p.get("size_bytes") if _num(p.get("size_bytes")) else 0))
    tbl = table("Bandwidth per transfer size", ["direction", "memory", "size#", "median GB/s#", "p10#", "p90#", "n#"],
                [[charts.DIRECTION_LABELS.get(p.get("direction"), p.get("direction")), p.get("memory"),
                  fmt_bytes(p.get("size_bytes")), _na(_d(p.get("gbps")).get("median")), _na(_d(p.get("gbps")).get("p10")),
                  _na(_d(p.get("gbps")).get("p90")), _na(_d(p.get("gbps")).get("n"))] for p in pts])
    ch = chart("chart-pcie", "PCIe bandwidth vs transfer size", charts.pcie_chart(data),
               "Lines should climb to a plateau near the dashed link maximum; a plateau far below it points at a "
               "degraded link or a slow path. Pinned above pageable is normal; the reverse is worth a look.", tbl)
    return {"kv": kv, "charts": [ch]}


def _view_cycle(data: dict, winner: Optional[str]) -> dict:
    wl = _d(data.get("workload"))
    kv = [("Workload", f"{_na(wl.get('model'))}, batch {_na(wl.get('batch'))}, {_na(wl.get('params'))} parameters, "
                       f"{'forward+backward' if wl.get('train') else 'forward only'} on {_na(wl.get('device'))}"),
          ("Cycles per strategy", _na(wl.get("cycles"))), ("Host work per cycle", f"{_na(wl.get('host_work_ms'))} ms")]
    if data.get("custom"):
        kv.append(("Your loop", str(data["custom"])))
    rounds, load = _d(data.get("rounds")), _d(data.get("load"))
    if _num(rounds.get("rounds")):
        kv.append(("Timed rounds", f"{rounds['rounds']} interleaved rounds, stopped: {rounds.get('stopped_because') or 'n/a'}"))
    if _num(load.get("other_busy_cores")):
        seen = ", ".join(f"{_d(v).get('name')} {_d(v).get('cores')}" for v in _l(load.get("busiest_visible")))
        kv.append(("Other programs during the rounds",
                   f"{load['other_busy_cores']:.2f} of {_na(load.get('usable_cores'))} cores"
                   + (" - busy: the figures describe a loaded machine" if load.get("busy") else "")
                   + (f" (visible: {seen})" if seen else "")))
    strategies = [_d(s) for s in _l(data.get("strategies"))]
    ok = [s for s in strategies if s.get("status") == "ok" and _num(s.get("cycles_per_s"))]
    if winner not in {s.get("name") for s in ok}:
        winner = max(ok, key=lambda s: s["cycles_per_s"])["name"] if ok else None
    tbl = table("Strategies", ["strategy", "status", "workers#", "cycles/s#", "vs serial#", "95 % interval#",
                               "rounds#", "other load#", "GPU busy#", "host mem#", "note"],
                [[s.get("name"), _status_badge(s.get("status")), _na(s.get("workers")), _na(s.get("cycles_per_s")),
                  fmt_x(s.get("speedup_vs_serial")), fmt_ci(s.get("speedup_ci95")),
                  _na(s.get("samples") if s.get("samples") is not None else s.get("repeats")),
                  f"{s['other_busy_cores']:.2f} cores" if _num(s.get("other_busy_cores")) else "",
                  fmt_pct(s.get("gpu_busy_fraction")) if _num(s.get("gpu_busy_fraction"))
                  else "n/a", fmt_bytes(s.get("host_rss_bytes") if _num(s.get("host_rss_bytes"))
                                        else s.get("peak_host_bytes")),
                  "; ".join(x for x in (s.get("reason"), s.get("gpu_busy_reason"),
                                        "winner" if s.get("name") == winner else None) if x)] for s in strategies],
                stack=True)
    out = [chart("chart-tournament", "Strategy tournament", charts.tournament_chart(data, winner),
                 "Every strategy ran the same cycles in interleaved rounds. The longest bar is the fastest; the "
                 "whisker is the 95 % interval of its cycles/s, taken from its speedup's interval over the serial "
                 "baseline (your plain loop). Strategies that could not run here say why.", tbl)]
    idle = {k: v for k, v in _d(data.get("idle")).items() if isinstance(v, dict)}
    if idle:
        trows = []
        for name, t in idle.items():
            gaps, bd = _d(t.get("gaps")), _d(t.get("breakdown_ms"))
            trows.append([name, t.get("method") or "n/a", fmt_pct(t.get("busy_fraction")), _na(gaps.get("count")),
                          ", ".join(fmt_num(x) for x in _l(gaps.get("longest_ms"))[:5]) or "n/a",
                          _na(bd.get("host_wait")), _na(bd.get("sync_wait")),
                          _na(bd.get("copy_wait")) if "copy_wait" in bd else "", _na(bd.get("launch_overhead"))])
        ttbl = table("Timelines", ["run", "method", "GPU busy#", "gaps#", "longest gaps ms#", "host wait ms#",
                                   "sync wait ms#", "copy wait ms#", "launch ms#"], trows)
        out.append(chart("chart-idle", "Where the time went", charts.idle_breakdown_chart(idle),
                         "The GPU-busy share of the baseline against the winner, and the idle time split by cause "
                         "(in proportion to the measured breakdown): waiting for Python, host syncs such as .item(), "
                         "launch overhead.", ttbl))
        hrows = []
        for name, t in idle.items():
            for b in _l(_d(t.get("gaps")).get("histogram")):
                b = _d(b)
                hrows.append([name, _na(b.get("lo_ms")), _na(b.get("hi_ms")) if b.get("hi_ms") is not None else "and longer",
                              _na(b.get("count"))])
        out.append(chart("chart-gaps", "Idle gaps by length", charts.gap_histogram_chart(idle),
                         "Many short gaps mean launch overhead; a few long gaps (hundreds of ms or more) mean the GPU "
                         "waits for the host between iterations. The winner should have fewer long gaps.",
                         table("Gap histogram", ["run", "from ms#", "to ms#", "gaps#"], hrows)))
    nv = _d(data.get("nvml_utilization"))
    if nv.get("samples"):
        out.append(chart("chart-util", "GPU utilisation (NVML)", charts.utilization_chart(nv),
                         f"What nvidia-smi would have shown during the run (median {_na(nv.get('median_percent'))} %). "
                         "NVML counts a sample as busy if any kernel ran in it, so this overstates real use.",
                         table("Utilisation samples", ["t s#", "GPU %#"],
                               [[_na(_d(s).get("t_s")), _na(_d(s).get("gpu_percent"))] for s in _l(nv.get("samples"))])))
    return {"kv": kv, "charts": out}


def _view_fleet(data: dict) -> dict:
    from gpudiag.views import fleet_view  # it builds on this module's helpers

    return fleet_view.view(data)


_VIEWS: Dict[str, Callable[..., dict]] = {
    "system": _view_system, "driver": _view_driver, "gil": _view_gil, "launch": _view_launch,
    "contention": _view_contention, "pcie": _view_pcie, "fleet": _view_fleet, "watch": watch_view.view,
}


def probe_sections(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One section per probe: status, reason, findings, a readable view of its data, the raw data."""
    winner = _d(report.get("recommendation")).get("strategy")
    out = []
    for name, res in _d(report.get("probes")).items():
        res = _d(res)
        data = _d(res.get("data"))
        view: Dict[str, Any] = {}
        error = None
        if res.get("status") == "ok" and data:
            try:
                view = _view_cycle(data, winner) if name == "cycle" else _VIEWS[name](data) if name in _VIEWS else {}
            except _VIEW_ERRORS as exc:  # a report of another version: fall back to the raw data
                error = f"this view could not read the data ({type(exc).__name__}: {exc}); the raw data is below"
        raw = to_json(data) if data else ""
        out.append({
            "name": name, "title": PROBE_TITLES.get(name, name), "status": res.get("status"),
            "reason": res.get("reason") or "", "duration_s": res.get("duration_s") if _num(res.get("duration_s")) else 0.0,
            "findings": [dict(f, probe=name) for f in _l(res.get("findings")) if isinstance(f, dict)],
            "kv": [(k, "n/a" if v is None else v) for k, v in view.get("kv", [])],
            "tables": view.get("tables", []), "charts": view.get("charts", []), "notes": view.get("notes", []),
            "error": error, "raw": raw, "raw_chars": len(raw),
        })
    return out
