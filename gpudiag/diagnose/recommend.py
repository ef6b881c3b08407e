"""The recommendation: which parallelism strategy to use on this machine, how sure that is, and a verdict per cause.

Pure functions over the report dict (docs/report-contract.md): no hardware, no torch, no NVML, so the
rules are tested on recorded reports. Every figure quoted comes from the report and carries a
JSON-path-like `source` ("probes.cycle.data.strategies[3].cycles_per_s"); a fact the report does not
hold is `not_measured` with the reason, never a default. Reports of older shape, with probes skipped
or failed, or with keys missing, give a recommendation with less in it, never an exception.
The rules, the statistics and the confidence levels are described for users in docs/recommendation.md.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from gpudiag.diagnose import confidence
from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.access import (
    cycle_device,
    evidence,
    findings_with,
    gpu_questions_answered,
    not_run_reason,
    path,
    row_path,
    split_path,
    strategy_reason,
    strategy_rows,
)
from gpudiag.diagnose.environment import environment_changes
from gpudiag.diagnose.memory_fit import best_fitting, memory_limits
from gpudiag.diagnose.thresholds import CAUSES, NOISE_MARGIN_FRACTION
from gpudiag.diagnose.verdicts import VERDICTS
from gpudiag.diagnose.verdicts.parallelism import verdict_worker_memory
from gpudiag.report.values import get, probe_data
from gpudiag.units import fmt_pct, fmt_rate

MARGIN = fmt_pct(NOISE_MARGIN_FRACTION)


def label(name: str, workers: Optional[int]) -> str:
    """'processes with 2 workers', 'streams (4 cycles in flight)', 'batched (K=4)', 'serial'."""
    if name in ("threads", "processes") and workers:
        return f"{name} with {workers} worker{'s' if workers != 1 else ''}"
    if name == "streams" and workers:
        return f"streams ({workers} cycles in flight)"
    if name in ("batched", "deferred_sync") and workers and workers > 1:
        return f"{name} (K={workers})"
    return name


def speedup_text(c: dict) -> str:
    """'1.43x, 95 % interval 1.38-1.49x over 8 rounds' (or without the interval when there is none)."""
    if c.get("speedup") is None:
        return "no speedup figure"
    if c["name"] == "serial":
        return "1.00x"
    ci = c.get("speedup_ci95")
    if ci:
        n = f" over {c['samples']} rounds" if c.get("samples") else ""
        return f"{c['speedup']:.2f}x, 95 % interval {ci[0]:.2f}-{ci[1]:.2f}x{n}"
    return f"{c['speedup']:.2f}x, no interval (too few rounds, or a report without one)"


def _candidate(r: dict, entry: dict, serial: Optional[dict], note: str) -> dict:
    """A row (or the sweep entry of it that fits in memory) as the rules compare it, with source paths."""
    cps = entry["cycles_per_s"]
    base = serial["cycles_per_s"] if serial else None
    speed = (1.0 if r["name"] == "serial" else round(cps / base, 3)) if base else cps
    j = entry.get("sweep_index")
    src_cps = (path("probes", "cycle", "data", "strategies", r["index"], "sweep", j, "cycles_per_s")
               if j is not None else row_path(r, "cycles_per_s"))
    src_ci = (path("probes", "cycle", "data", "strategies", r["index"], "sweep", j, "speedup_ci95")
              if j is not None else row_path(r, "speedup_ci95"))
    rates = entry.get("rates") if j is not None else r.get("rates")
    return {"name": r["name"], "workers": entry["workers"], "cycles_per_s": cps,
            "speedup": speed if base else None, "rank_value": speed,
            "spread_fraction": r.get("spread_fraction") if j is None else None,
            "speedup_ci95": entry.get("speedup_ci95") if base else None, "samples": entry.get("samples"),
            "rates": rates, "row": r, "fit_note": note, "source_cps": src_cps, "source_ci": src_ci}


def _apart_text(a: dict, b: dict) -> str:
    """Why a is not clearly faster than b, in the figures the rule used (paired rounds, spreads, intervals)."""
    lo, hi, kind = confidence.ratio_bounds(a, b)
    if lo is None:
        return "no figures to compare"
    if kind == "point":
        return f"{a['name']} is {fmt_pct(lo - 1, 1)} faster by the medians, less than the {MARGIN} margin"
    span = f"{a['name']} / {b['name']} {lo:.2f}-{hi:.2f}x"
    if kind == "paired":
        return f"{span} over their {len(a['rates'])} paired rounds: not surely {MARGIN} faster"
    if kind == "spread":
        why = ("too few rounds for an interval" if confidence.paired(a, b) else "the report has no intervals")
        return f"{span} from their rounds' spreads ({why}): not surely {MARGIN} faster"
    return f"{_bounds_text(a)} against {_bounds_text(b)}: not surely {MARGIN} apart"


def _wide_text(fastest: dict, r: dict) -> str:
    """'processes / threads 0.85-1.31x over 8 paired rounds' or a row's own interval, for the too-wide reason."""
    lo, hi, kind = confidence.ratio_bounds(fastest, r)
    if kind == "paired" and lo is not None:
        return f"{fastest['name']} / {r['name']} {lo:.2f}-{hi:.2f}x over {len(r['rates'])} paired rounds"
    return "; ".join(f"{x['name']} {_bounds_text(x)}" for x in (fastest, r) if x["name"] != "serial")


def _bounds_text(c: dict) -> str:
    """'1.43x' or '1.38-1.49x' (its interval); cycles/s when there is no serial to compare with."""
    if c.get("speedup") is None:
        return f"{fmt_rate(c['cycles_per_s'])} cycles/s"
    lo, hi = confidence.bounds(c)
    return f"{lo:.2f}x" if lo == hi else f"{lo:.2f}-{hi:.2f}x"


def _candidates(rows: List[dict], limits: dict, serial: Optional[dict]) -> Tuple[List[dict], Dict[int, str]]:
    """The strategies that measured and fit in memory (each at the worker count that fits), and {row index: why}
    for those that measured but do not fit."""
    candidates, excluded = [], {}
    for r in rows:
        if r["status"] != "ok" or r["cycles_per_s"] is None or r["cycles_per_s"] <= 0:
            continue
        headline = {"workers": r["workers"], "cycles_per_s": r["cycles_per_s"], "speedup_ci95": r["speedup_ci95"],
                    "samples": r["samples"], "rates": r.get("rates"), "sweep_index": None}
        entry, note = best_fitting(r, limits) if r["name"] in confidence.PARALLEL else (headline, "")
        if entry is None:
            excluded[r["index"]] = note or "does not fit in memory"
            continue
        candidates.append(_candidate(r, entry, serial, note))
    return candidates, excluded


def _choose(candidates: List[dict], quality: Optional[dict]) -> Tuple[str, Optional[dict], Optional[dict], List[dict],
                                                                      List[str]]:
    """(confidence level, chosen, fastest, tied, reasons the figures are too noisy to judge): confidence.choose
    over the candidates, unless the measurement's quality (or too wide a tie) makes it too_noisy."""
    # choose() ranks on `speedup`: over serial, or cycles/s when serial was not measured.
    ranked = [dict(c, speedup=c["rank_value"], _c=c) for c in candidates]
    noisy_reasons = list(quality["reasons"]) if quality else []
    chosen = fastest = None
    tied: List[dict] = []
    level = confidence.NONE
    if ranked and not noisy_reasons:
        ch, fa, ti, level = confidence.choose(ranked)
        chosen, fastest, tied = ch["_c"], fa["_c"], [t["_c"] for t in ti]
        if level == confidence.TIE:
            wide = confidence.too_wide(fa, [ch] + ti)
            if wide:
                noisy_reasons.append("the strategies that could not be told apart have intervals too wide to "
                                     "judge (" + "; ".join(_wide_text(fa, w) for w in wide) + ")")
    if noisy_reasons and (ranked or (quality and quality["busy"])):
        level, chosen, fastest, tied = confidence.TOO_NOISY, None, None, []
    return level, chosen, fastest, tied, noisy_reasons


def _gpu_note(report: dict, answered: bool, level: str) -> str:
    """What the headline adds about the GPU questions, and (one voice with the page) a busy gil micro-benchmark."""
    note = "" if answered else (" GPU questions were not answered here: no CUDA device was measured "
                                "(the verdicts say why).")
    if level in (confidence.CLEAR, confidence.TIE) and findings_with(report, ("MACHINE_BUSY_DURING_MEASUREMENT",)):
        # One voice: the page also says the machine was busy; say which figures that touched.
        note = (" The machine was busy while the gil micro-benchmark ran (its verdicts are inconclusive); "
                "the strategy tournament ran on a quiet machine." + note)
    return note


def _too_noisy_headline(where: str, quality: Optional[dict], noisy_reasons: List[str]) -> Tuple[str, str, str]:
    """(headline, choice rule, reason) when no strategy can be presented: busy, unsteady or throttled figures."""
    busy = bool(quality and quality["busy"])
    if quality and quality["throttled"]:
        # Under a throttling quota, closing other work changes nothing: say what can.
        headline = (f"{where}, the measurements were {quality['throttled_text']} and cannot be judged: "
                    + "; ".join(r for r in noisy_reasons if quality["throttled_text"] not in r)
                    + ". No strategy is recommended from these "
                    "figures: more workers cannot help under this limit; raise it (docker --cpus, Kubernetes "
                    "resources.limits.cpu) and run `gpudiag report` again.")
    else:
        headline = ((f"{where}, the machine was too busy to judge: " if busy else
                     f"{where}, the measurements were too noisy to judge: ") + "; ".join(noisy_reasons)
                    + ". No strategy is recommended from these figures: close other work (or wait for it) and "
                      "run `gpudiag report` again.")
    rule = "too_noisy: no strategy is presented when the machine was busy, the plain loop was unsteady, a " \
           "speedup exceeded its worker count, or the tied intervals were too wide"
    return headline, rule, "; ".join(noisy_reasons)


def _nothing_to_recommend(report: dict, cyc: dict, rows: List[dict]) -> str:
    """Why no strategy measured and fit: the cycle probe did not run, recorded nothing, or nothing fit or finished."""
    if not cyc:
        return not_run_reason(report, "cycle")
    if not rows:
        return "the cycle probe recorded no strategies"
    if any(r["status"] == "ok" and r["cycles_per_s"] for r in rows):
        return "every strategy measured needs more memory than this machine has for its workers"
    return "no strategy finished its measurement"


def recommend(report: Any) -> dict:
    """report dict -> the `recommendation` object of docs/report-contract.md. Never raises on missing data."""
    report = report if isinstance(report, dict) else {}
    rows = strategy_rows(report)
    limits = memory_limits(report)
    device = cycle_device(report)
    answered = gpu_questions_answered(report)
    cyc = probe_data(report, "cycle")
    serial = next((r for r in rows if r["name"] == "serial" and r["status"] == "ok" and r["cycles_per_s"]), None)
    quality = confidence.cycle_quality(cyc, rows, report) if cyc else None

    candidates, excluded = _candidates(rows, limits, serial)
    level, chosen, fastest, tied, noisy_reasons = _choose(candidates, quality)

    ev = _evidence(report, chosen, serial, limits, device, quality if level == confidence.TOO_NOISY else None)
    cpu = _cpu_limit(report, quality)
    ev.extend(cpu["evidence"])
    runners = _runners_up(rows, candidates, chosen, tied, excluded, level)
    rules = dict(VERDICTS)  # cause -> its rule; the report lists them in CAUSES' order
    verdicts = [verdict_worker_memory(report, limits) if rules[c] is verdict_worker_memory else rules[c](report)
                for c in CAUSES]

    where = "On this machine" if device in (None, "cuda") else "On this machine's CPU (the cycle ran without a GPU)"
    rule: Optional[str] = None
    if level == confidence.TOO_NOISY:
        headline, rule, reason = _too_noisy_headline(where, quality, noisy_reasons)
    elif chosen is not None:
        headline, rule, reason = _headline(where, chosen, fastest, tied, serial, candidates, level, report)
    else:
        reason = _nothing_to_recommend(report, cyc, rows)
        headline = f"No strategy to recommend: {reason}."
    if cpu["note"] and not (quality and quality["throttled"] and level == confidence.TOO_NOISY):  # that one names it
        headline += " " + cpu["note"]
        reason = (reason + "; " if reason else "") + cpu["note"][0].lower() + cpu["note"][1:].rstrip(".")
    return {
        "strategy": chosen["name"] if chosen else None,
        "workers": chosen["workers"] if chosen else None,
        "cycles_per_s": chosen["cycles_per_s"] if chosen else None,
        "serial_cycles_per_s": serial["cycles_per_s"] if serial else None,
        "speedup": chosen["speedup"] if chosen else None,
        "speedup_ci95": list(chosen["speedup_ci95"]) if chosen and chosen.get("speedup_ci95") else None,
        "samples": chosen.get("samples") if chosen else None,
        "confidence": level,
        "confidence_reason": reason,
        "tied_with": [t["name"] for t in tied],
        "device": device,
        "choice_rule": rule,
        "headline": headline + _gpu_note(report, answered, level),
        "evidence": ev,
        "runners_up": runners,
        "environment_changes": environment_changes(report, chosen["name"] if chosen else None, device),
        "verdicts": verdicts,
        "gpu_questions_answered": answered,
    }


def _cpu_limit(report: dict, quality: Optional[dict]) -> dict:
    """{note, evidence} for a CPU limit that binds gpudiag (the tournament's own record, else the system
    probe's): the limit and the usable cores it leaves, and the tournament's throttling, by name."""
    load_limit = get(probe_data(report, "cycle"), "load", "limit")
    base = ("probes", "cycle", "data", "load", "limit") if isinstance(load_limit, dict) else \
        ("probes", "system", "data", "cpu", "limit")
    limit = get(report, *base)
    out: dict = {"note": "", "evidence": []}
    if not cpu_limit.limit_text(limit):
        return out
    usable = cpu_limit.usable_cores(limit)
    out["note"] = f"Measured with {cpu_limit.usable_text(limit)}" + (
        ": threads and processes were not measured, since more workers cannot help." if usable == 1 else ".")
    key = {"quota": "quota_cpus", "cpuset": "cpuset_cpus", "affinity": "affinity_cores"}.get(cpu_limit.binding(limit) or "")
    if key and get(limit, key) is not None:
        out["evidence"].append(evidence(f"the binding CPU limit: {cpu_limit.limit_text(limit)}", get(limit, key),
                                        "CPUs", path(*base, key)))
    if usable is not None:
        out["evidence"].append(evidence("whole workers the limit leaves (usable cores)", usable, "cores",
                                        path(*base, "usable_cores")))
    share_src = path("probes", "cycle", "data", "load", "throttling", "throttled_share")
    if quality and quality.get("throttled"):
        out["note"] += (f" The strategies ran {quality['throttled_text']}: their rates are what this limit allows, "
                        "and more workers cannot help.")
    elif quality and cpu_limit.throttling_text(limit, quality.get("throttling")):
        out["note"] += f" The strategies were {cpu_limit.throttling_text(limit, quality['throttling'])}."
    if get(report, *split_path(share_src)) is not None:
        out["evidence"].append(evidence("share of scheduler periods in which the tournament was throttled",
                                        get(report, *split_path(share_src)), "fraction", share_src))
    return out


def _headline(where: str, chosen: dict, fastest: dict, tied: List[dict], serial: Optional[dict],
              candidates: List[dict], level: str, report: dict):
    """(headline, choice_rule, confidence_reason) for a clear or tied result."""
    lab = label(chosen["name"], chosen["workers"])
    if level == confidence.TIE:
        others = "; ".join(f"{label(t['name'], t['workers'])} ({speedup_text(t)})" for t in tied)
        rule = (f"tie: not surely faster by {MARGIN} or more; the simplest of them is recommended "
                f"(fastest measured: {label(fastest['name'], fastest['workers'])}, {fmt_rate(fastest['cycles_per_s'])} "
                "cycles/s)")
        reason = f"{lab} could not be told apart from {others}"
        if chosen["name"] == "serial":
            headline = (f"{where}, keep the plain loop (serial, {fmt_rate(chosen['cycles_per_s'])} cycles/s): it is a tie - "
                        f"{others} could not be told apart from it (not surely {MARGIN} or more faster), so the "
                        "simplest is recommended.")
        else:
            headline = (f"{where}, use {lab} ({fmt_rate(chosen['cycles_per_s'])} cycles/s, {speedup_text(chosen)}): it is "
                        f"a tie - {others} could not be told apart from it (not surely {MARGIN} or more faster), "
                        f"and {chosen['name']} is the simplest of them.")
        return headline, rule, reason
    rule = (f"clear: faster than every simpler strategy by at least the {MARGIN} noise margin, at 95 % "
            "confidence")
    if chosen["name"] == "serial":
        best_other = max((c for c in candidates if c is not chosen), key=lambda c: c["rank_value"], default=None)
        headline = (f"{where}, keep the plain loop (serial): measured {fmt_rate(chosen['cycles_per_s'])} cycles/s"
                    + (f"; no alternative was faster (the best, {label(best_other['name'], best_other['workers'])}, "
                       f"ran {speedup_text(best_other)})." if best_other else "; nothing else was measured."))
        return headline, rule, "the plain loop was the fastest strategy measured"
    if serial:
        headline = (f"{where}, use {lab}: measured {fmt_rate(chosen['cycles_per_s'])} cycles/s against "
                    f"{fmt_rate(serial['cycles_per_s'])} for the plain loop ({speedup_text(chosen)}).")
    else:
        headline = (f"{where}, use {lab}: measured {fmt_rate(chosen['cycles_per_s'])} cycles/s; the plain loop was "
                    f"not measured ({strategy_reason(report, 'serial')}), so there is no speedup figure.")
    reason = f"{lab} is clearly faster than every simpler strategy"
    return headline, rule, reason


def _evidence(report: dict, chosen: Optional[dict], serial: Optional[dict], limits: dict,
              device: Optional[str], quality: Optional[dict]) -> List[dict]:
    ev: List[dict] = []
    if quality is not None:  # too_noisy: what made it so, with the figures
        load_src = path("probes", "cycle", "data", "load", "other_busy_cores")
        if quality["other_busy_cores"] is not None and get(report, *split_path(load_src)) is not None:
            ev.append(evidence(f"other programs kept {quality['other_busy_cores']:.1f} cores busy during the "
                               "tournament", get(report, *split_path(load_src)), "cores", load_src))
        if serial and serial["spread_fraction"] is not None:
            ev.append(evidence(f"the plain loop's rate varied by {fmt_pct(serial['spread_fraction'])} between rounds",
                               get(report, *split_path(row_path(serial, "spread_fraction"))), "fraction",
                               row_path(serial, "spread_fraction")))
        for r in quality["above_ceiling"]:
            ev.append(evidence(f"{r['name']} with {r['workers']} workers measured {r['speedup_vs_serial']:.2f}x, "
                               f"above its {r['workers']}x ceiling",
                               get(report, *split_path(row_path(r, "speedup_vs_serial"))), "x",
                               row_path(r, "speedup_vs_serial")))
        return ev
    if chosen is None:
        return ev
    ev.append(evidence(f"{label(chosen['name'], chosen['workers'])} ran {fmt_rate(chosen['cycles_per_s'])} cycles/s",
                       get(report, *split_path(chosen["source_cps"])), "cycles/s", chosen["source_cps"]))
    if serial and chosen["row"] is not serial:
        ev.append(evidence(f"the plain loop (serial) ran {fmt_rate(serial['cycles_per_s'])} cycles/s",
                           get(report, *split_path(row_path(serial, "cycles_per_s"))), "cycles/s",
                           row_path(serial, "cycles_per_s")))
        if chosen.get("speedup_ci95") and get(report, *split_path(chosen["source_ci"])) is not None:
            ev.append(evidence(f"95 % interval of its speedup over the plain loop: {_bounds_text(chosen)}",
                               get(report, *split_path(chosen["source_ci"])), "x", chosen["source_ci"]))
        elif chosen["row"]["speedup_vs_serial"] is not None and chosen["source_cps"] == row_path(chosen["row"],
                                                                                                   "cycles_per_s"):
            ev.append(evidence(f"{chosen['name']} is {chosen['row']['speedup_vs_serial']:.2f}x the plain loop",
                               get(report, *split_path(row_path(chosen["row"], "speedup_vs_serial"))), "x",
                               row_path(chosen["row"], "speedup_vs_serial")))
    if chosen["name"] in confidence.PARALLEL:
        key = "fits_" + chosen["name"]
        if key in limits["sources"]:
            kind = "process" if chosen["name"] == "processes" else "thread"
            ev.append(evidence(f"{int(limits['values'][key])} {kind} workers fit in memory",
                               get(report, *split_path(limits["sources"][key])), "workers", limits["sources"][key]))
    for r in ([serial] if serial is not None and serial is not chosen["row"] else []) + [chosen["row"]]:
        if r and r["gpu_busy_fraction"] is not None:
            ev.append(evidence(f"{r['name']} kept the GPU busy {fmt_pct(r['gpu_busy_fraction'])} of the time",
                               get(report, *split_path(row_path(r, "gpu_busy_fraction"))), "fraction",
                               row_path(r, "gpu_busy_fraction")))
    load_src = path("probes", "cycle", "data", "load", "other_busy_cores")
    if get(report, *split_path(load_src)) is not None:
        ev.append(evidence("cores' worth of CPU other programs used while the strategies were timed",
                           get(report, *split_path(load_src)), "cores", load_src))
    if device:
        ev.append(evidence(f"the cycle workload ran on {device}", get(report, "probes", "cycle", "data", "workload",
                                                                    "device"),
                           None, path("probes", "cycle", "data", "workload", "device")))
    return ev


def _runners_up(rows: List[dict], candidates: List[dict], chosen: Optional[dict], tied: List[dict],
                excluded: dict, level: str) -> List[dict]:
    """Every row but the chosen one, with its speedup, interval and why it was not recommended."""
    by_row = {c["row"]["index"]: c for c in candidates}
    out = []
    for r in rows:
        c = by_row.get(r["index"])
        if chosen is not None and c is chosen:
            continue
        entry = {"strategy": r["name"], "workers": c["workers"] if c else r["workers"],
                 "cycles_per_s": c["cycles_per_s"] if c else r["cycles_per_s"], "status": r["status"],
                 "speedup": c["speedup"] if c else r["speedup_vs_serial"],
                 "speedup_ci95": list(c["speedup_ci95"]) if c and c.get("speedup_ci95") else
                 (list(r["speedup_ci95"]) if r.get("speedup_ci95") else None)}
        if r["status"] != "ok":
            entry["why_not"] = f"{r['status'] or 'no status'}: {r['reason'] or 'no reason recorded'}"
        elif r["cycles_per_s"] is None or r["cycles_per_s"] <= 0:
            entry["why_not"] = "no cycles/s recorded"
        elif r["index"] in excluded:
            entry["why_not"] = excluded[r["index"]]
            if chosen and r["cycles_per_s"] > chosen["cycles_per_s"]:
                entry["why_not"] = f"fastest measured ({fmt_rate(r['cycles_per_s'])} cycles/s) but " + entry["why_not"]
        elif level == confidence.TOO_NOISY:
            entry["why_not"] = "not judged: the measurements were too noisy (see the headline)"
        elif chosen is None:
            entry["why_not"] = "not judged"
        elif any(c is t for t in tied):
            entry["why_not"] = f"could not be told apart from {chosen['name']} ({_apart_text(c, chosen)}); " \
                               f"{chosen['name']} is simpler"
        elif c["rank_value"] >= chosen["rank_value"]:
            entry["why_not"] = (f"not clearly faster than the simpler {chosen['name']} ({_bounds_text(c)} against "
                                f"{_bounds_text(chosen)})")
        else:
            slower = 1 - c["cycles_per_s"] / chosen["cycles_per_s"]
            entry["why_not"] = (f"slower by {fmt_pct(slower, 1)} ({fmt_rate(c['cycles_per_s'])} against "
                                f"{fmt_rate(chosen['cycles_per_s'])} cycles/s; speedup {_bounds_text(c)})")
        if c and c.get("fit_note") and r["index"] not in excluded and c["workers"] != r["workers"]:
            entry["why_not"] += f"; {c['fit_note']}"
        out.append(entry)
    order = {"ok": 0}
    out.sort(key=lambda e: (order.get(e["status"], 1), -(e["cycles_per_s"] or 0)))
    return out
