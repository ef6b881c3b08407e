"""The views show a CPU limit where a reader needs it: the system section, the summary's machine line, the gil and
cycle sections (the throttling while measuring), compare's core count and `gpudiag env`; nothing without one."""

from __future__ import annotations

from gpudiag.views import compare, env_summary, render, sections
from tests.diagnose.test_cpu_limit_rules import CALM, FREE_2, QUOTA_1

SINCE = {"nr_periods": 50, "nr_throttled": 10, "throttled_s": 0.4}


def _report(limit, cycle_load=None):
    rep = {"schema_version": 1, "mode": "quick",
           "host": {"logical_cores": 2, "physical_cores": 2, "cpu": "AMD EPYC"},
           "probes": {"system": {"status": "ok", "reason": "", "findings": [],
                                 "data": {"cpu": {"logical_cores": 2, "physical_cores": 2, "affinity_cores": 2,
                                                  "limit": limit}, "memory": {}}}}}
    if cycle_load is not None:
        rep["probes"]["cycle"] = {"status": "ok", "reason": "", "findings": [],
                                  "data": {"workload": {}, "strategies": [], "load": cycle_load}}
    return rep


def test_the_system_section_and_the_summary_name_the_limit():
    kv = dict(sections._view_system(_report(dict(QUOTA_1, throttling_since_start=SINCE))["probes"]["system"]["data"])["kv"])
    assert kv["Cores"] == "2 physical / 2 logical (1 usable by this process)"
    assert kv["CPU limit"] == ("a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup); throttled in 20 % "
                               "of its 50 periods since the cgroup was created")
    machine = render.summary(_report(QUOTA_1), [])["machine"]
    assert "2 cores / 2 threads, 1 usable core under a CPU limit of 1.0 CPU" in machine
    kv = dict(sections._view_system(_report(FREE_2)["probes"]["system"]["data"])["kv"])
    assert kv["CPU limit"] == "none (the machine's CPUs)"
    assert "usable" not in render.summary(_report(FREE_2), [])["machine"]


def test_the_cycle_section_shows_the_limit_and_throttling_while_measuring():
    load = {"usable_cores": 1, "run_cores": 2, "limit": QUOTA_1, "throttling": CALM, "other_busy_cores": 1.28}
    kv = dict(sections._view_cycle(_report(QUOTA_1, load)["probes"]["cycle"]["data"], None)["kv"])
    assert kv["CPU limit while measuring"] == ("1 usable core under a CPU limit of 1.0 CPU (cgroup v1 "
                                               "cpu.cfs_quota_us, own cgroup); throttled in 2 % of 40 periods "
                                               "(0.01 s stalled)")
    assert kv["Other programs during the rounds"].startswith("1.28 of 2 cores")  # of the cores others share


def test_compare_and_env_count_the_usable_cores_with_the_limit():
    assert compare._cpu(_report(QUOTA_1)) == ("2 logical cores, 1 usable by gpudiag under a CPU limit of 1.0 CPU "
                                              "(cgroup v1 cpu.cfs_quota_us, own cgroup)", None)
    assert compare._cpu(_report(FREE_2)) == ("2 logical cores", None)
    rows = dict(env_summary._system_rows({"cpu": {"logical_cores": 2, "physical_cores": 2, "limit": QUOTA_1},
                                          "os": {}, "python": {}, "memory": {}, "torch": {}}))
    assert "2 physical / 2 logical cores, 1 usable by this process under a CPU limit of 1.0 CPU" in rows["CPU"]


def test_the_gil_section_shows_the_worst_throttling_of_its_workloads():
    data = {"cpu": {"usable_cores": 1, "limit": QUOTA_1,
                    "throttling": {"python": CALM, "torch_op": dict(CALM, throttled_share=0.5, throttled_periods=20),
                                   "torch_dispatch": None}},
            "other_busy_cores": {"python": 1.2}, "scaling": [], "memory": {}, "python": {}, "startup": {}}
    kv = dict(sections._view_gil(data)["kv"])
    assert kv["CPU limit while measuring"].endswith("throttled in 50 % of 40 periods (0.01 s stalled)")
    assert kv["Other programs while measuring"] == "python 1.20 cores of 2"
