"""Views of a report (HTML, Markdown, terminal), rendered from the report JSON alone."""

from __future__ import annotations

import functools
import json
from typing import Any, Dict, Optional

import jinja2

from gpudiag import report as report_mod

MARKDOWN_LIMIT = 60_000


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


def to_json(x: Any) -> str:
    return json.dumps(x, indent=2, default=str)


@functools.lru_cache(maxsize=2)
def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gpudiag", "report_templates"),
        autoescape=autoescape,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(bytes=fmt_bytes, num=fmt_num, pct=fmt_pct, tojson_pretty=to_json)
    return env


def _context(report: Dict[str, Any]) -> Dict[str, Any]:
    probes = report.get("probes") or {}
    counts = {s: sum(1 for r in probes.values() if r.get("status") == s) for s in report_mod.STATUSES}
    return {
        "r": report,
        "host": report.get("host") or {},
        "probes": probes,
        "findings": report_mod.all_findings(report),
        "counts": counts,
        "rec": report.get("recommendation"),
    }


def render_html(report: Dict[str, Any]) -> str:
    env = _env(True)
    css = env.loader.get_source(env, "style.css")[0]
    return env.get_template("report.html.j2").render(css=css, **_context(report))


def render_markdown(report: Dict[str, Any]) -> str:
    text = _env(False).get_template("report.md.j2").render(**_context(report))
    if len(text) > MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, MARKDOWN_LIMIT - 200)
        text = text[:cut] + "\n\n_(truncated to stay under GitHub's comment limit; the JSON report has everything)_\n"
    return text


def render_terminal(report: Dict[str, Any], files: Optional[Dict[str, str]] = None) -> str:
    ctx = _context(report)
    lines = []
    host = ctx["host"]
    gpus = ", ".join(host.get("gpus") or []) or "no NVIDIA GPU seen"
    lines.append(f"gpudiag {report.get('gpudiag_version')} ({report.get('mode')}): "
                 f"{host.get('os') or 'unknown OS'}; {gpus}")
    for name, res in ctx["probes"].items():
        status = res.get("status")
        extra = f" - {res.get('reason')}" if res.get("reason") else ""
        lines.append(f"  {name:<11} {status:<8} {res.get('duration_s', 0):6.1f} s{extra}")
    top = [f for f in ctx["findings"] if f.get("severity") in ("critical", "warning")][:5]
    if top:
        lines.append("Findings:")
        for f in top:
            lines.append(f"  [{f['severity']}] {f['code']}: {f['message']}")
    rec = ctx["rec"]
    if rec and rec.get("headline"):
        lines.append(f"Recommendation: {rec['headline']}")
    if report.get("interrupted"):
        lines.append("Interrupted: probes that had not finished are marked 'not run'.")
    for kind, path in (files or {}).items():
        lines.append(f"Wrote {kind}: {path}")
    return "\n".join(lines)
