import os
import time

import psutil
import pytest

from gpudiag.measure.workers import WorkerDied, WorkerError, WorkerPool, WorkerTimeout


# Module-level so spawned workers can import them (as tests.measure.test_workers).
def init_tag(tag):
    return {"tag": tag, "pid": os.getpid()}


def init_fails():
    raise ValueError("no torch here")


def echo(i, x):
    return (i, x * 2, os.getpid())


def fail_if(i, bad):
    if i == bad:
        raise KeyError(f"task {i} is bad")
    return i


def sleep_for(s):
    time.sleep(s)
    return s


def die():
    os._exit(3)


def meet(folder, i, n):
    """Leave a mark, then wait (up to a minute) for all n workers' marks: True if they were all running at once."""
    open(os.path.join(folder, str(i)), "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(os.listdir(folder)) == n:
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2, initializer=init_tag, initargs=("hello",)) as p:
        yield p


def test_start_runs_initializer_once_per_worker_and_records_startup(pool):
    assert pool.size == 2
    assert [r["tag"] for r in pool.init_results] == ["hello", "hello"]
    assert [r["pid"] for r in pool.init_results] == pool.pids
    assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
    for s in pool.startup:
        assert s["ready_s"] >= s["init_s"] >= 0 and s["spawn_s"] >= 0


def test_run_all_returns_results_in_worker_order(pool):
    values = pool.run_all(echo, [(0, 10), (1, 20)])
    assert [(v[0], v[1]) for v in values] == [(0, 20), (1, 40)]
    assert [v[2] for v in values] == pool.pids  # task i ran in worker i
    # fewer tasks than workers uses the first workers only; the same workers are reused
    assert pool.run_all(echo, [(7, 1)])[0][2] == pool.pids[0]


def test_run_timed_measures_wall_in_parent_and_task_time_in_workers(pool):
    timed = pool.run_timed(sleep_for, [(0.05,), (0.1,)])
    assert timed.values == [0.05, 0.1]
    assert timed.task_s[0] >= 0.05 and timed.task_s[1] >= 0.1
    assert timed.wall_s >= max(timed.task_s)


def test_all_workers_start_together(pool, tmp_path):
    # The start event releases both workers at once: each task sees the other running, however busy the machine.
    assert pool.run_all(meet, [(str(tmp_path), 0, 2), (str(tmp_path), 1, 2)]) == [True, True]


def test_exception_in_a_worker_surfaces_and_the_pool_stays_usable(pool):
    with pytest.raises(WorkerError) as err:
        pool.run_all(fail_if, [(0, 1), (1, 1)])
    assert err.value.index == 1
    assert "KeyError" in str(err.value) and "task 1 is bad" in str(err.value)
    assert "fail_if" in err.value.remote_traceback
    assert pool.run_all(fail_if, [(0, 9), (1, 9)]) == [0, 1]


def test_unpicklable_task_fails_in_the_parent_without_breaking_the_pool(pool):
    with pytest.raises(Exception):
        pool.run_all(lambda: 1, [()])
    assert pool.run_all(fail_if, [(3, 9)]) == [3]


def test_too_many_tasks_is_a_value_error(pool):
    with pytest.raises(ValueError):
        pool.run_all(echo, [(0, 0)] * 3)


def test_grow_adds_workers_with_the_same_initializer():
    with WorkerPool(1, initializer=init_tag, initargs=("x",)) as p:
        first = p.pids[0]
        p.grow(2)
        assert p.size == 2 and p.pids[0] == first
        assert [r["tag"] for r in p.init_results] == ["x", "x"]
        assert len(p.run_all(echo, [(0, 1), (1, 1)])) == 2


def test_close_kills_workers_and_the_pool_refuses_work():
    p = WorkerPool(2)
    procs = [psutil.Process(pid) for pid in p.pids]
    p.close()
    gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive
    with pytest.raises(RuntimeError):
        p.run_all(echo, [(0, 0)])
    p.close()  # idempotent


def test_context_manager_closes_on_exception():
    with pytest.raises(ZeroDivisionError):
        with WorkerPool(1) as p:
            proc = psutil.Process(p.pids[0])
            1 / 0
    proc.wait(5)
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_timeout_closes_the_pool_and_kills_the_stuck_worker():
    p = WorkerPool(1)
    proc = psutil.Process(p.pids[0])
    with pytest.raises(WorkerTimeout):
        p.run_all(sleep_for, [(30,)], timeout_s=0.5)
    proc.wait(5)
    assert p.size == 0


def test_a_worker_that_dies_raises_worker_died():
    with WorkerPool(1) as p:
        with pytest.raises(WorkerDied) as err:
            p.run_all(die, [()])
        assert "exited with code 3" in str(err.value)


def _live_children():
    out = set()
    for c in psutil.Process().children(recursive=True):
        try:
            # multiprocessing's resource tracker is a long-lived helper of the test process itself
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline()):
                out.add(c.pid)
        except psutil.Error:
            pass
    return out


def test_failing_initializer_raises_and_leaves_nothing_running():
    before = _live_children()
    with pytest.raises(WorkerError) as err:
        WorkerPool(2, initializer=init_fails)
    assert "ValueError: no torch here" in str(err.value)
    assert _live_children() - before == set()


def make_pool_and_vanish(conn):
    pool = WorkerPool(1)
    conn.send(pool.pids)  # a Pipe sends synchronously (a Queue's feeder thread would not flush)
    os._exit(0)  # no cleanup at all, as if SIGKILLed: the worker must notice and exit on its own


def test_workers_exit_by_themselves_when_their_parent_is_killed():
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    parent = ctx.Process(target=make_pool_and_vanish, args=(send,))
    parent.start()
    assert recv.poll(30)
    pids = recv.recv()
    parent.join(10)
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive


_SPINNER = None  # the worker's spinning child (kept referenced so the worker does not reap it)


def start_spinner():
    """Worker side: start a child process that spins until stopped; its pid."""
    import subprocess
    import sys

    global _SPINNER
    _SPINNER = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    return _SPINNER.pid


def _cpu_s(p):
    c = p.cpu_times()
    return c.user + c.system


@pytest.mark.parametrize("walk", ["psutil", "proc"])
def test_close_stops_what_the_workers_started_and_counts_its_cpu_as_gpudiags(walk):
    from gpudiag import platform
    from gpudiag.measure import load

    if walk == "proc" and platform.descendant_pids(os.getpid()) is None:
        pytest.skip("this OS or kernel has no /proc/PID/task/TID/children")
    # The descendants found by psutil's walk over every process, or from this process's own /proc entries.
    meter = load.CpuMeter(family=True, descendants=platform.descendant_pids if walk == "proc" else None)
    with WorkerPool(1) as p:
        child = psutil.Process(p.run_all(start_spinner, [()])[0])
        r0 = meter.read()  # the spinner is a descendant now: the meter tracks it from here
        c0 = _cpu_s(child)
        deadline = time.monotonic() + 60
        while _cpu_s(child) < c0 + 0.3 and time.monotonic() < deadline:  # a CPU-time condition, not a race
            time.sleep(0.05)
        c1 = _cpu_s(child)
        r1 = meter.read()
        tick = 0.02  # CPU times count in 10 ms ticks, summed over processes
        assert r1[1] - r0[1] >= c1 - c0 - tick and c1 > c0  # own time moves with the worker's child's
        before = load._ended_elsewhere_cpu_s[0]
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    # It ended re-parented (init reaps it): its time went into every meter's own account, not lost.
    assert load._ended_elsewhere_cpu_s[0] - before >= c1 - tick
    assert meter.read()[1] - r0[1] >= c1 - c0 - tick  # so it never became "other programs"


# ------------------------------------------------------------------ ThreadTeam: long-lived threads

def test_a_thread_team_runs_side_by_side_in_the_same_threads_every_run():
    import threading

    from gpudiag.measure.workers import ThreadTeam

    team = ThreadTeam(2)
    try:
        barrier = threading.Barrier(2, timeout=60)  # both must be running at once to pass it
        seen = []
        for _ in range(3):
            wall = team.run(lambda i: (barrier.wait(), seen.append((i, threading.current_thread().name))), [(0,), (1,)])
            assert wall >= 0
        assert sorted(set(seen)) == [(0, "gpudiag-thread-0"), (1, "gpudiag-thread-1")]  # no new thread per run
        with pytest.raises(KeyError, match="bad"):
            team.run(lambda i: (_ for _ in ()).throw(KeyError("bad")) if i else None, [(0,), (1,)])
        assert team.run(lambda i: None, [(0,), (1,)]) >= 0  # an error does not break the team
        with pytest.raises(ValueError):
            team.run(lambda i: None, [(0,)])
    finally:
        team.close()


def test_a_hung_thread_team_times_out_and_refuses_more_runs():
    import threading

    from gpudiag.measure.workers import ThreadTeam

    release = threading.Event()
    team = ThreadTeam(2)
    try:
        with pytest.raises(TimeoutError, match="1 of 2 threads still running"):
            team.run(lambda hang: release.wait() if hang else None, [(False,), (True,)], timeout_s=0.2)
        with pytest.raises(RuntimeError, match="left behind"):
            team.run(lambda x: None, [(0,), (1,)])
    finally:
        release.set()
        team.close()


# ---------------------------------------------------------------- forked workers (fork_when)

_posix_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _always():
    return True


@_posix_fork
def test_forked_workers_start_without_a_new_interpreter_and_work_like_spawned_ones():
    with WorkerPool(2, initializer=init_tag, initargs=("forked",), fork_when=_always) as p:
        assert [s["method"] for s in p.startup] == ["fork", "fork"]
        assert [r["tag"] for r in p.init_results] == ["forked", "forked"]
        assert p.run_all(echo, [(0, 1), (1, 2)]) == [(0, 2, p.pids[0]), (1, 4, p.pids[1])]
    with WorkerPool(1, fork_when=lambda: False) as p:  # not safe at the start: spawned
        assert p.startup[0]["method"] == "spawn"


@_posix_fork
def test_a_hung_or_crashed_forked_worker_costs_only_its_pool():
    p = WorkerPool(2, fork_when=_always)
    procs = [psutil.Process(pid) for pid in p.pids]
    with pytest.raises(WorkerTimeout):
        p.run_all(sleep_for, [(0,), (30,)], timeout_s=0.5)
    assert psutil.wait_procs(procs, timeout=5)[1] == [] and p.size == 0
    with WorkerPool(2, fork_when=_always) as q:  # a new pool after it: clean workers, nothing inherited
        procs = [psutil.Process(pid) for pid in q.pids]
        with pytest.raises(WorkerDied):
            q.run_all(die, [(), ()])
    assert psutil.wait_procs(procs, timeout=5)[1] == []
    with WorkerPool(2, fork_when=_always) as r:
        assert [v[0] for v in r.run_all(echo, [(0, 1), (1, 1)])] == [0, 1]


def make_forked_pool_and_vanish(conn):
    pool = WorkerPool(3, fork_when=_always)
    conn.send(pool.pids)
    os._exit(0)


@_posix_fork
def test_forked_workers_exit_by_themselves_when_their_parent_is_killed():
    # Each forked worker holds copies of the parent's ends of its siblings' pipes unless it closes them: then
    # none would see the parent go away while a sibling lives.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    parent = ctx.Process(target=make_forked_pool_and_vanish, args=(send,))
    parent.start()
    assert recv.poll(30)
    pids = recv.recv()
    parent.join(10)
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive
