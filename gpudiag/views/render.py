"""Views of a report (HTML, Markdown, terminal), rendered from the report JSON alone: the Jinja
environments and the view model of the summary card and the recommendation (probe sections: sections.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional

import jinja2
from markupsafe import Markup

from gpudiag import capabilities
from gpudiag.diagnose import cpu_limit
from gpudiag.report import contract as report_mod
from gpudiag.report.values import as_dict, as_list, is_num
from gpudiag.units import fmt_bytes, fmt_pct
from gpudiag.views import fleet_view, watch_view
from gpudiag.views.format import (
    VIEW_ERRORS,
    badge,
    cut_rows,
    evidence_json,
    figure_label,
    fmt_ci,
    fmt_figure,
    fmt_num,
    fmt_x,
    na,
    table,
    to_json,
)
from gpudiag.views.sections import probe_sections
from gpudiag.views.text import first_sentence, md_cell, md_code, md_text, terminal_safe

# GitHub refuses an issue body or comment over 65,536 characters; the rest leaves room for the reader's words.
MARKDOWN_LIMIT = 60_000
# Rows per Markdown table, tried in turn until the whole text fits under MARKDOWN_LIMIT (a 10,000-rank
# fleet); the findings list is cut to the same count. Each cut says what it left out.
MARKDOWN_ROW_LIMITS = (40, 12, 4)


# Raw JSON of a probe without a structured view goes into the Markdown only below this size.
MARKDOWN_RAW_LIMIT = 4_000


def _md_finalize(value: Any) -> Markup:
    """Every `{{ }}` of a Markdown template is escaped unless a filter already made it safe."""
    return value if isinstance(value, Markup) else Markup(md_text(value))


def _safe(fn: Callable[[Any], str]) -> Callable[[Any], Markup]:
    """Wrap a string filter so jinja does not escape its output again (the Markdown filters escape themselves)."""
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
def jinja_env(autoescape: bool) -> jinja2.Environment:
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
    env.filters.update(bytes=fmt_bytes, num=fmt_num, pct=fmt_pct, x=fmt_x, tojson_pretty=to_json,
                       evidence_json=evidence_json)
    if autoescape:
        env.filters.update(md=md_cell, mdtext=md_text, mdcode=md_code)
    else:
        env.filters.update(md=_safe(md_cell), mdtext=_safe(md_text), mdcode=_safe(md_code))
    return env


KIND_TITLES = {"machine": "gpudiag report", "fleet": "gpudiag fleet report", "watch": "gpudiag watch report"}


def report_kind(report: Dict[str, Any]) -> str:
    """"fleet" (`gpudiag fleet`), "watch" (`gpudiag watch`) or "machine" (`gpudiag report`): each leads with its own answer."""
    probes = as_dict(report.get("probes"))
    if "fleet" in probes:
        return "fleet"
    if "watch" in probes or report.get("mode") == "watch":
        return "watch"
    return "machine"


def _lead(report: Dict[str, Any], kind: str) -> Optional[Dict[str, Any]]:
    """The first screen of a fleet or watch report (fleet_view.lead, watch_view.lead); None for one machine."""
    data = as_dict(as_dict(as_dict(report.get("probes")).get(kind)).get("data"))
    try:
        if kind == "fleet":
            return fleet_view.lead(data, as_dict(report.get("host")))
        if kind == "watch":
            return watch_view.lead(data, as_dict(report.get("recommendation")))
    except VIEW_ERRORS:  # a report of another version: its section below shows what it can
        return None
    return None


def _context(report: Dict[str, Any]) -> Dict[str, Any]:
    """The template context of one report: summary, findings, per-probe sections and recommendation, with install hints said once."""
    probes = report.get("probes") or {}
    kind = report_kind(report)
    counts = {s: sum(1 for r in probes.values() if r.get("status") == s) for s in report_mod.STATUSES}
    findings = report_mod.all_findings(report)
    head = summary(report, findings)
    said = [h for h in INSTALL_HINTS if h in head["torch"]]
    rest = refer_to_summary({"findings": findings, "sections": probe_sections(report),
                             "recview": recommendation_view(report),
                             "summary": {k: v for k, v in head.items() if k != "torch"}}, said)
    rest["summary"]["torch"] = head["torch"]
    return {
        "kind": kind,
        "title": KIND_TITLES[kind],
        "lead": _lead(report, kind),
        "r": report,
        "host": report.get("host") or {},
        "probes": probes,
        "counts": counts,
        "rec": report.get("recommendation"),
        **rest,
    }


def render_html(report: Dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script, no external resource)."""
    env = jinja_env(True)
    css = env.loader.get_source(env, "style.css")[0]
    return env.get_template("report.html.j2").render(css=css, **_context(report))


def _cut(ctx: Dict[str, Any], limit: int) -> Dict[str, Any]:
    """The context with every table cut to `limit` rows (format.cut_rows) and the findings list to `limit` items."""
    def sec(s: Dict[str, Any]) -> Dict[str, Any]:
        return dict(s, tables=[cut_rows(t, limit) for t in s["tables"]],
                    charts=[dict(c, table=cut_rows(c["table"], limit)) if c.get("table") else c for c in s["charts"]])
    out = dict(ctx, sections=[sec(s) for s in ctx["sections"]], findings=ctx["findings"][:limit],
               findings_left_out=max(len(ctx["findings"]) - limit, 0))
    if ctx["recview"]:
        out["recview"] = {k: cut_rows(v, limit) if isinstance(v, dict) and "rows" in v else v
                          for k, v in ctx["recview"].items()}
    return out


def truncate_markdown(text: str, limit: int = MARKDOWN_LIMIT) -> str:
    """Markdown cut at a line boundary under `limit`, an open <details> closed, with a line saying what went."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 300)
    head = text[:cut]
    left = text[cut:].count("\n")
    if head.count("<details>") > head.count("</details>"):
        head += "\n\n</details>"
    return head + (f"\n\n_(cut here to stay under GitHub's 65,536-character limit: the last {left} lines were "
                   "left out; the JSON report has everything)_\n")


def render_markdown(report: Dict[str, Any]) -> str:
    """The report as GitHub Markdown for an issue: its answer first, details collapsed, long tables cut
    (each cut says what it left out) until it fits under GitHub's size limit."""
    ctx = _context(report)
    template = jinja_env(False).get_template("report.md.j2")
    text = ""
    for limit in MARKDOWN_ROW_LIMITS:
        text = template.render(raw_limit=MARKDOWN_RAW_LIMIT, **_cut(ctx, limit))
        if len(text) <= MARKDOWN_LIMIT:
            return text
    return truncate_markdown(text)


def render_terminal(report: Dict[str, Any], files: Optional[Dict[str, str]] = None) -> str:
    """The few lines `gpudiag report` prints at the end: machine, probe statuses, top findings, files written."""
    ctx = _context(report)
    lines = []
    head = ctx["summary"]
    lines.append(f"gpudiag {report.get('gpudiag_version')} ({report.get('mode')}): OS {head['os']}; GPUs {head['gpus']}")
    lines += [f"  ({note})" for note in head["unmeasured"]]
    said: List[str] = []  # an install hint is printed once; later probes skipped for it refer back
    for name, res in as_dict(ctx["probes"]).items():
        res = as_dict(res)
        status = str(res.get("status"))
        reason = str(res.get("reason") or "")
        for hint in INSTALL_HINTS:
            if hint in reason:
                reason = reason.replace(hint, " (see above)") if hint in said else reason
                said.append(hint)
        extra = f" - {reason}" if reason else ""
        duration = res.get("duration_s") if is_num(res.get("duration_s")) else 0.0
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




def terminal_summary(report: Dict[str, Any]) -> str:
    """The terminal summary of any report kind: what `gpudiag report`, `fleet` or `watch` printed."""
    kind = report_kind(report)
    text = (fleet_view.render_terminal(report) if kind == "fleet" else
            watch_view.render_terminal(report) if kind == "watch" else render_terminal(report))
    return terminal_safe(text)


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


CONFIDENCE_WORDS = {"clear": "clearly the fastest", "tie": "a tie: the simplest is recommended",
                    "too_noisy": "too noisy to judge", "none": "nothing measured"}


TOP_FINDINGS = 3




# What rendering a hostile report can raise beyond a probe view's own fallback: the CLI turns these into one line.
RENDER_ERRORS = VIEW_ERRORS + (RecursionError, jinja2.TemplateError)


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
    res = as_dict(as_dict(report.get("probes")).get(probe))
    if not res:
        return f"the {probe} probe did not run"
    status = res.get("status")
    if status == "ok":
        return None
    why = f": {res['reason']}" if res.get("reason") else ""
    return f"the {probe} probe {'was skipped' if status == 'skipped' else 'failed'}{why}"


def summary(report: Dict[str, Any], findings: List[dict]) -> Dict[str, Any]:
    """The report's first screen: machine, OS, GPUs, driver model, Python, torch, the recommendation and top findings, each "not measured" with why where its probe did not run."""
    host = {k: _text_or_none(v) if k not in ("gpus",) else v for k, v in as_dict(report.get("host")).items()}
    rec = as_dict(report.get("recommendation"))
    drv = as_dict(as_dict(report.get("probes")).get("driver"))
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
        limit = as_dict(as_dict(as_dict(as_dict(as_dict(report.get("probes")).get("system")).get("data")).get("cpu"))
                        .get("limit"))
        if cpu_limit.usable_text(limit):  # a CPU quota, cpuset or affinity below the machine's CPUs
            cores += f", {cpu_limit.usable_text(limit)}"
    machine = " · ".join(str(x) for x in (host.get("cpu"), cores, fmt_bytes(host["ram_total_bytes"]) + " RAM"
                                          if is_num(host.get("ram_total_bytes")) else None) if x) or no_system or "n/a"
    if host.get("torch"):
        torch = str(host["torch"]) + (f" · CUDA {host['torch_cuda']}" if host.get("torch_cuda")
                                 else f" · CPU-only build: {capabilities.CUDA_BUILD_HINT} to answer the GPU questions")
    else:
        missing = as_dict(as_dict(as_dict(as_dict(report.get("probes")).get("system")).get("data")).get("torch")).get("reason_missing")
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
        "gpus": ", ".join(str(g) for g in as_list(host.get("gpus"))) or no_driver or "no NVIDIA GPU seen",
        "driver": host.get("driver_version") or no_driver or "n/a",
        "driver_model": model,
        "python": str(host.get("python") or no_system or "n/a")
        + (" (GIL disabled)" if as_dict(report.get("host")).get("gil") is False else ""),
        "torch": torch,
        "headline": rec.get("headline"), "strategy": strategy,
        "gpu_questions_answered": rec.get("gpu_questions_answered") if rec else None,
        "top_findings": top, "more_findings": max(len(findings) - len(top), 0),
        "unmeasured": unmeasured,
        # one line of machine facts for a watch report, which leads with the job instead
        "machine_line": " · ".join(str(x) for x in (
            machine, os_text, ", ".join(str(g) for g in as_list(host.get("gpus"))) or no_driver or "no NVIDIA GPU seen",
            host.get("python"), f"torch {host['torch']}" if host.get("torch") else None) if x),
    }


def _figures(figs: Any) -> str:
    """A verdict's figures as 'label: value unit; ...' (units from the names; unmeasured ones left out)."""
    if not isinstance(figs, dict):
        return "" if figs is None else str(figs)
    return "; ".join(f"{figure_label(k)}: {fmt_figure(k, v)}" for k, v in figs.items() if v is not None)


def recommendation_view(report: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Tables of the recommendation (choice, suspected causes, evidence, runners-up, environment changes), or None when the report has none."""
    rec = report.get("recommendation")
    if not isinstance(rec, dict):
        return None
    verdict_rows, verdict_list = [], []
    for v in as_list(rec.get("verdicts")):
        v = as_dict(v)
        verdict = v.get("verdict")
        verdict_rows.append([_label(CAUSE_LABELS, v.get("cause"), str(v.get("cause"))),
                             badge(str(verdict).replace("_", " "), _label(VERDICT_BADGES, verdict, "v-not_measured")),
                             v.get("summary") or "", _figures(v.get("figures")),
                             v.get("reason") or ""])
        # Markdown: the first sentence in the verdict table; the rest, the figures and the rule collapsed
        text = str(v.get("summary") or "")
        said = first_sentence(text or v.get("reason") or "")
        verdict_list.append({"cause": verdict_rows[-1][0], "badge": verdict_rows[-1][1], "sentence": said,
                             "rest": text[len(said):].strip() if text.startswith(said) else text,
                             "figures": verdict_rows[-1][3], "reason": v.get("reason") or ""})
    return {
        "headline": rec.get("headline"),
        "verdict_list": verdict_list,
        "gpu_questions_answered": rec.get("gpu_questions_answered"),
        "choice": watch_view.choice_table(rec) if rec.get("source") == "watch" else table(
            "Recommended strategy", ["strategy", "workers#", "cycles/s#", "serial cycles/s#", "speedup#",
                                     "95 % interval#", "rounds#", "confidence", "tied with"],
                        [[rec.get("strategy") or "n/a", na(rec.get("workers")), na(rec.get("cycles_per_s")),
                          na(rec.get("serial_cycles_per_s")), fmt_x(rec.get("speedup")),
                          fmt_ci(rec.get("speedup_ci95")), na(rec.get("samples")) if rec.get("samples") else "",
                          CONFIDENCE_WORDS.get(rec.get("confidence"), rec.get("confidence") or ""),
                          ", ".join(str(t) for t in as_list(rec.get("tied_with")))]],
                        "The interval is where the true speedup lies with 95 % confidence, from the spread of the "
                        "interleaved rounds (docs/recommendation.md).", stack=True),
        "verdicts": table("Suspected causes", ["cause", "verdict", "summary", "figures", "reason"], verdict_rows,
                          "Each cause from the user's story, judged on this machine's measurements: supported, "
                          "refuted, inconclusive (measured, but the figures cannot decide: the reason says why), "
                          "or not measured (with why).", stack=True),
        "evidence": table("Evidence", ["claim", "value#", "unit", "source"],
                          [[as_dict(e).get("claim") or "", na(as_dict(e).get("value")), as_dict(e).get("unit") or "",
                            as_dict(e).get("source") or ""] for e in as_list(rec.get("evidence"))], stack=True),
        "runners_up": table("Runners-up", ["strategy", "workers#", "cycles/s#", "speedup#", "95 % interval#", "why not"],
                            [[as_dict(r).get("strategy") or "", na(as_dict(r).get("workers")), na(as_dict(r).get("cycles_per_s")),
                              fmt_x(as_dict(r).get("speedup")) if is_num(as_dict(r).get("speedup")) else "",
                              fmt_ci(as_dict(r).get("speedup_ci95")),
                              as_dict(r).get("why_not") or ""] for r in as_list(rec.get("runners_up"))], stack=True),
        "changes": table("Environment changes", ["code", "change", "evidence"],
                         [[as_dict(c).get("code") or "", as_dict(c).get("change") or "", _figures(as_dict(c).get("evidence"))
                           if isinstance(as_dict(c).get("evidence"), dict) else str(as_dict(c).get("evidence") or "")]
                          for c in as_list(rec.get("environment_changes"))], stack=True),
    }
