"""Running gpudiag as a user would (a real process), and noticing what it leaves behind."""

import json
import os
import subprocess
import sys
import time
from typing import List, Optional

import psutil

from tests import TESTS

ROOT = os.path.dirname(TESTS)
PY = sys.executable


def env_for(tmpdir: str, **extra) -> dict:
    """The environment of a gpudiag process: this checkout first, a private TMPDIR to check for leftovers."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TMPDIR=tmpdir,
             PYTHONDONTWRITEBYTECODE="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def gpudiag(args: List[str], cwd, tmpdir, fixtures: Optional[str] = None, timeout: float = 120, **kw):
    """Run the CLI (with a fixture probe set when given) to completion."""
    cmd = [PY, "-m", "tests.faults.probes", fixtures] if fixtures else [PY, "-m", "gpudiag"]
    env = env_for(str(tmpdir), **kw.pop("env", {}))
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def start(args: List[str], cwd, tmpdir, fixtures: Optional[str] = None, **env) -> subprocess.Popen:
    """Start the CLI in its own session (so a test can signal its whole process group, as a terminal does)."""
    cmd = [PY, "-m", "tests.faults.probes", fixtures] if fixtures else [PY, "-m", "gpudiag"]
    return subprocess.Popen(cmd + list(args), cwd=cwd, env=env_for(str(tmpdir), **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_file(path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as fh:
                return json.load(fh)
        if proc.poll() is not None:
            raise AssertionError(f"gpudiag ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def handlers_installed(pid: int, timeout: float = 30) -> None:
    """Wait until the process catches SIGTERM (gpudiag's start-up has begun; Linux: /proc status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as fh:
                caught = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt"))
            if caught & (1 << (15 - 1)):
                return
        except (OSError, StopIteration):
            return
        time.sleep(0.002)


def still_running(procs: List[psutil.Process], timeout: float = 10) -> List[psutil.Process]:
    """The processes still alive (zombies count as gone) after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pids_alive(pids: List[int], timeout: float = 10) -> List[int]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return [p.pid for p in still_running(procs, timeout)]


def leftovers(folder, keep=()) -> List[str]:
    """Files in a folder other than the expected outputs: temp files, logs, staging files."""
    return sorted(n for n in os.listdir(folder) if n not in keep)


def one_line_error(stderr: str) -> bool:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return len(lines) == 1 and lines[0].startswith("gpudiag: error: ") and "Traceback" not in stderr
