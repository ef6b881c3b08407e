"""The start server: probe processes forked from an interpreter that has imported torch once (Linux).

A spawned probe process pays a fresh interpreter and `import torch` (one to several seconds on a small
machine), and the gil and cycle probes each paid it again. For the probes that ask for it
(`Probe.preload`) the runner starts one multiprocessing forkserver per run, whose preloaded modules are
gpudiag._server_init (Ctrl-C ignored, output to /dev/null, torch imported and its cost measured:
gpudiag.measure.torch_import) and those probes' own modules. Each such probe process is then forked
from it and starts in milliseconds. It is still a process of its own, with its own deadline, log and
process tree, so a probe that hangs or crashes costs only itself: the server never runs probe code, and
the next probe is forked from the same untouched interpreter. The server imports torch while the first
probes (system, driver) run in spawned processes.

    server = StartServer(["gpudiag.probes.gil.probe"])
    server.start()                 # False where it cannot be used: then every probe is spawned as before
    ctx = server.context(timeout_s)  # the forkserver context once the server is ready; None: spawn instead
    server.stop()                  # always: no process outlives the run

Readiness is learnt from a first, empty request sent from a background thread: the server answers it
(with the pid of a child that exits at once) only after its preloading is done. A server that crashed,
or that is not ready within a probe's deadline, is not used again in this run.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from typing import List, Optional

SERVER_INIT = "gpudiag._server_init"
_STOP_WAIT_S = 5.0


class _Ready:
    """What the first request asks the server to run: nothing (spawn._main calls `_bootstrap` and exits with its
    value). Its pid arriving says the server is ready."""

    def _bootstrap(self, parent_sentinel=None) -> int:
        return 0


class StartServer:
    """One run's start server; see the module docstring."""

    def __init__(self, modules: List[str]):
        self._modules = [SERVER_INIT] + [m for m in dict.fromkeys(modules) if m != SERVER_INIT]
        self._started = False
        self._done = threading.Event()  # the readiness request ended (ready, or failed)
        self._ready = False
        self.failed: Optional[str] = None  # why it is not used (any more)
        self._thread: Optional[threading.Thread] = None
        self._saved_preload: Optional[list] = None
        self._pid: Optional[int] = None

    # -- life cycle --------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Launch the server (it preloads in the background); False when it cannot be used here."""
        from multiprocessing import forkserver

        from gpudiag.platform import signals

        fs = forkserver._forkserver
        if getattr(fs, "_forkserver_pid", None) is not None:  # this program's own forkserver: not ours to stop
            self.failed = "another forkserver already runs in this process"
            return False
        self._saved_preload = list(getattr(fs, "_preload_modules", ["__main__"]))
        fs.set_forkserver_preload(self._modules)
        try:
            # The tracker first: starting it unblocks the stop signals (see runner._start_tracker).
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
            with signals.blocked():  # inherited by the server and every process it forks, until they set their own
                fs.ensure_running()
        except OSError as exc:  # no process or file descriptor left: the probes are spawned (and fail) as before
            fs.set_forkserver_preload(self._saved_preload)
            self.failed = f"could not start it ({type(exc).__name__}: {exc})"
            return False
        self._started = True
        self._pid = getattr(fs, "_forkserver_pid", None)
        self._thread = threading.Thread(target=self._ask_ready, name="gpudiag-start-server", daemon=True)
        self._thread.start()
        return True

    def _ask_ready(self) -> None:
        """Background thread: send the empty request; its answer (a pid) comes once preloading is done."""
        from multiprocessing import forkserver

        try:
            status_r, data_w = forkserver.connect_to_new_process([])
            try:
                with open(data_w, "wb", closefd=True) as fh:
                    pickle.dump({}, fh)  # preparation data: nothing to set up
                    pickle.dump(_Ready(), fh)
                forkserver.read_signed(status_r)  # the child's pid: the server has finished preloading
                self._ready = True
            finally:
                os.close(status_r)  # its exit code is not needed
        # OSError/EOFError: the server died (crashed while preloading, or stopped); anything else from
        # multiprocessing's internals must not end the run either: the probes are then spawned.
        except Exception as exc:
            self.failed = f"it did not start ({type(exc).__name__}: {exc})"
        finally:
            self._done.set()

    def context(self, timeout_s: float):
        """The forkserver context once the server is ready (waiting at most timeout_s, in short steps so a stop
        signal is handled meanwhile); None when it is not to be used: the caller spawns instead."""
        if not self._started or self.failed:
            return None
        end = time.monotonic() + max(0.0, timeout_s)
        while not self._done.wait(min(0.1, max(0.0, end - time.monotonic()))):
            if time.monotonic() >= end:
                self.failed = f"it had not finished importing torch after {timeout_s:g} s"
                self.stop()  # not used again: it must not go on loading the machine
                return None
        if not self._ready or not self._alive():
            self.failed = self.failed or "it ended during the run"
            self.stop()
            return None
        return multiprocessing.get_context("forkserver")

    @property
    def waiting_for_import(self) -> bool:
        """True while the server is still preloading (a probe waiting for it is waiting for torch's import)."""
        return self._started and not self._done.is_set()

    def _alive(self) -> bool:
        """The server is still running (not ended, nor a zombie)."""
        import psutil

        from multiprocessing import forkserver

        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid is None or pid != self._pid:
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def stop(self) -> None:
        """Stop the server (killed: it holds nothing to flush, and a process forked from it that is still alive
        would otherwise keep it waiting) and forget it. Idempotent."""
        from multiprocessing import forkserver

        if not self._started:
            return
        self._started = False
        fs = forkserver._forkserver
        deadline = time.monotonic() + _STOP_WAIT_S
        while True:  # the readiness thread may relaunch a server that died before it connected: stop that too
            pid = getattr(fs, "_forkserver_pid", None)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:  # already gone
                    pass
            if self._thread is None or not self._thread.is_alive() or time.monotonic() > deadline:
                break
            self._thread.join(0.1)
        try:
            # CPython's own (3.7+), absent from the stubs: waits for the killed server, closes its pipe
            fs._stop()  # type: ignore[attr-defined]
        except (OSError, ChildProcessError, AttributeError):  # already reaped by a relaunch check: forget it
            for name in ("_forkserver_pid", "_forkserver_address"):
                if hasattr(fs, name):
                    setattr(fs, name, None)
        if self._saved_preload is not None:
            fs.set_forkserver_preload(self._saved_preload)
