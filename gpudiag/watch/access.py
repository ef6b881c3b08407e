"""May this watcher read another process? Linux Yama ptrace_scope, CAP_SYS_PTRACE, and the advice.

Reading a process's memory (py-spy) needs ptrace rights; reading its /proc counters (psutil)
needs much less. Under Yama `ptrace_scope=1` (Ubuntu's and Debian's default) only an ancestor of
the target, or a tracer the target declared with prctl(PR_SET_PTRACER), may attach; 2 needs
CAP_SYS_PTRACE; 3 forbids attaching altogether. Containers drop CAP_SYS_PTRACE unless started
with `--cap-add SYS_PTRACE`. A process of another user needs root whatever the scope.

`root` is the seam for tests: a folder laid out like / with proc/sys/kernel/yama/ptrace_scope.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional

from gpudiag import platform

CAP_SYS_PTRACE = 19
# include/uapi/linux/prctl.h: PR_SET_PTRACER is "Yama" in ASCII.
PR_SET_PTRACER = 0x59616D61

INSTALL_HINT = "install it with `pip install 'gpudiag[watch]'` (or `pip install py-spy`)"


def ptrace_scope(root: str = "/") -> Optional[int]:
    """Yama's kernel.yama.ptrace_scope (0-3), or None where Yama is absent (or not Linux)."""
    try:
        with open(os.path.join(root, "proc/sys/kernel/yama/ptrace_scope"), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def has_cap_sys_ptrace(root: str = "/") -> Optional[bool]:
    """Whether this process's effective capabilities include CAP_SYS_PTRACE; None if unreadable."""
    try:
        with open(os.path.join(root, "proc/self/status"), encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def allow_tracer(pid: int) -> bool:
    """prctl(PR_SET_PTRACER, pid) in the calling process: let `pid` and its descendants read it.

    Called in the job's process between fork and exec (Popen preexec_fn), so that py-spy, a child
    of the watcher and not an ancestor of the job, may read the job under ptrace_scope=1. The
    declaration belongs to the process and survives exec; the job's own workers do not inherit
    it. Returns False where it is refused or meaningless (no Yama: EINVAL).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def needs_tracer_declaration(root: str = "/") -> bool:
    """True where a launched job must declare the watcher as its tracer (Linux, Yama scope 1)."""
    return platform.YAMA_PTRACE and ptrace_scope(root) == 1


def denied_advice(pid: int, launched: bool, kind: Optional[str] = None, root: str = "/",
                  euid: Optional[int] = None, target_uid: Optional[int] = None) -> str:
    """What to do when reading process `pid` was refused, in one sentence for the report.

    launched: the job is the watcher's own child (the declared-tracer path was taken).
    The other arguments are seams for tests; by default they are read from this machine.
    """
    kind = kind or platform.KIND
    if kind == "macos":
        return ("macOS lets only root read another process's memory: run `sudo gpudiag watch ...` "
                "(System Integrity Protection also blocks Apple's own /usr/bin/python3)")
    if kind == "windows":
        return ("Windows refused to open the process: run gpudiag from an elevated (administrator) "
                "terminal, or as the same user as the job")
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else None
    if target_uid is None:
        try:
            import psutil

            target_uid = psutil.Process(pid).uids().real
        except ImportError:  # without psutil the owner is unknown; the advice stays general
            target_uid = None
        except (psutil.Error, OSError, ValueError):  # gone or refused (NoSuchProcess, AccessDenied), or a bad pid
            target_uid = None
    if euid is not None and target_uid is not None and euid != 0 and target_uid != euid:
        return ("the job runs as another user: only root may read it; run `sudo gpudiag watch --pid ...`")
    scope = ptrace_scope(root)
    cap = has_cap_sys_ptrace(root)
    if euid == 0 and cap is False:
        return ("this root lacks CAP_SYS_PTRACE, as in a container: start the container with "
                "`--cap-add SYS_PTRACE` (Kubernetes: securityContext.capabilities.add: [SYS_PTRACE])")
    if scope == 3:
        return ("kernel.yama.ptrace_scope=3 forbids reading any process until reboot; "
                "the GIL part cannot run on this machine")
    if scope == 2:
        return ("kernel.yama.ptrace_scope=2 lets only root (CAP_SYS_PTRACE) read another process: "
                "run gpudiag with sudo, or `sudo sysctl kernel.yama.ptrace_scope=1` and launch the job "
                "under `gpudiag watch -- ...`")
    if scope == 1:
        if launched:
            return ("kernel.yama.ptrace_scope=1: the job allowed gpudiag to read it, but this process was "
                    "started by the job and did not; run it with sudo, or `sudo sysctl kernel.yama.ptrace_scope=0` "
                    "for the session")
        return ("kernel.yama.ptrace_scope=1 lets only a parent process read another one: start the job as "
                "`gpudiag watch -- <command>` instead of attaching, or run `sudo gpudiag watch --pid ...`")
    return ("the operating system refused to let py-spy read the process; run gpudiag as the job's user "
            "or with sudo (in a container: `--cap-add SYS_PTRACE`)")
