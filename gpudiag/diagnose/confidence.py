"""How sure the recommendation can be: the cycle figures' quality, and clear / tie / too_noisy / none.

Pure functions over the report's cycle data (docs/recommendation.md, "How sure is it"):

- The figures are **too noisy** to present when other programs kept the cores the strategies need
  busy (gpudiag.measure.load.machine_busy; in a report that did not record the tournament's load,
  its busy-machine findings), when the plain loop's own rate was unsteady (the middle half of its
  rounds more than BASELINE_IQR_MAX apart; BASELINE_SPREAD_MAX of p10-p90 where a report has no
  rounds) and not only with its intra-op threads (intra_op_stalls), when any threads/processes
  speedup is above what its worker count allows (the baseline was slowed: every speedup over it is
  suspect), or when the interval that made a tie is wider than WIDE_INTERVAL_RATIO.
- Otherwise the fastest strategy is compared with every simpler one: it is **clear** when it is
  faster than each of them by at least the noise margin at 95 % confidence (clearly_above: the low
  end of their ratio above 1 + margin, from their paired rounds, else intervals, else spreads);
  when not, the simpler ones it cannot be told apart from join a **tie**, the simplest of them is
  recommended, and `tied_with` names the others. A near-tie is a tie, however the medians fall.
- **none**: nothing was measured.

Under a CPU quota the busy rule counts the cores the process may run on beyond what the quota lets
it use, and a tournament that ran throttled (gpudiag.diagnose.cpu_limit.throttled) says so by name:
its reasons start with the throttling, and the advice is about the limit, not about other programs.

The cycle probe's own findings use `cycle_quality` too, so a finding never says what the
recommendation declines to say.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.thresholds import (
    BASELINE_IQR_MAX,
    BASELINE_IQR_MIN_ROUNDS,
    BASELINE_SPREAD_MAX,
    NOISE_MARGIN_FRACTION,
    SIMPLICITY,
    SPEEDUP_CEILING_TOLERANCE,
    WIDE_INTERVAL_RATIO,
)
from gpudiag.measure import stats
from gpudiag.measure.load import machine_busy
from gpudiag.report.values import as_bool, as_dict, as_int, as_list, as_str, get, num
from gpudiag.units import fmt_pct

CLEAR, TIE, TOO_NOISY, NONE = "clear", "tie", "too_noisy", "none"
CONFIDENCES = (CLEAR, TIE, TOO_NOISY, NONE)
PARALLEL = ("threads", "processes")


def speedup_ceiling(name: str, workers: Optional[int]) -> Optional[float]:
    """The most a strategy's speedup over serial can be: N workers sharing the same cycles reach at
    most N x (each is at best as fast as the plain loop alone); None where no such bound holds."""
    if name in PARALLEL and workers and workers >= 1:
        return float(workers)
    return None


def above_ceiling(name: str, workers: Optional[int], speedup: Optional[float],
                  ci: Optional[Sequence[float]] = None) -> bool:
    """True when a speedup exceeds its ceiling beyond SPEEDUP_CEILING_TOLERANCE (or its whole interval does)."""
    cap = speedup_ceiling(name, workers)
    if cap is None or speedup is None:
        return False
    return speedup > cap * (1 + SPEEDUP_CEILING_TOLERANCE) or (ci is not None and ci[0] > cap)


def cycle_quality(cycle: dict, rows: List[dict], report: Optional[dict] = None) -> Dict[str, Any]:
    """Is the tournament fit to present? {busy, other_busy_cores, usable_cores, widest_workers,
    visible, not_visible_cores, baseline_spread, noisy_baseline, intra_op_stalls, above_ceiling: [rows],
    reasons: [str], limit, throttling, throttled, throttled_text}.

    `cycle` is the probe's data; `rows` are gpudiag.diagnose.access.strategy_rows. Reads the
    tournament's `load` block when present, else the rows' own other_busy_cores; a report that
    recorded neither (an older gpudiag) is busy when `report` holds a busy-machine finding: the
    tournament's own, else the gil probe's, the only record of that machine's load then.
    """
    load = as_dict(cycle.get("load"))
    ok = [r for r in rows if r["status"] == "ok" and r["cycles_per_s"]]
    widest = as_int(load.get("widest_workers")) or max([r["workers"] or 1 for r in ok if r["name"] in PARALLEL],
                                                       default=1)
    other = num(load.get("other_busy_cores"))
    if other is None:
        per_row = [r["other_busy_cores"] for r in ok if r.get("other_busy_cores") is not None]
        other = max(per_row) if per_row else None
    cores = (as_int(load.get("usable_cores")) or as_int(get(cycle, "workload", "logical_cores")))
    limit = as_dict(load.get("limit")) or None
    busy = as_bool(load.get("busy"))
    if busy is None and other is not None:
        busy = machine_busy(other, cores, widest, cpu_limit.run_cores(limit))
    flagged = _busy_flag(report) if busy is None else None
    busy = bool(busy) or flagged is not None
    throttling = as_dict(load.get("throttling")) or None
    throttled = cpu_limit.throttled(throttling)
    visible = [v for v in as_list(load.get("busiest_visible"))
               if isinstance(v, dict) and as_str(v.get("name")) and num(v.get("cores")) is not None]
    serial = next((r for r in ok if r["name"] == "serial"), None)
    spread, spread_limit, spread_kind = baseline_spread(serial)
    stalls = intra_op_stalls(cycle, serial, spread, spread_limit)
    noisy = spread is not None and spread > spread_limit and stalls is None
    over = [r for r in ok if above_ceiling(r["name"], r["workers"], r["speedup_vs_serial"], r.get("speedup_ci95"))]
    reasons = []
    if flagged is not None:
        reasons.append(flagged)
    elif busy:
        # Of the cores other programs share with gpudiag (more than its usable ones under a quota).
        shared = max(cores or 0, cpu_limit.run_cores(limit) or 0) or None
        reasons.append(busy_text(other, shared, visible, num(load.get("not_visible_cores"))))
    if noisy:
        reasons.append(f"the plain loop's own rate varied by {fmt_pct(spread)} between rounds "
                       f"({spread_kind}; more than {fmt_pct(spread_limit)})")
    if over:
        parts = [f"{r['name']} ({r['workers']} workers) {r['speedup_vs_serial']:.2f}x" for r in over]
        reasons.append("the plain loop was outrun by more than the worker counts allow - " + " and ".join(parts)
                       + " - so its own runs were slowed by something else")
    throttled_text = cpu_limit.throttled_text(limit, throttling) if throttled else None
    if throttled and reasons:  # what made the figures unusable: the quota, named first
        reasons.insert(0, f"the strategies ran {throttled_text}, so their rates follow the quota's periods")
    return {"busy": bool(busy), "other_busy_cores": other, "usable_cores": cores, "widest_workers": widest,
            "visible": visible, "not_visible_cores": num(load.get("not_visible_cores")),
            "baseline_spread": spread, "baseline_spread_kind": spread_kind, "noisy_baseline": noisy,
            "intra_op_stalls": stalls,
            "above_ceiling": over, "reasons": reasons, "limit": limit, "throttling": throttling,
            "throttled": throttled, "throttled_text": throttled_text}


def _busy_flag(report: Optional[dict]) -> Optional[str]:
    """The reason a report without a recorded tournament load is judged busy: its busy-machine finding (the
    tournament's, else the gil probe's, measured on the same machine just before), or None."""
    from gpudiag.diagnose.access import findings_with

    if not isinstance(report, dict):
        return None
    for code, whose in (("MACHINE_BUSY_DURING_TOURNAMENT", "the tournament's"),
                        ("MACHINE_BUSY_DURING_MEASUREMENT", "the gil probe's")):
        if findings_with(report, (code,)):
            return (f"the machine was busy while gpudiag measured ({whose} {code} finding; this report did not "
                    "record the load during the tournament itself)")
    return None


def intra_op_stalls(cycle: dict, serial: Optional[dict], spread: Optional[float],
                    limit: float) -> Optional[Dict[str, Any]]:
    """{torch_threads, spread, one_thread_spread} when the plain loop was unsteady only with its intra-op threads:
    the same loop with one thread, timed in the same rounds (the serial row's `one_thread`), stayed steady.

    Then the machine was steady enough to measure, and the unsteadiness is the loop's own: intra-op threads
    wait for each other at the end of every op, so one of them descheduled for a moment (another program, even
    a small one) stalls the op. That is how the loop runs on this machine, not a disturbed measurement."""
    if serial is None or spread is None or spread <= limit:
        return None
    raw = next((r for r in as_list(cycle.get("strategies")) if isinstance(r, dict) and r.get("name") == "serial"), {})
    one = as_dict(raw.get("one_thread"))
    cycles = num(one.get("cycles")) or num(raw.get("cycles")) or num(get(cycle, "workload", "cycles"))
    walls = [num(w) for w in as_list(one.get("wall_s"))]
    if not cycles or len(walls) < BASELINE_IQR_MIN_ROUNDS or not all(w and w > 0 for w in walls):
        return None
    one_spread, one_limit, _ = baseline_spread({"rates": [cycles / w for w in walls]})
    if one_spread is None or one_spread > one_limit:
        return None
    return {"torch_threads": as_int(raw.get("torch_threads")), "spread": spread, "one_thread_spread": one_spread}


def baseline_spread(serial: Optional[dict]) -> Tuple[Optional[float], float, str]:
    """(spread, its limit, what it is) of the plain loop: interquartile from its rounds when the report
    has BASELINE_IQR_MIN_ROUNDS or more, else its recorded spread_fraction (p90 - p10)."""
    if not serial:
        return None, BASELINE_SPREAD_MAX, ""
    rates = serial.get("rates")
    if rates and len(rates) >= BASELINE_IQR_MIN_ROUNDS:
        med = stats.median(rates)
        if med:
            iqr = (stats.percentile(rates, 75) - stats.percentile(rates, 25)) / med
            return round(iqr, 4), BASELINE_IQR_MAX, "middle half of its rounds"
    return serial.get("spread_fraction"), BASELINE_SPREAD_MAX, "p10 to p90"


def busy_text(other: Optional[float], cores: Optional[int], visible: Sequence[dict] = (),
              not_visible: Optional[float] = None) -> str:
    """'other programs kept 1.1 of 2 cores busy (chrome 0.4; 0.7 not visible from here: ...)'."""
    of = f" of {cores}" if cores else ""
    text = f"other programs kept {other:.1f}{of} cores busy during the measurement" if other is not None \
        else "other programs kept the cores busy during the measurement"
    parts = [f"{v['name']} {num(v['cores']):.1f}" for v in visible]
    if not_visible is not None and not_visible >= 0.1:
        parts.append(f"{not_visible:.1f} not attributed to a process seen here: short-lived programs, or another "
                     "container, VM or user")
    return text + (f" ({'; '.join(parts)})" if parts else "")


def paired(a: dict, b: dict) -> bool:
    """True when the report holds both rows' rounds, one rate per round (the tournament interleaves its rounds)."""
    ra, rb = a.get("rates"), b.get("rates")
    return bool(ra) and bool(rb) and len(ra) == len(rb)


def _band(row: dict) -> Optional[Tuple[float, float]]:
    """(low, high) of a row's speedup from its own spread when that is all the report has: the middle 80 % of its
    rounds ((p90 - p10) / median) around the median. Wider than an interval of the median, and that is the point:
    without an interval, a verdict must be no surer than the rounds' own scatter."""
    sf = num(row.get("spread_fraction"))
    if sf is None and row.get("rates") and len(row["rates"]) >= 2:
        sf = stats.relative_spread(row["rates"])
    s = 1.0 if row["name"] == "serial" else row.get("speedup")
    if sf is None or s is None:
        return None
    half = max(0.0, sf) / 2
    return s * (1 - half), s * (1 + half)


def bounds(row: dict, use_interval: bool = True) -> Tuple[float, float]:
    """(low, high) of a row's speedup over serial: its interval, else its spread band, else its point (serial: 1).

    use_interval=False skips a recorded interval (one computed from too few rounds to be trusted)."""
    ci = row.get("speedup_ci95") if use_interval and row["name"] != "serial" else None
    if ci:
        return ci[0], ci[1]
    band = _band(row)
    if band is not None:
        return band
    if row["name"] == "serial":
        return 1.0, 1.0
    s = row.get("speedup")
    return s, s


def pair_interval(a: dict, b: dict) -> Optional[Tuple[float, float]]:
    """95 % interval of a's rate over b's from their own paired rounds (gpudiag.measure.stats.paired_ratio_ci),
    when the report has them and enough of them (None otherwise)."""
    if not paired(a, b):
        return None
    return _pair_ci(tuple(a["rates"]), tuple(b["rates"]))


@functools.lru_cache(maxsize=256)
def _pair_ci(ra: tuple, rb: tuple) -> Optional[Tuple[float, float]]:
    # Pure, so a cache is exact: the same rounds are judged once per process.
    return stats.paired_ratio_ci(ra, rb)


def ratio_bounds(a: dict, b: dict) -> Tuple[Optional[float], Optional[float], str]:
    """(low, high, what) of a's rate over b's, from the best the report holds:

    - "paired": both rows' rounds, MIN_ROUNDS_FOR_PAIRED_INTERVAL or more: the interval of their paired ratio;
    - "spread": their rounds, but too few for that interval (a recorded interval from them under-covers), or no
      interval but spreads (an older report): a's spread band over b's;
    - "interval": no rounds, but intervals (another tool's report): a's interval over b's;
    - "point": nothing but the medians.
    """
    sa, sb = a.get("speedup"), b.get("speedup")
    if sa is None or sb is None or sb <= 0:
        return None, None, "point"
    pair = pair_interval(a, b)
    if pair is not None:
        return pair[0], pair[1], "paired"
    trust = not paired(a, b)  # with their rounds in the report, an interval from fewer is not trusted
    cis = [bool(trust and x["name"] != "serial" and x.get("speedup_ci95")) for x in (a, b)]
    bands = [_band(x) is not None for x in (a, b)]
    if not any(cis) and not any(bands):
        return sa / sb, sa / sb, "point"
    # A speedup's interval already holds the plain loop's own variation: against serial it is the ratio itself.
    if b["name"] == "serial" and cis[0]:
        return a["speedup_ci95"][0], a["speedup_ci95"][1], "interval"
    if a["name"] == "serial" and cis[1] and min(b["speedup_ci95"]) > 0:
        return 1 / b["speedup_ci95"][1], 1 / b["speedup_ci95"][0], "interval"
    (la, ha), (lb, hb) = bounds(a, trust), bounds(b, trust)
    if lb <= 0:
        return None, None, "interval" if any(cis) else "spread"
    return la / hb, ha / lb, "interval" if any(cis) else "spread"


def clearly_above(a: dict, b: dict, margin: float = NOISE_MARGIN_FRACTION) -> bool:
    """a is faster than b by at least the noise margin, at 95 % confidence: the low end of a/b (ratio_bounds)
    lies above 1 + margin.

    With both rows' rounds in the report that is their paired interval: the rounds ran interleaved, so load that
    hit a round cancels. Fewer rounds than such an interval needs, or an older report without intervals, are
    judged on the rows' spreads; a report with neither rounds, intervals nor spreads on the medians alone. A
    near-tie - a gain that may be under the margin - is therefore never clear, however the medians fall.
    """
    lo, _, _ = ratio_bounds(a, b)
    return lo is not None and lo > 1 + margin


def surely_not_above(a: dict, b: dict, margin: float = NOISE_MARGIN_FRACTION) -> bool:
    """a's gain over b is at most the margin at 95 % confidence: the high end of a/b (ratio_bounds) is <= 1 + margin."""
    _, hi, _ = ratio_bounds(a, b)
    return hi is not None and hi <= 1 + margin


def simplicity(row: dict) -> Tuple[int, int, float]:
    """Sort key, simplest first: the strategy's rank in SIMPLICITY, then fewer workers, then faster."""
    rank = SIMPLICITY.index(row["name"]) if row["name"] in SIMPLICITY else len(SIMPLICITY)
    return rank, row.get("workers") or 1, -(row.get("speedup") or 0.0)


def choose(candidates: List[dict]) -> Tuple[Optional[dict], Optional[dict], List[dict], str]:
    """(chosen, fastest, tied, confidence) among candidates [{name, workers, speedup, speedup_ci95, rates?}].

    The fastest by median; the simpler candidates it is not clearly faster than (clearly_above) tie
    with it, and the simplest of the tie is the choice. Ties are judged against the fastest only:
    "cannot be told apart" is not transitive, and a chain of small steps must not pull the choice
    down to a strategy the fastest clearly beats.
    """
    if not candidates:
        return None, None, [], NONE
    fastest = max(candidates, key=lambda r: r["speedup"])
    tied = [fastest] + [r for r in candidates if r is not fastest and simplicity(r) < simplicity(fastest)
                        and not clearly_above(fastest, r)]
    chosen = min(tied, key=simplicity)
    others = [r for r in tied if r is not chosen]
    return chosen, fastest, others, (TIE if others else CLEAR)


def too_wide(fastest: dict, tied: Sequence[dict]) -> List[dict]:
    """The tied rows whose comparison with the fastest is wider than WIDE_INTERVAL_RATIO (hi/lo): the interval that
    made the tie (their paired ratio, else their own intervals or spreads) can hold both "no gain" and a real one."""
    out = []
    for r in tied:
        if r is fastest:
            continue
        lo, hi, kind = ratio_bounds(fastest, r)
        if kind == "paired" and lo and hi / lo > WIDE_INTERVAL_RATIO:
            out.append(r)
        elif kind != "paired":
            wide = [x for x in (fastest, r) if x["name"] != "serial"
                    and (stats.interval_width_ratio(bounds(x)) or 1.0) > WIDE_INTERVAL_RATIO]
            if wide:
                out.append(r)
    return out
