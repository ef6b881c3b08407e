"""Recommendation rules on recorded reports (tests/recorded/*.json) and on small synthetic reports.

No hardware: the rules read only the report. The fixtures are built by tests/recorded/make_fixtures.py.
"""

import copy
import glob
import json
import os
import re

import pytest

import tests
from gpudiag.diagnose import access, memory_fit, thresholds
from gpudiag.diagnose.recommend import recommend
from gpudiag.diagnose.verdicts import gpu_sharing, parallelism, transfer

HERE = tests.TESTS
RECORDED = os.path.join(HERE, "recorded")
VERDICTS = ("supported", "refuted", "inconclusive", "not_measured")
GPU_CAUSES = ("context_switch", "pcie_bandwidth", "host_sync_idle", "gpu_shared", "driver_model")


def load(name):
    with open(os.path.join(RECORDED, name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)


FIXTURES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(RECORDED, "*.json")))

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def resolve(report, source):
    """'probes.cycle.data.strategies[3].cycles_per_s' -> the value there; KeyError if it is not there."""
    assert re.fullmatch(r"[^.\[\]]+(\.[^.\[\]]+|\[\d+\])*", source), f"malformed source {source!r}"
    obj = report
    for name, index in _TOKEN.findall(source):
        if index:
            if not isinstance(obj, list) or int(index) >= len(obj):
                raise KeyError(source)
            obj = obj[int(index)]
        else:
            if not isinstance(obj, dict) or name not in obj:
                raise KeyError(source)
            obj = obj[name]
    return obj


def verdict(r, cause):
    return next(v for v in r["verdicts"] if v["cause"] == cause)


def env_codes(r):
    return [c["code"] for c in r["environment_changes"]]


# ---------------------------------------------------------------- every recorded report

def test_fixtures_are_marked_as_fixtures():
    assert len(FIXTURES) >= 6
    for name in FIXTURES:
        assert load(name)["gpudiag_version"] == "fixture", name


@pytest.mark.parametrize("name", FIXTURES)
def test_recommendation_shape_and_every_source_resolves(name):
    report = load(name)
    r = recommend(report)
    json.dumps(r, allow_nan=False)  # plain JSON, no NaN
    for key in ("strategy", "workers", "cycles_per_s", "serial_cycles_per_s", "speedup", "speedup_ci95",
                "confidence", "tied_with", "headline", "evidence", "runners_up", "environment_changes", "verdicts",
                "gpu_questions_answered"):
        assert key in r, key
    assert r["confidence"] in ("clear", "tie", "too_noisy", "none")
    assert (r["strategy"] is None) == (r["confidence"] in ("too_noisy", "none"))
    assert bool(r["tied_with"]) == (r["confidence"] == "tie")
    assert isinstance(r["headline"], str) and r["headline"]
    assert [v["cause"] for v in r["verdicts"]] == list(thresholds.CAUSES)
    for v in r["verdicts"]:
        assert v["verdict"] in VERDICTS, v
        assert v["summary"]
        if v["verdict"] in ("not_measured", "inconclusive"):
            assert v["reason"], v
        for fig, src in v["sources"].items():
            assert resolve(report, src) == v["figures"][fig], (v["cause"], fig, src)
    for e in r["evidence"]:
        assert e["claim"] and e["source"]
        assert resolve(report, e["source"]) == e["value"], e
    for change in r["environment_changes"]:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", change["code"]) and change["change"]
        assert change["evidence"], change
        for e in change["evidence"]:
            assert resolve(report, e["source"]) == e["value"], e
    for ru in r["runners_up"]:
        assert ru["why_not"], ru


@pytest.mark.parametrize("name", FIXTURES)
def test_strategy_is_the_fastest_that_fits_or_a_simpler_one_it_ties_with(name):
    report = load(name)
    r = recommend(report)
    fits = (report["probes"].get("gil", {}).get("data") or {}).get("memory", {}).get("fits", {})
    rows = [s for s in (report["probes"].get("cycle", {}).get("data") or {}).get("strategies", [])
            if s["status"] == "ok" and s["cycles_per_s"]
            and not (s["name"] in fits and s["workers"] > fits[s["name"]])]
    if not rows or r["confidence"] == "too_noisy":
        assert r["strategy"] is None
        return
    fastest = max(rows, key=lambda s: s["cycles_per_s"])
    assert any(s["name"] == r["strategy"] and s["workers"] == r["workers"] for s in rows)
    if r["confidence"] == "clear":
        assert r["strategy"] == fastest["name"]
    else:
        assert fastest["name"] in r["tied_with"] + [r["strategy"]]


@pytest.mark.parametrize("name", FIXTURES)
def test_recommend_does_not_mutate_the_report(name):
    report = load(name)
    before = copy.deepcopy(report)
    recommend(report)
    assert report == before


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):  # the first rows cover every shape
            yield from _paths(v, prefix + (i,))


@pytest.mark.parametrize("name", FIXTURES)
def test_any_value_missing_or_malformed_never_raises(name):
    """Older schemas, partial data, "n/a" where a number was expected: never an exception."""
    report = load(name)
    paths = [p for p in _paths(report["probes"], ("probes",)) if "points" not in p and "samples" not in p]
    text = json.dumps(report)
    for p in paths:
        for bad in (None, "n/a", [], {}):
            broken = json.loads(text)
            parent = broken
            for k in p[:-1]:
                parent = parent[k]
            parent[p[-1]] = bad
            r = recommend(broken)
            assert len(r["verdicts"]) == len(thresholds.CAUSES)
            for v in r["verdicts"]:  # what is still cited is still there
                for fig, src in v["sources"].items():
                    assert resolve(broken, src) == v["figures"][fig], (p, bad, v["cause"], fig)


# ---------------------------------------------------------------- (1) GIL-bound, CPU-only

def test_gil_bound_cpu_machine_recommends_processes():
    report = load("gil_bound_cpu")
    r = recommend(report)
    assert (r["strategy"], r["workers"], r["cycles_per_s"], r["serial_cycles_per_s"]) == ("processes", 2, 41.3, 22.0)
    assert r["speedup"] == pytest.approx(1.88, abs=0.005)
    assert ("use processes with 2 workers: measured 41.3 cycles/s against 22.0 for the plain loop (1.88x, 95 % "
            "interval") in r["headline"]
    assert r["confidence"] == "clear" and r["choice_rule"].startswith("clear")
    lo, hi = r["speedup_ci95"]
    assert lo < 1.88 < hi and lo >= 25.3 / 22.0 * 1.05  # above batched, the next simpler, by the margin
    assert "CPU" in r["headline"] and "GPU questions were not answered" in r["headline"]
    assert r["gpu_questions_answered"] is False
    gv = verdict(r, "gil_contention")
    assert gv["verdict"] == "supported"  # on the user's loop: threads 1.05x, processes 1.88x
    assert gv["figures"]["cycle_threads_speedup"] == pytest.approx(1.05, abs=0.001)
    assert gv["figures"]["cycle_processes_speedup"] == pytest.approx(1.877, abs=0.001)
    assert gv["figures"]["gil_threads_speedup"] == pytest.approx(0.979, abs=0.001)
    assert "1.05x" in gv["summary"] and "1.88x" in gv["summary"] and "0.98x" in gv["summary"]
    threads = next(x for x in r["runners_up"] if x["strategy"] == "threads")
    assert threads["why_not"].startswith("slower by 44.1 %")
    skipped = [x for x in r["runners_up"] if x["status"] == "skipped"]
    assert {x["strategy"] for x in skipped} == {"deferred_sync", "cuda_graph", "streams"}
    assert all(x["why_not"].startswith("skipped: needs a CUDA device") for x in skipped)
    assert verdict(r, "worker_memory")["verdict"] == "refuted"
    sources = {e["source"] for e in r["evidence"]}
    assert "probes.cycle.data.strategies[6].cycles_per_s" in sources
    assert "probes.gil.data.memory.fits.processes" in sources


# ---------------------------------------------------------------- (2) GPU shared with the desktop

def test_gpu_shared_with_desktop_app_says_close_it():
    r = recommend(load("shared_desktop"))
    assert r["gpu_questions_answered"] is True
    assert r["strategy"] == "batched" and r["workers"] == 4
    assert r["headline"].startswith("On this machine, use batched (K=4): measured 71.8 cycles/s against 38.5")
    close = next(c for c in r["environment_changes"] if c["code"] == "CLOSE_GPU_APPS")
    assert "code" in close["change"]
    assert "Xorg" not in close["change"] and "gnome-shell" not in close["change"]  # the desktop itself stays
    gs = verdict(r, "gpu_shared")
    assert gs["verdict"] == "supported"
    assert set(gs["figures"]["processes"]) == {"Xorg", "gnome-shell", "code"}
    assert gs["figures"]["closable_processes"] == ["code"]
    assert gs["figures"]["nvml_median_percent"] == 45.0 and "45 %" in gs["summary"]
    # persistence off matters for worker processes only; batched is one process
    assert "ENABLE_PERSISTENCE_MODE" not in env_codes(r)
    hs = verdict(r, "host_sync_idle")
    assert hs["verdict"] == "supported" and hs["figures"]["serial_busy_fraction"] == 0.44
    assert verdict(r, "context_switch")["verdict"] == "refuted"
    assert verdict(r, "pcie_bandwidth")["verdict"] == "not_measured"  # healthy link, transfer share unknown
    assert "transfer" in verdict(r, "pcie_bandwidth")["reason"]


# ---------------------------------------------------------------- (3) processes would not fit in RAM

def test_processes_that_do_not_fit_are_excluded_and_worker_memory_supported():
    r = recommend(load("no_fit_kali"))
    assert r["strategy"] == "batched" and r["cycles_per_s"] == 45.2  # processes (52.8) would not fit
    procs = next(x for x in r["runners_up"] if x["strategy"] == "processes")
    assert procs["cycles_per_s"] == 52.8
    assert "fastest measured" in procs["why_not"] and "does not fit in memory" in procs["why_not"]
    assert "7.6 GiB" in procs["why_not"] and "6 GiB" in procs["why_not"] and "3 fit" in procs["why_not"]
    assert "3 workers would fit, but only 4 were measured" in procs["why_not"]
    wm = verdict(r, "worker_memory")
    assert wm["verdict"] == "supported"
    assert wm["figures"]["oom_kills_since_boot"] == 3 and wm["figures"]["fits_processes"] == 3
    assert wm["figures"]["workers_considered"] == 4
    assert "OOM killer has killed 3" in wm["summary"]
    codes = env_codes(r)
    assert "UNSET_CUDA_LAUNCH_BLOCKING" in codes and "FIX_GPU_THROTTLING" in codes
    cuda_graph = next(x for x in r["runners_up"] if x["strategy"] == "cuda_graph")
    assert cuda_graph["why_not"].startswith("failed: RuntimeError")
    assert verdict(r, "context_switch")["verdict"] == "supported"


# ---------------------------------------------------------------- (4) launch-bound: graphs win

def test_launch_bound_loop_recommends_cuda_graphs():
    r = recommend(load("launch_bound_graphs"))
    assert r["strategy"] == "cuda_graph"
    assert r["speedup"] == pytest.approx(3.018, abs=0.001)
    assert "use cuda_graph: measured 166 cycles/s against 55.0 for the plain loop (3.02x, 95 % interval" in r["headline"]
    dm = verdict(r, "driver_model")
    assert dm["verdict"] == "refuted"
    assert dm["figures"]["launch_overhead_us_median"] == 20.3 and "3.05x" in dm["summary"]
    hs = verdict(r, "host_sync_idle")
    assert hs["verdict"] == "refuted" and "launch overhead" in hs["summary"]
    assert "FIX_PCIE_LINK" in env_codes(r)
    assert verdict(r, "pcie_bandwidth")["verdict"] == "supported"
    assert verdict(r, "gpu_shared")["verdict"] == "refuted"
    procs = next(x for x in r["runners_up"] if x["strategy"] == "processes")
    assert procs["why_not"].startswith("slower by 8.4 %")


# ---------------------------------------------------------------- (5) CPU-only, every CUDA probe skipped

def test_cpu_only_report_says_gpu_questions_were_not_answered():
    r = recommend(load("cpu_only_container"))
    assert r["gpu_questions_answered"] is False
    assert r["strategy"] == "batched" and r["device"] == "cpu"
    assert "CPU" in r["headline"] and "GPU questions were not answered here" in r["headline"]
    for cause in GPU_CAUSES:
        v = verdict(r, cause)
        assert v["verdict"] == "not_measured", cause
        assert "skipped" in v["reason"] or "CPU" in v["summary"], v
    assert verdict(r, "gil_contention")["verdict"] == "supported"
    assert r["environment_changes"] == []


# ---------------------------------------------------------------- (7) busy 2-core VM, (8) a tie

def test_busy_machine_is_too_noisy_and_claims_no_speedup():
    report = load("busy_two_core")
    r = recommend(report)
    assert r["confidence"] == "too_noisy" and r["strategy"] is None and r["speedup"] is None
    assert "too busy to judge" in r["headline"] and "1.0 of 2 cores" in r["headline"]
    assert "python3" in r["headline"] and "run `gpudiag report` again" in r["headline"]
    assert "11.97x" not in r["headline"].split("outrun")[0]  # never quoted as a result
    codes = [f["code"] for p in report["probes"].values() for f in p["findings"]]
    assert "MACHINE_BUSY_DURING_MEASUREMENT" in codes
    assert verdict(r, "gil_contention")["verdict"] == "inconclusive"


def test_tie_recommends_the_simpler_and_names_the_other():
    r = recommend(load("tie_eight_core"))
    assert r["confidence"] == "tie" and r["strategy"] == "batched" and r["tied_with"] == ["processes"]
    assert "it is a tie" in r["headline"] and "processes with 4 workers" in r["headline"]
    procs = next(x for x in r["runners_up"] if x["strategy"] == "processes")
    assert "could not be told apart from batched" in procs["why_not"]


# ---------------------------------------------------------------- (6) empty and partial reports

@pytest.mark.parametrize("report", [None, {}, [], "not a report", {"probes": None}, {"probes": []},
                                    {"probes": {"cycle": {"status": "ok", "data": None}}},
                                    {"probes": {"cycle": {"status": "ok", "data": {"strategies": "n/a"}}}},
                                    {"probes": {"cycle": {"status": "ok", "data": {"strategies": [None, 3, {}]}}}}])
def test_empty_reports_give_no_strategy_and_no_exception(report):
    r = recommend(report)
    assert r["strategy"] is None and r["cycles_per_s"] is None and r["speedup"] is None
    assert r["headline"].startswith("No strategy to recommend")
    assert len(r["verdicts"]) == 7 and all(v["verdict"] == "not_measured" for v in r["verdicts"])


def test_partial_report_explains_why_no_strategy():
    r = recommend(load("partial"))
    assert r["strategy"] is None
    assert "the cycle probe failed: timed out after 120 s" in r["headline"]
    gv = verdict(r, "gil_contention")
    assert gv["verdict"] == "not_measured" and "SIGKILL" in gv["reason"]
    assert verdict(r, "gpu_shared")["verdict"] == "not_measured"  # old shape: no process lists


# ---------------------------------------------------------------- synthetic reports for edge cases

def mk(**probes):
    return {"schema_version": 1, "probes": {k: {"status": "ok", "reason": "", "data": v, "findings": []}
                                            for k, v in probes.items()}}


def cyc(*rows, device="cuda:0", **extra):
    strategies = []
    for row in rows:
        name, workers, cps = row[:3]
        status = row[3] if len(row) > 3 else "ok"
        strategies.append({"name": name, "status": status, "reason": "" if status == "ok" else "why",
                           "workers": workers, "cycles_per_s": cps, "speedup_vs_serial": None,
                           "gpu_busy_fraction": None})
    data = {"workload": {"device": device}, "strategies": strategies}
    data.update(extra)
    return data


def gilmem(fits_processes=None, fits_threads=64, per=None, budget=None, scaling=None, **more):
    mem = {"per_worker_host_bytes": per, "budget_host_bytes": budget, "per_worker_device_bytes": None,
           "budget_device_bytes": None, "fits": {"threads": fits_threads, "processes": fits_processes}}
    mem.update(more)
    return {"memory": mem, "scaling": scaling or []}


def test_simpler_strategy_within_noise_margin_is_chosen_and_said():
    # no intervals (an older report): judged on the medians with the same 5 % margin
    r = recommend(mk(cycle=cyc(("serial", 1, 10.0), ("threads", 2, 20.5), ("processes", 2, 21.0))))
    assert r["strategy"] == "threads" and r["speedup"] == pytest.approx(2.05)
    assert r["confidence"] == "tie" and r["tied_with"] == ["processes"]
    assert r["choice_rule"].startswith("tie") and "processes" in r["choice_rule"]
    procs = next(x for x in r["runners_up"] if x["strategy"] == "processes")
    assert "could not be told apart" in procs["why_not"]


def test_serial_fastest_keeps_the_plain_loop():
    r = recommend(mk(cycle=cyc(("serial", 1, 10.0), ("threads", 2, 9.1), ("batched", 4, 9.8))))
    assert r["strategy"] == "serial"
    assert "keep the plain loop" in r["headline"] and "batched (K=4), ran 0.98x" in r["headline"]
    assert r["confidence"] == "clear"


def test_no_serial_row_gives_no_speedup_figure():
    r = recommend(mk(cycle=cyc(("serial", 1, None, "failed"), ("batched", 4, 12.0))))
    assert r["strategy"] == "batched" and r["speedup"] is None and r["serial_cycles_per_s"] is None
    assert "no speedup figure" in r["headline"] and "serial failed: why" in r["headline"]


def test_the_sweep_count_that_fits_is_used_when_the_headline_does_not():
    procs = cyc(("serial", 1, 10.0), ("processes", 4, 30.0))
    procs["strategies"][1]["sweep"] = [{"workers": 2, "cycles_per_s": 18.0, "status": "ok"},
                                       {"workers": 4, "cycles_per_s": 30.0, "status": "ok"}]
    r = recommend(mk(cycle=procs, gil=gilmem(fits_processes=3)))
    assert (r["strategy"], r["workers"], r["cycles_per_s"]) == ("processes", 2, 18.0)
    src = next(e["source"] for e in r["evidence"] if "ran 18.0" in e["claim"])
    assert src == "probes.cycle.data.strategies[1].sweep[0].cycles_per_s"
    # only the headline count was measured: it does not fit, and the text says which counts ran
    r = recommend(mk(cycle=cyc(("serial", 1, 10.0), ("processes", 4, 30.0)), gil=gilmem(fits_processes=3)))
    four = next(x for x in r["runners_up"] if x["workers"] == 4)
    assert "does not fit" in four["why_not"] and "3 workers would fit, but only 4 were measured" in four["why_not"]


def test_fit_computed_from_per_worker_figures_when_gil_gives_no_fits():
    limits = memory_fit.memory_limits(mk(gil={"memory": {"per_worker_host_bytes": 2e9, "budget_host_bytes": 5e9,
                                                  "per_worker_device_bytes": 4e8, "budget_device_bytes": 7e8}}))
    assert limits["values"]["fits_processes"] == 1  # the GPU budget is the tighter one


def test_unknown_fit_does_not_exclude_but_says_so():
    r = recommend(mk(cycle=cyc(("serial", 1, 10.0), ("processes", 4, 30.0))))
    assert r["strategy"] == "processes"
    assert memory_fit.worker_fit("processes", 4, memory_fit.memory_limits({}))[0] is None


def test_every_strategy_excluded_by_memory_gives_null_with_the_reason():
    r = recommend(mk(cycle=cyc(("serial", 1, None, "failed"), ("processes", 4, 30.0)), gil=gilmem(fits_processes=2)))
    assert r["strategy"] is None and "needs more memory" in r["headline"]


def test_non_numeric_cycles_per_s_is_ignored():
    r = recommend(mk(cycle=cyc(("serial", 1, 10.0), ("threads", 2, "n/a"), ("batched", 2, True))))
    assert r["strategy"] == "serial"
    assert all(x["why_not"] == "no cycles/s recorded" for x in r["runners_up"])


def scal(workload, threads, processes, n=2):
    return [{"workload": workload, "mode": "threads", "workers": 1, "speedup": 1.0},
            {"workload": workload, "mode": "threads", "workers": n, "speedup": threads},
            {"workload": workload, "mode": "processes", "workers": 1, "speedup": 1.0},
            {"workload": workload, "mode": "processes", "workers": n, "speedup": processes}]


def test_gil_verdict_edges():
    # without the loop's threads/processes rows, the gil probe's own judgement (re-derived for old rows)
    v = parallelism.verdict_gil_contention(mk(gil={"scaling": scal("python", 1.9, 1.95),
                                           "python": {"gil_enabled": False, "free_threaded_build": True}}))
    assert v["verdict"] == "refuted" and "free-threaded" in v["summary"]
    v = parallelism.verdict_gil_contention(mk(gil={"scaling": scal("python", 1.0, 1.05)}))
    assert v["verdict"] == "inconclusive" and "free cores" in v["reason"]
    v = parallelism.verdict_gil_contention(mk(gil={"scaling": scal("python", 1.0, 1.0)[:1]}))
    assert v["verdict"] == "not_measured"
    v = parallelism.verdict_gil_contention(mk(gil={"scaling": scal("torch_dispatch", 0.9, 1.8)}))
    assert v["verdict"] == "supported" and v["figures"]["gil_workload"] == "torch_dispatch"
    v = parallelism.verdict_gil_contention(mk(gil={"scaling": scal("python", 1.35, 2.0)}))
    assert v["verdict"] == "inconclusive"  # threads partly scale: the probe makes no claim, nor does the verdict
    v = parallelism.verdict_gil_contention({"probes": {"gil": {"status": "failed", "reason": "timed out after 60 s"}}})
    assert v["verdict"] == "not_measured" and "timed out after 60 s" in v["reason"]


def test_context_switch_verdict_edges():
    row = {"workers": 4, "stretch": 1.2, "overhead_fraction": 0.10, "switch_cost_us_est": 300.0,
           "timeslice_ms_est": 2.0}
    v = gpu_sharing.verdict_context_switch(mk(contention={"processes": [row], "mps_active": True}))
    assert v["verdict"] == "supported" and "300 us" in v["summary"] and "MPS" in v["summary"]
    only_stretch = {"workers": 2, "stretch": 1.05}
    v = gpu_sharing.verdict_context_switch(mk(contention={"processes": [only_stretch]}))
    assert v["verdict"] == "refuted" and v["figures"]["overhead_fraction"] == pytest.approx(0.0476, abs=1e-4)
    assert "overhead_fraction" not in v["sources"]  # derived, so no source of its own
    v = gpu_sharing.verdict_context_switch(mk(contention={"processes": [{"workers": 1, "stretch": 1.0}]}))
    assert v["verdict"] == "not_measured"


def test_worker_memory_verdict_edges():
    kills = mk(system={"memory": {"oom_kills_since_boot": 2}})
    v = parallelism.verdict_worker_memory(kills)
    assert v["verdict"] == "supported" and "unknown" in v["summary"]
    assert parallelism.verdict_worker_memory(mk(system={"memory": {"oom_kills_since_boot": 0}}))["verdict"] == "not_measured"
    # workers considered from gil's scaling rows when the cycle did not run
    rep = mk(gil=gilmem(fits_processes=1, per=3e9, budget=4e9,
                        scaling=[{"workload": "python", "mode": "processes", "workers": 2, "speedup": 1.9}]))
    v = parallelism.verdict_worker_memory(rep)
    assert v["verdict"] == "supported" and v["figures"]["workers_considered"] == 2
    assert v["sources"]["workers_considered"] == "probes.gil.data.scaling[0].workers"
    # ... else from the core count
    rep = mk(gil=gilmem(fits_processes=8), system={"cpu": {"logical_cores": 4}, "memory": {}})
    v = parallelism.verdict_worker_memory(rep)
    assert v["verdict"] == "refuted" and v["figures"]["workers_considered"] == 4


def test_pcie_verdict_edges():
    link = {"gen": 3, "width": 16, "gen_max": 3, "width_max": 16, "read_under_load": True}
    base = {"link": link, "theoretical_gbps_per_direction": 15.75, "peak": {"h2d_pinned_gbps": 12.0},
            "efficiency": {"h2d_pinned": 0.76}}
    for share, expected in ((0.3, "supported"), (0.1, "refuted")):
        rep = mk(pcie=base, cycle=cyc(("serial", 1, 1.0), idle={"serial": {"transfer_fraction": share}}))
        v = transfer.verdict_pcie_bandwidth(rep)
        assert v["verdict"] == expected and v["figures"]["transfer_fraction_of_cycle"] == share
    slow = dict(base, efficiency={"h2d_pinned": 0.4})
    assert transfer.verdict_pcie_bandwidth(mk(pcie=slow))["verdict"] == "supported"
    idle_read = dict(base, link=dict(link, width=8, read_under_load=False))  # idle links downtrain: not evidence
    v = transfer.verdict_pcie_bandwidth(mk(pcie=idle_read))
    assert v["verdict"] == "not_measured" and v["figures"]["link_degraded"] is False
    assert "FIX_PCIE_LINK" not in env_codes(recommend(mk(pcie=idle_read)))


def test_host_sync_idle_verdict_edges():
    rep = mk(cycle=cyc(("serial", 1, 10.0), ("deferred_sync", 8, 12.0)))
    v = transfer.verdict_host_sync_idle(rep)
    assert v["verdict"] == "supported" and v["figures"]["deferred_sync_speedup"] == 1.2
    assert transfer.verdict_host_sync_idle(mk(cycle=cyc(("serial", 1, 10.0))))["verdict"] == "not_measured"
    v = transfer.verdict_host_sync_idle(mk(cycle=cyc(("serial", 1, 10.0), device="cpu")))
    assert v["verdict"] == "not_measured" and "CPU" in v["summary"]
    busy = {"busy_fraction": 0.95, "breakdown_ms": {"host_wait": 10, "sync_wait": 10, "launch_overhead": 5}}
    v = transfer.verdict_host_sync_idle(mk(cycle=cyc(("serial", 1, 10.0), idle={"serial": busy})))
    assert v["verdict"] == "refuted"


def drv(*gpus, windows=None):
    return {"gpus": list(gpus), "windows": windows}


def test_gpu_shared_verdict_and_close_change():
    desktop = {"index": 0, "processes": {"graphics": [{"name": "/usr/lib/xorg/Xorg", "used_memory_bytes": 1e8}],
                                         "compute": []}}
    r = recommend(mk(driver=drv(desktop)))
    shared = verdict(r, "gpu_shared")
    assert shared["verdict"] == "supported" and "Only the desktop" in shared["summary"]
    assert "CLOSE_GPU_APPS" not in env_codes(r)  # closing the compositor is not advice
    job = {"index": 0, "processes": {"graphics": [], "compute": [{"name": "python3", "used_memory_bytes": None}]}}
    r = recommend(mk(driver=drv(job)))
    assert "CLOSE_GPU_APPS" in env_codes(r) and "python3" in r["environment_changes"][0]["change"]
    wsl = {"index": 0, "processes": {"graphics": "n/a", "compute": "n/a"}}
    assert gpu_sharing.verdict_gpu_shared(mk(driver=drv(wsl)))["verdict"] == "not_measured"
    assert gpu_sharing.verdict_gpu_shared(mk(driver=drv({"index": 0, "processes": {"graphics": [], "compute": []}})))[
        "verdict"] == "refuted"
    flagged = {"probes": {"driver": {"status": "skipped", "reason": "x", "findings": [
        {"code": "GPU_SHARED_WITH_DISPLAY", "severity": "warning", "message": "code holds the GPU"}]}}}
    v = gpu_sharing.verdict_gpu_shared(flagged)
    assert v["verdict"] == "supported" and resolve(flagged, v["sources"]["finding"]) == "GPU_SHARED_WITH_DISPLAY"
    windows = {"index": 0, "processes": {"graphics": [{"name": "C:\\Windows\\System32\\dwm.exe"},
                                                      {"name": "C:\\Program Files\\Microsoft VS Code\\Code.exe"}],
                                         "compute": []}}
    change = next(c for c in recommend(mk(driver=drv(windows)))["environment_changes"] if c["code"] == "CLOSE_GPU_APPS")
    assert "Code.exe" in change["change"] and "dwm" not in change["change"]


def test_driver_model_verdict_edges():
    wddm = {"index": 0, "driver_model": {"current": "WDDM", "pending": "WDDM"}}
    win = {"os": {"name": "Windows", "wsl": None}}
    slow = {"launch_overhead_us": {"median": 25.0}, "graph": {"speedup": 4.1}}
    assert gpu_sharing.verdict_driver_model(mk(driver=drv(wddm), system=win, launch=slow))["verdict"] == "supported"
    fast = {"launch_overhead_us": {"median": 6.0}}
    assert gpu_sharing.verdict_driver_model(mk(driver=drv(wddm), system=win, launch=fast))["verdict"] == "refuted"
    wsl = mk(driver=drv({"index": 0, "driver_model": {"current": "n/a"}}), system={"os": {"name": "Linux", "wsl": 2}})
    v = gpu_sharing.verdict_driver_model(wsl)
    assert v["verdict"] == "not_measured" and "WSL2" in v["summary"]
    for model in ("TCC", "MCDM"):
        gpu = {"index": 0, "driver_model": {"current": model}}
        v = gpu_sharing.verdict_driver_model(mk(driver=drv(gpu), system=win, launch=fast))
        assert v["verdict"] == "refuted" and model in v["summary"]
    v = gpu_sharing.verdict_driver_model(mk(driver=drv({"index": 0}), system={"os": {"name": "Darwin"}}))
    assert v["verdict"] == "not_measured" and v["reason"]
    # no system probe, but the Linux kernel module was read: native Linux
    linux = dict(drv({"index": 0}), kernel_module={"flavour": "open", "version": "560.35.03"})
    v = gpu_sharing.verdict_driver_model(mk(driver=linux, launch=fast))
    assert v["verdict"] == "refuted" and "Native Linux" in v["summary"]


def test_environment_changes_edges():
    assert env_codes(recommend(mk(system={"env": {"CUDA_LAUNCH_BLOCKING": "0"}}))) == []
    r = recommend({"probes": {"system": {"status": "ok", "data": {"env": {}}, "findings": [
        {"code": "CUDA_LAUNCH_BLOCKING_ON", "severity": "critical", "message": "on", "fix": "Unset it."}]}}})
    assert env_codes(r) == ["UNSET_CUDA_LAUNCH_BLOCKING"]
    pm_off = {"index": 0, "persistence_mode": False}
    procs = cyc(("serial", 1, 10.0), ("processes", 2, 19.0))
    assert "ENABLE_PERSISTENCE_MODE" in env_codes(recommend(mk(driver=drv(pm_off), system={"os": {"name": "Linux"}},
                                                               cycle=procs)))
    assert "ENABLE_PERSISTENCE_MODE" not in env_codes(recommend(mk(driver=drv(pm_off), system={"os": {"name": "Linux"}})))
    wsl = {"os": {"name": "Linux", "wsl": 2}}
    assert "ENABLE_PERSISTENCE_MODE" not in env_codes(recommend(mk(driver=drv(pm_off), system=wsl, cycle=procs)))
    na = {"index": 0, "persistence_mode": "n/a", "clock_event_reasons": {"active": ["gpu_idle"], "raw": 1}}
    assert env_codes(recommend(mk(driver=drv(na)))) == []
    hot = {"index": 0, "clock_event_reasons": {"active": ["hw_thermal_slowdown"], "raw": 64}}
    assert env_codes(recommend(mk(driver=drv(hot)))) == ["FIX_GPU_THROTTLING"]


def test_source_paths_round_trip():
    p = access.path("probes", "cycle", "data", "strategies", 3, "cycles_per_s")
    assert p == "probes.cycle.data.strategies[3].cycles_per_s"
    assert access.split_path(p) == ["probes", "cycle", "data", "strategies", 3, "cycles_per_s"]


# ---------------------------------------------------------------- the CLI puts it in the report

def test_cli_report_writes_the_recommendation(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gpudiag import cli, probes, runner
    from gpudiag.probes.base import Probe

    recorded = load("gil_bound_cpu")
    fake = [Probe(name=n, title=n, summary=n, run=lambda ctx: None) for n in recorded["probes"]]
    monkeypatch.setattr(probes, "all_probes", lambda: fake)
    monkeypatch.setattr(runner, "run_probes", lambda *a, **k: {"results": recorded["probes"], "interrupted": False})
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli.main, ["report", "--json", str(out), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    written = json.loads(out.read_text())
    assert written["recommendation"]["strategy"] == "processes"
    assert "use processes with 2 workers" in (tmp_path / "r.html").read_text()
