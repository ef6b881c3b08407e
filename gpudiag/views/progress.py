"""`[2/7] gil  running 12.3 s (limit 60 s)` on stderr while a probe runs, and the live status lines of `fleet` and
`watch` (LiveLine); silent when stderr is no terminal."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional


class Progress:
    """The runner's on_event callback for the terminal; every reason it prints is redacted first."""

    def __init__(self, total: int, enabled: bool, identify: bool = True):
        self.total, self.enabled, self.identify = total, enabled, identify
        self.index = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __call__(self, name: str, phase: str, payload) -> None:
        if not self.enabled:
            return
        if phase == "start":
            self.index += 1
            self._start_ticker(name, float(payload))
        else:
            self._stop_ticker()
            from gpudiag.report.redact import default_redactor
            from gpudiag.views.text import terminal_safe

            res = payload
            reason = terminal_safe(default_redactor(self.identify).text(res["reason"])) if res["reason"] else ""
            self._write(f"\r\033[K[{self.index}/{self.total}] {name:<11} {res['status']:<8} "
                        f"{res['duration_s']:.1f} s{' - ' + reason if reason else ''}\n")

    @staticmethod
    def _write(text: str) -> None:
        """Write one progress line to stderr, swallowing a closed terminal: losing progress must never stop a measurement."""
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):  # the terminal went away (SIGHUP): keep measuring
            pass

    def _start_ticker(self, name: str, timeout_s: float) -> None:
        """Start a daemon thread that redraws "running N s (limit M s)" every 0.25 s, so a long probe shows it is alive."""
        self._stop.clear()
        t0 = time.monotonic()

        def tick():
            """Redraw the running line until stopped (elapsed seconds against the probe's limit)."""
            while not self._stop.wait(0.25):
                self._write(f"\r\033[K[{self.index}/{self.total}] {name:<11} running  "
                            f"{time.monotonic() - t0:.1f} s (limit {timeout_s:g} s)")

        try:
            self._thread = threading.Thread(target=tick, daemon=True)
            self._thread.start()
        except RuntimeError:  # no thread under a process limit: progress is a luxury
            self._thread = None

    def _stop_ticker(self) -> None:
        """Stop and join the ticker thread before the probe's final line is written, so the two never interleave."""
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None


class LiveLine:
    """One status line on stderr, redrawn in place every `interval` seconds from text(), while something
    waits (rank 0 of `gpudiag fleet` waiting for the other ranks, `gpudiag watch` while the job runs);
    nothing when stderr is no terminal. start(text) / stop(): stop clears the line before anything else
    is printed.

    pinned=True keeps the line on the terminal's bottom row, outside a scroll region that holds every other
    row, for a line drawn while another program writes to the same terminal (the job `gpudiag watch`
    launched): the program's lines scroll above it untouched, where a line redrawn with a carriage return
    would be written into the middle of theirs. Each redraw saves and restores the cursor in one write, so
    the program goes on writing where it was; stop() gives the terminal its whole height back. Without a
    known terminal size (fewer than 3 rows) it falls back to the carriage-return line.
    """

    def __init__(self, enabled: bool, interval: float = 1.0, pinned: bool = False):
        self.enabled, self.interval, self.pinned = enabled, interval, pinned
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._rows = 0  # the pinned line's row (the terminal's height) while a scroll region is set

    @staticmethod
    def _size() -> tuple:
        """(columns, rows) of the terminal on stderr, (0, 0) when it has none."""
        import os

        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):  # no terminal (or a stream without a descriptor)
            return 0, 0
        return size.columns, size.lines

    def _pin(self, rows: int) -> None:
        """Make room on the bottom row and keep the other rows scrolling above it (as apt does for its
        progress line): a newline scrolls the screen when the cursor is on the last row, the region leaves
        that row out, and the cursor goes back up to where the newline left it."""
        self._rows = rows
        Progress._write(f"\n\0337\033[1;{rows - 1}r\0338\033[1A")

    def _unpin(self) -> None:
        """The whole screen scrolls again, and the bottom row is cleared (the cursor stays where it was)."""
        if self._rows:
            Progress._write(f"\0337\033[r\033[{self._rows};1H\033[2K\0338")
            self._rows = 0

    def _draw(self, line: str) -> None:
        """Draw one line: on the pinned bottom row (re-pinned when the terminal's height changed), else with
        a carriage return; cut to the terminal's width, since a wrapped line would scroll."""
        cols, rows = self._size()
        if cols > 1:
            line = line[:cols - 1]
        if not self._rows:
            Progress._write(f"\r\033[K{line}")
            return
        if rows >= 3 and rows != self._rows:
            self._rows = rows
            Progress._write(f"\0337\033[1;{rows - 1}r\0338")
        Progress._write(f"\0337\033[{self._rows};1H\033[2K{line}\0338")

    def start(self, text) -> None:
        """Redraw text() now and every interval until stop(); a text() that raises draws nothing that time."""
        if not self.enabled or self._thread is not None:
            return
        from gpudiag.views.text import terminal_safe

        self._stop.clear()
        if self.pinned:
            rows = self._size()[1]
            if rows >= 3:
                self._pin(rows)

        def tick() -> None:
            while True:
                try:
                    line = terminal_safe(text())
                except Exception:  # noqa: BLE001 - a status line must never stop what it shows
                    line = None
                if line is not None:
                    self._draw(line)
                if self._stop.wait(self.interval):
                    return

        try:
            self._thread = threading.Thread(target=tick, name="gpudiag-live-line", daemon=True)
            self._thread.start()
        except RuntimeError:  # no thread under a process limit: the line is a luxury
            self._thread = None
            self._unpin()

    def stop(self) -> None:
        """Stop redrawing and clear the line (a pinned line: give the terminal its whole height back)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._rows:
            self._unpin()
        else:
            Progress._write("\r\033[K")
