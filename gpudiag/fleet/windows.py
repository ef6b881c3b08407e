"""Sustained timing windows: every host-timed repeat of a fleet figure is work counted over a window of
several CPU-quota periods, so a quota or time-slicing shows in the rate instead of hiding between repeats.

A process under a CPU quota runs at full speed until its quota for the period is spent, then waits for
the next period (100 ms by default). Repeats of a few milliseconds land inside the running part and
read full speed (a rank limited to 20 % of a core read as the fleet's fastest); a window of
WINDOW_PERIODS periods holds the stops too, so its rate is the sustained one: about 20 % of full speed
there. The same holds for a core shared with other processes (their time slices are milliseconds long).

Each window also counts its own process CPU time, and how much the work could use (its threads, at
most the rank's cores), which gives the rank's `share` of the CPU it could have had.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

WINDOW_PERIODS = 3   # a window spans at least this many quota periods: its rate is off by at most about one
                     # period's run time in WINDOW_PERIODS (the window's start and end phase)
MIN_WINDOW_S = 0.3   # without a quota, the default period's 3 x 100 ms (time slices are milliseconds)
MAX_WINDOW_S = 1.0   # keeps a rank to a few seconds when a period is unusually long (the maximum is 1 s)


def window_seconds(period_us: Optional[int]) -> float:
    """How long one timed window runs for a quota period of `period_us` (None: no quota, the default period)."""
    period_s = (period_us or 100_000) / 1e6
    return round(min(max(WINDOW_PERIODS * period_s, MIN_WINDOW_S), MAX_WINDOW_S), 3)


class Windows:
    """Runs timed windows and keeps the CPU account of all of them.

    cores: the cores the rank may run on (its affinity); clock / cpu_clock: seams for tests
    (time.perf_counter and time.process_time: the whole process's CPU, every torch thread included).
    """

    def __init__(self, window_s: float, cores: int, clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.process_time):
        self.window_s, self.cores = window_s, max(1, int(cores))
        self._clock, self._cpu = clock, cpu_clock
        self.n, self.wall_s, self.cpu_s, self.could_use_s = 0, 0.0, 0.0, 0.0

    def run(self, op: Callable[[], Any], threads: int) -> Tuple[int, float]:
        """Calls op() until the window has passed: (calls, wall seconds). `threads`: how many threads
        op keeps busy (its torch threads, 1 for a dispatch loop), for the share."""
        c0, t0 = self._cpu(), self._clock()
        calls = 0
        while True:
            op()
            calls += 1
            t = self._clock()
            if t - t0 >= self.window_s:
                break
        wall = t - t0
        self.n += 1
        self.wall_s += wall
        self.cpu_s += self._cpu() - c0
        self.could_use_s += wall * min(max(1, int(threads)), self.cores)
        return calls, wall

    def totals(self) -> Dict[str, Any]:
        """{window_s, windows, timed_wall_s, timed_cpu_s, cores_got, demand_cores, share} over every window
        run so far.

        cores_got: CPU seconds per wall second (0.5 = half a core's worth); demand_cores: the cores' worth
        the windows' work could use (1 for a dispatch loop on one thread); share: CPU time got over the
        CPU time the work could have used on the rank's cores (1.0 = all of it). None without windows.
        """
        ok = self.n > 0 and self.wall_s > 0
        return {"window_s": self.window_s, "windows": self.n, "timed_wall_s": round(self.wall_s, 3),
                "timed_cpu_s": round(self.cpu_s, 3),
                "cores_got": round(self.cpu_s / self.wall_s, 3) if ok else None,
                "demand_cores": round(self.could_use_s / self.wall_s, 3) if ok else None,
                "share": round(min(1.0, self.cpu_s / self.could_use_s), 3) if ok and self.could_use_s else None}
