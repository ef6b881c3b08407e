"""A stop signal ends a fleet rank within seconds, even while it waits in native code.

torchrun stops every worker with SIGTERM as soon as one fails (and `srun --kill-on-bad-exit` does the same),
then kills them 30 s later. A Python signal handler runs only when the main thread runs Python again, which a
rank blocked in a gloo collective or a rendezvous may not do before the kill. The C-level handler, though,
writes the signal's number to the wakeup fd (signal.set_wakeup_fd) at once, so a watchdog thread blocked on
that fd wakes, calls `on_stop(signum)` (rank 0 writes the report of what it has), and ends the process with
the code it returns: os._exit, since the main thread may never come back from where it waits.

If the main thread meets the signal first (it was running Python: `Interrupted`), it calls `handle()` too;
whichever comes first does the work, the other waits for the end. Needs the stop-signal handlers of
gpudiag.platform.signals (the CLI installs them); without them (a library caller) the watchdog never wakes
and signals behave as they otherwise would.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Callable, Optional

from gpudiag.platform import signals

# How long the side that did not claim the stop waits for the other to end the process.
HANDOVER_WAIT_S = 300.0


class StopWatch:
    """`with StopWatch(on_stop): ...` on the main thread; on_stop(signum) -> exit code, called once."""

    def __init__(self, on_stop: Callable[[int], int]):
        self.on_stop = on_stop
        self._lock = threading.Lock()
        self._claimed = False
        self._reader: Optional[socket.socket] = None
        self._writer: Optional[socket.socket] = None
        self._old_fd: Optional[int] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "StopWatch":
        if threading.current_thread() is not threading.main_thread():
            return self  # set_wakeup_fd is the main thread's; a library caller in a thread keeps Python's rules
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        try:
            self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):  # not allowed here: no watchdog
            self._close_sockets()
            return self
        self._thread = threading.Thread(target=self._watch, name="gpudiag-fleet-stop", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        try:
            signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
        except (ValueError, OSError):
            pass
        self._close_sockets()
        self._thread.join(timeout=5)
        self._thread = None

    def _close_sockets(self) -> None:
        for s in (self._writer, self._reader):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self._reader = self._writer = None

    def _watch(self) -> None:
        """The watchdog: block on the wakeup fd; a stop signal's byte hands over to handle()."""
        reader = self._reader
        while reader is not None:
            try:
                data = reader.recv(64)
            except OSError:  # closed by __exit__
                return
            if not data:
                return
            for signum in data:
                if signum in signals.STOP_SIGNALS:
                    self.handle(signum)

    def handle(self, signum: int) -> None:
        """Stop: the first caller (the watchdog or the main thread) runs on_stop and ends the process with
        its code; a later caller waits for that end. Never returns."""
        with self._lock:
            first, self._claimed = not self._claimed, True
        if not first:
            threading.Event().wait(HANDOVER_WAIT_S)
            os._exit(signals.exit_code(signum))
        signals.mark_stopping(signum)  # later signals (and this one's Python handler) raise nothing
        code = signals.exit_code(signum)
        try:
            code = self.on_stop(signum)
        except SystemExit as exc:  # the writer met a problem and said so in one line, with its code
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001 - the process ends either way: say why in one line, not a traceback
            _say(f"gpudiag: error: stopped by {signals.label(signum)}, and the report could not be written: "
                 f"{type(exc).__name__}: {str(exc)[:200]}")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
    except (OSError, ValueError):
        pass
