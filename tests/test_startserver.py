"""The start server (gpudiag.startserver): probes that ask for it are forked from one interpreter that imported torch,
and isolation holds as with spawned probes - a probe that crashes or hangs, or whose forked worker does, costs only
itself; the next probe is forked from the same untouched server; nothing outlives the run."""

import importlib.util
import multiprocessing.forkserver

import psutil
import pytest

from gpudiag import platform, runner
from gpudiag.startserver import StartServer
from tests import fixture_probes

pytestmark = pytest.mark.skipif(
    not platform.start_server_supported() or importlib.util.find_spec("torch") is None,
    reason="the start server is used on Linux with torch installed")


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


def _pids(pid_file):
    return [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []


def _gone(pids):
    alive = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return psutil.wait_procs(alive, timeout=5)[1] == []


def test_a_crash_a_hang_and_hung_or_crashed_workers_cost_only_their_own_probe(tmp_path):
    before = _live_children()
    pid_file = tmp_path / "pids"
    probes = [fixture_probes.P_WHO, fixture_probes.P_CRASH, fixture_probes.P_HANG, fixture_probes.P_WORKER_HANGS, fixture_probes.P_WORKER_CRASHES, fixture_probes.P_WORKERS_WORK,
              fixture_probes.P_WHO_AGAIN]
    out = runner.run_probes(probes, options={"pid_file": str(pid_file)})
    res = out["results"]
    first = res["who"]["data"]
    assert res["who"]["status"] == "ok" and first["torch_imported"] and first["ppid"] == first["server_pid"]
    assert res["preloaded_crash"]["status"] == "failed" and "SIGSEGV" in res["preloaded_crash"]["reason"]
    assert res["preloaded_hang"]["status"] == "failed" and res["preloaded_hang"]["reason"].startswith("timed out")
    assert res["worker_hangs"]["status"] == "failed" and res["worker_hangs"]["reason"].startswith("timed out")
    assert res["worker_crashes"]["status"] == "failed" and "WorkerDied" in res["worker_crashes"]["reason"]
    # After all that, the next probes are forked from the same server, and their own forked workers work.
    work = res["workers_work"]
    assert work["status"] == "ok", work
    assert work["data"]["server_pid"] == first["server_pid"] and work["data"]["methods"] == ["fork", "fork"]
    assert res["who_again"]["data"]["server_pid"] == first["server_pid"]
    # Nothing of any probe is left: not the hung or crashed workers, not the server.
    pids = _pids(pid_file)
    assert len(pids) == 6 and _gone(pids)
    assert _gone([first["server_pid"]]) and _live_children() - before == set()
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None


def test_a_probe_that_ends_its_start_server_costs_only_itself():
    before = _live_children()
    out = runner.run_probes([fixture_probes.P_KILL_SERVER, fixture_probes.P_WHO])
    killer, who = out["results"]["kill_server"], out["results"]["who"]
    assert killer["status"] == "ok"
    # The server is gone: the next probe is spawned instead, and still runs.
    assert who["status"] == "ok" and who["data"]["server_pid"] is None and not who["data"]["torch_imported"]
    assert _live_children() - before == set()
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None


def test_without_a_preloading_probe_no_server_starts(monkeypatch):
    started = []
    monkeypatch.setattr(StartServer, "start", lambda self: started.append(self) or False)
    out = runner.run_probes([fixture_probes.OK, fixture_probes.P_WHO])
    assert len(started) == 1  # P_WHO asked for it
    assert out["results"]["who"]["data"]["server_pid"] is None  # not started: spawned
    started.clear()
    assert runner.run_probes([fixture_probes.OK])["results"]["ok_probe"]["status"] == "ok" and started == []


def test_a_server_that_dies_while_preloading_is_not_used(monkeypatch):
    # A torch whose import kills the interpreter: the server never answers; the probe is spawned and runs.
    monkeypatch.setattr(StartServer, "__init__", _init_with(["tests.fixture_probes_crash_at_import"]))
    out = runner.run_probes([fixture_probes.P_WHO])
    assert out["results"]["who"]["status"] == "ok" and out["results"]["who"]["data"]["server_pid"] is None
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None


def test_a_server_not_ready_by_a_probes_deadline_times_that_probe_out_and_is_stopped(monkeypatch):
    # As when the probe's own import of torch hangs: that probe times out; the server is stopped, not waited
    # for, and the next probe is spawned.
    before = _live_children()
    monkeypatch.setattr(StartServer, "__init__", _init_with(["tests.fixture_probes_slow_import"]))
    slow = fixture_probes.make_preloaded("who_slow", fixture_probes._whoami, timeout_s=2.0)
    out = runner.run_probes([slow, fixture_probes.P_WHO])
    res = out["results"]
    assert res["who_slow"]["status"] == "failed" and res["who_slow"]["reason"].startswith("timed out after 2 s")
    assert "torch" in res["who_slow"]["reason"]
    assert res["who"]["status"] == "ok" and res["who"]["data"]["server_pid"] is None
    assert _live_children() - before == set()
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None


def _init_with(extra):
    real = StartServer.__init__

    def init(self, modules):
        real(self, list(extra) + list(modules))
    return init


def test_stop_kills_the_server_and_forgets_it():
    server = StartServer([fixture_probes.P_WHO.run.__module__])
    assert server.start()
    pid = multiprocessing.forkserver._forkserver._forkserver_pid
    assert server.context(120) is not None  # ready: it has imported torch
    server.stop()
    server.stop()  # idempotent
    assert _gone([pid]) and multiprocessing.forkserver._forkserver._forkserver_pid is None
    assert server.context(1) is None
