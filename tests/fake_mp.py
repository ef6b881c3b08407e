"""A multiprocessing context whose "processes" are threads: the CUDA worker code paths (contention's
spawned workers) run in-process against tests/fake_torch.py, fast and without spawning."""

from __future__ import annotations

import queue
import threading


class ThreadProcess:
    """multiprocessing.Process as a thread that, like a real process, exits 1 on an uncaught exception."""

    def __init__(self, target, name, daemon, args):
        self.name, self.exitcode = name, None
        self._thread = threading.Thread(target=self._run, args=(target, args), name=name, daemon=daemon)

    def _run(self, target, args):
        try:
            target(*args)
            self.exitcode = 0
        except BaseException:
            self.exitcode = 1

    def start(self):
        self._thread.start()

    def is_alive(self):
        return self._thread.is_alive()

    def join(self, timeout=None):
        self._thread.join(timeout)

    def terminate(self):
        pass

    kill = terminate


class ThreadQueue(queue.Queue):
    """multiprocessing.Queue's extra methods on a plain queue."""

    def close(self):
        pass

    def cancel_join_thread(self):
        pass


class ThreadContext:
    """What multiprocessing.get_context(method) returns, for monkeypatching it."""

    Process, Queue, Event = ThreadProcess, ThreadQueue, threading.Event
