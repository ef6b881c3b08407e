"""`gpudiag watch` on real jobs launched by the tests: GIL-spinning threads, a sleeping job, workers
growing at a known rate, a DataLoader-shaped wait, exit codes, a crash, signals, attach and detach,
and access denied. Timing-independent assertions only (shares with wide bounds, growth within 30 %).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import tests
from gpudiag.watch import pyspy
from gpudiag.watch.session import WatchSession
from tests.fakes_watch import DeniedPsutil

PY = sys.executable
ROOT = tests.ROOT
SPY = pyspy.find_py_spy()
needs_py_spy = pytest.mark.skipif(SPY is None, reason="py-spy is not installed (pip install 'gpudiag[watch]')")
MiB = 2 ** 20

# The jobs below run until the test's cue (a SIGUSR1, or the file {stop}), sent once the watcher holds enough GIL
# samples, so no assert depends on how fast a loaded machine samples; at most a minute.
SPIN3 = """
import os, signal, threading
stop = False
def spin():
    while not stop:
        pass
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGUSR1}})  # the spinners inherit the mask
ts = [threading.Thread(target=spin, name=f"spin{{i}}") for i in range(3)]
[t.start() for t in ts]
signal.sigtimedwait({{signal.SIGUSR1}}, 60)  # the test's cue; blocked in C, the main thread wants no GIL
stop = True
[t.join() for t in ts]
"""

# 10 ms of pure Python, then 90 ms asleep, by the wall clock: held ~10 % however busy the machine.
SLEEPY = """
import os, time
end = time.perf_counter() + 60
while not os.path.exists({stop!r}) and time.perf_counter() < end:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.01:
        pass
    time.sleep(0.09)
"""

# Two spawned workers, each keeping its allocated total at rate * elapsed (by the wall clock, so
# a busy machine delays the steps but not the rate).
GROWERS = """
import multiprocessing as mp, sys, time
def grow(rate, secs):
    chunks, t0, total = [], time.perf_counter(), 0
    while True:
        el = time.perf_counter() - t0
        if el >= secs:
            break
        while total < rate * el:
            chunks.append(b"\\x01" * (1 << 20))
            total += 1 << 20
        time.sleep(0.02)
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    ps = [ctx.Process(target=grow, args=(r, {secs})) for r in ({r1}, {r2})]
    [p.start() for p in ps]
    [p.join() for p in ps]
"""

# torch.utils.data's shape without torch: the main loop waits on a queue in
# torch/utils/data/dataloader.py 80 ms of every 100 ms (py-spy matches the file and function).
LOADER = '''
import queue, time
class _MultiProcessingDataLoaderIter:
    def __init__(self):
        self.q = queue.Queue()
    def _try_get_data(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None
    def _get_data(self):
        return self._try_get_data(0.08)
    def _next_data(self):
        return self._get_data()
'''
LOADER_MAIN = """
import os, sys, time
sys.path.insert(0, {path!r})
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
it = _MultiProcessingDataLoaderIter()
end = time.perf_counter() + 60
while not os.path.exists({stop!r}) and time.perf_counter() < end:
    it._next_data()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.02:
        pass
"""


def _script(tmp_path, name, text, **kw):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text.format(**kw)))
    return str(path)


def _watch(argv, **kw):
    kw.setdefault("nvml", False)
    with WatchSession(command=argv, **kw) as w:
        w.start()
        rep = w.watch()
        code = w.finish()
    return rep, code


def _watch_until_sampled(argv, stop, min_samples=30, signal_cue=False, **kw):
    """_watch, cueing the job to end (the file `stop`, or a SIGUSR1) once the GIL sampler holds min_samples."""
    import threading

    kw.setdefault("nvml", False)
    with WatchSession(command=argv, **kw) as w:
        w.start()
        done = threading.Event()

        def cue():
            end = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < end:
                gil = w.gil
                if gil is not None and sum(len(v) for v in list(gil.samples.values())) >= min_samples:
                    break
                time.sleep(0.05)
            open(stop, "w").close()
            if signal_cue:
                try:
                    os.kill(w.job.pid, signal.SIGUSR1)  # blocked and awaited by the job (SPIN3)
                except OSError:
                    pass
        t = threading.Thread(target=cue, daemon=True)
        t.start()
        try:
            rep = w.watch()
        finally:
            done.set()
            t.join(timeout=5)
        code = w.finish()
    return rep, code


def _data(rep):
    return rep["probes"]["watch"]["data"]


@needs_py_spy
def test_three_threads_spinning_hold_the_gil_one_at_a_time(tmp_path):
    stop = str(tmp_path / "stop")
    rep, code = _watch_until_sampled([PY, _script(tmp_path, "spin.py", SPIN3, stop=stop)], stop, interval_s=0.05,
                                     native_every=2, py_spy=SPY, signal_cue=True)
    assert code == 0
    gil = _data(rep)["gil"]
    assert gil["status"] == "ok" and gil["samples"] >= 15, gil.get("reason")
    assert gil["held_fraction"] >= 0.8
    spinners = [t for t in gil["threads"] if str(t["name"]).startswith("spin")]
    assert len(spinners) == 3 and gil["threads_wanting_gil"] == 3
    assert all(0.1 <= t["gil_fraction"] <= 0.6 for t in spinners)  # each about a third
    assert gil["contended_fraction"] >= 0.5 and gil["mean_waiting_threads"] >= 1.0
    main = next(t for t in gil["threads"] if t["name"] == "MainThread")
    assert main["gil_fraction"] <= 0.1  # joining threads does not want the GIL
    if gil["samples"] >= 20:
        assert rep["recommendation"]["strategy"] == "processes"
        assert rep["recommendation"]["confidence"] in ("clear", "too_noisy")


@needs_py_spy
def test_a_job_sleeping_90_percent_holds_the_gil_about_10_percent(tmp_path):
    stop = str(tmp_path / "stop")
    rep, code = _watch_until_sampled([PY, _script(tmp_path, "sleepy.py", SLEEPY, stop=stop)], stop, interval_s=0.05,
                                     native_every=2, py_spy=SPY)
    gil = _data(rep)["gil"]
    assert code == 0 and gil["status"] == "ok" and gil["samples"] >= 15
    assert 0.0 <= gil["held_fraction"] <= 0.3
    # Its one thread reads as wanting the GIL on a loaded machine (runnable after each sleep, waiting for a
    # core); one thread contends with nobody, which is what the verdict below says.
    assert gil["threads_wanting_gil"] <= 1
    verdict = next(v for v in rep["recommendation"]["verdicts"] if v["cause"] == "gil_contention")
    assert verdict["verdict"] in ("refuted", "not_measured")
    assert rep["recommendation"]["strategy"] != "processes"


def test_two_spawned_workers_grow_at_their_known_rates(tmp_path):
    r1, r2 = 16 * MiB, 32 * MiB
    rep, code = _watch([PY, _script(tmp_path, "grow.py", GROWERS, secs=2.5, r1=r1, r2=r2)], interval_s=0.1,
                       gil=False)
    assert code == 0
    mem = _data(rep)["memory"]
    assert mem["status"] == "ok"
    workers = sorted((p for p in mem["processes"] if p["role"] == "worker"), key=lambda p: p["first_seen_s"])
    assert len(workers) == 2, [(p["role"], p["cmdline"]) for p in mem["processes"]]
    rates = sorted(p["growth_bytes_per_s"] for p in workers)
    assert abs(rates[0] - r1) / r1 < 0.3 and abs(rates[1] - r2) / r2 < 0.3, rates
    assert all(p["growing"] for p in workers)
    proj = mem["projection"]
    assert proj["limit_source"] in ("ram", "cgroup", "wsl_cap") and proj["headroom_bytes"] > 0
    assert proj["seconds_to_limit"] == pytest.approx(proj["headroom_bytes"] / proj["job_growth_bytes_per_s"])
    assert abs(proj["job_growth_bytes_per_s"] - (r1 + r2)) / (r1 + r2) < 0.3
    fastest = max(workers, key=lambda p: p["growth_bytes_per_s"])
    assert proj["first_to_hit"]["pid"] == fastest["pid"]
    helper = [p for p in mem["processes"] if p["role"] == "helper"]
    assert all("resource_tracker" in " ".join(p["cmdline"] or []) for p in helper)


@needs_py_spy
def test_main_thread_waiting_on_a_dataloader_queue_is_input_starvation(tmp_path):
    pkg = tmp_path / "fake" / "torch" / "utils" / "data"
    pkg.mkdir(parents=True)
    for d in (tmp_path / "fake" / "torch", tmp_path / "fake" / "torch" / "utils", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "dataloader.py").write_text(LOADER)
    stop = str(tmp_path / "stop")
    rep, code = _watch_until_sampled([PY, _script(tmp_path, "loop.py", LOADER_MAIN, path=str(tmp_path / "fake"),
                                                  stop=stop)], stop, interval_s=0.05, native_every=2, py_spy=SPY)
    inp = _data(rep)["input_wait"]
    assert code == 0 and inp["status"] == "ok" and inp["loader_seen"]
    assert 0.5 <= inp["fraction"] <= 1.0
    verdict = next(v for v in rep["recommendation"]["verdicts"] if v["cause"] == "input_starvation")
    assert verdict["verdict"] == "supported"


def _cli(args, tmp_path, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([PY, "-m", "gpudiag", "watch", "--no-gpu", "--interval", "0.05",
                           "--json", str(tmp_path / "w.json"), "-o", str(tmp_path / "w.html")] + args,
                          capture_output=True, text=True, env=env, timeout=60, **kw)


def test_cli_passes_the_job_exit_code_through_and_writes_the_report(tmp_path):
    secret = "ghp_" + "Z9" * 18
    out = _cli(["--no-gil", "--", PY, "-c", "import sys; print('job says hi'); sys.exit(3)", "--api-key", secret,
                "--password", "hunter2hunter2"], tmp_path)
    assert out.returncode == 3, out.stderr
    for path in ("w.json", "w.html"):
        text = (tmp_path / path).read_text()
        assert secret not in text and "hunter2hunter2" not in text  # command lines pass the redactor
    assert "job says hi" in out.stdout  # the job's stdout is its own, untouched
    rep = json.loads((tmp_path / "w.json").read_text())
    job = rep["probes"]["watch"]["data"]["job"]
    assert job["exit_code"] == 3 and job["mode"] == "launch" and rep["mode"] == "watch"
    assert any(f["code"] == "WATCH_JOB_FAILED" for f in rep["probes"]["watch"]["findings"])
    assert (tmp_path / "w.html").read_text().count("<svg") >= 1
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(ROOT, "gpudiag", "report", "schema", "report.schema.json")) as fh:
        jsonschema.validate(rep, json.load(fh))


def test_cli_crashing_job_is_reported_and_its_signal_passed_on(tmp_path):
    out = _cli(["--no-gil", "--", PY, "-c", "import os, time; time.sleep(0.2); os.abort()"], tmp_path)
    assert out.returncode == 128 + signal.SIGABRT, out.stderr
    rep = json.loads((tmp_path / "w.json").read_text())
    assert rep["probes"]["watch"]["data"]["job"]["ended"].startswith("crashed with signal 6 (SIGABRT)")
    out = _cli(["--no-gil", "--", PY, "-c", "1 / 0"], tmp_path)
    assert out.returncode == 1 and "ZeroDivisionError" in out.stderr  # the job's traceback, passed through
    assert "Traceback" not in out.stderr.split("ZeroDivisionError")[-1]  # and none of gpudiag's own


def test_cli_unknown_command_is_127_with_one_line_and_no_report(tmp_path):
    out = _cli(["--", "no-such-command-gpudiag-test"], tmp_path)
    assert out.returncode == 127
    assert out.stderr.strip().splitlines() == ["gpudiag: error: no-such-command-gpudiag-test: command not found"]
    assert not (tmp_path / "w.json").exists()
    out = _cli([], tmp_path)
    assert out.returncode == 2 and "gpudiag: error:" in out.stderr


def test_cli_forwards_sigterm_to_the_job_and_ctrl_c_reaches_it(tmp_path):
    trap = _script(tmp_path, "trap.py", """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
        print("ready", flush=True)
        time.sleep(30)
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    args = [PY, "-m", "gpudiag", "watch", "--no-gpu", "--no-gil", "--interval", "0.05", "--json",
            str(tmp_path / "t.json"), "-o", str(tmp_path / "t.html"), "--", PY, trap]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)  # to gpudiag alone, as a scheduler would
    assert proc.wait(30) == 7
    assert json.loads((tmp_path / "t.json").read_text())["probes"]["watch"]["data"]["job"]["exit_code"] == 7
    # Ctrl-C from a terminal goes to the whole foreground process group: the job ends, gpudiag reports.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(30)
    assert code == 130, proc.stderr.read()  # the job died of SIGINT (KeyboardInterrupt): 128 + 2
    assert json.loads((tmp_path / "t.json").read_text())["probes"]["watch"]["data"]["job"]["exit_code"] == 130
    assert not [p for p in psutil.process_iter(["cmdline"]) if trap in (p.info["cmdline"] or [])]


def test_cli_attaches_by_pid_and_leaves_the_job_running(tmp_path):
    job = subprocess.Popen([PY, "-c", "import time\nwhile True: time.sleep(0.05)"])
    try:
        out = _cli(["--pid", str(job.pid), "--duration", "0.8"], tmp_path)
        assert out.returncode == 0, out.stderr
        assert job.poll() is None  # still running after the watch
        rep = json.loads((tmp_path / "w.json").read_text())
        d = rep["probes"]["watch"]["data"]
        assert d["job"]["mode"] == "attach" and d["job"]["pid"] == job.pid and d["job"]["still_running"]
        assert d["job"]["ended_by"] == "duration"
        assert d["memory"]["status"] == "ok"
        assert d["gil"]["status"] in ("ok", "skipped")  # skipped where py-spy is missing or refused
    finally:
        job.kill()
        job.wait()
    out = _cli(["--pid", "999999999"], tmp_path)
    assert out.returncode == 2 and "no such process" in out.stderr


def test_ctrl_c_ends_an_attached_watch_with_0_and_the_job_keeps_running(tmp_path):
    job = subprocess.Popen([PY, "-c", "import time\nwhile True: time.sleep(0.05)"])
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        proc = subprocess.Popen([PY, "-m", "gpudiag", "watch", "--no-gpu", "--no-gil", "--interval", "0.05",
                                 "--json", str(tmp_path / "a.json"), "-o", str(tmp_path / "a.html"),
                                 "--pid", str(job.pid)], stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 20
        while "watching pid" not in (proc.stderr.readline() or "") and time.monotonic() < deadline:
            pass
        proc.send_signal(signal.SIGINT)  # its handlers are in place before that line is printed
        assert proc.wait(30) == 0
        assert job.poll() is None
        d = json.loads((tmp_path / "a.json").read_text())["probes"]["watch"]["data"]
        assert d["job"]["ended_by"] == "signal" and d["job"]["still_running"]
    finally:
        job.kill()
        job.wait()


def test_a_signal_ignored_at_start_stays_ignored_for_the_job(tmp_path):
    # nohup: SIGHUP ignored for gpudiag, so for the job too (a Python handler would reset it at exec)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([PY, "-m", "gpudiag", "watch", "--no-gpu", "--no-gil", "--json", str(tmp_path / "n.json"),
                          "-o", str(tmp_path / "n.html"), "--", PY, "-c",
                          "import signal; print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)"],
                         capture_output=True, text=True, env=env, timeout=60,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert out.returncode == 0 and out.stdout.strip() == "True"


def _fake_py_spy(tmp_path, message):
    path = tmp_path / "py-spy"
    path.write_text(f"#!/bin/sh\necho {json.dumps(message)} >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def test_denied_access_skips_what_it_must_and_the_rest_still_runs(tmp_path):
    spy = _fake_py_spy(tmp_path, "Permission Denied: Try running again with elevated permissions by going "
                                 "'sudo env \"PATH=$PATH\" !!'")
    rep, code = _watch([PY, "-c", "import time; time.sleep(0.6)"], interval_s=0.05, py_spy=spy)
    d = _data(rep)
    assert code == 0
    assert d["gil"]["status"] == "skipped" and "Permission Denied" in d["gil"]["reason"]
    assert d["gil"]["advice"]
    assert d["memory"]["status"] == "ok" and d["cpu"]["status"] == "ok"
    assert any(f["code"] == "WATCH_ACCESS_DENIED" for f in rep["probes"]["watch"]["findings"])
    # psutil refused the job's memory (another user's process, a locked-down container)
    rep, code = _watch([PY, "-c", "import time; time.sleep(0.4)"], interval_s=0.05, gil=False, psutil=DeniedPsutil())
    d = _data(rep)
    assert code == 0 and d["memory"]["status"] == "skipped" and "refused" in d["memory"]["reason"]
    assert d["memory"]["advice"] and d["job"]["exit_code"] == 0


def test_missing_py_spy_is_skipped_with_how_to_install(tmp_path):
    rep, code = _watch([PY, "-c", "pass"], interval_s=0.05, py_spy=None)
    gil = _data(rep)["gil"]
    assert code == 0 and gil["status"] == "skipped" and "pip install 'gpudiag[watch]'" in gil["reason"]


def test_nothing_is_left_running(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    _watch([PY, "-c", "import time; time.sleep(0.3)"], interval_s=0.02, py_spy=SPY)  # reaps what it starts
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before
