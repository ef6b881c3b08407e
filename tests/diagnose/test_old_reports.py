"""No verdict surer than its data: a report saved by an earlier gpudiag (spread_fraction per row, three
round-robin repeats, no intervals, no tournament load record) is judged on its spreads, and a
busy-machine finding lowers the confidence instead of leaving the claims standing.

The shape follows sample_reports/cpu-linux.json as that version wrote it (before paired intervals):
rows with `repeats`, `spread_fraction` and `wall_s`, the gil probe's other_busy_cores per workload and
its MACHINE_BUSY_DURING_MEASUREMENT finding.
"""

import pytest

from gpudiag.diagnose import confidence as conf
from gpudiag.diagnose.recommend import recommend

CYCLES = 40


def old_row(name, workers, cps, spread, walls=True):
    row = {"name": name, "status": "ok", "reason": "", "workers": workers, "cycles_per_s": cps,
           "speedup_vs_serial": None, "spread_fraction": spread, "repeats": 3, "cycles": CYCLES,
           "torch_threads": 2 if name == "serial" else 1, "gpu_busy_fraction": None}
    if walls:  # three round-robin repeats around the median, as wide as the spread says
        half = spread / 2
        row["wall_s"] = [round(CYCLES / (cps * f), 5) for f in (1 - half, 1.0, 1 + half)]
    if name in ("threads", "processes"):
        row["sweep"] = [{"workers": workers, "cycles_per_s": cps, "torch_threads": 1, "status": "ok", "reason": ""}]
    return row


def old_report(threads=1.12, processes=1.45, spreads=(0.27, 0.31, 0.29), busy=True, walls=True):
    serial = 100.0
    rows = [old_row("serial", 1, serial, spreads[0], walls),
            old_row("threads", 2, serial * threads, spreads[1], walls),
            old_row("processes", 2, serial * processes, spreads[2], walls)]
    for r in rows:
        r["speedup_vs_serial"] = round(r["cycles_per_s"] / serial, 3)
    findings = []
    gil = {"python": {"gil_enabled": True, "free_threaded_build": False}, "scaling": [],
           "other_busy_cores": {"python": 0.9 if busy else 0.02}}
    if busy:
        findings.append({"code": "MACHINE_BUSY_DURING_MEASUREMENT", "severity": "warning",
                         "message": "Other processes kept 0.9 cores busy while the gil probe measured.",
                         "evidence": {"other_busy_cores": {"python": 0.9}}, "fix": None})
    cycle = {"workload": {"device": "cpu", "cycles": CYCLES, "logical_cores": 2}, "strategies": rows,
             "winner": "processes"}
    return {"schema_version": 1, "gpudiag_version": "0.1.0",
            "probes": {"gil": {"status": "ok", "reason": "", "data": gil, "findings": findings},
                       "cycle": {"status": "ok", "reason": "", "data": cycle,
                                 "findings": [{"code": "CYCLE_FASTEST_STRATEGY", "severity": "info",
                                               "message": "Fastest measured here: processes", "evidence": {},
                                               "fix": None}]}}}


def gil_verdict(report):
    return next(v for v in recommend(report)["verdicts"] if v["cause"] == "gil_contention")


def test_the_issues_old_busy_report_does_not_support_gil_contention():
    # threads 1.12x, processes 1.45x, 27-31 % spreads, the machine flagged busy: was `supported`
    report = old_report()
    v = gil_verdict(report)
    assert v["verdict"] != "supported"
    assert v["verdict"] == "inconclusive" and "busy" in v["summary"]
    r = recommend(report)
    assert r["confidence"] == "too_noisy" and r["strategy"] is None
    assert "MACHINE_BUSY_DURING_MEASUREMENT" in r["headline"]


@pytest.mark.parametrize("walls", [True, False], ids=["three repeats", "spreads only"])
def test_overlapping_spreads_never_support_gil_contention_even_on_a_quiet_machine(walls):
    v = gil_verdict(old_report(busy=False, walls=walls))
    assert v["verdict"] == "inconclusive", v
    lo, hi = v["figures"]["cycle_processes_over_threads"]
    assert lo < 1.05 < hi and v["figures"]["cycle_processes_over_threads_from"] == "spread"


def test_tight_spreads_that_separate_still_support_it():
    # The spreads are used, not ignored: 3 % spreads put processes surely ahead of threads.
    v = gil_verdict(old_report(busy=False, spreads=(0.03, 0.03, 0.03)))
    assert v["verdict"] == "supported"


def test_an_old_report_is_never_clear_from_three_repeats_whose_spreads_overlap():
    report = old_report(threads=1.40, processes=1.50, busy=False)
    r = recommend(report)
    assert r["confidence"] in ("tie", "too_noisy") and r["confidence"] != "clear"
    rows = {x["name"]: x for x in report["probes"]["cycle"]["data"]["strategies"]}
    t = dict(rows["threads"], speedup=1.40, rates=None)
    p = dict(rows["processes"], speedup=1.50, rates=None)
    assert not conf.clearly_above(p, t)


def test_a_busy_tournament_finding_counts_when_the_load_was_not_recorded():
    report = old_report(busy=False)
    report["probes"]["cycle"]["findings"].append({"code": "MACHINE_BUSY_DURING_TOURNAMENT", "severity": "warning",
                                                  "message": "busy", "evidence": {}, "fix": None})
    q = conf.cycle_quality(report["probes"]["cycle"]["data"], [], report)
    assert q["busy"] and "the tournament's MACHINE_BUSY_DURING_TOURNAMENT finding" in q["reasons"][0]
    # a report that recorded its own load is judged on it, not on the gil probe's finding
    report = old_report(busy=True)
    report["probes"]["cycle"]["data"]["load"] = {"other_busy_cores": 0.03, "usable_cores": 2, "widest_workers": 2,
                                                 "busy": False}
    assert not conf.cycle_quality(report["probes"]["cycle"]["data"], [], report)["busy"]
