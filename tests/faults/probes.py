"""Fixture probes for the fault tests (importable by spawned probe children) and a CLI that runs them.

`python -m tests.faults.probes SET report ...` runs the real gpudiag CLI with `gpudiag.probes.all_probes`
returning the fixture set SET, so the whole report path (outputs, signals, redaction) is exercised
with probes that hang, crash or leak on purpose, in a second or two.
"""

import json
import os
import signal
import subprocess
import sys
import time

from gpudiag.probes.base import Probe, ProbeOutput, finding

BEARER = "Authorization: Bearer eyJhbGciOi1234567890abcdefXYZ"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_LINE = f"aws_secret_access_key = {AWS_SECRET}"
SECRETS = ["eyJhbGciOi1234567890abcdefXYZ", AWS_SECRET, "hunter2", "AKIAIOSFODNN7EXAMPLE",
           "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "MIIEowIBAAKCAQEAx4UbaDzY5jGh8fK3"]


def _sleep_forever():
    while True:
        time.sleep(3600)


def hang(ctx):
    """Never finish: the probe a --timeout must end."""
    _sleep_forever()


def quick_ok(ctx):
    return ProbeOutput({"answer": 42}, [finding("FAULT_TEST", "info", "a fixture finding", {"x": 1}, None)])


def hang_with_children(ctx):
    """Start what a real probe starts (a spawned worker, a subprocess, named semaphores), note them, hang."""
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    sems = [mp.Semaphore(1), mp.Lock()]  # registered with multiprocessing's resource tracker
    worker = mp.Process(target=_sleep_forever, daemon=False)
    worker.start()
    sub = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    names = [getattr(s._semlock, "name", None) for s in sems]
    info = {"pids": [os.getpid(), worker.pid, sub.pid], "semaphores": [n for n in names if n]}
    path = os.environ["GPUDIAG_FAULT_NOTE"]
    with open(path + ".tmp", "w") as fh:
        json.dump(info, fh)
    os.replace(path + ".tmp", path)
    _sleep_forever()


def secret_crash(ctx):
    """Print credentials to stderr, as a crashing library might, then die of a segfault."""
    print(BEARER, file=sys.stderr)
    print(AWS_LINE, file=sys.stderr)
    print("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4UbaDzY5jGh8fK3\n-----END RSA PRIVATE KEY-----",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def secret_raise(ctx):
    raise RuntimeError(f"connect failed: password=hunter2 key AKIAIOSFODNN7EXAMPLE {BEARER}")


def orphaning_ok(ctx):
    """Leave a process behind whose parent has exited (a daemon), then succeed."""
    mid = subprocess.Popen([sys.executable, "-c",
                            "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                            "'import time; time.sleep(3600)'], stdout=subprocess.DEVNULL); print(p.pid)"],
                           stdout=subprocess.PIPE, text=True)
    orphan = int(mid.stdout.readline())
    mid.wait()
    with open(os.environ["GPUDIAG_FAULT_NOTE"], "w") as fh:
        json.dump({"pids": [orphan]}, fh)
    return ProbeOutput({"orphan_started": True})


def make(name, fn, timeout_s=30.0, preload=False):
    return Probe(name=name, title=name, summary=f"fault fixture {name}", run=fn, timeout_s=timeout_s, preload=preload)


SETS = {
    "signals": [make("first", quick_ok), make("hang", hang_with_children), make("last", quick_ok)],
    "quick": [make("first", quick_ok), make("last", quick_ok)],
    "hangs": [make("first", quick_ok), make("hang", hang)],
    "secrets": [make("crash", secret_crash), make("raise", secret_raise), make("last", quick_ok)],
    "orphans": [make("orphaning", orphaning_ok)],
    # The same, forked from the start server that gil and cycle use (gpudiag.startserver; Linux with torch).
    "preloaded_signals": [make("first", quick_ok, preload=True), make("hang", hang_with_children, preload=True),
                          make("last", quick_ok, preload=True)],
    "preloaded_quick": [make("first", quick_ok, preload=True), make("last", quick_ok, preload=True)],
}


def main() -> None:
    import gpudiag.probes
    from gpudiag import __main__ as entry
    from tests.faults import probes as importable  # not __main__: children must find the functions by name

    chosen = importable.SETS[sys.argv[1]]
    gpudiag.probes.all_probes = lambda: list(chosen)
    sys.argv = ["gpudiag"] + sys.argv[2:]
    entry.run()


if __name__ == "__main__":
    main()
