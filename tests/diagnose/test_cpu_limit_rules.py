"""Every rule that reads a CPU limit or a throttled measurement, on literal data: the words, the busy rule under a
quota, the gil verdicts, the cycle's worker counts and findings, the recommendation, the system finding and the
preflight check. Under a quota the verdicts name the limit; they never blame other programs or noise for it."""

from __future__ import annotations

import copy

import pytest

from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose import preflight
from gpudiag.diagnose.preflight import facts as facts_mod
from gpudiag.diagnose.preflight.host_checks import check_cpu_limit
from gpudiag.diagnose.recommend import recommend
from gpudiag.diagnose.thresholds import THROTTLED_MIN_PERIODS, THROTTLED_SHARE_MIN
from gpudiag.measure.load import machine_busy
from gpudiag.probes import system
from gpudiag.probes.cycle import probe as cycle_probe
from gpudiag.diagnose import gil_scaling
from gpudiag.probes.gil import analysis as gil_analysis
from tests.diagnose.test_confidence import row, tournament

QUOTA_1 = {"affinity_cores": 2, "cpuset_cpus": 2, "quota_cpus": 1.0, "quota_period_us": 100000,
           "quota_source": "cgroup v1 cpu.cfs_quota_us (own cgroup)", "cgroup_version": 1, "usable_cpus": 1.0,
           "usable_cores": 1, "limited_by": "quota"}
QUOTA_HALF = dict(QUOTA_1, quota_cpus=0.5, usable_cpus=0.5, quota_source="cgroup v2 cpu.max (parent cgroup)",
                  cgroup_version=2)
QUOTA_1_5 = dict(QUOTA_1, affinity_cores=4, cpuset_cpus=4, quota_cpus=1.5, usable_cpus=1.5, usable_cores=2)
FREE_2 = {"affinity_cores": 2, "cpuset_cpus": 2, "quota_cpus": None, "quota_period_us": None, "quota_source": None,
          "cgroup_version": 1, "usable_cpus": 2.0, "usable_cores": 2, "limited_by": None}
THROTTLED = {"periods": 40, "throttled_periods": 38, "throttled_share": 0.95, "throttled_s": 2.1}
CALM = {"periods": 40, "throttled_periods": 1, "throttled_share": 0.025, "throttled_s": 0.01}


# ------------------------------------------------------------------ words and thresholds

def test_the_limit_is_named_by_kind_with_the_cores_it_leaves():
    assert cpu_limit.limit_text(QUOTA_1) == "a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup)"
    assert cpu_limit.usable_text(QUOTA_HALF) == "1 usable core under a CPU limit of 0.5 CPU (cgroup v2 cpu.max, parent cgroup)"
    assert cpu_limit.limit_text(dict(FREE_2, limited_by="cpuset", cpuset_cpus=2)) == "a cpuset of 2 CPUs"
    assert cpu_limit.limit_text(dict(FREE_2, limited_by="affinity", affinity_cores=1)) == "a CPU affinity of 1 CPU"
    assert cpu_limit.limit_text(FREE_2) == "" and cpu_limit.usable_text(None) == "" and cpu_limit.limit_text({}) == ""
    assert cpu_limit.cpus_text(0.25) == "0.25 CPU" and cpu_limit.cpus_text(1.5) == "1.5 CPUs"
    assert cpu_limit.throttled_text(QUOTA_1, THROTTLED) == ("throttled in 95 % of 40 periods by a CPU limit of 1.0 CPU "
                                                     "(cgroup v1 cpu.cfs_quota_us, own cgroup)")
    assert cpu_limit.run_cores(QUOTA_1) == 2 and cpu_limit.run_cores({"cpuset_cpus": 3, "affinity_cores": 8}) == 3
    assert cpu_limit.quota_binds(QUOTA_1) and not cpu_limit.quota_binds(FREE_2)
    assert cpu_limit.recorded(dict(QUOTA_1, throttling_since_start={"nr_periods": 1})) == QUOTA_1


def test_throttled_needs_the_share_over_enough_periods():
    share, periods = THROTTLED_SHARE_MIN, THROTTLED_MIN_PERIODS
    assert cpu_limit.throttled({"periods": periods, "throttled_share": share})
    assert not cpu_limit.throttled({"periods": periods, "throttled_share": share - 0.01})
    assert not cpu_limit.throttled({"periods": periods - 1, "throttled_share": 1.0})  # one or two periods decide nothing
    assert not cpu_limit.throttled(None) and not cpu_limit.throttled({"throttled_share": "x", "periods": 9})


def test_under_a_quota_others_take_the_idle_cores_first():
    # 2 cores, a 1-CPU quota, 1 worker: the quota's core is short only from 1.5 cores of other load.
    assert not machine_busy(1.28, 1, 1, run_cores=2) and machine_busy(1.5, 1, 1, run_cores=2)
    # more workers than the quota allows need no more than the usable cores
    assert not machine_busy(1.28, 1, 2, run_cores=2)
    # without a quota the rule is the old one
    assert machine_busy(0.5, 2, 2) and not machine_busy(0.4, 2, 2, run_cores=2)
    assert machine_busy(0.5, 2, 4) and not machine_busy(0.4, 2, 4)


# ------------------------------------------------------------------ gil

def _gil_rows(n):
    rows = []
    for mode in ("threads", "processes"):
        rows.append({"workload": "python", "mode": mode, "workers": 1, "speedup": 1.0, "spread_fraction": 0.02})
        if n > 1:
            rows.append({"workload": "python", "mode": mode, "workers": n, "speedup": 1.3 if mode == "processes"
                         else 1.0, "speedup_ci95": [1.2, 1.4] if mode == "processes" else [0.95, 1.05],
                         "spread_fraction": 0.3})
    return rows


def test_gil_on_one_usable_core_names_the_limit_instead_of_guessing():
    data = {"scaling": _gil_rows(1), "cpu": {"usable_cores": 1, "limit": QUOTA_1,
                                             "throttling": {"python": CALM}}, "other_busy_cores": {"python": 1.2}}
    res = gil_analysis.analyse(data, usable_cores=1)
    v = res["verdict"]["python"]
    assert v["verdict"] == gil_scaling.NOT_MEASURED
    assert v["reason"].startswith("only 1 worker measured: 1 usable core under a CPU limit of 1.0 CPU")
    assert "more workers cannot help" in v["reason"]
    codes = [f["code"] for f in res["findings"]]
    assert "MACHINE_BUSY_DURING_MEASUREMENT" not in codes  # 1.2 of 2 cores leaves the quota's core free
    assert "CPU_THROTTLED_DURING_MEASUREMENT" not in codes


def test_a_throttled_gil_workload_is_inconclusive_by_name_not_busy():
    data = {"scaling": _gil_rows(2), "cpu": {"usable_cores": 2, "limit": QUOTA_1_5,
                                             "throttling": {"python": THROTTLED}}, "other_busy_cores": {"python": 0.1}}
    res = gil_analysis.analyse(data, usable_cores=2)
    v = res["verdict"]["python"]
    assert v["verdict"] == gil_scaling.INCONCLUSIVE and "throttled in 95 % of 40 periods by a CPU limit of 1.5 CPUs" in v["reason"]
    (f,) = [f for f in res["findings"] if f["code"] == "CPU_THROTTLED_DURING_MEASUREMENT"]
    assert "more workers cannot help" in f["message"] and "other" not in f["message"]
    assert "CPU_PARALLELISM_LIMITED" not in [x["code"] for x in res["findings"]]


def test_short_gil_workloads_are_judged_on_their_periods_together():
    short = {"periods": 2, "throttled_periods": 2, "throttled_share": 1.0, "throttled_s": 0.1}
    data = {"scaling": _gil_rows(1), "cpu": {"usable_cores": 1, "limit": QUOTA_HALF,
                                             "throttling": {"python": short, "torch_op": dict(short, periods=3,
                                                                                              throttled_periods=3)}}}
    res = gil_analysis.analyse(data, usable_cores=1)
    (f,) = [f for f in res["findings"] if f["code"] == "CPU_THROTTLED_DURING_MEASUREMENT"]
    assert "of 5 periods by a CPU limit of 0.5 CPU" in f["message"] and "even one worker" in f["message"]
    one = {"periods": 2, "throttled_periods": 2, "throttled_share": 1.0, "throttled_s": 0.1}
    res = gil_analysis.analyse(dict(data, cpu=dict(data["cpu"], throttling={"python": one})), usable_cores=1)
    assert "CPU_THROTTLED_DURING_MEASUREMENT" not in [x["code"] for x in res["findings"]]  # 2 periods: too few


def test_worker_memory_is_judged_against_the_usable_cores():
    mem = {"per_worker_host_bytes": 3 * 2**30, "budget_host_bytes": 4 * 2**30, "fits": {"processes": 1}}
    (f,) = gil_analysis._memory_findings(mem, {}, usable_cores=1)
    assert f["severity"] == "info"  # one worker per usable core fits; a second could not add speed
    (f,) = gil_analysis._memory_findings(mem, {}, usable_cores=2)
    assert f["severity"] == "critical"


# ------------------------------------------------------------------ cycle

def test_cycle_measures_no_parallel_workers_on_one_usable_core():
    assert cycle_probe.worker_counts("quick", 1) == [] and cycle_probe.worker_counts("full", 1) == []
    assert cycle_probe.worker_counts("quick", 2) == [2] and cycle_probe.worker_counts("full", 2) == [2, 4]
    plan = cycle_probe.make_plan("quick", "cpu", 1, {"cpu_limit": QUOTA_1})
    assert plan.workers == [] and plan.workers_reason.startswith("1 usable core under a CPU limit of 1.0 CPU")
    assert "more workers cannot help" in plan.workers_reason
    assert cycle_probe.make_plan("quick", "cpu", 1, {"cycle_workers": [2]}).workers == [2]  # asked for: measured


def _cycle_data(limit, throttling, torch_default=2, torch_used=1, serial_spread=0.03):
    rows = [row("serial", 1, 100.0, spread=serial_spread), row("batched", 1, 120.0, [1.15, 1.25])]
    rep = tournament(*rows, cores=limit.get("usable_cores") or 2, other=1.28)
    data = rep["probes"]["cycle"]["data"]
    data["load"].update(limit=limit, run_cores=cpu_limit.run_cores(limit), throttling=throttling)
    data["workload"].update(torch_threads_default=torch_default, torch_threads=torch_used)
    for name in ("threads", "processes"):
        data["strategies"].append(dict(row(name, None, None, status="skipped"), reason="1 usable core under ..."))
    return rep, data


def test_cycle_findings_name_the_throttling_and_torch_threads_above_the_limit():
    _, data = _cycle_data(QUOTA_HALF, THROTTLED)
    codes = {f["code"]: f for f in cycle_probe.findings_for(data)}
    assert "throttled in 95 % of 40 periods by a CPU limit of 0.5 CPU" in codes["CYCLE_THROTTLED"]["message"]
    t = codes["TORCH_THREADS_ABOVE_CPU_LIMIT"]
    assert "torch starts 2 intra-op threads" in t["message"] and "torch.set_num_threads(1)" in t["fix"]
    assert "MACHINE_BUSY_DURING_TOURNAMENT" not in codes  # 1.28 of 2 cores: the quota's core stayed free
    _, data = _cycle_data(FREE_2, None, torch_default=2, torch_used=2)
    codes = [f["code"] for f in cycle_probe.findings_for(data)]
    assert "CYCLE_THROTTLED" not in codes and "TORCH_THREADS_ABOVE_CPU_LIMIT" not in codes


def test_a_throttled_noisy_tournament_is_put_down_to_the_limit_with_advice_that_can_work():
    rep, data = _cycle_data(QUOTA_HALF, THROTTLED, serial_spread=0.6)
    r = recommend(rep)
    assert r["confidence"] == "too_noisy" and r["strategy"] is None
    assert "throttled in 95 % of 40 periods by a CPU limit of 0.5 CPU" in r["headline"]
    assert "more workers cannot help" in r["headline"] and "raise it" in r["headline"]
    assert "close other work" not in r["headline"] and "busy" not in r["headline"]
    assert r["confidence_reason"].startswith("the strategies ran throttled in 95 %")
    (f,) = [f for f in cycle_probe.findings_for(data) if f["code"] == "CYCLE_BASELINE_NOISY"]
    assert f["fix"].startswith("Raise the CPU limit")


def test_under_a_limit_the_recommendation_says_which_and_stays_within_one_worker():
    rep, _ = _cycle_data(QUOTA_1, CALM)
    r = recommend(rep)
    assert r["confidence"] == "clear" and r["strategy"] == "batched" and r["workers"] == 1
    assert ("Measured with 1 usable core under a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup): "
            "threads and processes were not measured, since more workers cannot help.") in r["headline"]
    assert "throttled in 2 % of 40 periods" in r["headline"] and "1 usable core" in r["confidence_reason"]
    ev = {e["source"]: e["value"] for e in r["evidence"]}
    assert ev["probes.cycle.data.load.limit.quota_cpus"] == 1.0
    assert ev["probes.cycle.data.load.limit.usable_cores"] == 1
    assert ev["probes.cycle.data.load.throttling.throttled_share"] == 0.025
    # without a limit nothing is added
    rep, _ = _cycle_data(FREE_2, None, torch_used=2)
    assert "usable core" not in recommend(rep)["headline"]


def test_older_reports_without_a_limit_read_as_before():
    rep, _ = _cycle_data(FREE_2, None)
    old = copy.deepcopy(rep)
    for k in ("limit", "run_cores", "throttling"):
        old["probes"]["cycle"]["data"]["load"].pop(k)
    assert recommend(old)["headline"] == recommend(rep)["headline"]


def test_worker_memory_considers_one_worker_per_usable_core():
    from gpudiag.diagnose.verdicts.parallelism import verdict_worker_memory

    rep = {"probes": {"gil": {"status": "ok", "data": {"memory": {"per_worker_host_bytes": 3 * 2**30,
                                                                  "budget_host_bytes": 4 * 2**30,
                                                                  "fits": {"processes": 1}}}},
                      "system": {"status": "ok", "data": {"cpu": {"logical_cores": 2, "limit": QUOTA_1},
                                                          "memory": {}}}}}
    v = verdict_worker_memory(rep)
    assert v["verdict"] == "refuted" and v["figures"]["workers_considered"] == 1
    assert v["sources"]["workers_considered"] == "probes.system.data.cpu.limit.usable_cores"


# ------------------------------------------------------------------ system probe

def test_system_names_the_limit_and_warns_when_its_cgroup_is_often_throttled():
    (f,) = system.cpu_limit_findings({"logical_cores": 2, "limit": dict(QUOTA_1, throttling_since_start={
        "nr_periods": 100, "nr_throttled": 40, "throttled_s": 2.0})})
    assert f["code"] == "CPU_LIMIT" and f["severity"] == "warning"
    assert "a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup) leaves 1 usable core" in f["message"]
    assert "throttled in 40 % of its 100 scheduler periods since it was created" in f["message"]
    (f,) = system.cpu_limit_findings({"logical_cores": 2, "limit": QUOTA_1})
    assert f["severity"] == "info"
    assert system.cpu_limit_findings({"logical_cores": 2, "limit": FREE_2}) == []
    assert system.cpu_limit_findings({}) == []


# ------------------------------------------------------------------ preflight

def test_preflight_warns_when_more_workers_than_usable_cores_and_names_the_limit():
    c = check_cpu_limit({"cpu_limit": QUOTA_1, "logical_cpus": 2}, preflight.Plan(workers=2))
    assert c.status == "warn"
    assert c.message.startswith("2 worker processes on 1 usable core under a CPU limit of 1.0 CPU "
                                "(cgroup v1 cpu.cfs_quota_us, own cgroup)")
    assert "--workers 1" in c.message and "docker --cpus" in c.message
    assert c.evidence["quota_cpus"] == 1.0 and c.evidence["usable_cores"] == 1 and c.evidence["workers"] == 2
    c = check_cpu_limit({"cpu_limit": QUOTA_1, "logical_cpus": 2}, preflight.Plan(workers=1, strategy="threads"))
    assert c.status == "pass" and c.message == ("1 thread within 1 usable core under a CPU limit of 1.0 CPU "
                                                "(cgroup v1 cpu.cfs_quota_us, own cgroup)")
    c = check_cpu_limit({"cpu_limit": FREE_2, "logical_cpus": 2}, preflight.Plan(workers=4))
    assert c.status == "warn" and "(no CPU limit)" in c.message and "docker" not in c.message
    c = check_cpu_limit({"cpu_limit": None, "cpu_limit_reason": "OSError: denied"}, preflight.Plan(workers=4))
    assert c.status == "skip" and "OSError: denied" in c.message


@pytest.mark.parametrize("strict, ready", [(False, True), (True, False)])
def test_the_cpu_limit_warning_blocks_only_under_strict(strict, ready):
    from tests.diagnose.test_preflight_checks import make_facts, run

    r = run(make_facts(cpu_limit=QUOTA_1, logical_cpus=2), strict=strict, workers=2)
    assert r.check("cpu_limit").status == "warn" and r.ready is ready


def test_gather_facts_reads_the_cpu_limit_through_its_seam(tmp_path):
    def boom():
        raise OSError("unreadable")

    plan = preflight.Plan(workers=2)
    common = dict(nvml_session=None, driver_collect=None, memory_facts=lambda: {}, search_dir=None)
    f = facts_mod.gather_facts(plan, cpu_limit=lambda: QUOTA_1, **common)
    assert f["cpu_limit"] == QUOTA_1 and isinstance(f["logical_cpus"], int)
    f = facts_mod.gather_facts(plan, cpu_limit=boom, **common)
    assert f["cpu_limit"] is None and f["cpu_limit_reason"] == "OSError: unreadable"
