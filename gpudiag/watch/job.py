"""The watched job: launched as the watcher's child, or attached to by pid; signals and exit codes.

Launched, the job inherits the terminal: stdin, stdout and stderr are the watcher's own (nothing
is piped, so prompts, progress bars and colours behave as without gpudiag), and it stays in the
watcher's process group, so Ctrl-C from the terminal reaches the job directly as it would in a
shell. The watcher ignores that SIGINT itself and keeps watching until the job has ended.
Signals sent to the watcher alone (SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, e.g. from a scheduler or
`kill`) are forwarded to the job, except those the terminal already delivered to the whole
foreground group, and a signal ignored when gpudiag started stays ignored for the job. Attached (--pid), the job is not the watcher's: signals end
the watch and the job keeps running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any, List, Optional, Sequence

from gpudiag.report.redact import SECRET_MARK, Redactor, looks_secret
from gpudiag.watch import access

# Exit codes of `gpudiag watch` itself (the job's own code is passed through otherwise).
EXIT_USAGE = 2
EXIT_WATCH_FAILED = 125     # the job ran but gpudiag could not write the report (as `timeout`, `env`)
EXIT_NOT_EXECUTABLE = 126   # as a shell: found but cannot be run
EXIT_NOT_FOUND = 127        # as a shell: no such command

FORWARDED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"))
                  if s is not None)


class LaunchError(Exception):
    """The command could not be started; `code` is the shell's exit code for it (126/127)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def exit_code_for(returncode: Optional[int]) -> int:
    """The exit code a shell would give for the job's returncode (a signal N as 128 + N)."""
    if returncode is None:
        return 0
    if returncode < 0:
        return 128 + (-returncode)
    return returncode & 0xFF if returncode > 255 else returncode


def describe_end(returncode: Optional[int]) -> str:
    """'exited with code 3', 'killed by signal 9 (SIGKILL)', 'crashed with signal 6 (SIGABRT)'."""
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exited with code {returncode}"
    num = -returncode
    try:
        name = signal.Signals(num).name
    except ValueError:
        name = f"signal {num}"
    crash = {getattr(signal, n, -1) for n in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGFPE", "SIGILL")}
    word = "crashed with" if num in crash else "killed by"
    hint = " - likely the out-of-memory killer" if name == "SIGKILL" else ""
    return f"{word} signal {num} ({name}){hint}"


def redact_command(argv: Sequence[str], identify: bool = True) -> List[str]:
    """The command line for the report: tokens masked, and the value after --token/--password too.

    The usual redaction pass also runs over the whole report; this adds what it cannot see from
    one string alone: a secret passed as its own argument after a flag that names it.
    """
    red = Redactor(identify)
    out = []
    prev = ""
    for arg in argv:
        arg = str(arg)
        flag = prev if prev.startswith("-") and "=" not in prev else ""
        if looks_secret(arg, strict=True):
            out.append(SECRET_MARK)
        else:
            out.append(red.text(arg, key=flag.lstrip("-")))
        prev = arg
    return out


def resolve(argv: Sequence[str]) -> str:
    """The program's path as the OS would run it; LaunchError (127/126) when it cannot be run."""
    prog = argv[0]
    if os.sep in prog or (os.altsep and os.altsep in prog):
        if not os.path.exists(prog):
            raise LaunchError(f"{prog}: no such file", EXIT_NOT_FOUND)
        if os.path.isdir(prog) or not os.access(prog, os.X_OK):
            raise LaunchError(f"{prog}: is not an executable file", EXIT_NOT_EXECUTABLE)
        return prog
    found = shutil.which(prog)
    if found is None:
        raise LaunchError(f"{prog}: command not found", EXIT_NOT_FOUND)
    return found


class Job:
    """A launched child (`launch`) or an attached process (`attach`)."""

    def __init__(self, pid: int, proc: Optional[subprocess.Popen], argv: Optional[List[str]], psutil: Any = None):
        if psutil is None:
            import psutil
        self.pid = pid
        self.proc = proc
        self.argv = argv
        self.psutil = psutil
        self.launched = proc is not None
        self.returncode: Optional[int] = None
        self.tracer_declared = False
        self.started = time.monotonic()
        self.ended: Optional[float] = None

    # ---- starting

    @classmethod
    def launch(cls, argv: Sequence[str], root: str = "/") -> "Job":
        """Start argv as a child that shares the terminal; raises LaunchError (126/127)."""
        argv = list(argv)
        resolve(argv)
        declare = access.needs_tracer_declaration(root)
        watcher = os.getpid()
        kw: dict = {}
        if declare:
            # Yama ptrace_scope=1: py-spy (a child of the watcher) is no ancestor of the job, so
            # the job names the watcher as its tracer before exec; see access.allow_tracer.
            kw["preexec_fn"] = lambda: access.allow_tracer(watcher)
        try:
            proc = subprocess.Popen(argv, close_fds=True, **kw)
        except FileNotFoundError:
            raise LaunchError(f"{argv[0]}: command not found", EXIT_NOT_FOUND) from None
        except PermissionError:
            raise LaunchError(f"{argv[0]}: permission denied", EXIT_NOT_EXECUTABLE) from None
        except OSError as exc:
            raise LaunchError(f"{argv[0]}: cannot start: {exc.strerror or exc}", EXIT_NOT_EXECUTABLE) from None
        job = cls(proc.pid, proc, argv)
        job.tracer_declared = declare
        return job

    @classmethod
    def attach(cls, pid: int, psutil: Any = None) -> "Job":
        """Attach to a running process; ValueError with one line when it cannot be watched."""
        if psutil is None:
            import psutil
        if pid == os.getpid():
            raise ValueError(f"--pid {pid} is gpudiag itself")
        try:
            proc = psutil.Process(pid)
            proc.status()
        except psutil.NoSuchProcess:
            raise ValueError(f"--pid {pid}: no such process") from None
        except psutil.AccessDenied:
            pass  # counters may still be readable; the parts that are not say so in the report
        try:
            if pid in {p.pid for p in psutil.Process(os.getpid()).parents()}:
                raise ValueError(f"--pid {pid} is a parent of gpudiag (its shell?): give the job's pid")
        except psutil.Error:
            pass
        job = cls(pid, None, None, psutil=psutil)
        try:
            job.argv = proc.cmdline() or None
        except psutil.Error:
            job.argv = None
        return job

    # ---- while it runs

    def poll(self) -> bool:
        """True while the job runs. A launched job's exit code is kept; an attached one has none."""
        if self.ended is not None:
            return False
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return True
            self.returncode = rc
        else:
            try:
                p = self.psutil.Process(self.pid)
                if p.is_running() and p.status() != self.psutil.STATUS_ZOMBIE:
                    return True
            except self.psutil.Error:
                pass
        self.ended = time.monotonic()
        return False

    def wait(self) -> int:
        """Block until a launched job ends (signals still forwarded); its returncode."""
        assert self.proc is not None
        while self.poll():
            time.sleep(0.1)
        return self.returncode

    def send(self, signum: int) -> None:
        """Forward a signal to a launched job (never to an attached one: it is not ours)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except OSError:
                pass


# Signals a terminal sends to its whole foreground process group (besides SIGINT).
_TERMINAL_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGQUIT", "SIGHUP")) if s is not None)


def _terminal_foreground() -> bool:
    """True when gpudiag (and so the job, in its process group) is the terminal's foreground group."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except (OSError, AttributeError):  # no terminal on stdin, or not POSIX
        return False


class SignalHandling:
    """While the watch runs: SIGINT ignored and SIGTERM & co. forwarded (launch), or ending the watch (attach).

    `stop_requested` is set when a signal asks the watch to end (attach mode, or launch mode after
    the report is written when --duration elapsed). Restores the previous handlers on exit.
    """

    def __init__(self, job_ref: "list", attach: bool):
        self.job_ref = job_ref
        self.attach = attach
        self.stop_requested: Optional[int] = None
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        """The signal handler while watching: ends an attached watch; for a launched job ignores
        what the terminal already sent to it (SIGINT, SIGQUIT, SIGHUP) and forwards the rest."""
        job = self.job_ref[0] if self.job_ref else None
        if self.attach:
            self.stop_requested = signum
        elif signum == signal.SIGINT:
            return  # the terminal sent it to the job as well
        elif signum in _TERMINAL_SIGNALS and _terminal_foreground():
            return  # Ctrl-\ or a hang-up: the terminal sent it to the whole foreground group, job included
        elif job is not None:
            job.send(signum)

    def __enter__(self) -> "SignalHandling":
        sigs = (signal.SIGINT,) + FORWARDED
        for s in sigs:
            try:
                # A signal ignored when gpudiag started (nohup, `&` in a script) stays ignored, so the
                # job inherits SIG_IGN as it would without gpudiag (a Python handler would reset to
                # the default in the child at exec).
                if signal.getsignal(s) == signal.SIG_IGN:
                    continue
                self._old[s] = signal.signal(s, self._handler)
            except (ValueError, OSError):  # not the main thread, or a signal this OS does not allow
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            try:
                signal.signal(s, old)
            except (ValueError, OSError):
                pass
