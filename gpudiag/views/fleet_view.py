"""The `fleet` probe's view: verdict, a rank x metric table with outliers marked, nodes, collective curves.

Registered in gpudiag.views.render's probe sections, so HTML and Markdown both get it; also the
terminal summary `gpudiag fleet` prints on rank 0. Nothing is measured here, every value comes
from the report and a missing one reads n/a.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from gpudiag.report.values import as_dict, as_list, is_num
from gpudiag.views import charts
from gpudiag.units import fmt_bytes, fmt_pct
from gpudiag.views.format import badge, chart, fmt_num, table

METRIC_COLS = (("matmul_gflops", "matmul GFLOP/s#"), ("launch_us", "launch µs#"), ("h2d_gbps", "H2D GB/s#"))
METRIC_WORDS = {"matmul_gflops": "matmul", "launch_us": "launch", "h2d_gbps": "H2D",
                "intra_busbw_gbps": "intra-node busbw"}
SCOPE_TITLES = {"world": "every rank", "intra_node": "within each node", "inter_node": "across nodes (one rank each)"}
TERMINAL_RANKS = 16
TERMINAL_FLAGGED = 40
# A fleet of thousands of ranks, on one page: rows per collapsed page of the rank and node tables, the
# not-ok ranks listed before them, outlier rows, nodes whose within-node collectives are listed, and the
# fewest nodes worth a heat map.
RANK_PAGE = 500
LOOK_AT_RANKS = 200
OUTLIER_ROWS = 200
COLLECTIVE_NODES = 8
HEAT_MIN_NODES = 3


def _cell(entry: dict, metric: str) -> Any:
    """"12.3 (0.34x, z 9.1)" for a figure; a critical badge when the rank is flagged on it."""
    fig = as_dict(as_dict(entry.get("figures")).get(metric))
    sc = as_dict(as_dict(entry.get("scores")).get(metric))
    if not is_num(fig.get("value")):
        return "n/a"
    text = fmt_num(fig["value"])
    if is_num(sc.get("relative")) and is_num(sc.get("score")):
        text += f" ({sc['relative']:.2f}x, z {sc['score']:.1f})"
    return badge(text + " outlier", "sev-critical") if sc.get("flagged") else text


def _device(entry: dict) -> str:
    """How the rank table names a rank's device ("GPU 1 A100 · uuid 9f8e", "CPU (8 threads)")."""
    dev = as_dict(entry.get("device"))
    if dev.get("kind") == "cuda":
        uuid = f" · uuid {dev['gpu_uuid_hash']}" if dev.get("gpu_uuid_hash") else ""
        return f"GPU {dev.get('index')} {dev.get('name') or ''}{uuid}".strip()
    if dev.get("kind") == "cpu":
        return f"CPU ({dev.get('torch_threads') or '?'} threads)"
    return "n/a"


def _cpu(entry: dict) -> str:
    """The CPU a rank got while it measured, and why no more: "0.20 core, throttled 90 % (0.2 CPU limit)"."""
    cpu, v = as_dict(entry.get("cpu")), as_dict(entry.get("cpu_verdict"))
    if not is_num(cpu.get("cores_got")):
        return "n/a"
    text = f"{cpu['cores_got']:.2f} core"
    causes = as_list(v.get("causes"))
    thr, limit = as_dict(cpu.get("throttling")), as_dict(cpu.get("limit"))
    if "quota" in causes and is_num(thr.get("throttled_share")):
        text += f", throttled {fmt_pct(thr['throttled_share'])} ({fmt_num(limit.get('quota_cpus'))} CPU limit)"
    if "other_processes" in causes and is_num(cpu.get("other_cores")):
        text += f", other programs {cpu['other_cores']:.2f} core"
    if as_list(cpu.get("job_ranks_sharing")) and is_num(cpu.get("fair_share")) and cpu["fair_share"] < 1:
        text += (f", fair share {cpu['fair_share']:.2f}: shared with rank(s) "
                 f"{', '.join(str(r) for r in as_list(cpu.get('job_ranks_sharing')))}")
    return text


def _status(entry: dict, flagged_ranks: set, shared_ranks: set) -> Any:
    """The rank's status badge: error (it could not measure), straggler (flagged), shared cores (slowed
    by the launch's pinning) or ok."""
    if entry.get("error"):
        return badge("error", "sev-critical")
    if entry.get("rank") in flagged_ranks:
        return badge("straggler", "sev-critical")
    if entry.get("rank") in shared_ranks:
        return badge("shared cores", "sev-warning")
    return badge("ok", "s-ok")


def _paged(t: dict, unit: str, page: int, first: Any = None) -> dict:
    """The table split into collapsed pages of `page` rows when it has more ("ranks 0-499"), not stacked
    into cards on a phone (a long table scrolls sideways instead: one card per rank would be endless)."""
    rows = t["rows"]
    if len(rows) <= page:
        return t
    pages = []
    for start in range(0, len(rows), page):
        end = min(start + page, len(rows))
        a, b = (rows[start][0], rows[end - 1][0]) if first is None else (first(rows[start]), first(rows[end - 1]))
        pages.append({"label": f"{unit} {a} - {b} ({end - start})", "start": start, "end": end})
    return dict(t, pages=pages, stack=False)


def _rank_rows(data: dict) -> List[list]:
    """One row per rank that answered and per missing rank, in rank order."""
    outliers = [as_dict(o) for o in as_list(data.get("outliers"))]
    flagged = {o.get("rank") for o in outliers if o.get("kind") == "straggler" and o.get("rank") is not None}
    shared = {r for o in outliers if o.get("kind") == "shared_cores"
              for r in ([o.get("rank")] if o.get("rank") is not None else as_list(o.get("ranks")))}
    rows = []
    for e in map(as_dict, as_list(data.get("ranks"))):
        rows.append([str(e.get("rank")), e.get("host") or "n/a", str(e.get("local_rank")), _device(e)]
                    + [_cell(e, m) for m, _ in METRIC_COLS] + [_cpu(e), _status(e, flagged, shared)])
    for m in as_list(data.get("missing")):
        m = as_dict(m)
        rows.append([str(m.get("rank")), m.get("host") or "n/a", str(m.get("local_rank")), "n/a"]
                    + ["n/a"] * (len(METRIC_COLS) + 1) + [badge("missing: " + str(m.get("reason") or ""), "sev-critical")])
    rows.sort(key=lambda r: int(r[0]) if r[0].isdigit() else 0)
    return rows


RANK_COLS = ["rank#", "host", "local#", "device"] + [c for _, c in METRIC_COLS] + ["CPU", "status"]


def rank_table(data: dict, rows: Optional[List[list]] = None) -> dict:
    """Every rank (and every missing one) against every comparable figure; over RANK_PAGE ranks, in
    collapsed pages of RANK_PAGE."""
    rows = _rank_rows(data) if rows is None else rows
    t = table("Ranks", RANK_COLS, rows,
              "Each figure is the median of its repeats (host-timed repeats are sustained windows of several "
              "CPU-quota periods); (0.34x, z 9.1) is its speed relative to the median of the "
              "other comparable ranks and its robust score (>= 3 and at least 5 % slower marks an outlier). "
              "CPU: the cores' worth of CPU the rank got while it measured, and why no more. "
              "CPU ranks measure CPU equivalents (see the figures' descriptions below).", stack=True)
    return _paged(t, "ranks", RANK_PAGE)


def ranks_to_look_at(rows: List[list], limit: int = LOOK_AT_RANKS) -> Optional[dict]:
    """The ranks of a large fleet that are not ok (missing, an error, a straggler, shared cores), before the
    pages of every rank; None when every rank is ok."""
    marked = [r for r in rows if isinstance(r[-1], dict) and r[-1].get("badge") != "s-ok"]
    if not marked:
        return None
    left = len(marked) - limit
    return table("Ranks to look at", RANK_COLS, marked[:limit],
                 f"Every rank that is not ok{f': the first {limit}, {left} more in the pages below' if left > 0 else ''}"
                 "; every rank is in the pages below.", stack=True)


def node_table(data: dict) -> dict:
    """Each node's median figures, against the other nodes when there are several."""
    rows = []
    for node in map(as_dict, as_list(data.get("nodes"))):
        sc = as_dict(node.get("scores"))
        cells = []
        for m, _ in METRIC_COLS:
            s = as_dict(sc.get(m))
            cells.append(badge(f"{fmt_num(s.get('value'))} ({s['relative']:.2f}x) outlier", "sev-critical")
                         if s.get("flagged") else
                         f"{fmt_num(s.get('value'))} ({s['relative']:.2f}x)" if is_num(s.get("relative")) else
                         fmt_num(s.get("value")) if is_num(s.get("value")) else "n/a")
        intra = as_dict(sc.get("intra_busbw_gbps"))
        cells.append(fmt_num(intra.get("value")) + (f" ({intra['relative']:.2f}x)" if is_num(intra.get("relative")) else "")
                     if is_num(intra.get("value")) else "n/a")
        rows.append([node.get("host") or "n/a", ", ".join(str(r) for r in as_list(node.get("ranks")))] + cells)
    t = table("Nodes", ["host", "ranks"] + [c for _, c in METRIC_COLS] + ["intra-node busbw GB/s#"], rows,
              "A node's figure is the median of its ranks; the ratio compares it with the other nodes.", stack=True)
    return _paged(t, "nodes", RANK_PAGE, first=lambda r: r[0])


def outlier_table(data: dict, limit: int = OUTLIER_ROWS) -> dict:
    """data.outliers as a table: kind, level, who, which figure, by how much (the first `limit`: a fleet-wide
    slowness flags thousands of ranks, which the verdict already counts)."""
    rows = []
    outliers = [as_dict(o) for o in as_list(data.get("outliers"))]
    for o in outliers[:limit]:
        rows.append([o.get("kind") or "", o.get("level") or "", "" if o.get("rank") is None else str(o["rank"]),
                     o.get("host") or "", "" if o.get("gpu_index") is None else str(o["gpu_index"]),
                     o.get("gpu_uuid_hash") or "", METRIC_WORDS.get(o.get("metric"), str(o.get("metric"))),
                     fmt_num(o.get("value")), fmt_num(o.get("median")),
                     f"{o['relative']:.2f}x" if is_num(o.get("relative")) else "", fmt_num(o.get("score")),
                     o.get("note") or ""])
    left = len(outliers) - len(rows)
    return table("Outliers", ["kind", "level", "rank#", "host", "GPU#", "uuid hash", "metric", "value#",
                              "median#", "relative#", "score#", "note"], rows,
                 "median: of the other comparable ranks (or nodes); for a system-wide row, the reference it misses."
                 + (f" The first {limit} of {len(outliers)} outliers; the JSON report holds all." if left > 0 else ""),
                 stack=True)


def _slowest_intra_hosts(rows: List[dict], keep: int) -> Optional[set]:
    """The `keep` nodes with the lowest intra-node all_reduce busbw at its largest size, or None when no more
    than `keep` nodes have intra-node rows."""
    intra = [c for c in rows if c.get("scope") == "intra_node" and c.get("host")]
    hosts = {c["host"] for c in intra}
    if len(hosts) <= keep:
        return None
    ar = [c for c in intra if c.get("op") == "all_reduce" and is_num(c.get("busbw_gbps")) and is_num(c.get("size_bytes"))]
    top = max((c["size_bytes"] for c in ar), default=None)
    at = sorted((c for c in ar if c["size_bytes"] == top), key=lambda c: c["busbw_gbps"])
    slow = [c["host"] for c in at][:keep]
    return set(slow) | set(sorted(hosts - {c["host"] for c in at})[:max(keep - len(slow), 0)])


def collective_table(data: dict, keep_nodes: int = COLLECTIVE_NODES) -> dict:
    """Every collectives row with its time, algbw and busbw (and busbw's p10..p90); with more than
    `keep_nodes` nodes, the within-node rows of the slowest `keep_nodes` only (the heat map has every node's)."""
    rows = []
    cs = [as_dict(c) for c in as_list(data.get("collectives"))]
    keep = _slowest_intra_hosts(cs, keep_nodes)
    shown = [c for c in cs if keep is None or c.get("scope") != "intra_node" or c.get("host") in keep]
    for c in shown:
        t = as_dict(c.get("time_us"))
        spread = (f"{fmt_num(c.get('busbw_gbps_p10'))}..{fmt_num(c.get('busbw_gbps_p90'))}"
                  if is_num(c.get("busbw_gbps_p10")) else "")
        rows.append([c.get("scope") or "", c.get("host") or "", c.get("op") or "", fmt_bytes(c.get("size_bytes")),
                     str(c.get("n_ranks")), fmt_num(t.get("median")), fmt_num(c.get("algbw_gbps")),
                     fmt_num(c.get("busbw_gbps")), spread, str(t.get("n") or ""), c.get("reason") or ""])
    caption = "" if keep is None else (
        f"Within-node rows of the {len(keep)} nodes with the lowest all_reduce bus bandwidth at the largest size; "
        f"the other {len({c.get('host') for c in cs if c.get('scope') == 'intra_node'}) - len(keep)} nodes' "
        f"{len(cs) - len(shown)} rows are in the JSON report (and each node's busbw in the heat map).")
    return table("Collectives", ["scope", "host", "op", "size#", "ranks#", "time µs#", "algbw GB/s#", "busbw GB/s#",
                                 "busbw p10..p90#", "repeats#", "note"], rows, caption)


def heat_map(data: dict) -> Optional[dict]:
    """Nodes by metric: one square per node in each figure (and the intra-node busbw), coloured by its speed
    relative to the other nodes; None with fewer than HEAT_MIN_NODES nodes (the node table says it all)."""
    nodes = [as_dict(n) for n in as_list(data.get("nodes"))]
    if len(nodes) < HEAT_MIN_NODES:
        return None
    panels, rows = [], []
    rank_flags: Dict[tuple, List[str]] = {}  # (host, metric) -> "rank 11" of its straggler ranks
    for o in map(as_dict, as_list(data.get("outliers"))):
        if o.get("level") == "rank" and o.get("kind") == "straggler":
            rank_flags.setdefault((o.get("host"), o.get("metric")), []).append(f"rank {o.get('rank')}")
    for m in [m for m, _ in METRIC_COLS] + ["intra_busbw_gbps"]:
        cells = []
        for n in nodes:
            sc = as_dict(as_dict(n.get("scores")).get(m))
            rel = sc.get("relative") if is_num(sc.get("relative")) else None
            strag = rank_flags.get((n.get("host"), m), [])
            text = (f"{n.get('host')}: {METRIC_WORDS[m]} {fmt_num(sc.get('value'))}"
                    + (f", {rel:.2f}x the other nodes" if rel is not None else "")
                    + (" (outlier)" if sc.get("flagged") else "")
                    + (f"; straggler {', '.join(strag)}" if strag else ""))
            cells.append({"label": n.get("host"), "relative": rel, "flagged": bool(sc.get("flagged")),
                          "rank_flagged": bool(strag), "text": text})
        panels.append({"name": f"{METRIC_WORDS[m]} ({sum(c['relative'] is not None for c in cells)} nodes)",
                       "cells": cells})
    svg = charts.heat_map(panels, title=f"Nodes by metric: speed relative to the other nodes ({len(nodes)} nodes)")
    if svg is None:
        return None
    for n in nodes:
        sc = as_dict(n.get("scores"))
        if any(as_dict(v).get("flagged") for v in sc.values()):
            rows.append([n.get("host") or "n/a"] + [
                f"{as_dict(sc.get(m)).get('relative'):.2f}x" if is_num(as_dict(sc.get(m)).get("relative")) else "n/a"
                for m in [m for m, _ in METRIC_COLS] + ["intra_busbw_gbps"]])
    return chart("chart-fleet-heatmap", "Nodes by metric", svg,
                 "One square per node, in the same place in every panel (a node slow in several figures lines up); "
                 "the colour is its figure relative to the median of the other nodes (1.00x: like them), an "
                 "outlined square is a flagged node, a dashed one a node with a straggler rank (a node's figure is "
                 "the median of its ranks, so one slow GPU does not colour it). Hover a square for the node and its "
                 "figure; the node table below has every number.",
                 table("Flagged nodes", ["host"] + [METRIC_WORDS[m] for m, _ in METRIC_COLS] + ["intra-node busbw"],
                       rows) if rows else None)


def collective_charts(data: dict) -> List[dict]:
    """One busbw-vs-size chart per scope; intra-node curves are the median over nodes."""
    rows = [as_dict(c) for c in as_list(data.get("collectives")) if is_num(as_dict(c).get("busbw_gbps"))]
    backend = as_dict(data.get("collectives_status")).get("backend") or "?"
    out = []
    for scope in ("world", "intra_node", "inter_node"):
        mine = [c for c in rows if c.get("scope") == scope]
        if not mine:
            continue
        series = []
        for op in ("all_reduce", "all_gather", "reduce_scatter"):
            by_size: Dict[int, List[dict]] = {}
            for c in mine:
                if c.get("op") == op and is_num(c.get("size_bytes")):
                    by_size.setdefault(c["size_bytes"], []).append(c)
            pts = []
            for size, cs in sorted(by_size.items()):
                cs.sort(key=lambda c: c["busbw_gbps"])
                mid = cs[len(cs) // 2]
                pts.append((size, mid["busbw_gbps"], mid.get("busbw_gbps_p10"), mid.get("busbw_gbps_p90")))
            if pts:
                series.append({"name": op, "points": pts})
        hosts = {c.get("host") for c in mine if c.get("host")}
        title = f"Collectives {SCOPE_TITLES[scope]}: bus bandwidth vs size ({backend})"
        svg = charts.line_chart(series, title=title, x_label="operation size S (bytes, log scale)",
                                y_label="busbw GB/s", log_x=True, x_fmt=fmt_bytes)
        cap = ("busbw = algbw x 2(n-1)/n for all_reduce and x (n-1)/n for all_gather and reduce_scatter (nccl-tests), "
               "so it compares with the link speed whatever the rank count; whiskers are p10..p90 of the repeats. ")
        if scope == "intra_node" and len(hosts) > 1:
            cap += f"Each point is the median over {len(hosts)} nodes; the table has every node. "
        if backend == "gloo":
            cap += "On gloo these are CPU tensors over host networking, not NCCL, NVLink or GPU peer-to-peer."
        out.append(chart(f"chart-fleet-{scope}", title.split(":")[0], svg, cap,
                         table("", ["op", "size#", "busbw GB/s#"], [[s["name"], fmt_bytes(p[0]), fmt_num(p[1])]
                                                                   for s in series for p in s["points"]])))
    return out


def relative_chart(data: dict, metric: str = "matmul_gflops") -> Optional[dict]:
    """Each rank's speed relative to its peers on one figure: a straggler's bar is short and says so."""
    rows = []
    for e in sorted((as_dict(e) for e in as_list(data.get("ranks"))), key=lambda e: e.get("rank") if is_num(e.get("rank")) else 0):
        sc = as_dict(as_dict(e.get("scores")).get(metric))
        rows.append({"label": f"rank {e.get('rank')}", "value": sc.get("relative"),
                     "cls": "hl-base" if sc.get("flagged") else "c0",
                     "note": f"z {sc['score']:.1f}" + (" outlier" if sc.get("flagged") else "")
                     if is_num(sc.get("score")) else "not comparable"})
    if len(rows) < 2 or len(rows) > 64:
        return None
    svg = charts.horizontal_bars(rows, title=f"{METRIC_WORDS[metric]}: speed relative to the other ranks",
                                 x_label="relative speed (1 = like its peers, lower is slower)",
                                 value_fmt=lambda v: f"{v:.2f}x")
    return chart("chart-fleet-relative", f"{METRIC_WORDS[metric].capitalize()} relative to the other ranks", svg,
                 "1.00x is the median of the other comparable ranks; an outlier is at least 5 % slower and scores "
                 ">= 3 robust standard deviations (median/MAD, or the measured repeat noise when that is larger).", None)


def view(data: dict) -> dict:
    """kv, tables, charts and notes for gpudiag.views.render's probe sections."""
    launcher, status, exclude = as_dict(data.get("launcher")), as_dict(data.get("collectives_status")), as_dict(data.get("exclude"))
    kinds: Dict[str, int] = {}
    for e in map(as_dict, as_list(data.get("ranks"))):
        k = as_dict(e.get("device")).get("kind") or "unknown"
        kinds[k] = kinds.get(k, 0) + 1
    kv = [("Verdict", data.get("verdict")),
          ("Exit code", f"{data.get('exit_code')} ({data.get('exit_meaning')})"),
          ("Launcher", f"{launcher.get('launcher')}, world size {data.get('world_size')}, "
                       f"{data.get('answered')} answered, deadline {fmt_num(data.get('deadline_s'))} s"),
          ("Devices", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "n/a"),
          ("Collectives", f"{status.get('state')} on {status.get('backend') or 'n/a'}"
                          + (f": {status.get('reason')}" if status.get("reason") and status.get("state") != "ok" else "")),
          ("Exclude (Slurm)", exclude.get("slurm") or "none")]
    notes = []
    cpu = [e for e in map(as_dict, as_list(data.get("ranks"))) if as_dict(e.get("device")).get("kind") == "cpu"]
    if cpu:
        figs = as_dict(cpu[0].get("figures"))
        notes.append("CPU ranks measure CPU equivalents: " + "; ".join(
            f"{METRIC_WORDS[m]} = {as_dict(figs.get(m)).get('what')}" for m, _ in METRIC_COLS if as_dict(figs.get(m)).get("what")))
    if status.get("backend") == "gloo":
        notes.append("Not checked with gloo on CPU: NCCL, NVLink and GPU peer-to-peer bandwidth.")
    charts_ = collective_charts(data)
    for first in (relative_chart(data), heat_map(data)):
        if first:
            charts_.insert(0, first)
    rows = _rank_rows(data)
    look = ranks_to_look_at(rows) if len(rows) > RANK_PAGE else None
    tables = ([look] if look else []) + [rank_table(data, rows), node_table(data), outlier_table(data),
                                         collective_table(data)]
    return {"kv": kv, "tables": tables, "charts": charts_, "notes": notes}


SEVERITY_OF_EXIT = {0: "s-ok", 1: "sev-warning", 2: "sev-critical"}
LEAD_RANKS = 5
LEAD_NODES = 3


def _slowest(scores: Any, metrics: Sequence[str]) -> Optional[tuple]:
    """(relative, metric, score dict) of the figure on which a rank or node is furthest below its peers."""
    worst = None
    for m in metrics:
        sc = as_dict(as_dict(scores).get(m))
        if is_num(sc.get("relative")) and (worst is None or sc["relative"] < worst[0]):
            worst = (sc["relative"], m, sc)
    return worst


def _flagged(scores: Any) -> bool:
    return any(as_dict(s).get("flagged") for s in as_dict(scores).values())


def slowest_ranks(data: dict, limit: int = LEAD_RANKS) -> dict:
    """The few ranks to look at first: missing ones, then flagged ones, then the lowest relative speed."""
    rows = [[str(m.get("rank")), m.get("host") or "n/a", "n/a", "n/a",
             badge("missing: " + str(m.get("reason") or ""), "sev-critical")]
            for m in map(as_dict, as_list(data.get("missing")))]
    ranked = []
    for e in map(as_dict, as_list(data.get("ranks"))):
        worst = _slowest(e.get("scores"), [m for m, _ in METRIC_COLS])
        if e.get("error"):
            state = badge("error", "sev-critical")
        elif _flagged(e.get("scores")):
            state = badge("straggler", "sev-critical")
        else:
            state = badge("ok", "s-ok")
        cell = "n/a"
        if worst:
            rel, m, sc = worst
            cell = f"{METRIC_WORDS[m]} {fmt_num(as_dict(as_dict(e.get('figures')).get(m)).get('value'))} ({rel:.2f}x"
            cell += f", z {sc['score']:.1f})" if is_num(sc.get("score")) else ")"
        key = (0 if e.get("error") or _flagged(e.get("scores")) else 1, worst[0] if worst else 9e9)
        ranked.append((key, [str(e.get("rank")), e.get("host") or "n/a", _device(e), cell, state]))
    ranked.sort(key=lambda x: x[0])
    rows += [r for _, r in ranked]
    shown = rows[:limit]
    left = len(rows) - len(shown)
    return table("Slowest ranks", ["rank#", "host", "device", "slowest figure (vs its peers)", "status"], shown,
                 (f"{left} more rank(s), each closer to its peers, are in the rank table below. " if left else "")
                 + "A rank's slowest figure is the one furthest below the median of the other comparable ranks.",
                 stack=True)


def slowest_nodes(data: dict, limit: int = LEAD_NODES) -> Optional[dict]:
    """The nodes furthest below the other nodes (flagged ones first); None with a single node."""
    nodes = [as_dict(n) for n in as_list(data.get("nodes"))]
    if len(nodes) < 2:
        return None
    ranked = []
    for n in nodes:
        worst = _slowest(n.get("scores"), [m for m, _ in METRIC_COLS] + ["intra_busbw_gbps"])
        cell = f"{METRIC_WORDS[worst[1]]} {fmt_num(worst[2].get('value'))} ({worst[0]:.2f}x)" if worst else "n/a"
        state = badge("slow node", "sev-critical") if _flagged(n.get("scores")) else badge("ok", "s-ok")
        ranks = as_list(n.get("ranks"))
        ranked.append(((0 if _flagged(n.get("scores")) else 1, worst[0] if worst else 9e9),
                       [n.get("host") or "n/a", str(len(ranks)), cell, state]))
    ranked.sort(key=lambda x: x[0])
    left = len(ranked) - limit
    return table("Slowest nodes", ["host", "ranks#", "slowest figure (vs the other nodes)", "status"],
                 [r for _, r in ranked[:limit]],
                 f"{left} more node(s) in the node table below." if left > 0 else "", stack=True)


def collective_summary(data: dict) -> dict:
    """Bus bandwidth at the largest size measured, per scope and operation: the median over nodes and the slowest node."""
    groups: Dict[tuple, List[dict]] = {}
    for c in map(as_dict, as_list(data.get("collectives"))):
        if is_num(c.get("busbw_gbps")) and is_num(c.get("size_bytes")):
            groups.setdefault((c.get("scope"), c.get("op")), []).append(c)
    rows = []
    for scope in SCOPE_TITLES:
        for op in ("all_reduce", "all_gather", "reduce_scatter"):
            cs = groups.get((scope, op))
            if not cs:
                continue
            top = max(c["size_bytes"] for c in cs)
            at = sorted((c for c in cs if c["size_bytes"] == top), key=lambda c: c["busbw_gbps"])
            mid = at[len(at) // 2]
            slow = (f"{fmt_num(at[0]['busbw_gbps'])} ({at[0].get('host')})"
                    if len(at) > 1 and at[0].get("host") else "")
            rows.append([SCOPE_TITLES[scope], op, fmt_bytes(top), str(mid.get("n_ranks")), fmt_num(mid["busbw_gbps"]),
                         slow])
    return table("Collectives", ["where", "op", "size#", "ranks#", "busbw GB/s#", "slowest node GB/s"], rows,
                 "Bus bandwidth at the largest size measured (the median over nodes for within-node rows); "
                 "every size and node is in the collectives table below.", stack=True)


def lead(data: dict, host: dict) -> dict:
    """What a fleet report opens with: the verdict, its exit code, the exclude list, the slowest ranks and
    nodes, and the collectives (the single-machine summary does not apply to a fleet)."""
    launcher, status, exclude = as_dict(data.get("launcher")), as_dict(data.get("collectives_status")), as_dict(data.get("exclude"))
    kinds: Dict[str, int] = {}
    for e in map(as_dict, as_list(data.get("ranks"))):
        k = as_dict(e.get("device")).get("kind") or "unknown"
        kinds[k] = kinds.get(k, 0) + 1
    n_nodes = len(as_list(data.get("nodes")))
    code = data.get("exit_code")
    kv = [("Exit code", f"{code} ({data.get('exit_meaning')})"),
          ("Exclude (Slurm)", exclude.get("slurm") or "none"),
          ("Ranks", f"{data.get('answered')} of {data.get('world_size')} answered on {n_nodes} node(s); "
                    + (", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no devices")),
          ("Launcher", f"{launcher.get('launcher') or 'n/a'}, deadline {fmt_num(data.get('deadline_s'))} s"),
          ("Collectives", f"{status.get('state') or 'n/a'} on {status.get('backend') or 'n/a'}"
                          + (f": {status.get('reason')}" if status.get("reason") and status.get("state") != "ok" else ""))]
    soft = " · ".join(x for x in (host.get("python"), f"torch {host['torch']}" if host.get("torch") else None) if x)
    if soft:
        kv.append(("Software (rank 0)", soft))
    return {"verdict": data.get("verdict") or "n/a", "severity": SEVERITY_OF_EXIT.get(code, "sev-warning"),
            "kv": kv, "ranks": slowest_ranks(data), "nodes": slowest_nodes(data),
            "collectives": collective_summary(data)}


def render_terminal(report: dict, files: Optional[Dict[str, str]] = None) -> str:
    """What rank 0 prints: the verdict, a line per rank (flagged ones always), collectives, exclude, files."""
    data = as_dict(as_dict(as_dict(report.get("probes")).get("fleet")).get("data"))
    lines = [f"gpudiag fleet: {data.get('verdict')}"]
    ranks = sorted((as_dict(e) for e in as_list(data.get("ranks"))), key=lambda e: e.get("rank") if is_num(e.get("rank")) else 0)
    flagged = [e for e in ranks if any(as_dict(s).get("flagged") for s in as_dict(e.get("scores")).values())]
    keep = {id(e) for e in ranks[:TERMINAL_RANKS]} | {id(e) for e in flagged[:TERMINAL_FLAGGED]}
    shown = [e for e in ranks if id(e) in keep]
    for e in shown:
        figs = []
        for m, _ in METRIC_COLS:
            fig, sc = as_dict(as_dict(e.get("figures")).get(m)), as_dict(as_dict(e.get("scores")).get(m))
            if is_num(fig.get("value")):
                rel = f" ({sc['relative']:.2f}x, z {sc['score']:.1f})" if is_num(sc.get("relative")) else ""
                figs.append(f"{METRIC_WORDS[m]} {fmt_num(fig['value'])}{rel}{' OUTLIER' if sc.get('flagged') else ''}")
        cpu = _cpu(e)
        lines.append(f"  rank {e.get('rank'):>3} {e.get('host') or '?'} local {e.get('local_rank')} {_device(e)}: "
                     + ("; ".join(figs) or str(e.get("error") or "no figures")) + (f"; CPU {cpu}" if cpu != "n/a" else ""))
    if len(shown) < len(ranks):
        more = len(flagged) - sum(1 for e in flagged if id(e) in keep)
        lines.append(f"  ... {len(ranks) - len(shown)} more rank(s) in the report"
                     + (f", {more} of them flagged" if more else ", all healthy"))
    for gone in map(as_dict, as_list(data.get("missing"))):
        lines.append(f"  rank {gone.get('rank'):>3} {gone.get('host') or '?'} local {gone.get('local_rank')}: MISSING "
                     f"({gone.get('reason')})")
    top = _top_collectives(as_list(data.get("collectives")))
    if top:
        lines.append("Collectives (largest size, busbw): " + "; ".join(top))
    for f in [as_dict(f) for f in as_list(as_dict(as_dict(report.get("probes")).get("fleet")).get("findings"))
              if as_dict(f).get("severity") in ("critical", "warning")][:6]:
        lines.append(f"  [{f.get('severity')}] {f.get('code')}: {f.get('message')}")
    ex = as_dict(data.get("exclude"))
    lines.append(f"Exclude: {ex.get('slurm') or 'none'}")
    lines.append(f"Exit code {data.get('exit_code')} ({data.get('exit_meaning')})")
    for kind, path in (files or {}).items():
        lines.append(f"Wrote {kind}: {path}")
    return "\n".join(lines)


def _top_collectives(rows: Sequence[Any]) -> List[str]:
    """busbw at the largest size of each (scope, op, node): one short phrase each, for the terminal."""
    best: Dict[tuple, dict] = {}
    for c in map(as_dict, rows):
        if not is_num(c.get("busbw_gbps")):
            continue
        key = (c.get("scope"), c.get("op"), c.get("host"))
        if key not in best or c["size_bytes"] > best[key]["size_bytes"]:
            best[key] = c
    return [f"{c['op']} {c['scope']}{' ' + c['host'] if c.get('host') else ''} {fmt_bytes(c['size_bytes'])} "
            f"{fmt_num(c['busbw_gbps'])} GB/s" for c in list(best.values())[:9]]
