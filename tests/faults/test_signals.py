"""Signals: SIGTERM and SIGHUP behave like Ctrl-C, and Ctrl-C is clean at any moment.

The report of what finished is written, the probe that was running is marked interrupted with its
elapsed time, the rest "not run", the probe's children (a spawned worker, a subprocess) and
multiprocessing's resource tracker are gone, its named semaphores are removed, no temp file is
left in TMPDIR, nothing prints a traceback or a "leaked semaphore" warning, and the exit code is
128 + the signal.
"""

import importlib.util
import json
import os
import signal
import sys
import time

import psutil
import pytest

from gpudiag import platform
from gpudiag.report import contract
from tests.faults._helpers import handlers_installed, leftovers, start, still_running, wait_for_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# SIGINT to the whole group, as a terminal does, and to gpudiag alone (`kill -INT`).
STOPS = [("SIGTERM", False), ("SIGHUP", False), ("SIGINT", True), ("SIGINT", False)]
# Probe children spawned, and forked from the start server (gpudiag.startserver: Linux, with torch installed).
NO_SERVER = pytest.mark.skipif(not platform.start_server_supported() or importlib.util.find_spec("torch") is None,
                               reason="the start server is used on Linux with torch installed")
PRELOADED = pytest.param("preloaded_", marks=NO_SERVER)


def _group_left(pgid: int) -> list:
    """Processes still running in gpudiag's process group (the start server and its children included)."""
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, OSError):
            pass
    return still_running(out)


@pytest.mark.parametrize("kind", ["", PRELOADED])
@pytest.mark.parametrize("name,to_group", STOPS)
def test_stop_signal_mid_probe_writes_report_and_leaves_nothing(tmp_path, name, to_group, kind):
    signum = getattr(signal, name)
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    note = tmp_path / "note.json"
    proc = start(["report", "--json", "r.json", "-o", "r.html"], cwd=work, tmpdir=tmp, fixtures=kind + "signals",
                 GPUDIAG_FAULT_NOTE=note)
    info = wait_for_file(note, proc)
    family = psutil.Process(proc.pid).children(recursive=True)  # probe child, its worker, subprocess, tracker
    assert len(family) >= 4, family  # the probe is running and stays so until signalled: no race
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in out + err and "leaked" not in err and "Aborted" not in err
    rep = contract.load_report(str(work / "r.json"))
    who = "Ctrl-C" if name == "SIGINT" else name
    assert rep["interrupted"] is True
    assert rep["probes"]["first"]["status"] == "ok"
    hang = rep["probes"]["hang"]
    assert hang["status"] == "skipped" and hang["reason"].startswith(f"interrupted by {who} after ")
    assert "while running" in hang["reason"] and hang["duration_s"] > 0
    assert rep["probes"]["last"]["reason"] == f"not run: interrupted by {who}"
    assert (work / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert still_running(family) == [] and _group_left(proc.pid) == []
    assert [p for p in info["pids"] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE] == []
    for sem in info["semaphores"]:
        assert not os.path.exists("/dev/shm/sem." + sem.lstrip("/")), sem
    assert leftovers(tmp) == [] and leftovers(work, keep=("r.json", "r.html")) == []


@pytest.mark.parametrize("kind,delay", [("", d) for d in (0.0, 0.05, 0.15, 0.3, 0.6)]
                         # and while the start server starts, imports torch, forks the probes
                         + [pytest.param("preloaded_", d, marks=NO_SERVER) for d in (0.3, 0.6, 1.0, 2.0)])
def test_ctrl_c_at_any_moment_of_start_up_is_clean(tmp_path, kind, delay):
    """From gpudiag's first line to a probe child starting (interpreter start-up itself is Python's)."""
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    proc = start(["report", "--json", "r.json", "-o", "r.html"], cwd=work, tmpdir=tmp, fixtures=kind + "quick")
    handlers_installed(proc.pid)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in out + err and "Aborted" not in out + err and "leaked" not in err, err
    # 0: it finished first; -2: the signal came during the interpreter's own exit, after gpudiag's last line
    # (Python restores the default action then; a shell shows 130 for both).
    assert proc.returncode in (130, 0, -signal.SIGINT), err
    if proc.returncode == 130 and (work / "r.json").exists():  # stopped mid-run, or while writing a whole report
        rep = json.loads((work / "r.json").read_text())
        assert rep["interrupted"] is True or all(p["status"] == "ok" for p in rep["probes"].values())
    assert leftovers(tmp) == []
    assert leftovers(work, keep=("r.json", "r.html")) == []
    assert _group_left(proc.pid) == []


def test_a_probe_that_orphans_a_process_does_not_leave_it_behind(tmp_path):
    note = tmp_path / "note.json"
    proc = start(["report", "--json", "r.json", "-o", "r.html"], cwd=tmp_path, tmpdir=tmp_path, fixtures="orphans",
                 GPUDIAG_FAULT_NOTE=note)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    orphan = json.loads(note.read_text())["pids"][0]
    gone = still_running([psutil.Process(orphan)] if psutil.pid_exists(orphan) else [], timeout=10)
    assert gone == [], f"process {orphan} left by the probe is still running"
