"""A real cgroup with a CPU quota for tests: made as root, removed afterwards, skipped where the
machine cannot (not root, no writable cpu controller, v1 or v2).

    with cpu_quota_cgroup(1.0) as cg:
        subprocess.run(cg.wrap([sys.executable, "-m", "gpudiag", "report"]))  # runs inside the cgroup

`wrap` prefixes a command with a shell that moves itself into the cgroup and then execs it, so the
command and every process it starts are limited from their first instruction.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from typing import Iterator, List, Optional

import pytest

V1_CPU = "/sys/fs/cgroup/cpu"
V2_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


class QuotaCgroup:
    """One cgroup folder with `cpus` CPUs of quota per `period_us`."""

    def __init__(self, path: str, version: int, cpus: float, period_us: int):
        self.path, self.version, self.cpus, self.period_us = path, version, cpus, period_us

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def wrap(self, cmd: List[str]) -> List[str]:
        """`cmd`, started inside this cgroup."""
        return ["/bin/sh", "-c", f'echo $$ > "{self.procs_file}" && exec "$@"', "sh", *cmd]

    def pids(self) -> List[int]:
        try:
            with open(self.procs_file) as fh:
                return [int(x) for x in fh.read().split()]
        except OSError:
            return []

    def stat(self) -> dict:
        with open(os.path.join(self.path, "cpu.stat")) as fh:
            return {k: int(v) for k, v in (line.split() for line in fh if len(line.split()) == 2)}


def _writable_v2_root() -> Optional[str]:
    for r in V2_ROOTS:
        try:
            with open(os.path.join(r, "cgroup.controllers")) as fh:
                if "cpu" in fh.read().split():
                    return r
        except OSError:
            continue
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def cpu_quota_cgroup(cpus: float, period_us: int = 100_000) -> Iterator[QuotaCgroup]:
    """A fresh cgroup limited to `cpus` CPUs; skips the test where one cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a cgroup with a CPU quota")
    name = f"gpudiag-test-{uuid.uuid4().hex[:8]}"
    quota = max(1000, int(cpus * period_us))
    cg: Optional[QuotaCgroup] = None
    try:
        if os.path.exists(os.path.join(V1_CPU, "cpu.cfs_quota_us")):
            path = os.path.join(V1_CPU, name)
            os.mkdir(path)
            cg = QuotaCgroup(path, 1, cpus, period_us)
            _write(os.path.join(path, "cpu.cfs_period_us"), str(period_us))
            _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
        else:
            root = _writable_v2_root()
            if root is None:
                pytest.skip("no cgroup cpu controller to write here (neither v1 cpu nor v2 with cpu enabled)")
            try:
                _write(os.path.join(root, "cgroup.subtree_control"), "+cpu")
            except OSError:
                pass  # already enabled, or the root has processes: mkdir below tells
            path = os.path.join(root, name)
            os.mkdir(path)
            cg = QuotaCgroup(path, 2, cpus, period_us)
            _write(os.path.join(path, "cpu.max"), f"{quota} {period_us}")
    except OSError as exc:
        if cg is not None:
            with contextlib.suppress(OSError):
                os.rmdir(cg.path)
        pytest.skip(f"cannot create a cgroup with a CPU quota here: {exc}")
    try:
        yield cg
    finally:
        # Nothing may outlive the test: kill what is left inside, then remove the folder.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pids = cg.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.rmdir(cg.path)
