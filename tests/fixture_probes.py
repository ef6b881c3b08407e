"""Deliberately misbehaving probes for the runner tests (importable by spawned children)."""

import os
import signal
import time

from gpudiag.probes.base import Probe, ProbeOutput, ProbeSkip, finding


def _ok(ctx):
    return ProbeOutput({"answer": 42, "mode": ctx.mode, "seen": sorted(ctx.results)},
                       [finding("TEST_FINDING", "warning", "a test finding", {"x": 1}, "nothing")])


def _hang(ctx):
    time.sleep(3600)


def _crash(ctx):
    os.kill(os.getpid(), signal.SIGSEGV)


def _self_kill(ctx):
    os.kill(os.getpid(), signal.SIGKILL)


def _raise(ctx):
    raise RuntimeError("boom")


def _skip(ctx):
    raise ProbeSkip("no frobnicator here: install one")


def _hang_with_child(ctx):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(ctx.options["pid_file"], "w") as fh:
        fh.write(str(proc.pid))
    time.sleep(3600)


def _bad_return(ctx):
    return {"not": "a ProbeOutput"}


def make(name, fn, needs=(), isolate=True, timeout_s=30.0):
    return Probe(name=name, title=name, summary=f"test probe {name}", run=fn, needs=needs,
                 isolate=isolate, timeout_s=timeout_s)


OK = make("ok_probe", _ok)
OK_INLINE = make("ok_inline", _ok, isolate=False)
HANG = make("hang_probe", _hang, timeout_s=1.5)
CRASH = make("crash_probe", _crash)
SELF_KILL = make("kill_probe", _self_kill)
RAISE = make("raise_probe", _raise)
SKIP = make("skip_probe", _skip)
HANG_CHILD = make("hang_child_probe", _hang_with_child, timeout_s=2.0)
BAD_RETURN = make("bad_return_probe", _bad_return)
NEEDS_MISSING = make("needs_probe", _ok, needs=("imaginary",))


# ---------------------------------------------------------------- probes forked from the start server (preload)

def _whoami(ctx):
    """Where this probe process came from: the start server (its pid, torch already imported) or a spawn."""
    import sys

    from gpudiag.measure import torch_import

    rec = torch_import.record()
    return ProbeOutput({"pid": os.getpid(), "ppid": os.getppid(), "server_pid": rec["pid"] if rec else None,
                        "torch_imported": "torch" in sys.modules})


def _sleep_for(s):
    time.sleep(s)
    return os.getpid()


def _exit_now():
    os._exit(3)


def _fork_pool(ctx):
    """Two workers forked from this probe process (as the gil and cycle probes start theirs), their pids noted."""
    from gpudiag import platform
    from gpudiag.measure.workers import WorkerPool

    pool = WorkerPool(2, fork_when=platform.fork_is_safe)
    with open(ctx.options["pid_file"], "a") as fh:
        fh.write(" ".join(str(p) for p in pool.pids) + "\n")
    return pool


def _worker_hangs(ctx):
    """One of its forked workers hangs, and so does the probe waiting for it: the runner's deadline ends all."""
    _fork_pool(ctx).run_all(_sleep_for, [(0,), (3600,)])


def _worker_crashes(ctx):
    """One of its forked workers dies mid-task: the probe fails with WorkerDied."""
    _fork_pool(ctx).run_all(_exit_now, [(), ()])


def _workers_work(ctx):
    pool = _fork_pool(ctx)
    try:
        return ProbeOutput({"pids": pool.run_all(_sleep_for, [(0,), (0,)]),
                            "methods": [s["method"] for s in pool.startup], **_whoami(ctx).data})
    finally:
        pool.close()


def _kill_server(ctx):
    """Hostile: ends the start server it was forked from."""
    os.kill(os.getppid(), signal.SIGKILL)
    return _whoami(ctx)


def make_preloaded(name, fn, timeout_s=30.0):
    return Probe(name=name, title=name, summary=f"test probe {name}", run=fn, isolate=True, preload=True,
                 timeout_s=timeout_s)


P_WHO = make_preloaded("who", _whoami)
P_WHO_AGAIN = make_preloaded("who_again", _whoami)
P_CRASH = make_preloaded("preloaded_crash", _crash)
P_HANG = make_preloaded("preloaded_hang", _hang, timeout_s=3.0)
P_WORKER_HANGS = make_preloaded("worker_hangs", _worker_hangs, timeout_s=4.0)
P_WORKER_CRASHES = make_preloaded("worker_crashes", _worker_crashes)
P_WORKERS_WORK = make_preloaded("workers_work", _workers_work)
P_KILL_SERVER = make_preloaded("kill_server", _kill_server)
