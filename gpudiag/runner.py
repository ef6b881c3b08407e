"""Decides what runs, isolates it in a spawned child, times it, and never crashes.

This module holds gpudiag's only catch-all for a probe's own errors (`_run_inline`): whatever a
probe raises becomes a `failed` result. The other broad handlers in the package either re-raise
after cleaning up (`except BaseException: ...; raise`) or guard a background sampler or a
best-effort fact and say so in a comment. A probe ends `ok`, `skipped` (with what is missing
and how to get it) or `failed` (with the exception, the timeout or the signal in words). The
parent process never imports torch nor initialises CUDA: probes that touch either run in a child
started with `spawn`, because CUDA state does not survive fork.
"""

from __future__ import annotations

import errno
import importlib.util
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import psutil

from gpudiag import capabilities, platform
from gpudiag.platform import signals
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, ProbeSkip
from gpudiag.report.atomic import unlink_quietly
from gpudiag.report.contract import check_timeout  # the one timeout rule (api and the CLI ask it too)
from gpudiag.startserver import StartServer

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
NOT_RUN_PREFIX = "not run"

# on_event(probe_name, phase, payload): phase is "start" (payload: timeout_s) or "end" (payload: result)
EventCallback = Callable[[str, str, object], None]

_POLL_S = 0.05
_STDERR_TAIL_CHARS = 2000


def result(status: str, reason: str = "", duration_s: float = 0.0, data=None, findings=None) -> dict:
    """One probe result dict {status, reason, duration_s (rounded to ms), data, findings}: the only shape the report holds for a probe."""
    return {
        "status": status,
        "reason": reason,
        "duration_s": round(duration_s, 3),
        "data": data if data is not None else {},
        "findings": list(findings or []),
    }


def _describe_exit(exitcode: Optional[int]) -> str:
    """Words for how a child ended without reporting back."""
    if exitcode is None:
        return "ended without a result"
    if exitcode < 0:
        signum = -exitcode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == getattr(signal, "SIGKILL", 9):
            return f"killed by signal {signum} ({name}) - likely the out-of-memory killer"
        if signum in (getattr(signal, "SIGSEGV", 11), getattr(signal, "SIGBUS", 7), getattr(signal, "SIGABRT", 6)):
            return f"crashed with signal {signum} ({name})"
        return f"killed by signal {signum} ({name})"
    if exitcode == 137:  # a shell or container reports SIGKILL as 128 + 9
        return "exited with code 137 (SIGKILL) - likely the out-of-memory killer"
    if platform.ACCESS_VIOLATION_EXIT_CODE is not None and exitcode == platform.ACCESS_VIOLATION_EXIT_CODE:
        return "crashed with an access violation (0xC0000005)"
    return f"exited with code {exitcode} without a result"


def _run_inline(probe: Probe, ctx: ProbeContext) -> dict:
    """Run a probe in this process, converting every outcome into a result dict (no timing)."""
    try:
        out = probe.run(ctx)
    except ProbeSkip as exc:
        return result(SKIPPED, str(exc))
    except Exception as exc:  # the runner is the one place that catches everything
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        return result(FAILED, f"{type(exc).__name__}: {exc}{where}")
    if not isinstance(out, ProbeOutput):
        return result(FAILED, f"probe returned {type(out).__name__}, expected ProbeOutput")
    return result(OK, "", data=out.data, findings=out.findings)


def _child_main(probe: Probe, ctx: ProbeContext, conn, stderr_path: str) -> None:
    """Entry point of the spawned child: run the probe, send one result back, leave no process behind."""
    signals.child_defaults()
    platform.become_subreaper()  # orphans the probe leaves are still found and ended
    # The child's chatter (torch warnings, probe prints) goes to a file; its tail helps explain a crash.
    try:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass
    res = _run_inline(probe, ctx)
    try:
        conn.send(res)
    finally:
        conn.close()
        _kill_descendants(os.getpid())


def _is_resource_tracker(p: psutil.Process) -> bool:
    """multiprocessing's resource tracker ends by itself once its users are gone, and cleans up as it goes."""
    try:
        return any(part.startswith("from multiprocessing.resource_tracker import main") for part in p.cmdline())
    except psutil.Error:
        return False


def _descendants(pid: int) -> List[psutil.Process]:
    """Every live process below pid (recursive), [] when it is already gone: what must be ended with the probe."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_all(procs: List[psutil.Process]) -> None:
    """SIGKILL every process given and wait for them (a few seconds at most)."""
    procs = [p for p in procs if not _is_resource_tracker(p)]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def _kill_descendants(pid: int) -> None:
    """End what a probe started and left running (a worker pool not closed, a subprocess of the user's step)."""
    _kill_all(_descendants(pid))


def _kill_tree(proc) -> None:
    """Kill a child and everything it started (gil/contention probes spawn workers of their own)."""
    kids = _descendants(proc.pid)
    if proc.is_alive():
        proc.kill()
    _kill_all(kids)
    proc.join(5)


def _tail(path: str) -> str:
    """The last 2000 characters of the child's stderr log ("" when unreadable): quoted in a failed result to explain a crash."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _STDERR_TAIL_CHARS))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _os_failure(what: str, exc: OSError) -> str:
    """A start-up failure in words, naming the limit that is the usual cause."""
    hints = {errno.EAGAIN: "the per-user process limit is reached (ulimit -u / RLIMIT_NPROC)",
             errno.ENOMEM: "not enough memory to start a process",
             errno.EMFILE: "too many open files (ulimit -n / RLIMIT_NOFILE)",
             errno.ENFILE: "the system's open-file table is full",
             errno.ENOSPC: "no space left for the probe's log file",
             errno.EACCES: "permission denied"}
    hint = hints.get(exc.errno or 0)
    detail = f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"could not {what}: {hint} ({detail})" if hint else f"could not {what} ({detail})"


_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _start_tracker() -> bool:
    """Start multiprocessing's resource tracker (if needed) before the child; True if this call started it.

    Started here, outside `signals.blocked()`, because starting it unblocks SIGINT/SIGTERM. Its
    "leaked semaphore" warnings are silenced: they are about the probe children this runner killed
    on purpose, and the tracker still removes what they left.
    """
    if not platform.HAS_RESOURCE_TRACKER:  # Windows: spawn uses no resource tracker
        return False
    from multiprocessing import resource_tracker

    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)  # read when the tracker's command line is built
    tracker = resource_tracker._resource_tracker
    was_running = getattr(tracker, "_fd", None) is not None
    resource_tracker.ensure_running()
    return not was_running


def _stop_tracker(wait_s: float = 5.0) -> None:
    """Stop the resource tracker this runner started, so no helper process outlives the run.

    Closing its pipe makes it clean up what is still registered and exit; if a process that
    should be gone still holds the pipe, the tracker is killed after `wait_s` rather than waited for.
    """
    if not platform.HAS_RESOURCE_TRACKER:
        return
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    lock = getattr(tracker, "_lock", None)
    if lock is None or not lock.acquire(timeout=wait_s):
        return
    try:
        fd, pid = getattr(tracker, "_fd", None), getattr(tracker, "_pid", None)
        if fd is None:
            return
        tracker._fd = tracker._pid = None  # type: ignore[attr-defined]  # CPython's own, absent from the stubs
        try:
            os.close(fd)
        except OSError:
            pass
    finally:
        lock.release()
    if pid is None:
        return
    deadline = time.monotonic() + wait_s
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.02)
    except ChildProcessError:
        pass


_started_tracker = False


def _receive(recv) -> Tuple[Optional[dict], str]:
    """The child's result, or None and why it could not be read."""
    try:
        res = recv.recv()
    except (EOFError, OSError):
        return None, ""  # the child died mid-send or before sending: judged by its exit code
    except (pickle.UnpicklingError, AttributeError, ImportError, TypeError, ValueError) as exc:
        return None, f"its result could not be read ({type(exc).__name__}: {exc})"
    if not isinstance(res, dict) or res.get("status") not in (OK, SKIPPED, FAILED):
        return None, "it sent a malformed result"
    return res, ""


def _run_isolated(probe: Probe, ctx: ProbeContext, timeout_s: float, server: Optional[StartServer] = None) -> dict:
    """Run the probe in a child (spawned, or forked from the start server) under a deadline; the log file, pipe and
    processes never outlive it."""
    mp = None
    if server is not None and probe.preload:
        t0, limit = time.monotonic(), timeout_s
        waiting = server.waiting_for_import
        mp = server.context(limit)  # waits while the server imports torch: this probe's own import, as before
        timeout_s = limit - (time.monotonic() - t0)  # the wait is part of the probe's time
        if mp is None and waiting and timeout_s <= 0:
            return result(FAILED, f"timed out after {limit:g} s while torch was imported for it (in the start "
                                  "server its process is forked from)")
    mp = mp or multiprocessing.get_context("spawn")
    made: Dict[str, Any] = {}  # what exists so far, for the cleanup in `finally`
    proc = None
    try:
        with signals.deferred():  # a stop signal waits until what was made is recorded for the cleanup
            try:
                fd, made["log"] = tempfile.mkstemp(prefix=f"gpudiag-{probe.name}-", suffix=".log")
                os.close(fd)
            except OSError as exc:
                return result(FAILED, _os_failure("create the probe's log file", exc))
            try:
                made["recv"], made["send"] = mp.Pipe(duplex=False)
            except OSError as exc:
                return result(FAILED, _os_failure("open a pipe to the probe's process", exc))
        stderr_path, recv, send = str(made["log"]), made["recv"], made["send"]
        proc = mp.Process(target=_child_main, args=(probe, ctx, send, stderr_path),
                          name=f"gpudiag-probe-{probe.name}", daemon=False)
        try:
            _start(proc)
        except OSError as exc:
            return result(FAILED, _os_failure("start the probe's process", exc))
        finally:
            send.close()
        return _await(proc, recv, stderr_path, timeout_s, _handle(proc.pid))
    except BaseException:  # cleanup only, re-raised: a Ctrl-C or signal here must not leave the child running
        if proc is not None and proc.pid is not None:  # start() itself may have raised: nothing to kill
            _kill_tree(proc)
        raise
    finally:
        for key in ("recv", "send"):
            if key in made:
                made[key].close()
        if "log" in made:
            unlink_quietly(str(made["log"]))


def _start(proc) -> None:
    """Start the child with stop signals blocked (it inherits them so), after the resource tracker."""
    global _started_tracker
    with signals.deferred():
        _started_tracker = _start_tracker() or _started_tracker
        with signals.blocked():  # no half-started child printing a KeyboardInterrupt traceback
            proc.start()


def _handle(pid: Optional[int]) -> Optional[psutil.Process]:
    """A psutil handle on the child just started (None if it already ended): a child forked from the start server
    is that server's child, and if the server died its exit would be misread, so the end checks the process itself."""
    try:
        return psutil.Process(pid) if pid is not None else None
    except psutil.Error:
        return None


def _still_running(p: psutil.Process) -> bool:
    """The process runs (not ended, nor a zombie waiting to be reaped)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _await(proc, recv, stderr_path: str, timeout_s: float, child: Optional[psutil.Process] = None) -> dict:
    """The child's result, or a failed result naming the timeout, the signal or the exit code."""
    deadline = time.monotonic() + timeout_s
    res, why = None, ""
    while True:
        if recv.poll(_POLL_S):
            res, why = _receive(recv)
            break
        if not proc.is_alive():
            if recv.poll(0):  # it may have sent just before exiting
                res, why = _receive(recv)
            break
        if time.monotonic() > deadline:
            with signals.deferred():
                _kill_tree(proc)
            tail = _tail(stderr_path)
            return result(FAILED, f"timed out after {timeout_s:g} s", data={"stderr_tail": tail} if tail else None)
    leftovers = _descendants(proc.pid)
    proc.join(10)
    with signals.deferred():
        if proc.is_alive():
            _kill_tree(proc)
        if child is not None and _still_running(child):
            leftovers.append(child)  # said to have ended, yet runs: its start server died (see _handle)
        _kill_all([p for p in leftovers if p.is_running()])
    if res is None:
        tail = _tail(stderr_path)
        reason = _describe_exit(proc.exitcode) + (f"; {why}" if why else "")
        return result(FAILED, reason, data={"stderr_tail": tail} if tail else None)
    return res


def run_probe(probe: Probe, ctx: ProbeContext, caps=None, server: Optional[StartServer] = None) -> dict:
    """Run one probe, honouring its capabilities and isolation; always returns a result dict."""
    started = time.perf_counter()
    why_not = capabilities.missing(probe.needs, caps)
    if why_not:
        return result(SKIPPED, why_not)
    if probe.isolate:
        res = _run_isolated(probe, ctx, ctx.timeout_s, server)
    else:
        res = _run_inline(probe, ctx)
    res["duration_s"] = round(time.perf_counter() - started, 3)
    return res


def run_probes(probes: Iterable[Probe], mode: str = "quick", timeout_s: Optional[float] = None,
               options: Optional[dict] = None, on_event: Optional[EventCallback] = None,
               caps=None) -> Dict[str, object]:
    """Run probes in order. Returns {"results": {name: result}, "interrupted": bool, "signal": int|None}.

    Ctrl-C (KeyboardInterrupt) or a stop signal (`signals.Interrupted`, with the CLI's handlers)
    ends the probe in flight, which is recorded as interrupted with its elapsed time; the rest are
    marked not run, and what finished is returned so the caller can still write a report.
    """
    global _started_tracker
    timeout_s = check_timeout(timeout_s)
    probes = list(probes)
    results: Dict[str, dict] = {}
    signum: Optional[int] = None
    interrupted = False
    i, started = 0, time.perf_counter()
    server: Optional[StartServer] = None
    try:  # a BaseException other than a stop (a bug) propagates; the tracker then ends with this process
        with signals.deferred():  # the server is recorded before a stop signal can end the run
            server = _start_server(probes, caps)
        for i in range(len(probes)):
            probe = probes[i]
            started = time.perf_counter()
            t = timeout_s if timeout_s is not None else probe.default_timeout(mode)
            ctx = ProbeContext(mode=mode, timeout_s=t, options=dict(options or {}),
                               results={k: v["data"] for k, v in results.items() if v["status"] == OK})
            if on_event:
                on_event(probe.name, "start", t)
            res = run_probe(probe, ctx, caps, server)
            results[probe.name] = res
            if on_event:
                on_event(probe.name, "end", res)
            signals.check_pending()
    except (KeyboardInterrupt, signals.Interrupted) as exc:
        interrupted = True
        signum = exc.signum if isinstance(exc, signals.Interrupted) else signal.SIGINT
        who = signals.label(signum)
        if i < len(probes) and probes[i].name not in results:
            elapsed = time.perf_counter() - started
            res = result(SKIPPED, f"interrupted by {who} after {elapsed:.1f} s while running; "
                                  "its partial measurements were discarded", duration_s=elapsed)
            results[probes[i].name] = res
            if on_event:
                on_event(probes[i].name, "end", res)
        for rest in probes[i + 1:]:
            results[rest.name] = result(SKIPPED, f"{NOT_RUN_PREFIX}: interrupted by {who}")
    except BaseException:  # cleanup and re-raise (a bug): the start server must not outlive it
        if server is not None:
            server.stop()
        raise
    if server is not None:  # before the tracker: the processes forked from it held the tracker's pipe
        try:
            with signals.deferred():
                server.stop()
        except signals.Interrupted as exc:  # every probe finished; the caller still writes the report
            interrupted, signum = True, exc.signum
    if _started_tracker:
        _started_tracker = False
        try:
            with signals.deferred():
                _stop_tracker()
        except signals.Interrupted as exc:  # every probe finished; the caller still writes the report
            interrupted, signum = True, exc.signum
    return {"results": results, "interrupted": interrupted, "signal": signum}


def _start_server(probes: List[Probe], caps) -> Optional[StartServer]:
    """The run's start server, launched now so it imports torch while the first probes run; None where no probe
    that will run asks for it, torch is not installed, or the platform cannot fork (gpudiag.startserver)."""
    global _started_tracker
    modules = [p.run.__module__ for p in probes
               if p.isolate and p.preload and not capabilities.missing(p.needs, caps)]
    if not modules or not platform.start_server_supported() or importlib.util.find_spec("torch") is None:
        return None
    _started_tracker = _start_tracker() or _started_tracker
    server = StartServer(modules)
    return server if server.start() else None


def selected(all_probes: List[Probe], only: Iterable[str] = (), skip: Iterable[str] = ()) -> List[Probe]:
    """Filter by --only/--skip; unknown names raise ValueError naming the known ones."""
    known = {p.name for p in all_probes}
    only, skip = list(only), list(skip)
    unknown = [n for n in only + skip if n not in known]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; known probes: {', '.join(sorted(known))}")
    return [p for p in all_probes if (not only or p.name in only) and p.name not in skip]
