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
