"""The fleet's CPU share: sustained windows, each rank's CPU account, and the rule that names a rank short
of CPU with its cause (a quota, other programs) and never a node whose ranks share cores by the launch.

Canned fleets (in-process, deterministic) for the rule; a fake clock for the windows; real child processes
for recognising the job's other ranks. The real two-node run with a quota is in test_fleet_torchrun.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpudiag.diagnose import thresholds
from gpudiag.fleet import analysis, cpu_verdict
from gpudiag.fleet.cpu_account import CpuAccount, JobRanks, cpu_list_text
from gpudiag.fleet.windows import Windows, window_seconds

QUOTA_SOURCE = "cgroup v2 cpu.max (own cgroup)"


def account(share, job=0.0, other=0.0, throttled=None, quota=None, job_ranks=(), cpus="0", cores_got=None):
    """A rank's `cpu` block as cpu_account writes it, for a one-thread rank on one core (with `job_ranks`
    of the job pinned to the same core)."""
    return {"cpus": cpus, "cores": 1, "wall_s": 5.0, "window_s": 0.3, "windows": 15, "timed_wall_s": 4.8,
            "timed_cpu_s": round(4.8 * share, 3), "cores_got": share if cores_got is None else cores_got,
            "demand_cores": 1.0, "fair_share": round(1 / (1 + len(job_ranks)), 3), "share": share, "job_cores": job, "other_cores": other, "steal_cores": 0.0,
            "job_ranks_sharing": list(job_ranks), "reason": None,
            "limit": {"quota_cpus": quota, "quota_period_us": 100_000 if quota else None,
                      "quota_source": QUOTA_SOURCE if quota else None, "cgroup_version": 2, "cpuset_cpus": None,
                      "affinity_cores": 1, "usable_cpus": quota or 1.0, "limited_by": "quota" if quota else "affinity"},
            "throttling": None if throttled is None else {"periods": 50, "throttled_periods": int(50 * throttled),
                                                          "throttled_share": throttled, "throttled_s": 1.0}}


def cpu_rank(rank, host, speed, cpu, noise=0.01):
    """A CPU rank whose three figures run at `speed` (1.0 = a whole core's rates) over sustained windows."""
    def fig(v):
        return {"value": v, "p10": v * (1 - noise), "p90": v * (1 + noise), "n": 5, "what": "canned", "window_s": 0.3}
    return {"rank": rank, "host": host, "local_rank": 0, "device": {"kind": "cpu", "index": None, "torch_threads": 1},
            "versions": {"gpudiag": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "torch_cuda": None},
            "preflight": {"ready": True, "checks": []}, "driver": {"reason": "CPU rank: no GPU to read"},
            "figures": {"matmul_gflops": fig(95.0 * speed), "launch_us": fig(2.5 / speed), "h2d_gbps": fig(10.5 * speed)},
            "cpu": cpu}


def issue_fleet(quota: bool):
    """Issue 21's fleet: node A's two ranks share core 0 (half a core each), node B's rank is alone on core 1,
    limited to 0.2 CPU by a quota (or not)."""
    a = [cpu_rank(0, "host-a", 0.5, account(0.5, job=0.5, job_ranks=[1])),
         cpu_rank(1, "host-a", 0.5, account(0.5, job=0.5, job_ranks=[0]))]
    b = cpu_rank(2, "host-b", 0.2, account(0.19, throttled=0.9, quota=0.2, other=0.7, cpus="1")) if quota \
        else cpu_rank(2, "host-b", 1.0, account(0.99, cpus="1"))
    return a + [b]


def codes(res, severity=None):
    return [f["code"] for f in res["findings"] if severity is None or f["severity"] == severity]


# ----------------------------------------------------------------------------- the rule

def test_the_quota_throttled_node_is_named_with_its_quota_and_the_node_sharing_cores_is_not():
    res = analysis.analyze(issue_fleet(quota=True))
    strag = [o for o in res["outliers"] if o["kind"] == "straggler"]
    assert {o["rank"] for o in strag} == {2} and {o["host"] for o in strag} == {"host-b"}
    assert res["exclude"]["hosts"] == ["host-b"] and res["exit_code"] == analysis.EXIT_CRITICAL
    f = next(f for f in res["findings"] if f["code"] == "FLEET_STRAGGLER")
    assert "rank 2 (host-b, CPU rank)" in f["message"]
    assert ("it got 0.19 of a core (19 % of what its work could use): throttled in 90 % of periods by a CPU limit "
            f"of 0.2 CPU, from {QUOTA_SOURCE}") in f["message"]
    assert "other programs" not in f["message"]  # they only filled the time the quota left idle on core 1
    assert "raise the CPU limit" in f["fix"]
    # Node A's ranks got their fair half of core 0: named as sharing it (information), never excluded.
    assert not any(o["host"] == "host-a" for o in res["outliers"])
    shared = next(f for f in res["findings"] if f["code"] == "FLEET_CORES_SHARED")
    assert shared["severity"] == "info" and "rank 0 (host-a, CPU rank)" in shared["message"]
    assert "FLEET_CPU_QUOTA" not in codes(res)  # the straggler finding already names the quota
    assert "straggler rank(s) 2" in res["verdict"]


def test_without_the_quota_the_node_whose_ranks_share_a_core_is_the_launchs_doing_not_a_slow_node():
    res = analysis.analyze(issue_fleet(quota=False))
    node = [o for o in res["outliers"] if o["level"] == "node"]
    assert [(o["host"], o["kind"]) for o in node] and {(o["host"], o["kind"]) for o in node} == \
        {("host-a", "shared_cores")}
    assert res["exclude"]["hosts"] == [] and res["exit_code"] == analysis.EXIT_WARNING
    assert "FLEET_SLOW_NODE" not in codes(res) and "FLEET_STRAGGLER" not in codes(res)
    f = next(f for f in res["findings"] if f["code"] == "FLEET_CORES_SHARED")
    assert f["severity"] == "warning" and "rank 0 (host-a, CPU rank)" in f["message"]
    assert "shares core(s) 0 with rank(s) 1 of this job" in f["message"] and "--nproc-per-node" in f["fix"]
    assert "rank(s) 0, 1 slowed by sharing cores" in res["verdict"]


def test_ranks_that_got_their_fair_share_are_the_launchs_doing_even_when_time_slicing_cost_them_more():
    # Seen on the 2-core VM: node A's ranks got 0.49 of a core each (their fair half) but, switching between
    # each other on one core, ran at 0.47x (matmul) and 0.27x (launch) of node B's rank, more than their
    # halved share explains. They had all their fair share: the sharing is still the launch's, not the node's.
    ranks = [cpu_rank(0, "host-a", 0.5, account(0.49, job=0.49, other=0.02, job_ranks=[1])),
             cpu_rank(1, "host-a", 0.5, account(0.49, job=0.49, other=0.02, job_ranks=[0])),
             cpu_rank(2, "host-b", 1.0, account(0.9, other=0.05, cpus="1"))]
    for e in ranks[:2]:
        e["figures"]["matmul_gflops"]["value"] *= 0.94   # 0.47x node B's
        e["figures"]["launch_us"]["value"] *= 1.85       # 0.27x node B's speed
    res = analysis.analyze(ranks)
    assert {o["kind"] for o in res["outliers"]} == {"shared_cores"}
    assert res["exclude"]["hosts"] == [] and res["exit_code"] == analysis.EXIT_WARNING
    assert "FLEET_SLOW_NODE" not in codes(res) and "FLEET_CORES_SHARED" in codes(res, "warning")


def test_ranks_sharing_cores_never_make_the_others_system_wide():
    # Two nodes of two ranks: node A's share one core, node B's have one each. Half the ranks are slow,
    # which would read as system-wide slowness; they are the launch's sharing instead.
    ranks = issue_fleet(quota=False)[:2] + [cpu_rank(2, "host-b", 1.0, account(0.99, cpus="1")),
                                            cpu_rank(3, "host-b", 1.0, account(0.98, cpus="2"))]
    res = analysis.analyze(ranks)
    assert {o["kind"] for o in res["outliers"]} == {"shared_cores"}
    assert res["exclude"]["hosts"] == [] and "FLEET_SYSTEM_WIDE_SLOW" not in codes(res)


def test_under_other_load_the_node_sharing_cores_is_still_not_the_one_named_for_it():
    # A busy machine: other programs take core 0 and core 1 alike. Node A's ranks (fair share 0.5) got 0.27
    # of a core, node B's rank (fair share 1) 0.40: node A is slower, but less so than its halved fair share
    # accounts for. Every rank is named for the other programs; node A is not excluded for the launch's sharing.
    ranks = [cpu_rank(0, "host-a", 0.27, account(0.27, job=0.27, other=0.45, job_ranks=[1])),
             cpu_rank(1, "host-a", 0.27, account(0.27, job=0.27, other=0.45, job_ranks=[0])),
             cpu_rank(2, "host-b", 0.40, account(0.40, other=0.60, cpus="1"))]
    res = analysis.analyze(ranks)
    assert {o["kind"] for o in res["outliers"] if o["host"] == "host-a"} <= {"shared_cores"}
    assert res["exclude"]["hosts"] == [] and "FLEET_SLOW_NODE" not in codes(res)
    f = next(f for f in res["findings"] if f["code"] == "FLEET_CPU_CONTENDED")
    assert all(f"rank {r} " in f["message"] for r in (0, 1, 2))
    # With node B throttled by its quota as well, B is the one named with its quota, and A still not excluded.
    ranks[2] = cpu_rank(2, "host-b", 0.2, account(0.19, throttled=0.9, quota=0.2, other=0.7, cpus="1"))
    res = analysis.analyze(ranks)
    assert "host-a" not in res["exclude"]["hosts"]
    assert any(f["code"] in ("FLEET_STRAGGLER", "FLEET_CPU_QUOTA") and "rank 2 " in f["message"]
               and "CPU limit of 0.2 CPU" in f["message"] for f in res["findings"])


def test_a_node_sharing_cores_and_starved_beyond_its_fair_share_is_named_for_the_other_programs():
    # Node A's ranks got 0.2 of a core where their fair share is 0.5, while node B's rank had its core:
    # more than the launch's sharing explains, so node A is the slow node, with other programs as the cause.
    ranks = [cpu_rank(0, "host-a", 0.2, account(0.2, job=0.2, other=0.6, job_ranks=[1])),
             cpu_rank(1, "host-a", 0.2, account(0.2, job=0.2, other=0.6, job_ranks=[0])),
             cpu_rank(2, "host-b", 1.0, account(0.99, cpus="1"))]
    res = analysis.analyze(ranks)
    assert res["exclude"]["hosts"] == ["host-a"]
    f = next(f for f in res["findings"] if f["code"] == "FLEET_SLOW_NODE")
    assert "other programs used 0.60 of its 1 core(s)" in f["message"]


@pytest.mark.parametrize("relative, own, peer, explained", [
    (0.5, 0.5, 1.0, True),    # half as fast with half the fair share: the launch's doing
    (0.6, 0.5, 1.0, True),
    (0.3, 0.5, 1.0, False),   # slower than half: something else too
    (0.5, 1.0, 1.0, False),   # no sharing to explain it
    (0.97, 0.97, 1.0, False),  # a fair share within MIN_EFFECT of its peers' explains nothing
])
def test_launch_explains(relative, own, peer, explained):
    assert cpu_verdict.launch_explains(relative, own, peer) is explained


def test_a_quota_named_on_a_rank_that_is_not_slower_than_its_peers_is_a_warning():
    # Every rank equally throttled: nobody is an outlier, each is named with its quota.
    ranks = [cpu_rank(r, f"host-{r}", 0.5, account(0.5, throttled=0.95, quota=0.5, cpus=str(r))) for r in range(3)]
    res = analysis.analyze(ranks)
    assert res["outliers"] == [] and res["exit_code"] == analysis.EXIT_WARNING
    f = next(f for f in res["findings"] if f["code"] == "FLEET_CPU_QUOTA")
    assert f["severity"] == "warning" and f["message"].startswith("3 rank(s) held back by a CPU quota: rank 0")
    assert "throttled in 95 % of periods by a CPU limit of 0.5 CPU" in f["message"]


def test_other_programs_on_a_ranks_core_are_named_as_the_cause():
    ranks = [cpu_rank(r, f"host-{r}", 1.0, account(0.99, cpus="0")) for r in range(3)]
    ranks.append(cpu_rank(3, "host-3", 0.3, account(0.3, other=0.7)))
    res = analysis.analyze(ranks)
    f = next(f for f in res["findings"] if f["code"] == "FLEET_STRAGGLER")
    assert "rank 3" in f["message"] and "other programs used 0.70 of its 1 core(s)" in f["message"]
    assert "throttled" not in f["message"] and "what else runs on its cores" in f["fix"]
    assert res["exclude"]["hosts"] == ["host-3"]


@pytest.mark.parametrize("acc, state, causes", [
    # A binding quota: the others only used what the quota left idle.
    (account(0.19, throttled=0.9, quota=0.2, other=0.75), "starved", ["quota"]),
    # A quota with headroom, and other programs taking the core: both.
    (account(0.5, throttled=0.5, quota=1.0, other=0.5), "starved", ["quota", "other_processes"]),
    # The job's own ranks on the core, and nothing else: the launch's sharing.
    (account(0.5, job=0.5, job_ranks=[1]), "shared_by_job", []),
    # The job's own ranks *and* other programs: the other programs are a cause ...
    (account(0.3, job=0.35, other=0.35, job_ranks=[1]), "starved", ["other_processes"]),
    # ... unless the rank still got most of its fair share (0.45 of 0.5).
    (account(0.45, job=0.45, other=0.11, job_ranks=[1]), "shared_by_job", []),
    # Short, with nothing to blame from inside.
    (account(0.5), "unexplained", []),
    # A little throttling and background load on a rank that got what it could use: ok.
    (account(0.97, throttled=0.1, quota=4.0, other=0.05), "ok", []),
])
def test_cpu_state(acc, state, causes):
    st = cpu_verdict.cpu_state({"rank": 0, "cpu": acc})
    assert (st["state"], st["causes"]) == (state, causes)


def test_the_thresholds_order_the_rule():
    assert 0.5 < thresholds.FLEET_CPU_SHORT_SHARE < 1.0  # half a core is short; a whole one is not
    assert 0 < thresholds.FLEET_CPU_LOAD_SHARE < 1 - thresholds.FLEET_CPU_SHORT_SHARE + 0.1
    assert 0 < thresholds.FLEET_CPU_THROTTLED_SHARE < 1


def test_a_rank_without_a_cpu_account_is_judged_on_its_figures_alone():
    ranks = issue_fleet(quota=False)
    for e in ranks:
        del e["cpu"]  # a merged plain report, or a fleet report from before the account
    res = analysis.analyze(ranks)
    assert cpu_verdict.states(ranks) == {}
    assert {o["kind"] for o in res["outliers"]} == {"straggler"}  # what the figures alone say
    assert "FLEET_CORES_SHARED" not in codes(res)


def test_the_report_views_show_the_cpu_column():
    from gpudiag.views import fleet_view

    from tests.fleet.test_fleet import build_report

    rep = build_report(issue_fleet(quota=True))
    data = rep["probes"]["fleet"]["data"]
    table = fleet_view.rank_table(data)
    assert [c["label"] for c in table["cols"]][-2:] == ["CPU", "status"]
    cells = {row[0]: row[-2] for row in table["rows"]}
    assert cells["2"] == "0.19 core, throttled 90 % (0.2 CPU limit)"
    assert cells["0"] == "0.50 core, fair share 0.50: shared with rank(s) 1"
    text = fleet_view.render_terminal(rep)
    assert "CPU 0.19 core, throttled 90 % (0.2 CPU limit)" in text
    rep = build_report(issue_fleet(quota=False))
    statuses = {row[0]: str(row[-1]) for row in fleet_view.rank_table(rep["probes"]["fleet"]["data"])["rows"]}
    assert "shared cores" in statuses["0"] and "ok" in statuses["2"]


def test_merge_renumbers_the_ranks_sharing_cores_and_keeps_the_verdict(tmp_path):
    import json

    from gpudiag.fleet.merge import merge
    from tests.fleet.test_fleet import build_report

    paths = []
    for name, quota in (("a.json", False), ("b.json", True)):
        (tmp_path / name).write_text(json.dumps(build_report(issue_fleet(quota))))
        paths.append(str(tmp_path / name))
    data = merge(paths)[0]["probes"]["fleet"]["data"]
    sharing = {e["rank"]: e["cpu"]["job_ranks_sharing"] for e in data["ranks"]}
    assert sharing == {0: [1], 1: [0], 2: [], 3: [4], 4: [3], 5: []}
    assert {(e["rank"], e["cpu_verdict"]["state"]) for e in data["ranks"] if e["rank"] == 5} == {(5, "starved")}
    assert "host-a" not in data["exclude"]["hosts"]


# ----------------------------------------------------------------------------- the windows

class FakeClocks:
    """Wall and CPU clocks that move only when the measured op runs."""

    def __init__(self, wall_per_call, cpu_per_call):
        self.wall = self.cpu = 0.0
        self.dw, self.dc = wall_per_call, cpu_per_call

    def op(self):
        self.wall += self.dw
        self.cpu += self.dc


def test_a_window_counts_calls_until_it_has_lasted_and_keeps_the_cpu_share():
    c = FakeClocks(0.1, 0.02)  # a fifth of a core, like a rank under a 0.2 CPU quota
    w = Windows(0.3, cores=1, clock=lambda: c.wall, cpu_clock=lambda: c.cpu)
    calls, wall = w.run(c.op, threads=1)
    assert calls == 3 and wall == pytest.approx(0.3)
    tot = w.totals()
    assert (tot["windows"], tot["cores_got"], tot["share"]) == (1, pytest.approx(0.2), pytest.approx(0.2))


def test_the_share_is_of_what_the_work_could_use_on_the_ranks_cores():
    c = FakeClocks(0.1, 0.1)  # one core's worth of CPU per wall second
    w = Windows(0.1, cores=2, clock=lambda: c.wall, cpu_clock=lambda: c.cpu)
    w.run(c.op, threads=1)   # one thread: could use one core, got it
    assert w.totals()["share"] == pytest.approx(1.0)
    w.run(c.op, threads=4)   # four threads on two cores: could use two, got one
    assert w.totals()["share"] == pytest.approx(0.2 / 0.3, abs=1e-3)  # rounded to 3 digits
    assert Windows(0.3, cores=1).totals()["share"] is None  # no window: no share


@pytest.mark.parametrize("period_us, seconds", [(None, 0.3), (100_000, 0.3), (20_000, 0.3), (250_000, 0.75),
                                                (1_000_000, 1.0)])
def test_windows_span_three_quota_periods_within_bounds(period_us, seconds):
    assert window_seconds(period_us) == seconds


def test_cpu_list_text():
    assert cpu_list_text([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert cpu_list_text([5]) == "5"


# ----------------------------------------------------------------------------- the account, on real processes

@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        yield p
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_the_jobs_other_ranks_are_known_by_pid_and_start_time(sleeper):
    psutil = pytest.importorskip("psutil")
    if not hasattr(psutil.Process(), "cpu_affinity"):
        pytest.skip("no CPU affinity on this OS")
    mine = sorted(psutil.Process().cpu_affinity())
    started = psutil.Process(sleeper.pid).create_time()
    job = JobRanks(psutil, mine, {1: (sleeper.pid, started), 2: (sleeper.pid, started + 60), 3: (2 ** 22 + 7, started)})
    assert sorted(job.procs) == [1]  # 2: same pid, another start time (a reused pid); 3: no such process
    assert job.weight[1] == pytest.approx(len(mine) / len(psutil.Process(sleeper.pid).cpu_affinity()))
    assert set(job.cpu_s(psutil)) == {1}
    if len(mine) >= 2:  # pinned to a core of its own, it shares none of this rank's
        os.sched_setaffinity(sleeper.pid, {mine[-1]})
        assert JobRanks(psutil, mine[:-1], {1: (sleeper.pid, started)}).procs == {}


def test_the_fair_share_counts_the_jobs_ranks_on_the_same_cores(sleeper):
    psutil = pytest.importorskip("psutil")
    if not hasattr(psutil.Process(), "cpu_affinity"):
        pytest.skip("no CPU affinity on this OS")
    started = psutil.Process(sleeper.pid).create_time()
    acc = CpuAccount({1: (sleeper.pid, started)})  # a rank of the job on the same cores as this one
    assert acc.fair_share(1.0) == min(1.0, acc.cores / 2) and acc.fair_share(None) is None
    assert CpuAccount({}).fair_share(1.0) == 1.0


def test_the_account_has_the_fields_the_analysis_reads():
    acc = CpuAccount({})
    w = Windows(0.05, acc.cores)
    acc.start()
    w.run(lambda: sum(range(10_000)), threads=1)
    out = acc.stop(w.totals())
    assert {"cpus", "cores", "wall_s", "limit", "throttling", "job_ranks_sharing", "share", "cores_got", "fair_share",
            "job_cores", "other_cores", "steal_cores", "window_s", "windows"} <= set(out)
    assert out["windows"] == 1 and out["job_ranks_sharing"] == [] and out["job_cores"] in (0.0, None)
    assert set(out["limit"]) >= {"quota_cpus", "quota_source", "usable_cpus", "limited_by"}
    assert cpu_verdict.cpu_state({"rank": 0, "cpu": out}) is not None
