"""A stop signal ends a fleet rank within seconds (gpudiag.fleet.stop), without torch.

The watchdog is checked on real processes: one whose main thread cannot run a Python handler (SIGTERM is
blocked in that thread, as if it waited in native code: only the watchdog thread can receive it), and one
whose main thread meets the signal itself and hands over. Both wait for a "ready" line before the signal is
sent (no sleep race). Also: the result blocks rank 0 reads without waiting, an entry made to fit one, and
rank 0's report after a stop built from what it holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import tests
from gpudiag.fleet import run, transport
from gpudiag.fleet.launcher import Place

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")

SCRIPT = r"""
import os, signal, sys, time
from gpudiag.platform import signals
from gpudiag.fleet.stop import StopWatch

path, mode = sys.argv[1], sys.argv[2]

def on_stop(signum):
    with open(path, "a") as fh:
        fh.write(f"{signum}\n")
    return 7

with signals.handlers():
    with StopWatch(on_stop) as watch:
        if mode == "native":
            # The main thread as if it waited in native code: no Python handler can run there, and the
            # signal goes to the watchdog thread, which started before the mask.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        print("ready", flush=True)
        try:
            time.sleep(600)
        except signals.Interrupted as exc:
            watch.handle(exc.signum)
print("not stopped", flush=True)
"""


@pytest.mark.parametrize("mode", ["native", "python"])
def test_the_watchdog_writes_and_exits_with_the_reports_code(tmp_path, mode):
    out = tmp_path / "stopped.txt"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), mode], env=dict(os.environ, PYTHONPATH=tests.ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 7, stderr
    assert out.read_text() == f"{int(signal.SIGTERM)}\n"  # on_stop ran once, whoever met the signal first
    assert "not stopped" not in stdout and "Traceback" not in stderr


def test_blocks_are_read_whole_or_not_at_all():
    raw = transport.pack({"rank": 3, "figures": {"x": 1.5}})
    assert transport.unpack(raw + bytes(100)) == (True, {"rank": 3, "figures": {"x": 1.5}})
    assert transport.unpack(bytes(len(raw))) == (False, None)  # nothing arrived yet
    assert transport.unpack(raw[:-3] + bytes(3)) == (False, None)  # still landing: the CRC does not match
    with pytest.raises(transport.BlockTooLarge):
        transport.pack({"noise": os.urandom(12000).hex()})


def test_an_entry_too_large_for_a_block_is_slimmed_then_refused():
    checks = [{"name": f"c{i}", "status": "fail", "message": os.urandom(200).hex(), "applies": True} for i in range(60)]
    entry = {"rank": 4, "host": "host-a", "device": {"kind": "cpu"}, "figures": {"matmul_gflops": {"value": 1.0}},
             "preflight": {"ready": False, "checks": checks}}
    slim = run.fit(entry)
    assert slim["figures"] == entry["figures"] and all("message" not in c for c in slim["preflight"]["checks"])
    transport.pack(slim)
    huge = dict(entry, figures={"x": os.urandom(20000).hex()})
    refused = run.fit(huge)
    assert refused["rank"] == 4 and refused["figures"] == {} and "too large to send" in refused["error"]


def _state(rank0_measured: bool) -> run.RunState:
    place = Place("torchrun", 0, 4, 0, 4, 0, None, None, "env://")
    state = run.RunState(place, run.Options(deadline_s=60.0), started=0.0, created="2026-01-01T00:00:00Z",
                         backend="gloo", phase="waiting at the barrier")
    state.idents = {r: {"rank": r, "local_rank": r, "hostname": "node-a"} for r in range(4)}
    state.labels = {r: "host-a" for r in range(4)}
    state.names = {r: "node-a" for r in range(4)}
    if rank0_measured:
        state.own = {"rank": 0, "host": "host-a", "local_rank": 0, "device": {"kind": "cpu", "torch_threads": 1},
                     "figures": {"matmul_gflops": {"value": 40.0, "p10": 39.0, "p90": 41.0, "n": 5}}}
    return state


class _Inbox:
    """An Inbox's answers, canned: results, closed connections, stop notices."""

    def __init__(self, got, closed=None):
        self.got, self.closed = got, dict(closed or {})

    def poll(self):
        return dict(self.got)

    def gone(self, ranks, budget_s=0):
        return {r: self.closed[r] for r in ranks if r in self.closed}


def test_rank_0s_report_after_a_stop_names_each_rank_stopped_gone_or_silent(monkeypatch):
    state = _state(True)
    state.inbox = _Inbox({2: {"rank": 2, "device": {"kind": "cpu", "torch_threads": 1},
                              "figures": {"matmul_gflops": {"value": 41.0, "p10": 40.0, "p90": 42.0, "n": 5}}}},
                         closed={1: "Connection closed by peer"})
    state.notices = _Inbox({3: {"rank": 3, "signal": "SIGTERM", "phase": "measuring"}})
    monkeypatch.setattr(run, "NOTICE_WAIT_S", 0.2)
    rep = run.stop_report(state, signal.SIGTERM)
    data = rep["probes"]["fleet"]["data"]
    assert rep["interrupted"] is True and data["exit_code"] == 2
    assert [e["rank"] for e in data["ranks"]] == [0, 2] and data["ranks"][1]["host"] == "host-a"
    assert [(m["rank"], m["state"]) for m in data["missing"]] == [(1, "gone"), (3, "stopped")]
    assert "it died or was killed" in data["missing"][0]["reason"]
    assert data["missing"][1]["reason"] == "stopped by SIGTERM while measuring, before it sent its results"
    assert data["stopped"]["phase"] == "waiting at the barrier"
    assert data["verdict"].startswith("critical: 2 of 4 ranks answered") and "gone (died) rank(s) 1" in data["verdict"]
    assert json.loads(json.dumps(rep)) == rep


def test_a_stop_before_rank_0_measured_itself_is_still_critical_not_unknown():
    state = _state(False)
    state.phase = "measuring"
    rep = run.stop_report(state, signal.SIGTERM)
    data = rep["probes"]["fleet"]["data"]
    assert data["answered"] == 0 and data["exit_code"] == 2
    assert data["missing"][0]["reason"].startswith("rank 0 (writing this report) was stopped by SIGTERM while measuring")
    # No inbox (a world that never assembled): the others are silent, named as such.
    assert {m["state"] for m in data["missing"][1:]} == {"silent"}


class _Gloo:
    """Rank 0's two inboxes over one gather group, as gloo behaves: asking whether a rank is gone (a wait that
    times out on a live rank) closes that rank's connection, so a notice it sends afterwards never lands."""

    def __init__(self, notice_after_polls):
        self.polls, self.after, self.cut = 0, notice_after_polls, set()
        self.closed = {}
        outer = self

        class Results:
            closed = outer.closed

            def poll(self):
                return {}

            def gone(self, ranks, budget_s=0):
                outer.cut.update(ranks)
                return {}

        class Notices:
            def poll(self):
                outer.polls += 1
                late = outer.polls > outer.after
                return {r: {"rank": r, "signal": "SIGTERM", "phase": "measuring"}
                        for r in (1, 2, 3) if late and r not in outer.cut}

        self.results, self.notices = Results(), Notices()


def test_a_late_stop_notice_still_lands_rank_0_asks_who_is_gone_only_after_the_wait(monkeypatch):
    """Seen on a loaded machine: the notices came a few polls after the stop; asking gloo at once whether the
    silent ranks had gone closed their connections and the notices were lost (rank 1 read as silent)."""
    state = _state(True)
    gloo = _Gloo(notice_after_polls=3)
    state.inbox, state.notices = gloo.results, gloo.notices
    monkeypatch.setattr(run, "NOTICE_WAIT_S", 5.0)
    data = run.stop_report(state, signal.SIGTERM)["probes"]["fleet"]["data"]
    assert [(m["rank"], m["state"]) for m in data["missing"]] == [(1, "stopped"), (2, "stopped"), (3, "stopped")]
    assert gloo.cut == set()  # every notice came: nobody was asked


def test_a_rank_without_a_notice_is_asked_once_the_wait_is_over(monkeypatch):
    state = _state(True)
    gloo = _Gloo(notice_after_polls=10 ** 9)  # no notice ever
    state.inbox, state.notices = gloo.results, gloo.notices
    monkeypatch.setattr(run, "NOTICE_WAIT_S", 0.2)
    data = run.stop_report(state, signal.SIGTERM)["probes"]["fleet"]["data"]
    assert gloo.cut == {1, 2, 3} and gloo.polls >= 2
    assert {m["state"] for m in data["missing"]} == {"silent"}
