"""The tournament's rounds: a round during which other programs took the cores is taken back and run
again; the kept rounds are what the rows, intervals and load figures describe."""

import time

import pytest

from gpudiag.probes.cycle import strategies
from gpudiag.probes.cycle import tournament
from gpudiag.probes.cycle import workload



class ScriptedMeter:
    """A CpuMeter whose per-run 'other programs' figure follows a script (then 0)."""

    script = []

    def __init__(self, own_pids=lambda: (), **_):
        self.calls = 0

    def read(self):
        return (0.0, 0.0, 0.0, time.monotonic())

    def other_cores(self, before, after):
        return ScriptedMeter.script.pop(0) if ScriptedMeter.script else 0.0

    def steal_cores(self, before, after):
        return 0.0

    def seen_pids(self):
        return []


TWO_CORES = {"affinity_cores": 2, "usable_cores": 2, "limited_by": None}


def _not_here(spec, plan, env):
    raise strategies.Skip("not in this test")


@pytest.mark.torch
def test_a_round_hit_by_a_burst_of_load_is_rerun_and_not_counted(monkeypatch):
    monkeypatch.setattr(tournament, "CpuMeter", ScriptedMeter)
    monkeypatch.setitem(strategies.PREPARE, "processes", _not_here)
    # serial, batched, threads per round; a full core taken during round 1's serial run
    ScriptedMeter.script = [1.5, 0.0, 0.0]
    spec = workload.WorkloadSpec("cpu", 16, 32, 4, host_work_iters=10)
    plan = strategies.Plan(cycles=4, warmup=1, repeats=3, workers=[2], fuse=2, sync_every=2, streams=2, profile_cycles=4)
    env = strategies.Env(device="cpu", default_threads=1, cpu_limit=TWO_CORES)
    rows = {r["name"]: r for r in tournament.run_tournament(spec, plan, env)}
    assert env.rounds["rounds"] == 3 and env.rounds["rejected"] == 1
    assert rows["serial"]["samples"] == 3 and rows["threads"]["samples"] == 3
    assert rows["serial"]["other_busy_cores"] == 0.0  # the rejected run's load is not in the kept figures
    assert env.load["rejected_rounds"] == 1 and env.load["busy"] is False


@pytest.mark.torch
def test_load_that_never_leaves_is_kept_after_two_rejections_and_judged_busy(monkeypatch):
    monkeypatch.setattr(tournament, "CpuMeter", ScriptedMeter)
    monkeypatch.setitem(strategies.PREPARE, "processes", _not_here)
    ScriptedMeter.script = [1.2] * 200
    spec = workload.WorkloadSpec("cpu", 16, 32, 4, host_work_iters=10)
    plan = strategies.Plan(cycles=4, warmup=1, repeats=3, workers=[2], fuse=2, sync_every=2, streams=2, profile_cycles=4,
                   max_rounds=3, rounds_budget_s=60.0)
    env = strategies.Env(device="cpu", default_threads=1, cpu_limit=TWO_CORES)
    rows = {r["name"]: r for r in tournament.run_tournament(spec, plan, env)}
    assert env.rounds["rejected"] == tournament.MAX_REJECTED_ROUNDS and env.rounds["rounds"] == 3
    assert env.load["busy"] is True and rows["serial"]["samples"] == 3  # figures of the busy machine, kept


def test_a_tournament_with_no_round_kept_is_too_busy_not_nothing_measured():
    from gpudiag.diagnose.recommend import recommend

    rows = [strategies.empty_row("serial", "failed", "no timed run was kept: every round was taken back because other "
                                             "programs kept the cores busy")]
    data = {"workload": {"device": "cpu"}, "strategies": rows,
            "load": {"other_busy_cores": 1.2, "usable_cores": 2, "widest_workers": 2, "busy": True,
                     "rejected_rounds": 12}}
    r = recommend({"probes": {"cycle": {"status": "ok", "data": data, "findings": []}}})
    assert r["confidence"] == "too_noisy" and "too busy to judge" in r["headline"]


@pytest.mark.torch
def test_a_one_round_plan_under_lasting_load_still_keeps_its_round(monkeypatch):
    # A plan of one round (tests and benchmarks use them) used to stop after its second rejected round, before
    # the tournament's own cap let it keep one: every row then said "no timed run finished".
    monkeypatch.setattr(tournament, "CpuMeter", ScriptedMeter)
    monkeypatch.setitem(strategies.PREPARE, "processes", _not_here)
    ScriptedMeter.script = [1.2] * 200
    spec = workload.WorkloadSpec("cpu", 16, 32, 4, host_work_iters=10)
    plan = strategies.Plan(cycles=4, warmup=1, repeats=1, workers=[2], fuse=2, sync_every=2, streams=2, profile_cycles=4,
                   max_rounds=1, rounds_budget_s=60.0)
    env = strategies.Env(device="cpu", default_threads=1, cpu_limit=TWO_CORES)
    rows = {r["name"]: r for r in tournament.run_tournament(spec, plan, env)}
    assert env.rounds["rejected"] == tournament.MAX_REJECTED_ROUNDS and env.rounds["rounds"] == 1
    assert rows["serial"]["status"] == "ok" and rows["serial"]["samples"] == 1
    assert env.load["busy"] is True


@pytest.mark.torch
def test_the_plain_loop_is_also_timed_with_one_thread_in_the_same_rounds(monkeypatch):
    monkeypatch.setattr(tournament, "CpuMeter", ScriptedMeter)
    monkeypatch.setitem(strategies.PREPARE, "processes", _not_here)
    ScriptedMeter.script = []
    spec = workload.WorkloadSpec("cpu", 16, 32, 4, host_work_iters=10)
    plan = strategies.Plan(cycles=4, warmup=1, repeats=6, workers=[2], fuse=2, sync_every=2, streams=2, profile_cycles=4)
    env = strategies.Env(device="cpu", default_threads=2, cpu_limit=TWO_CORES)
    rows = {r["name"]: r for r in tournament.run_tournament(spec, plan, env)}
    serial, one = rows["serial"], rows["serial"]["one_thread"]
    assert serial["torch_threads"] == 2 and serial["samples"] == 6
    assert one["torch_threads"] == 1 and one["samples"] == 6 and one["status"] == "ok"
    assert one["vs_default_ci95"][0] <= one["vs_default"] <= one["vs_default_ci95"][1]
    assert rows["threads"]["torch_threads"] == 1 and rows["threads"]["speedup_ci95"] is not None
    # with one thread by default there is nothing else to time
    env = strategies.Env(device="cpu", default_threads=1, cpu_limit=TWO_CORES)
    plan.repeats = 1
    assert "one_thread" not in {r["name"]: r for r in tournament.run_tournament(spec, plan, env)}["serial"]
