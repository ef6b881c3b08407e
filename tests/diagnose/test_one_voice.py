"""One voice: where a probe calls its own figures inconclusive or the machine busy, the verdicts and the
headline say so too, and nothing in the recommendation contradicts a finding on the same page."""

import glob
import json
import os

import pytest

import tests
from gpudiag.diagnose.recommend import recommend
from gpudiag.probes.cycle import probe as cycle_probe
from gpudiag.diagnose import gil_scaling
from gpudiag.probes.gil import analysis as gil_analysis

RECORDED = os.path.join(tests.TESTS, "recorded")
FIXTURES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(RECORDED, "*.json")))


def load(name):
    with open(os.path.join(RECORDED, name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)


def verdict(r, cause):
    return next(v for v in r["verdicts"] if v["cause"] == cause)


def m(workload, mode, workers, walls, items=100):
    return {"workload": workload, "mode": mode, "workers": workers, "items": items, "wall_s": walls}


def gil_only(scaling_measurements, other=None, cores=2):
    data = {"scaling": gil_analysis.scaling_rows(scaling_measurements), "cpu": {"usable_cores": cores},
            "python": {"gil_enabled": True, "free_threaded_build": False}, "memory": {}, "startup": {}}
    if other is not None:
        data["other_busy_cores"] = other
    out = gil_analysis.analyse(data, usable_cores=cores)
    data["verdict"] = out["verdict"]
    return {"probes": {"gil": {"status": "ok", "data": data, "findings": out["findings"]}}}, out


QUIET_GIL_BOUND = [m("python", "threads", 1, [1.0, 1.01, 0.99, 1.0, 1.0]),
                   m("python", "threads", 2, [1.02, 1.0, 1.03, 1.01, 1.0]),
                   m("python", "processes", 1, [1.0, 0.99, 1.01, 1.0, 1.0]),
                   m("python", "processes", 2, [0.52, 0.51, 0.5, 0.52, 0.51])]


def test_gil_probe_busy_means_the_gil_verdict_is_inconclusive_with_that_reason():
    rep, out = gil_only(QUIET_GIL_BOUND, other={"python": 0.9})
    assert out["verdict"]["python"]["verdict"] == gil_scaling.INCONCLUSIVE
    assert "MACHINE_BUSY_DURING_MEASUREMENT" in [f["code"] for f in out["findings"]]
    assert "GIL_BOUND_PYTHON" not in [f["code"] for f in out["findings"]]
    v = verdict(recommend(rep), "gil_contention")
    assert v["verdict"] == "inconclusive" and "cores busy" in v["reason"]


def test_quiet_gil_bound_is_supported_by_the_probe_and_the_verdict_alike():
    rep, out = gil_only(QUIET_GIL_BOUND, other={"python": 0.02})
    assert out["verdict"]["python"]["verdict"] == gil_analysis.ONLY_PROCESSES
    assert verdict(recommend(rep), "gil_contention")["verdict"] == "supported"


def test_noisy_gil_figures_inconclusive_in_the_probe_are_inconclusive_in_the_verdict():
    noisy = [m("python", "threads", 1, [1.0, 0.4, 2.0, 1.0, 0.7]), m("python", "threads", 2, [1.0, 1.0, 1.0, 1.1, 0.9]),
             m("python", "processes", 1, [1.0, 1.0, 1.0, 1.0, 1.0]), m("python", "processes", 2, [0.5] * 5)]
    rep, out = gil_only(noisy)
    assert out["verdict"]["python"]["verdict"] == gil_scaling.INCONCLUSIVE
    v = verdict(recommend(rep), "gil_contention")
    assert v["verdict"] == "inconclusive" and "too noisy" in v["reason"]


def test_a_speedup_above_the_ideal_makes_the_gil_probe_inconclusive():
    # processes at 2.4x with 2 workers: the 1-process baseline was slowed (the story's 2.12x-over-ideal chart)
    above = QUIET_GIL_BOUND[:2] + [m("python", "processes", 1, [1.2, 1.19, 1.21, 1.2, 1.2]),
                                   m("python", "processes", 2, [0.5, 0.5, 0.49, 0.51, 0.5])]
    rep, out = gil_only(above)
    v = out["verdict"]["python"]
    assert v["verdict"] == gil_scaling.INCONCLUSIVE and "above the ideal 2x" in v["reason"]
    assert verdict(recommend(rep), "gil_contention")["verdict"] == "inconclusive"


def test_in_the_loop_nothing_scales_means_the_gil_is_not_what_limits():
    # A GPU-bound loop: neither threads nor processes gain; the micro-benchmark says GIL-bound regardless.
    rep, _ = gil_only(QUIET_GIL_BOUND, other={"python": 0.02})
    rows = [{"name": "serial", "status": "ok", "workers": 1, "cycles_per_s": 50.0, "spread_fraction": 0.02},
            {"name": "threads", "status": "ok", "workers": 4, "cycles_per_s": 50.5, "speedup_vs_serial": 1.01,
             "speedup_ci95": [0.98, 1.04]},
            {"name": "processes", "status": "ok", "workers": 4, "cycles_per_s": 49.0, "speedup_vs_serial": 0.98,
             "speedup_ci95": [0.95, 1.01]}]
    rep["probes"]["cycle"] = {"status": "ok", "findings": [], "data": {
        "workload": {"device": "cuda:0"}, "strategies": rows,
        "load": {"other_busy_cores": 0.05, "usable_cores": 8, "widest_workers": 4}}}
    v = verdict(recommend(rep), "gil_contention")
    assert v["verdict"] == "refuted" and "Nothing scales" in v["summary"] and "the GPU" in v["summary"]
    assert "GIL-bound on pure-Python work" in v["summary"]  # the micro-benchmark is reported, not contradicted


@pytest.mark.parametrize("name", FIXTURES)
def test_no_recommendation_contradicts_a_finding_on_the_same_page(name):
    report = load(name)
    r = recommend(report)
    codes = {f["code"] for res in report["probes"].values() for f in res.get("findings") or []}
    if {"MACHINE_BUSY_DURING_TOURNAMENT", "CYCLE_SPEEDUP_ABOVE_WORKERS", "CYCLE_BASELINE_NOISY"} & codes:
        assert r["confidence"] == "too_noisy" and r["strategy"] is None
        assert "CYCLE_FASTEST_STRATEGY" not in codes
    if r["confidence"] == "too_noisy":
        assert verdict(r, "gil_contention")["verdict"] in ("inconclusive", "not_measured")
    gil = (report["probes"].get("gil") or {}).get("data") or {}
    py = (gil.get("verdict") or {}).get("python") or {}
    if py.get("verdict") == gil_scaling.INCONCLUSIVE and not (report["probes"].get("cycle") or {}).get("data"):
        assert verdict(r, "gil_contention")["verdict"] == "inconclusive"
    if "GIL_BOUND_PYTHON" in codes and verdict(r, "gil_contention")["verdict"] == "refuted":
        assert "GIL-bound on pure-Python work" in verdict(r, "gil_contention")["summary"]


@pytest.mark.parametrize("name", FIXTURES)
def test_the_cycle_probe_findings_agree_with_the_recommendation(name):
    report = load(name)
    cyc = (report["probes"].get("cycle") or {}).get("data")
    if not cyc:
        return
    codes = {f["code"] for f in cycle_probe.findings_for(cyc)}
    r = recommend(report)
    assert ("CYCLE_FASTEST_STRATEGY" in codes) == (r["confidence"] in ("clear", "tie")), (codes, r["confidence"])


def test_a_quiet_tournament_after_a_busy_gil_run_says_which_figures_the_load_touched():
    rep, out = gil_only(QUIET_GIL_BOUND, other={"python": 0.9})
    rows = [{"name": "serial", "status": "ok", "workers": 1, "cycles_per_s": 20.0, "spread_fraction": 0.03},
            {"name": "processes", "status": "ok", "workers": 2, "cycles_per_s": 36.0, "speedup_vs_serial": 1.8,
             "speedup_ci95": [1.7, 1.9]}]
    rep["probes"]["cycle"] = {"status": "ok", "findings": [], "data": {
        "workload": {"device": "cpu"}, "strategies": rows,
        "load": {"other_busy_cores": 0.02, "usable_cores": 2, "widest_workers": 2}}}
    r = recommend(rep)
    assert r["confidence"] == "clear" and r["strategy"] == "processes"
    assert "busy while the gil micro-benchmark ran" in r["headline"]
