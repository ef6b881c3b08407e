"""A `--cycle` step that hangs only inside worker processes (or worker threads): that strategy fails by
name within its own deadline, and the serial and threads figures already measured are kept."""

import os
import textwrap
import time

import psutil
import pytest

from gpudiag.measure import load
from gpudiag.probes.cycle import strategies
from gpudiag.probes.cycle import tournament
from gpudiag.probes.cycle import workload


HANGS = textwrap.dedent("""
    import multiprocessing, threading, time

    def _in_worker_process():
        return multiprocessing.current_process().name.startswith("gpudiag-worker")

    def _in_worker_thread():
        return threading.current_thread().name.startswith("gpudiag-thread")

    def at_prepare(device):                 # hangs as soon as a worker process builds it
        if _in_worker_process():
            time.sleep(3600)
        return lambda: sum(range(300))

    def at_run(device):                     # warm-up passes, the first timed cycle in a worker hangs
        calls = {"n": 0}
        def step():
            calls["n"] += 1
            if _in_worker_process() and calls["n"] > 2:
                time.sleep(3600)
            sum(range(300))
        return step

    def spins_in_workers(device):           # after warm-up, a worker process starts a child and both spin
        calls = {"n": 0}
        def step():
            calls["n"] += 1
            if _in_worker_process() and calls["n"] > 2:
                import os, subprocess, sys
                child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                with open(os.environ["HANGS_CHILD_PIDS"], "a") as fh:
                    fh.write(f"{child.pid}\\n")
                while True:
                    pass
            sum(range(300))
        return step

    def in_threads(device):                 # only a worker thread hangs (processes are fine)
        def step():
            if _in_worker_thread():
                time.sleep(3600)
            sum(range(300))
        return step
""")


@pytest.fixture
def hangs(tmp_path, monkeypatch):
    (tmp_path / "hangs.py").write_text(HANGS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # Short deadlines for the test; the probe's own are TIMEOUT_FACTOR x what the step took, with floors.
    monkeypatch.setattr(strategies, "PREPARE_TIMEOUT_MIN_S", 4.0)
    monkeypatch.setattr(strategies, "RUN_TIMEOUT_MIN_S", 1.5)
    monkeypatch.setattr(strategies, "TIMEOUT_FACTOR", 3.0)
    return tmp_path


def _run(ref, tmp_path, repeats=3, env=None):
    spec = workload.CustomSpec(ref, "cpu", str(tmp_path))
    plan = strategies.Plan(cycles=4, warmup=2, repeats=repeats, workers=[2], fuse=1, sync_every=1, streams=1,
                   profile_cycles=4, deadline=time.monotonic() + 60)
    t0 = time.monotonic()
    rows = {r["name"]: r for r in tournament.run_tournament(spec, plan, env or strategies.Env(device="cpu", default_threads=1))}
    return rows, time.monotonic() - t0


@pytest.mark.torch
def test_a_step_that_hangs_while_workers_prepare_fails_processes_only(hangs):
    rows, took = _run("hangs:at_prepare", hangs)
    assert rows["processes"]["status"] == "failed"
    assert "worker processes did not finish starting and preparing the step within" in rows["processes"]["reason"]
    assert rows["serial"]["status"] == "ok" and rows["threads"]["status"] == "ok"
    assert rows["threads"]["cycles_per_s"] > 0 and rows["threads"]["samples"] == 3
    assert took < 40  # the worker's deadline, not the probe's timeout


@pytest.mark.torch
def test_a_step_that_hangs_in_timed_runs_inside_workers_fails_by_name(hangs):
    rows, took = _run("hangs:at_run", hangs)
    procs = rows["processes"]
    assert procs["status"] == "failed", procs
    assert "2 worker processes did not finish 4 cycles within" in procs["reason"]
    assert rows["serial"]["status"] == "ok" and rows["serial"]["samples"] == 3
    assert rows["threads"]["status"] == "ok" and rows["threads"]["samples"] == 3
    assert took < 40


@pytest.mark.torch
def test_a_step_that_hangs_only_in_worker_threads_fails_threads_and_keeps_processes(hangs):
    rows, _ = _run("hangs:in_threads", hangs)
    assert rows["threads"]["status"] == "failed" and "threads did not finish" in rows["threads"]["reason"]
    assert rows["serial"]["status"] == "ok" and rows["processes"]["status"] == "ok"
    assert rows["processes"]["samples"] == 3


class IdleMachineMeter(load.CpuMeter):
    """A CpuMeter on a machine where nothing but this test's process group runs: the machine's busy time is
    that group's CPU time (its processes', with the children they reaped). Other helpers' load on the
    real machine is left out, so whatever "other programs" it reports is gpudiag's own work miscounted."""

    def _machine_cpu(self):
        group, busy = os.getpgid(0), 0.0
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == group:
                    c = p.cpu_times()
                    busy += c.user + c.system + c.children_user + c.children_system
            except (psutil.Error, OSError):
                continue
        return busy, 0.0


@pytest.mark.torch
def test_a_step_spinning_in_worker_processes_costs_only_processes_and_is_not_other_load(hangs, monkeypatch):
    # The case: the hung workers (and a child each started) kept 2 cores busy until stopped, and
    # that CPU was counted as other programs': the report said the idle machine was busy.
    from gpudiag.probes.cycle.probe import findings_for

    pids = hangs / "child_pids"
    monkeypatch.setenv("HANGS_CHILD_PIDS", str(pids))
    monkeypatch.setattr(tournament, "CpuMeter", IdleMachineMeter)
    env = strategies.Env(device="cpu", default_threads=1, cpu_limit={"affinity_cores": 2, "usable_cores": 2,
                                                            "limited_by": None})
    rows, _ = _run("hangs:spins_in_workers", hangs, env=env)
    assert rows["processes"]["status"] == "failed" and "did not finish" in rows["processes"]["reason"]
    for name in ("serial", "threads"):
        assert rows[name]["status"] == "ok" and rows[name]["samples"] == 3, rows[name]
    assert env.load["busy"] is False and env.load["other_busy_cores"] < 0.5, env.load
    data = {"workload": {"device": "cpu"}, "strategies": list(rows.values()), "load": env.load,
            "rounds": env.rounds}
    assert "MACHINE_BUSY_DURING_TOURNAMENT" not in [f["code"] for f in findings_for(data)]
    # the children the hung workers started were stopped with them
    children = [int(x) for x in pids.read_text().split()]
    assert children and not any(psutil.pid_exists(c) and psutil.Process(c).status() != psutil.STATUS_ZOMBIE
                                for c in children)
