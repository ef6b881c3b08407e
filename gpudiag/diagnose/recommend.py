"""The recommendation: which parallelism strategy to use on this machine, and a verdict per suspected cause.

Pure functions over the report dict (docs/report-contract.md): no hardware, no torch, no NVML, so the
rules are tested on recorded reports. Every figure quoted comes from the report and carries a
JSON-path-like `source` ("probes.cycle.data.strategies[3].cycles_per_s"); a fact the report does not
hold is `not_measured` with the reason, never a default. Reports of older shape, with probes skipped
or failed, or with keys missing, give a recommendation with less in it, never an exception.
The rules are described for users in docs/recommendation.md.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from gpudiag.diagnose.access import (
    cycle_device,
    evidence,
    fmt_pct,
    fmt_rate,
    get,
    gpu_questions_answered,
    not_run_reason,
    path,
    probe_data,
    row_path,
    split_path,
    strategy_reason,
    strategy_rows,
)
from gpudiag.diagnose.environment import environment_changes
from gpudiag.diagnose.memory_fit import memory_limits, worker_fit
from gpudiag.diagnose.thresholds import NOISE_MARGIN_FRACTION, SIMPLICITY
from gpudiag.diagnose.verdicts import VERDICTS
from gpudiag.diagnose.verdicts.parallelism import verdict_worker_memory


def pick(eligible: List[dict]) -> Tuple[Optional[dict], Optional[dict]]:
    """(chosen row, fastest row): the fastest, unless a simpler one is within NOISE_MARGIN_FRACTION."""
    if not eligible:
        return None, None
    fastest = max(eligible, key=lambda r: r["cycles_per_s"])
    near = [r for r in eligible if r["cycles_per_s"] >= fastest["cycles_per_s"] * (1 - NOISE_MARGIN_FRACTION)]

    def simplicity(r):
        rank = SIMPLICITY.index(r["name"]) if r["name"] in SIMPLICITY else len(SIMPLICITY)
        return (rank, r["workers"] or 1, -r["cycles_per_s"])

    return min(near, key=simplicity), fastest


def label(name: str, workers: Optional[int]) -> str:
    if name in ("threads", "processes") and workers:
        return f"{name} with {workers} worker{'s' if workers != 1 else ''}"
    if name == "streams" and workers:
        return f"streams ({workers} cycles in flight)"
    if name in ("batched", "deferred_sync") and workers and workers > 1:
        return f"{name} (K={workers})"
    return name


def slower_by(row: dict, best: dict) -> str:
    pct = 100 * (1 - row["cycles_per_s"] / best["cycles_per_s"])
    return (f"slower by {pct:.1f} % ({fmt_rate(row['cycles_per_s'])} against "
            f"{fmt_rate(best['cycles_per_s'])} cycles/s)")


def recommend(report: Any) -> dict:
    """report dict -> the `recommendation` object of docs/report-contract.md. Never raises on missing data."""
    report = report if isinstance(report, dict) else {}
    rows = strategy_rows(report)
    limits = memory_limits(report)
    device = cycle_device(report)
    answered = gpu_questions_answered(report)

    eligible, runners, fit_notes = [], [], {}
    for r in rows:
        if r["status"] != "ok":
            continue
        if r["cycles_per_s"] is None or r["cycles_per_s"] <= 0:
            continue
        fits, why = worker_fit(r["name"], r["workers"], limits)
        fit_notes[r["index"]] = why
        if fits is False:
            continue
        eligible.append(r)
    chosen, fastest = pick(eligible)
    serial = next((r for r in rows if r["name"] == "serial" and r["status"] == "ok" and r["cycles_per_s"]), None)

    ev: List[dict] = []
    speedup = None
    if chosen:
        ev.append(evidence(f"{label(chosen['name'], chosen['workers'])} ran {fmt_rate(chosen['cycles_per_s'])} "
                           "cycles/s", get(report, *split_path(row_path(chosen, "cycles_per_s"))), "cycles/s",
                           row_path(chosen, "cycles_per_s")))
        if serial and serial is not chosen:
            ev.append(evidence(f"the plain loop (serial) ran {fmt_rate(serial['cycles_per_s'])} cycles/s",
                               get(report, *split_path(row_path(serial, "cycles_per_s"))), "cycles/s",
                               row_path(serial, "cycles_per_s")))
        if chosen["speedup_vs_serial"] is not None:
            speedup = chosen["speedup_vs_serial"]
            ev.append(evidence(f"{chosen['name']} is {speedup:.2f}x the plain loop",
                               get(report, *split_path(row_path(chosen, "speedup_vs_serial"))), "x",
                               row_path(chosen, "speedup_vs_serial")))
        elif serial:
            speedup = round(chosen["cycles_per_s"] / serial["cycles_per_s"], 3)
        if chosen["name"] in ("threads", "processes"):
            key = "fits_" + chosen["name"]
            if key in limits["sources"]:
                n = limits["values"][key]
                kind = "process" if chosen["name"] == "processes" else "thread"
                ev.append(evidence(f"{int(n)} {kind} workers fit in memory", get(report, *split_path(
                    limits["sources"][key])), "workers", limits["sources"][key]))
        for r in ([serial] if serial is not chosen else []) + [chosen]:
            if r and r["gpu_busy_fraction"] is not None:
                ev.append(evidence(f"{r['name']} kept the GPU busy {fmt_pct(r['gpu_busy_fraction'])} of the time",
                                   get(report, *split_path(row_path(r, "gpu_busy_fraction"))), "fraction",
                                   row_path(r, "gpu_busy_fraction")))
        if device:
            ev.append(evidence(f"the cycle workload ran on {device}",
                               get(report, "probes", "cycle", "data", "workload", "device"), None,
                               path("probes", "cycle", "data", "workload", "device")))

    # Runners-up: every other row, and why it lost.
    for r in rows:
        if r is chosen:
            continue
        entry = {"strategy": r["name"], "workers": r["workers"], "cycles_per_s": r["cycles_per_s"],
                 "status": r["status"]}
        if r["status"] != "ok":
            entry["why_not"] = f"{r['status'] or 'no status'}: {r['reason'] or 'no reason recorded'}"
        elif r["cycles_per_s"] is None or r["cycles_per_s"] <= 0:
            entry["why_not"] = "no cycles/s recorded"
        elif r not in eligible:
            entry["why_not"] = fit_notes.get(r["index"]) or "does not fit in memory"
            if chosen and r["cycles_per_s"] > chosen["cycles_per_s"]:
                entry["why_not"] = (f"fastest measured ({fmt_rate(r['cycles_per_s'])} cycles/s) but "
                                    + entry["why_not"])
        elif chosen and r["cycles_per_s"] >= chosen["cycles_per_s"]:
            pct = 100 * (r["cycles_per_s"] / chosen["cycles_per_s"] - 1)
            entry["why_not"] = (f"only {pct:.1f} % faster than {chosen['name']}, within the "
                                f"{fmt_pct(NOISE_MARGIN_FRACTION)} noise margin; {chosen['name']} is simpler")
        else:
            entry["why_not"] = slower_by(r, chosen)
        runners.append(entry)
    order = {"ok": 0}
    runners.sort(key=lambda e: (order.get(e["status"], 1), -(e["cycles_per_s"] or 0)))

    verdicts = []
    for _cause, fn in VERDICTS:
        verdicts.append(fn(report, limits) if fn is verdict_worker_memory else fn(report))

    gpu_note = "" if answered else (" GPU questions were not answered here: no CUDA device was measured "
                                    "(the verdicts say why).")
    where = "On this machine" if device in (None, "cuda") else "On this machine's CPU (the cycle ran without a GPU)"
    if chosen:
        rule = "fastest measured"
        if fastest is not chosen:
            rule = (f"simplest within {fmt_pct(NOISE_MARGIN_FRACTION)} of the fastest "
                    f"({label(fastest['name'], fastest['workers'])}, {fmt_rate(fastest['cycles_per_s'])} cycles/s)")
        if chosen["name"] == "serial":
            best_other = max((r for r in eligible if r is not chosen), key=lambda r: r["cycles_per_s"], default=None)
            headline = (f"{where}, keep the plain loop (serial): measured {fmt_rate(chosen['cycles_per_s'])} cycles/s"
                        + (f"; the best alternative, {label(best_other['name'], best_other['workers'])}, ran "
                           f"{fmt_rate(best_other['cycles_per_s'])}."
                           if best_other else "; nothing else was measured."))
        elif serial:
            headline = (f"{where}, use {label(chosen['name'], chosen['workers'])}: measured "
                        f"{fmt_rate(chosen['cycles_per_s'])} cycles/s against {fmt_rate(serial['cycles_per_s'])} "
                        f"for the plain loop ({speedup:.2f}x).")
        else:
            headline = (f"{where}, use {label(chosen['name'], chosen['workers'])}: measured "
                        f"{fmt_rate(chosen['cycles_per_s'])} cycles/s; the plain loop was not measured ("
                        f"{strategy_reason(report, 'serial')}), so there is no speedup figure.")
    else:
        rule = None
        if not probe_data(report, "cycle"):
            why = not_run_reason(report, "cycle")
        elif not rows:
            why = "the cycle probe recorded no strategies"
        elif any(r["status"] == "ok" and r["cycles_per_s"] for r in rows):
            why = "every strategy measured needs more memory than this machine has for its workers"
        else:
            why = "no strategy finished its measurement"
        headline = f"No strategy to recommend: {why}."
    return {
        "strategy": chosen["name"] if chosen else None,
        "workers": chosen["workers"] if chosen else None,
        "cycles_per_s": chosen["cycles_per_s"] if chosen else None,
        "serial_cycles_per_s": serial["cycles_per_s"] if serial else None,
        "speedup": speedup,
        "device": device,
        "choice_rule": rule,
        "headline": headline + gpu_note,
        "evidence": ev,
        "runners_up": runners,
        "environment_changes": environment_changes(report),
        "verdicts": verdicts,
        "gpu_questions_answered": answered,
    }
