"""Interleaved measurement rounds with adaptive stopping, shared by the `gil` and `cycle` probes.

Every contestant (a strategy, or a mode at a worker count) is timed once per round, and the order
rotates from round to round (A B C, B C A, C A B, ...): a burst of load from elsewhere, or a slow
drift (CPU frequency, page cache), then hits every contestant alike, and none is always measured
right after the same neighbour. Rounds go on until

- the intervals are tight enough (`settled()` says so; checked from `min_rounds` on), or
- the mode's time budget for the rounds is spent (a round is not started when the rounds so far
  say it would end past the budget; checked from `min_rounds` on, or from the third round when
  rounds are so slow that `min_rounds` would overrun the budget: three samples still give an
  interval, and a machine that slow is judged too busy anyway), or
- `max_rounds` were run, or
- the hard deadline passed (the probe's own timeout is near; checked even before `min_rounds`).

The caller's `once(key)` measures one contestant once and stores the sample itself; it handles its
own errors (a contestant that failed is left out of later rounds via `active()`). `keep_round()`,
called after each round, may reject it (e.g. other programs took the CPU during it): the caller
then removes that round's samples, the round does not count, and another is run in its place (at
most `max_rejected` rejected ones, by default `max_rounds`, and within the budget and the deadline).
A caller whose `keep_round()` keeps every round after its own cap passes that cap as `max_rejected`,
so a plan of one round still gets its kept round after the rejected ones. `lost_s()` says how many
seconds went into runs that failed (a contestant that hung until its own deadline): they do not
count against the budget, so the others still get their rounds (the hard deadline still holds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, List, Optional, Sequence, TypeVar

TIGHT, BUDGET, MAX_ROUNDS, DEADLINE = "intervals tight", "time budget spent", "most rounds run", "probe deadline"
REJECTED = "too many rounds rejected"
MIN_ROUNDS_FOR_INTERVAL = 3  # gpudiag.measure.stats.MIN_SAMPLES_FOR_INTERVAL
K = TypeVar("K", bound=Hashable)  # what a round runs: strategies, contestants...


@dataclass
class RoundsPlan:
    """How many rounds: at least min_rounds, at most max_rounds, within budget_s of wall time."""

    min_rounds: int
    max_rounds: int
    budget_s: float


def rotated(keys: Sequence[K], round_index: int) -> List[K]:
    """The order of one round: the list rotated left by the round number."""
    if not keys:
        return []
    k = round_index % len(keys)
    return list(keys[k:]) + list(keys[:k])


def run_rounds(keys: Sequence[K], once: Callable[[K], None], plan: RoundsPlan,
               settled: Callable[[], bool] = lambda: False, deadline: Optional[float] = None,
               active: Callable[[K], bool] = lambda key: True,
               keep_round: Callable[[], bool] = lambda: True, max_rejected: Optional[int] = None,
               lost_s: Callable[[], float] = lambda: 0.0) -> Dict[str, object]:
    """Run rounds over `keys`; returns {rounds, rejected, stopped_because, elapsed_s}. See the module docstring."""
    max_rejected = plan.max_rounds if max_rejected is None else max_rejected
    start = time.monotonic()
    rounds, rejected, why = 0, 0, MAX_ROUNDS
    attempt = 0
    while rounds < max(plan.max_rounds, 1) and rejected <= max_rejected:
        if deadline is not None and time.monotonic() >= deadline:
            why = DEADLINE
            break
        if rounds >= plan.min_rounds and settled():
            why = TIGHT
            break
        now = time.monotonic() - lost_s()  # the budget's clock: failed runs' time left out
        if rounds >= min(plan.min_rounds, MIN_ROUNDS_FOR_INTERVAL) or attempt >= plan.min_rounds:
            per_round = (now - start) / max(attempt, 1)
            if now + per_round > start + plan.budget_s and (rounds >= plan.min_rounds or now > start + plan.budget_s):
                why = BUDGET
                break
        todo = [k for k in rotated(keys, attempt) if active(k)]
        if not todo:
            break
        for key in todo:
            if deadline is not None and time.monotonic() >= deadline:
                break
            once(key)
        attempt += 1
        if keep_round():
            rounds += 1
        else:
            rejected += 1
    else:
        why = REJECTED if rejected > max_rejected else (TIGHT if settled() else MAX_ROUNDS)
    return {"rounds": rounds, "rejected": rejected, "stopped_because": why,
            "elapsed_s": round(time.monotonic() - start, 3)}
