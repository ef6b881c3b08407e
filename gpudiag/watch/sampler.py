"""A background sampler: one thread calling `tick()` every interval until stopped.

The watcher must never slow or kill the job because of its own trouble, so a failing tick is
recorded (count and last error, in words) and the sampler goes on; after MAX_CONSECUTIVE_ERRORS
failures in a row it stops itself and says why. Nothing here touches the job.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Dict, Optional

MAX_CONSECUTIVE_ERRORS = 20


class Sampler:
    """Subclasses implement tick(t_s); `clock()` is seconds since the watch began."""

    name = "sampler"
    # Random spread of each interval (+-fraction): a sampler ticking exactly every 0.1 s locks onto a
    # job whose loop also takes 0.1 s and sees the same phase every time (aliasing).
    jitter = 0.0

    def __init__(self, interval_s: float, clock: Callable[[], float]):
        self.interval_s = interval_s
        self.clock = clock
        self.ticks = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.stopped_reason: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def tick(self, t_s: float) -> None:  # pragma: no cover - abstract
        """Take one sample at t_s seconds into the watch (subclasses)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sampler holds (child processes, library sessions); called once at the end."""

    def start(self) -> None:
        """Start the sampling thread (a daemon: it never keeps gpudiag alive)."""
        self._thread = threading.Thread(target=self._loop, name=f"gpudiag-watch-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop without waiting for it (so that every sampler is told before any is joined)."""
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop, wait for it, then release what it holds."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.close()

    def _loop(self) -> None:
        """The sampling thread: tick() every jittered interval until stopped; a failing tick is
        counted and the loop goes on, until MAX_CONSECUTIVE_ERRORS in a row stop it."""
        consecutive = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick(self.clock())
                consecutive = 0
            except Exception as exc:  # a background sampler: record and go on, never disturb the job
                self.errors += 1
                consecutive += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if consecutive >= MAX_CONSECUTIVE_ERRORS:
                    self.stopped_reason = f"stopped after {consecutive} failures in a row (last: {self.last_error})"
                    return
            self.ticks += 1
            next_at += self.interval_s * (1.0 + random.uniform(-self.jitter, self.jitter))
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow tick): skip the missed ticks instead of bursting
                next_at = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def health(self) -> Dict[str, object]:
        """{ticks, errors, last_error, stopped_reason}: how the sampler fared, for the report."""
        return {"ticks": self.ticks, "errors": self.errors, "last_error": self.last_error,
                "stopped_reason": self.stopped_reason}
