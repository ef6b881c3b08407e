"""Decides what runs, isolates it in a spawned child, times it, and never crashes.

This is the only broad `except` in gpudiag. A probe ends `ok`, `skipped` (with what is missing
and how to get it) or `failed` (with the exception, the timeout or the signal in words). The
parent process never imports torch nor initialises CUDA: probes that touch either run in a child
started with `spawn`, because CUDA state does not survive fork.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
from typing import Callable, Dict, Iterable, List, Optional

import psutil

from gpudiag import capabilities
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, ProbeSkip

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
NOT_RUN_PREFIX = "not run"

# on_event(probe_name, phase, payload): phase is "start" (payload: timeout_s) or "end" (payload: result)
EventCallback = Callable[[str, str, object], None]

_POLL_S = 0.05
_STDERR_TAIL_CHARS = 2000


def result(status: str, reason: str = "", duration_s: float = 0.0, data=None, findings=None) -> dict:
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
    if sys.platform == "win32" and exitcode == 0xC0000005:
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
    """Entry point of the spawned child: run the probe, send one result back."""
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


def _kill_tree(proc) -> None:
    """Kill a child and everything it started (gil/contention probes spawn workers of their own)."""
    try:
        parent = psutil.Process(proc.pid)
        kids = parent.children(recursive=True)
    except psutil.Error:
        kids = []
    for p in kids:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.is_alive():
        proc.kill()
    proc.join(5)
    psutil.wait_procs(kids, timeout=5)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _STDERR_TAIL_CHARS))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _run_isolated(probe: Probe, ctx: ProbeContext, timeout_s: float) -> dict:
    mp = multiprocessing.get_context("spawn")
    recv, send = mp.Pipe(duplex=False)
    fd, stderr_path = tempfile.mkstemp(prefix=f"gpudiag-{probe.name}-", suffix=".log")
    os.close(fd)
    proc = mp.Process(target=_child_main, args=(probe, ctx, send, stderr_path),
                      name=f"gpudiag-probe-{probe.name}", daemon=False)
    try:
        proc.start()
        send.close()
        deadline = time.monotonic() + timeout_s
        res = None
        while True:
            if recv.poll(_POLL_S):
                try:
                    res = recv.recv()
                except (EOFError, OSError):
                    res = None  # the child died mid-send or before sending: judged by its exit code
                break
            if not proc.is_alive():
                # It may have sent just before exiting.
                if recv.poll(0):
                    try:
                        res = recv.recv()
                    except (EOFError, OSError):
                        res = None
                break
            if time.monotonic() > deadline:
                _kill_tree(proc)
                return result(FAILED, f"timed out after {timeout_s:g} s",
                              data={"stderr_tail": _tail(stderr_path)} if _tail(stderr_path) else None)
        proc.join(10)
        if proc.is_alive():
            _kill_tree(proc)
        if res is None:
            tail = _tail(stderr_path)
            return result(FAILED, _describe_exit(proc.exitcode), data={"stderr_tail": tail} if tail else None)
        return res
    except BaseException:
        if proc.pid is not None:  # start() itself may have raised; then there is nothing to kill
            _kill_tree(proc)
        raise
    finally:
        recv.close()
        try:
            os.unlink(stderr_path)
        except OSError:
            pass


def run_probe(probe: Probe, ctx: ProbeContext, caps=None) -> dict:
    """Run one probe, honouring its capabilities and isolation; always returns a result dict."""
    started = time.perf_counter()
    why_not = capabilities.missing(probe.needs, caps)
    if why_not:
        return result(SKIPPED, why_not)
    if probe.isolate:
        res = _run_isolated(probe, ctx, ctx.timeout_s)
    else:
        res = _run_inline(probe, ctx)
    res["duration_s"] = round(time.perf_counter() - started, 3)
    return res


def run_probes(probes: Iterable[Probe], mode: str = "quick", timeout_s: Optional[float] = None,
               options: Optional[dict] = None, on_event: Optional[EventCallback] = None,
               caps=None) -> Dict[str, object]:
    """Run probes in order. Returns {"results": {name: result}, "interrupted": bool}.

    Ctrl-C stops the probe in flight, marks it and the rest as not run, and returns what finished,
    so the caller can still write a report.
    """
    probes = list(probes)
    results: Dict[str, dict] = {}
    interrupted = False
    for i, probe in enumerate(probes):
        t = timeout_s if timeout_s is not None else probe.default_timeout(mode)
        ctx = ProbeContext(mode=mode, timeout_s=t, options=dict(options or {}),
                           results={k: v["data"] for k, v in results.items() if v["status"] == OK})
        if on_event:
            on_event(probe.name, "start", t)
        try:
            res = run_probe(probe, ctx, caps)
        except KeyboardInterrupt:
            interrupted = True
            for rest in probes[i:]:
                results[rest.name] = result(SKIPPED, f"{NOT_RUN_PREFIX}: interrupted by Ctrl-C")
            break
        results[probe.name] = res
        if on_event:
            on_event(probe.name, "end", res)
    return {"results": results, "interrupted": interrupted}


def selected(all_probes: List[Probe], only: Iterable[str] = (), skip: Iterable[str] = ()) -> List[Probe]:
    """Filter by --only/--skip; unknown names raise ValueError naming the known ones."""
    known = {p.name for p in all_probes}
    only, skip = list(only), list(skip)
    unknown = [n for n in only + skip if n not in known]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; known probes: {', '.join(sorted(known))}")
    return [p for p in all_probes if (not only or p.name in only) and p.name not in skip]
