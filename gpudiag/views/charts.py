"""Inline SVG charts: pure functions from numbers to an SVG string. No external library, no script.

Colours never appear as literals: every drawn element carries a class (`c0`..`c5`, `hl-win`,
`hl-base`, `ref`, `axis`, `grid`, `ci` for a 95 % interval's whisker) that the report stylesheet maps to CSS variables, so the light
and dark schemes and print all work; text uses `currentColor`. Every label is XML-escaped here,
so callers may mark the result safe. A chart function returns None when there is nothing to draw.
"""

from __future__ import annotations

import math
from html import escape
from typing import Callable, List, Optional, Sequence, Tuple

from gpudiag.report.values import as_dict, as_list, is_num
from gpudiag.units import fmt_bytes, fmt_pct

WIDTH = 640
MARGIN_LEFT = 64
MARGIN_RIGHT = 20
MARGIN_TOP = 20      # above the plot; each legend row adds LEGEND_ROW
LEGEND_ROW = 18
MARGIN_BOTTOM = 46   # tick labels and the axis title
SERIES_CLASSES = ("c0", "c1", "c2", "c3", "c4", "c5")

Fmt = Callable[[float], str]


def _x(s: str) -> str:
    """Text made safe for SVG text and attribute values: labels come from report data, which may hold markup."""
    return escape(str(s), quote=True)


def _f(v: float) -> str:
    """Coordinates with one decimal: small output, no float noise."""
    return f"{v:.1f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def fmt_short(v: float) -> str:
    """Tick label: 0.5, 2, 40, 1.2k, 3M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2g}"


def fmt_value(v: float) -> str:
    """A measured value next to its bar: three significant digits (13.4, 0.512, 1,250)."""
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def log2_ticks(lo: float, hi: float, max_ticks: int = 7) -> List[float]:
    """Powers of two spanning [lo, hi], thinned to at most max_ticks (for sizes in bytes)."""
    a, b = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    step = max(1, math.ceil((b - a + 1) / max_ticks))
    return [2.0 ** k for k in range(a, b + 1, step)]


class _Frame:
    """Plot area geometry and the value -> pixel mappings."""

    def __init__(self, height: int, x_lo: float, x_hi: float, y_lo: float, y_hi: float,
                 log_x: bool = False, left: int = MARGIN_LEFT, top: int = MARGIN_TOP):
        self.height = height
        self.left, self.right = left, WIDTH - MARGIN_RIGHT
        self.top, self.bottom = top, height - MARGIN_BOTTOM
        self.log_x = log_x
        self.x_lo, self.x_hi = (math.log2(x_lo), math.log2(x_hi)) if log_x else (x_lo, x_hi)
        if self.x_hi == self.x_lo:
            self.x_lo, self.x_hi = self.x_lo - 1, self.x_hi + 1
        self.y_lo, self.y_hi = y_lo, (y_hi if y_hi > y_lo else y_lo + 1)

    def px(self, x: float) -> float:
        """Horizontal pixel position of data value x (log2 scale when log_x)."""
        v = math.log2(x) if self.log_x else x
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * (self.right - self.left)

    def py(self, y: float) -> float:
        """Vertical pixel position of data value y (SVG y grows downwards)."""
        return self.bottom - (y - self.y_lo) / (self.y_hi - self.y_lo) * (self.bottom - self.top)


def _open(height: int, title: str, desc: str) -> List[str]:
    """Opening lines of an SVG chart: root element, <title> and <desc> so screen readers announce what it shows."""
    return [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
            f'role="img" aria-label="{_x(title)}" font-family="system-ui, sans-serif" font-size="12">',
            f"<title>{_x(title)}</title>", f"<desc>{_x(desc)}</desc>"]


def _legend_layout(items: Sequence[Tuple[str, str]], left: int) -> List[Tuple[float, int, str, str]]:
    """Positions (x, row, label, class) of legend swatches, wrapping rows at the chart width."""
    pos, x, row = [], float(left), 0
    for label, cls in items:
        width = 22 + 6.8 * len(label)
        if x + width > WIDTH - MARGIN_RIGHT and x > left:
            x, row = float(left), row + 1
        pos.append((x, row, label, cls))
        x += width + 14
    return pos


def legend_height(items: Sequence[Tuple[str, str]], left: int = MARGIN_LEFT) -> int:
    """Top margin a legend needs: one LEGEND_ROW per row, plus the plot's own margin."""
    if not items:
        return MARGIN_TOP
    return MARGIN_TOP + LEGEND_ROW * (1 + max(r for _, r, _, _ in _legend_layout(items, left)))


def _legend(items: Sequence[Tuple[str, str]], left: int = MARGIN_LEFT) -> List[str]:
    """Swatches at the top; (label, class) pairs."""
    out = ['<g class="legend">']
    for x, row, label, cls in _legend_layout(items, left):
        y = 14 + row * LEGEND_ROW
        out.append(f'<rect class="{cls}" x="{_f(x)}" y="{y - 9}" width="12" height="12" rx="2"/>')
        out.append(f'<text x="{_f(x + 17)}" y="{y + 1}" fill="currentColor">{_x(label)}</text>')
    out.append("</g>")
    return out


def _y_axis(fr: _Frame, ticks: Sequence[float], fmt: Fmt, title: str) -> List[str]:
    """SVG lines for the y axis: grid line and label per tick, the axis line and its rotated title."""
    out = []
    for t in ticks:
        y = fr.py(t)
        out.append(f'<line class="grid" x1="{fr.left}" x2="{fr.right}" y1="{_f(y)}" y2="{_f(y)}"/>')
        out.append(f'<text x="{fr.left - 6}" y="{_f(y + 4)}" text-anchor="end" fill="currentColor">{_x(fmt(t))}</text>')
    out.append(f'<line class="axis" x1="{fr.left}" x2="{fr.left}" y1="{fr.top}" y2="{fr.bottom}"/>')
    mid = (fr.top + fr.bottom) / 2
    out.append(f'<text x="14" y="{_f(mid)}" text-anchor="middle" fill="currentColor" '
               f'transform="rotate(-90 14 {_f(mid)})">{_x(title)}</text>')
    return out


def _x_axis_title(fr: _Frame, title: str) -> str:
    """SVG text of the x axis title, centred under the plot area."""
    return (f'<text x="{_f((fr.left + fr.right) / 2)}" y="{fr.height - 6}" text-anchor="middle" '
            f'fill="currentColor">{_x(title)}</text>')


def _refs(ref_lines: Sequence[dict]) -> List[dict]:
    """Usable reference lines; the first is the main one (`ref`), the others quieter (`ref-alt`)."""
    out = []
    for r in ref_lines:
        if is_num(r.get("y")):
            out.append(dict(r, cls=r.get("cls") or ("ref" if not out else "ref-alt")))
    return out


def _ref_lines(fr: "_Frame", refs: Sequence[dict], fmt: Fmt) -> List[str]:
    """SVG dashed lines for reference values (e.g. the PCIe link maximum), each with a hover title naming the value."""
    out = []
    for r in refs:
        y = fr.py(r["y"])
        dash = "6 4" if r["cls"] == "ref" else "2 4"
        out.append(f'<line class="{_x(r["cls"])}" x1="{fr.left}" x2="{fr.right}" y1="{_f(y)}" y2="{_f(y)}" '
                   f'stroke-dasharray="{dash}"><title>{_x(r["label"])}: {_x(fmt(r["y"]))}</title></line>')
    return out


# ------------------------------------------------------------------ line chart

def line_chart(series: Sequence[dict], *, title: str, x_label: str, y_label: str,
               log_x: bool = False, x_fmt: Fmt = fmt_short, y_fmt: Fmt = fmt_short,
               ref_lines: Sequence[dict] = (), height: int = 320,
               y_max: Optional[float] = None) -> Optional[str]:
    """Lines with point markers; the y axis starts at 0 and reaches at least y_max.

    series: [{name, points: [(x, y) or (x, y, lo, hi)]}] - lo/hi draw a whisker (e.g. p10..p90).
    ref_lines: [{y, label}] horizontal dashed reference lines (e.g. a theoretical ceiling).
    """
    pts = [p for s in series for p in s.get("points", ()) if is_num(p[0]) and is_num(p[1])
           and (p[0] > 0 or not log_x)]
    if not pts:
        return None
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + [p[3] for p in pts if len(p) > 3 and is_num(p[3])]
    refs = _refs(ref_lines)
    ys += [r["y"] for r in refs]
    top = max(ys) * 1.05 if max(ys) > 0 else 1.0
    yt = nice_ticks(0.0, max(top, y_max) if is_num(y_max) else top)
    legend = [(s["name"], SERIES_CLASSES[i % len(SERIES_CLASSES)]) for i, s in enumerate(series)] \
        + [(r["label"], r["cls"]) for r in refs]
    fr = _Frame(height, min(xs), max(xs), yt[0], yt[-1], log_x=log_x, top=legend_height(legend))
    out = _open(height, title, f"{y_label} against {x_label}")
    out += _legend(legend)
    out += _y_axis(fr, yt, y_fmt, y_label)
    xt = log2_ticks(min(xs), max(xs)) if log_x else nice_ticks(min(xs), max(xs))
    for t in xt:
        if fr.x_lo - 1e-9 <= (math.log2(t) if log_x else t) <= fr.x_hi + 1e-9:
            x = fr.px(t)
            out.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{fr.top}" y2="{fr.bottom}"/>')
            out.append(f'<text x="{_f(x)}" y="{fr.bottom + 16}" text-anchor="middle" fill="currentColor">{_x(x_fmt(t))}</text>')
    out.append(f'<line class="axis" x1="{fr.left}" x2="{fr.right}" y1="{fr.bottom}" y2="{fr.bottom}"/>')
    out.append(_x_axis_title(fr, x_label))
    out += _ref_lines(fr, refs, y_fmt)
    for i, s in enumerate(series):
        cls = SERIES_CLASSES[i % len(SERIES_CLASSES)]
        sp = sorted((p for p in s.get("points", ()) if is_num(p[0]) and is_num(p[1])
                     and (p[0] > 0 or not log_x)), key=lambda p: p[0])
        if not sp:
            continue
        coords = " ".join(f"{_f(fr.px(p[0]))},{_f(fr.py(p[1]))}" for p in sp)
        out.append(f'<g class="series {cls}"><polyline class="line" points="{coords}"/>')
        for p in sp:
            x, y = fr.px(p[0]), fr.py(p[1])
            if len(p) > 3 and is_num(p[2]) and is_num(p[3]):
                out.append(f'<line class="whisker" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(fr.py(p[2]))}" y2="{_f(fr.py(p[3]))}"/>')
            out.append(f'<circle cx="{_f(x)}" cy="{_f(y)}" r="3.5"><title>{_x(s["name"])}: '
                       f'{_x(x_fmt(p[0]))} -&gt; {_x(y_fmt(p[1]))}</title></circle>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------ vertical grouped bars

def grouped_bars(categories: Sequence[str], series: Sequence[dict], *, title: str, y_label: str,
                 x_label: str = "", y_fmt: Fmt = fmt_short, ref_lines: Sequence[dict] = (),
                 height: int = 320) -> Optional[str]:
    """Vertical bars, one group per category, one bar per series.

    series: [{name, values: [number|None per category], errors?: [(lo, hi)|None per category],
    notes?: [str|None per category]}]; None draws no bar (not measured); an error pair draws a whisker
    (a 95 % interval); a note is written above its bar (e.g. "above ideal").
    """
    vals = [v for s in series for v in s.get("values", ()) if is_num(v)]
    vals += [e[1] for s in series for e in (s.get("errors") or ()) if e and is_num(e[1])]
    if not categories or not vals:
        return None
    refs = _refs(ref_lines)
    top = max(vals + [r["y"] for r in refs])
    yt = nice_ticks(min(0.0, min(vals)), top * 1.08 if top > 0 else 1.0)
    legend = [(s["name"], SERIES_CLASSES[i % len(SERIES_CLASSES)]) for i, s in enumerate(series)] \
        + [(r["label"], r["cls"]) for r in refs]
    fr = _Frame(height, 0, len(categories), yt[0], yt[-1], top=legend_height(legend))
    out = _open(height, title, f"{y_label} per {x_label or 'category'}")
    out += _legend(legend)
    out += _y_axis(fr, yt, y_fmt, y_label)
    group_w = (fr.right - fr.left) / len(categories)
    bar_w = min(48.0, group_w * 0.8 / max(len(series), 1))
    base = fr.py(max(0.0, yt[0]))
    for ci, cat in enumerate(categories):
        gx = fr.left + ci * group_w + (group_w - bar_w * len(series)) / 2
        for si, s in enumerate(series):
            values = list(s.get("values", ()))
            v = values[ci] if ci < len(values) else None
            if not is_num(v):
                continue
            y = fr.py(v)
            h = max(abs(base - y), 0.5)  # a zero bar stays visible as a hairline
            cls = SERIES_CLASSES[si % len(SERIES_CLASSES)]
            errs = list(s.get("errors") or ())
            err = errs[ci] if ci < len(errs) else None
            span = f" (95 % interval {_x(y_fmt(err[0]))}-{_x(y_fmt(err[1]))})" if err else ""
            out.append(f'<rect class="{cls}" x="{_f(gx + si * bar_w)}" y="{_f(min(y, base))}" '
                       f'width="{_f(bar_w - 2)}" height="{_f(h)}"><title>{_x(cat)}, {_x(s["name"])}: '
                       f'{_x(y_fmt(v))}{span}</title></rect>')
            cx = gx + si * bar_w + (bar_w - 2) / 2
            top_y = y
            if err and is_num(err[0]) and is_num(err[1]):
                y0, y1 = fr.py(err[0]), fr.py(err[1])
                top_y = min(y, y1)
                out.append(f'<line class="ci" x1="{_f(cx)}" x2="{_f(cx)}" y1="{_f(y0)}" y2="{_f(y1)}"/>')
                out.append(f'<line class="ci" x1="{_f(cx - 4)}" x2="{_f(cx + 4)}" y1="{_f(y1)}" y2="{_f(y1)}"/>')
                out.append(f'<line class="ci" x1="{_f(cx - 4)}" x2="{_f(cx + 4)}" y1="{_f(y0)}" y2="{_f(y0)}"/>')
            notes = list(s.get("notes") or ())
            note = notes[ci] if ci < len(notes) else None
            if note:
                out.append(f'<text x="{_f(cx)}" y="{_f(top_y - 4)}" text-anchor="middle" font-size="10" '
                           f'fill="currentColor">{_x(note)}</text>')
        out.append(f'<text x="{_f(fr.left + (ci + 0.5) * group_w)}" y="{fr.bottom + 16}" '
                   f'text-anchor="middle" fill="currentColor">{_x(cat)}</text>')
    out.append(f'<line class="axis" x1="{fr.left}" x2="{fr.right}" y1="{_f(base)}" y2="{_f(base)}"/>')
    out += _ref_lines(fr, refs, y_fmt)
    if x_label:
        out.append(_x_axis_title(fr, x_label))
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------ horizontal bars

def horizontal_bars(rows: Sequence[dict], *, title: str, x_label: str, x_fmt: Fmt = fmt_short,
                    value_fmt: Fmt = None, label_width: int = 130) -> Optional[str]:
    """One labelled horizontal bar per row: [{label, value|None, cls?, note?, lo?, hi?}].

    lo/hi draw a whisker across the bar's end (a 95 % interval of the value).

    A row without a value shows its note (e.g. "skipped: no CUDA") instead of a bar. `cls` picks
    the highlight (`hl-win`, `hl-base`); the note text is drawn after the bar so the highlight is
    never carried by colour alone.
    """
    vals = [r["value"] for r in rows if is_num(r.get("value"))]
    if not vals:
        return None
    vals += [r["hi"] for r in rows if is_num(r.get("hi"))]
    row_h = 26
    height = MARGIN_TOP + 8 + row_h * len(rows) + MARGIN_BOTTOM - 8
    xt = nice_ticks(0.0, max(vals) * 1.15 if max(vals) > 0 else 1.0)
    fr = _Frame(height, xt[0], xt[-1], 0, 1, left=label_width, top=MARGIN_TOP + 8)
    out = _open(height, title, f"{x_label} per row")
    for t in xt:
        x = fr.px(t)
        out.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{fr.top - 4}" y2="{fr.bottom}"/>')
        out.append(f'<text x="{_f(x)}" y="{fr.bottom + 16}" text-anchor="middle" fill="currentColor">{_x(x_fmt(t))}</text>')
    out.append(f'<line class="axis" x1="{fr.left}" x2="{fr.left}" y1="{fr.top - 4}" y2="{fr.bottom}"/>')
    out.append(_x_axis_title(fr, x_label))
    for i, r in enumerate(rows):
        y = fr.top + i * row_h
        out.append(f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" fill="currentColor">{_x(r["label"])}</text>')
        v = r.get("value")
        note = r.get("note") or ""
        if is_num(v):
            w = max(fr.px(v) - fr.left, 1.0)
            out.append(f'<rect class="{_x(r.get("cls") or "c0")}" x="{fr.left}" y="{y + 3}" width="{_f(w)}" '
                       f'height="{row_h - 8}" rx="2"><title>{_x(r["label"])}: {_x(x_fmt(v))}</title></rect>')
            text = (value_fmt or fmt_value)(v) + (f"  {note}" if note else "")
            tx = fr.left + w + 5
            if is_num(r.get("lo")) and is_num(r.get("hi")):
                x0, x1, ym = fr.px(r["lo"]), fr.px(r["hi"]), y + row_h / 2 - 1
                out.append(f'<line class="ci" x1="{_f(x0)}" x2="{_f(x1)}" y1="{_f(ym)}" y2="{_f(ym)}">'
                           f'<title>95 % interval {_x(x_fmt(r["lo"]))}-{_x(x_fmt(r["hi"]))}</title></line>')
                for xe in (x0, x1):
                    out.append(f'<line class="ci" x1="{_f(xe)}" x2="{_f(xe)}" y1="{_f(ym - 5)}" y2="{_f(ym + 5)}"/>')
                tx = max(tx, x1 + 5)
            anchor = "start"
            if tx + 7 * len(text) > WIDTH - 2:   # no room right of a long bar: write inside it
                tx, anchor = fr.left + w - 5, "end"
                out.append(f'<text class="on-bar" x="{_f(tx)}" y="{y + 15}" text-anchor="{anchor}">{_x(text)}</text>')
            else:
                out.append(f'<text x="{_f(tx)}" y="{y + 15}" fill="currentColor">{_x(text)}</text>')
        else:
            out.append(f'<text class="muted" x="{fr.left + 5}" y="{y + 15}" fill="currentColor" '
                       f'font-style="italic">{_x(note or "not measured")}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------ stacked 100 % bars

def stacked_bars(rows: Sequence[dict], parts: Sequence[Tuple[str, str]], *, title: str,
                 label_width: int = 130) -> Optional[str]:
    """Horizontal 100 % bars: rows [{label, fractions: {part: 0..1}}], parts [(key, label)].

    Used for "where did the time go": busy vs the kinds of idle, baseline against the fastest strategy.
    """
    usable = [r for r in rows if any(is_num(v) and v > 0 for v in (r.get("fractions") or {}).values())]
    if not usable:
        return None
    row_h = 34
    legend = [(lab, SERIES_CLASSES[i % len(SERIES_CLASSES)]) for i, (_, lab) in enumerate(parts)]
    top = legend_height(legend, label_width) + 4
    height = top + row_h * len(usable) + MARGIN_BOTTOM - 8
    fr = _Frame(height, 0.0, 1.0, 0, 1, left=label_width, top=top)
    out = _open(height, title, "share of wall time per row")
    out += _legend(legend, label_width)
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = fr.px(t)
        out.append(f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{fr.top - 4}" y2="{fr.bottom}"/>')
        out.append(f'<text x="{_f(x)}" y="{fr.bottom + 16}" text-anchor="middle" fill="currentColor">{fmt_pct(t)}</text>')
    out.append(_x_axis_title(fr, "share of the measured time"))
    for i, r in enumerate(usable):
        y = fr.top + i * row_h
        out.append(f'<text x="{label_width - 8}" y="{y + 19}" text-anchor="end" fill="currentColor">{_x(r["label"])}</text>')
        fr_vals = r["fractions"]
        total = sum(v for v in fr_vals.values() if is_num(v) and v > 0)
        scale = 1.0 / total if total > 1.0 else 1.0  # never draw past 100 %
        x = float(fr.left)
        for pi, (key, lab) in enumerate(parts):
            v = fr_vals.get(key)
            if not is_num(v) or v <= 0:
                continue
            w = v * scale * (fr.right - fr.left)
            out.append(f'<rect class="{SERIES_CLASSES[pi % len(SERIES_CLASSES)]}" x="{_f(x)}" y="{y + 4}" '
                       f'width="{_f(max(w, 0.5))}" height="{row_h - 10}"><title>{_x(r["label"])}, {_x(lab)}: '
                       f'{fmt_pct(v, 1)}</title></rect>')
            x += w
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------ the report's charts
# Each takes one probe's `data` (docs/report-contract.md) and returns an SVG string or None.

PCIE_SERIES = (("h2d", "pinned"), ("h2d", "pageable"), ("d2h", "pinned"), ("d2h", "pageable"),
               ("bidir", "pinned"), ("bidir", "pageable"))
DIRECTION_LABELS = {"h2d": "host->device", "d2h": "device->host", "bidir": "both ways"}


def pcie_chart(data: dict) -> Optional[str]:
    """Bandwidth (median, p10..p90 whiskers) vs transfer size, log x, one line per direction x memory."""
    points = [p for p in as_list(data.get("points")) if isinstance(p, dict)]
    series = []
    for direction, memory in PCIE_SERIES:
        pts = []
        for p in points:
            if p.get("direction") == direction and p.get("memory") == memory:
                st = p.get("gbps") or {}
                if is_num(p.get("size_bytes")) and is_num(st.get("median")):
                    pts.append((p["size_bytes"], st["median"], st.get("p10"), st.get("p90")))
        if pts:
            series.append({"name": f"{DIRECTION_LABELS[direction]} {memory}", "points": pts})
    theo = data.get("theoretical_gbps_per_direction")
    refs = [{"y": theo, "label": "link maximum per direction"}] if is_num(theo) else []
    return line_chart(series, title="PCIe bandwidth vs transfer size", x_label="transfer size (bytes, log scale)",
                      y_label="GB/s", log_x=True, x_fmt=fmt_bytes, ref_lines=refs)


def gil_chart(data: dict) -> Optional[str]:
    """Speedup at the largest measured worker count, threads vs processes, per workload."""
    best = {}  # (workload, mode) -> row with the most workers
    for r in as_list(data.get("scaling")):
        if not isinstance(r, dict) or not is_num(r.get("speedup")) or not is_num(r.get("workers")):
            continue
        key = (r.get("workload"), r.get("mode"))
        if key not in best or r["workers"] > best[key]["workers"]:
            best[key] = r
    workloads = list(dict.fromkeys(k[0] for k in best))
    if not workloads:
        return None
    max_workers = max(r["workers"] for r in best.values())
    counts = {m: {r["workers"] for k, r in best.items() if k[1] == m} for m in ("threads", "processes")}
    def interval(r):
        """The row's 95 % speedup interval as (low, high), or None when it is missing or not finite."""
        ci = r.get("speedup_ci95")
        return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(is_num, ci)) else None

    def above(r):
        """True when a speedup beats linear (by 10 %, or its interval's low end does): the bar is noted "above ideal!", since more than linear speedup hints at a measurement artefact."""
        ci = interval(r)
        return r["speedup"] > r["workers"] * 1.1 or (ci is not None and ci[0] > r["workers"])

    series = [{"name": mode + (f", {next(iter(counts[mode]))} workers" if len(counts[mode]) == 1 else ", most workers"),
               "values": [best[(w, mode)]["speedup"] if (w, mode) in best else None for w in workloads],
               "errors": [interval(best[(w, mode)]) if (w, mode) in best else None for w in workloads],
               "notes": ["above ideal!" if (w, mode) in best and above(best[(w, mode)]) else None for w in workloads]}
              for mode in ("threads", "processes") if any(k[1] == mode for k in best)]
    refs = []
    if max_workers > 1:
        refs.append({"y": float(max_workers), "label": f"ideal {max_workers}x"})
    refs.append({"y": 1.0, "label": "1x: no gain"})
    return grouped_bars(workloads, series, title="Threads vs processes: speedup over 1 worker",
                        y_label="speedup (x)", x_label="workload", ref_lines=refs)


def strategy_notes(name: str, recommended: Optional[str], tied: Sequence[str], fastest: Optional[str]) -> List[str]:
    """What a strategy row is, in words: "baseline" (serial), "recommended" (or "recommended: the simplest of a
    tie"), "tied", "fastest" (the highest median cycles/s, which on a tie is not the recommended one)."""
    notes = ["baseline"] if name == "serial" else []
    if name == recommended:
        notes.append("recommended: the simplest of a tie" if tied else "recommended")
    elif name in tied:
        notes.append("tied")
    if name == fastest:
        notes.append("fastest")
    return notes


def tournament_chart(data: dict, recommended: Optional[str] = None, tied: Sequence[str] = ()) -> Optional[str]:
    """Cycles/s per strategy, each bar labelled with what it is: the serial baseline, the recommended strategy
    (the simplest of a tie when `tied` names the others), the tied ones, and the fastest by median where that
    is not the recommended one. The recommended bar is highlighted; without a recommendation, the fastest."""
    strategies = [s for s in as_list(data.get("strategies")) if isinstance(s, dict)]
    ok = [s for s in strategies if s.get("status") == "ok" and is_num(s.get("cycles_per_s"))]
    fastest = max(ok, key=lambda s: s["cycles_per_s"])["name"] if ok else None
    highlight = recommended if recommended in {s.get("name") for s in ok} else fastest
    rows = []
    base = next((s.get("cycles_per_s") for s in strategies if s.get("name") == "serial" and s.get("status") == "ok"),
                None)
    for s in strategies:
        name = str(s.get("name"))
        label = name + (f" x{s['workers']}" if is_num(s.get("workers")) and s["workers"] > 1 else "")
        v = s.get("cycles_per_s") if s.get("status") == "ok" else None
        ci = s.get("speedup_ci95")
        lo = hi = None
        if is_num(base) and is_num(v) and isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(is_num, ci)):
            lo, hi = ci[0] * base, ci[1] * base
        words = ", ".join(strategy_notes(name, recommended, tied, fastest))
        if is_num(v) and is_num(s.get("speedup_vs_serial")) and name != "serial":
            words = f"({s['speedup_vs_serial']:.2f}x) {words}".rstrip()
        cls = "hl-win" if name == highlight else "hl-base" if name == "serial" else "c0"
        note = words if is_num(v) else f"{s.get('status') or 'not run'}: {s.get('reason') or 'no value'}"
        rows.append({"label": label, "value": v, "cls": cls, "note": note, "lo": lo, "hi": hi})
    return horizontal_bars(rows, title="Strategy tournament: cycles per second", x_label="cycles/s (higher is faster)")


IDLE_PARTS = (("busy", "GPU busy"), ("host_wait", "idle: waiting for Python"),
              ("sync_wait", "idle: host sync"), ("copy_wait", "idle: waiting on a copy"),
              ("launch_overhead", "idle: launch overhead"),
              ("other", "idle: unattributed"))


def idle_fractions(timeline: dict) -> dict:
    """Busy fraction plus the idle share split in proportion to the measured breakdown (ms)."""
    busy = timeline.get("busy_fraction")
    if not is_num(busy):
        return {}
    busy = min(max(busy, 0.0), 1.0)
    idle = 1.0 - busy
    bd = {k: v for k, v in (timeline.get("breakdown_ms") or {}).items() if is_num(v) and v > 0}
    total = sum(bd.values())
    out = {"busy": busy}
    if total > 0:
        for key in ("host_wait", "sync_wait", "copy_wait", "launch_overhead"):
            out[key] = idle * bd.get(key, 0.0) / total
        out["other"] = idle * sum(v for k, v in bd.items() if k not in out) / total
    else:
        out["other"] = idle
    return out


def idle_breakdown_chart(idle: dict) -> Optional[str]:
    """SVG stacked bars of busy vs each idle cause per cycle timeline (baseline, fastest), or None without data."""
    rows = [{"label": name, "fractions": idle_fractions(t)} for name, t in idle.items() if isinstance(t, dict)]
    return stacked_bars(rows, IDLE_PARTS, title="Where the time went: baseline vs fastest")


def gap_histogram_chart(idle: dict) -> Optional[str]:
    """Idle-gap counts per duration bin, one bar series per timeline (baseline, fastest)."""
    timelines = [(n, t) for n, t in idle.items() if isinstance(t, dict)]
    bins = []
    for _, t in timelines:
        for b in as_list(as_dict(t.get("gaps")).get("histogram")):
            key = (b.get("lo_ms"), b.get("hi_ms"))
            if is_num(key[0]) and key not in bins:
                bins.append(key)
    if not bins:
        return None
    bins.sort(key=lambda k: k[0])
    series = []
    for name, t in timelines:
        counts = {(b.get("lo_ms"), b.get("hi_ms")): b.get("count") for b in as_list(as_dict(t.get("gaps")).get("histogram"))}
        series.append({"name": name, "values": [counts.get(k, 0) for k in bins]})
    cats = [f"{fmt_short(lo)}-{fmt_short(hi)}" if is_num(hi) else f">{fmt_short(lo)}" for lo, hi in bins]
    return grouped_bars(cats, series, title="GPU idle gaps by length", y_label="number of gaps",
                        x_label="gap length (ms)")


def utilization_chart(nvml: dict) -> Optional[str]:
    """SVG line of NVML's GPU utilisation (%) over time (s), or None without samples: shows how coarse nvidia-smi's figure is."""
    samples = [(s.get("t_s"), s.get("gpu_percent")) for s in as_list(nvml.get("samples")) if isinstance(s, dict)]
    return line_chart([{"name": "NVML GPU utilisation", "points": samples}], title="GPU utilisation as nvidia-smi reports it",
                      x_label="time (s)", y_label="%", y_max=100.0)


# ------------------------------------------------------------------ heat map (fleet nodes by metric)

# Relative speed (1 = like the others) -> colour class, slowest first: the buckets a reader tells apart.
HEAT_BUCKETS = ((0.80, "hm4", "below 0.80x"), (0.90, "hm3", "0.80-0.90x"), (0.95, "hm2", "0.90-0.95x"),
                (0.98, "hm1", "0.95-0.98x"), (float("inf"), "hm0", "0.98x or faster"))
HEAT_MAX_COLUMNS = 50
HEAT_CELL_MAX = 22


def heat_class(relative) -> str:
    """The colour class of a relative speed ("hm-na" without one)."""
    if not is_num(relative):
        return "hm-na"
    return next(cls for hi, cls, _ in HEAT_BUCKETS if relative < hi)


def heat_map(panels: Sequence[dict], *, title: str) -> Optional[str]:
    """Small multiples: one panel per metric, one square per node, in the same place in every panel (so a node
    slow on several metrics lines up), coloured by its speed relative to the other nodes.

    panels: [{"name", "cells": [{"label", "relative"|None, "flagged": bool, "rank_flagged": bool, "text": hover
    text}]}]: a flagged node is outlined, a node with a flagged rank (whose median may still look healthy)
    outlined dashed, so a mark is never colour alone.
    """
    panels = [p for p in panels if any(is_num(c.get("relative")) for c in as_list(p.get("cells")))]
    if not panels:
        return None
    n = max(len(as_list(p.get("cells"))) for p in panels)
    cols = min(n, HEAT_MAX_COLUMNS)
    rows = -(-n // cols)
    left, right = 8, WIDTH - 8
    cell = min(HEAT_CELL_MAX, (right - left) / cols)
    legend = [(label, cls) for _, cls, label in HEAT_BUCKETS] + [("not measured", "hm-na")]
    top = legend_height(legend, left)
    panel_h = 20 + rows * cell + 10
    height = int(top + panel_h * len(panels) + 4)
    out = _open(height, title, f"{n} nodes, one square each, in each of {len(panels)} metrics, coloured by speed "
                               "relative to the other nodes; outlined squares are flagged nodes, dashed ones nodes "
                               "with a flagged rank")
    out += _legend(legend, left)
    for i, p in enumerate(panels):
        y0 = top + i * panel_h
        out.append(f'<text x="{left}" y="{_f(y0 + 14)}" fill="currentColor" font-weight="600">{_x(p["name"])}</text>')
        for j, c in enumerate(as_list(p.get("cells"))):
            c = as_dict(c)
            r, k = divmod(j, cols)
            cls = heat_class(c.get("relative")) + (" hm-flag" if c.get("flagged") else
                                                   " hm-rank" if c.get("rank_flagged") else "")
            out.append(f'<rect class="{cls}" x="{_f(left + k * cell)}" y="{_f(y0 + 20 + r * cell)}" '
                       f'width="{_f(cell - 1)}" height="{_f(cell - 1)}"><title>{_x(c.get("text") or c.get("label"))}'
                       "</title></rect>")
    out.append("</svg>")
    return "\n".join(out)
