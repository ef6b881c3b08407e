"""Formatting a report's values for people (numbers, ratios, intervals, figures with units) and the view-model
building blocks every view uses: tables, charts, badges, "n/a" with its reason. Bytes, percentages, durations
and rates come from gpudiag.units, the one formatter of each.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from markupsafe import Markup

from gpudiag.report import contract as report_mod
from gpudiag.report.values import is_num
from gpudiag.units import fmt_byte_rate, fmt_bytes, fmt_pct


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


def fmt_x(x: Any) -> str:
    """A speedup or ratio: 1.96x."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "n/a"
    return f"{x:.2f}x"


def fmt_ci(ci: Any) -> str:
    """A speedup's 95 % interval: '1.38-1.49x'; '' when there is none (baseline rows, too few rounds)."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(is_num(v) for v in ci):
        return ""
    return f"{ci[0]:.2f}-{ci[1]:.2f}x"


# Units by the end of a figure's name (docs/report-contract.md: units live in field names).
_FIGURE_UNITS = (("_bytes_per_s", "byte_rate"), ("_per_s", ""), ("_bytes", "bytes"), ("_fraction", "pct"), ("_percent", "percent"), ("_us", " µs"),
                 ("_ms", " ms"), ("_s", " s"), ("_gbps", " GB/s"), ("_cores", " cores"), ("_ci95", "ci"),
                 ("speedup", "x"), ("_ratio", "x"), ("stretch", "x"))


def figure_label(name: str) -> str:
    """'serial_busy_fraction' -> 'serial busy'; 'launch_overhead_us_median' -> 'launch overhead median';
    'job_growth_bytes_per_s' -> 'job growth' (its unit, MiB/s, goes with the value)."""
    text = str(name).replace("_bytes_per_s", "").replace("_per_s", "/s")
    for suffix in ("_bytes", "_fraction", "_percent", "_us", "_ms", "_gbps", "_s"):
        text = text.replace(suffix + "_", "_") if suffix + "_" in text else text
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return text.replace("_ci95", " 95 % interval").replace("_", " ").strip()


def fmt_figure(name: str, value: Any) -> str:
    """A verdict figure with its unit, read from its name: 1.2 GiB, 40 MiB/s, 44 %, 20.3 µs, 1.43x, 1.38-1.49x."""
    if value is None or value == "n/a":
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(is_num(v) for v in value) and "ci95" in name:
            return fmt_ci(value)
        return ", ".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value) or "none"
    if not is_num(value):
        return str(value)
    key = str(name)
    unit = next((u for suffix, u in _FIGURE_UNITS if key.endswith(suffix) or (suffix + "_") in key), None)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "byte_rate":
        return fmt_byte_rate(value)
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
    """Indented JSON of any report value (non-JSON types as str), for the raw-data fallback a view shows."""
    return json.dumps(x, indent=2, default=str)


# Evidence JSON a page shows under a finding, at most (a fleet-wide finding may hold every rank's state).
EVIDENCE_HTML_CHARS = 20_000


def evidence_json(x: Any) -> str:
    """A finding's evidence as indented JSON for the HTML, cut at EVIDENCE_HTML_CHARS with a line saying so."""
    text = to_json(x)
    if len(text) <= EVIDENCE_HTML_CHARS:
        return text
    cut = text.rfind("\n", 0, EVIDENCE_HTML_CHARS)
    return (text[:cut] + f"\n... ({len(text) - cut:,} more characters: the JSON report holds all of this "
            "finding's evidence)")


def badge(text: Any, cls: str) -> dict:
    """A template cell drawn as a coloured badge: {"badge": css class, "text": label}."""
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


def cut_rows(t: dict, limit: int) -> dict:
    """A table of at most `limit` rows, for Markdown that must stay under GitHub's size limit: rows that
    carry a critical or warning badge (an outlier, a missing rank) are kept first, then the first others,
    in the table's order; `left_out` says how many rows went (the JSON report has them all)."""
    rows = t.get("rows") or []
    if len(rows) <= limit:
        return t
    marked = [i for i, r in enumerate(rows)
              if any(isinstance(c, dict) and c.get("badge") in ("sev-critical", "sev-warning") for c in r)]
    keep = set(marked[:limit])
    keep |= set([i for i in range(len(rows)) if i not in keep][:limit - len(keep)])
    return dict(t, rows=[r for i, r in enumerate(rows) if i in keep], left_out=len(rows) - len(keep),
                total_rows=len(rows))


def chart(cid: str, title: str, svg: Optional[str], caption: str, tbl: Optional[dict]) -> dict:
    """A template chart block: SVG marked safe (charts escape their own text), caption, and the same data as a table for readers without SVG."""
    return {"id": cid, "title": title, "svg": Markup(svg) if svg else None, "caption": caption, "table": tbl}


def na(value: Any, reason: Any = None) -> str:
    """A value for display, or "n/a (why)" when it was not measured: a missing figure always says why."""
    if value is None or value == "n/a":
        return f"n/a ({reason})" if reason else "n/a"
    return fmt_num(value) if not isinstance(value, str) else value


def status_badge(status: Any) -> dict:
    """A badge for a probe's status (ok / skipped / failed); an unknown status is drawn like skipped."""
    return badge(status or "n/a", f"s-{status}" if status in report_mod.STATUSES else "s-skipped")


# Section titles of the probes, in the words a user reads them.
PROBE_TITLES = {
    "system": "System", "driver": "NVIDIA driver and GPUs", "gil": "Threads vs processes (GIL)",
    "launch": "Kernel launch latency and CUDA graphs", "contention": "CUDA context switching",
    "pcie": "PCIe transfer bandwidth", "cycle": "Strategy tournament and GPU idle gaps",
    "fleet": "Fleet: every rank compared, collectives",
    "watch": "Your job, watched while it ran",
}
# What a view may raise on a report of another shape or version: it then shows the raw data instead.
VIEW_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError, OverflowError)
