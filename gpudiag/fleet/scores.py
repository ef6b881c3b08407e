"""Robust outlier scores: how much worse than its peers one rank (or node) is, in units of noise.

For each member k of a set of comparable values (same metric, same device kind and model):
  x = log(value), negated for lower-is-better metrics, so that higher x is better;
  P = median of the *other* members' x (leave-one-out: a straggler cannot drag its own reference);
  deficit = P - x (> 0: worse than the peers); relative = exp(-deficit) (0.5: half as fast);
  scale = max(1.4826 x MAD of the others' x, u, NOISE_FLOOR), where 1.4826 x MAD estimates the
          standard deviation between healthy peers and u = sqrt(u_k^2 + u_peers^2) is the
          uncertainty of the two medians compared, from each figure's own repeats;
  score = deficit / scale, a robust z-score.
Logs make "half as fast" the same size for GB/s and for microseconds. With two members MAD is 0
and the repeats alone set the scale: two ranks are told apart only when their medians differ by more
than the repeats leave uncertain. A member is flagged when score >= Z_FLAG and it is at least
MIN_EFFECT slower (a GPU 5 % slower than its peers is a "lemon", research anchors-2 B.7).

The uncertainty of a median of n repeats is taken as 1.2533 sigma / sqrt(n) with sigma from the
p10..p90 spread ((p90 - p10) / 2.563 for a normal spread): repeats of a starved rank scatter widely
(it runs in bursts between other programs), yet its median is still well measured.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence

Z_FLAG = 3.0
MIN_EFFECT = 0.05
NOISE_FLOOR = 0.02  # 2 %: below this, run-to-run noise of a short measurement is not believed
MAD_TO_SIGMA = 1.4826


def _finite_positive(v: Any) -> bool:
    """True for a finite number > 0 that is not a bool: only those have the log the
    scores work in."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


P10_P90_SIGMAS = 2.563  # p90 - p10 of a normal distribution, in standard deviations
MEDIAN_EFFICIENCY = 1.2533  # standard error of a median = 1.2533 sigma / sqrt(n) for normal samples


def median_uncertainty(fig: Mapping[str, Any]) -> Optional[float]:
    """Standard error (in log terms, ~relative) of a figure's median from its repeats' p10/p90 and n, or None."""
    lo, hi, n = fig.get("p10"), fig.get("p90"), fig.get("n")
    if not (_finite_positive(lo) and _finite_positive(hi)):
        return None
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    sigma = abs(math.log(hi) - math.log(lo)) / P10_P90_SIGMAS
    return MEDIAN_EFFICIENCY * sigma / math.sqrt(n)


def _mid(a: float, b: float) -> float:
    """The median of two sorted values, computed as gpudiag.measure.stats.percentile does (bit for bit)."""
    return a + (b - a) * 0.5


def median_without(xs: Sequence[float], i: int) -> float:
    """The median of sorted `xs` with the element at index i left out (len(xs) >= 2): O(1), the same
    number gpudiag.measure.stats.median gives for the list without it."""
    m = len(xs) - 1

    def at(j: int) -> float:
        return xs[j] if j < i else xs[j + 1]

    if m % 2:
        return at(m // 2)
    return _mid(at(m // 2 - 1), at(m // 2))


def _sorted_median(xs: Sequence[float]) -> Optional[float]:
    """The median of sorted `xs` (None for none), as gpudiag.measure.stats.median computes it."""
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else _mid(xs[n // 2 - 1], xs[n // 2])


class LeaveOneOut:
    """Medians of "every member but one" for a whole group: sort once, then O(1) or O(log n) per member.

    `median(k)` is the median of the other members' values; `mad(k)` the median of their absolute
    deviations from that median. Removing one member moves the median of the rest to one of at most three
    values (which depends only on where the member sits in the sorted order), so the deviations are sorted
    once per such value, and each member's MAD is the median of those deviations without its own.
    """

    def __init__(self, values: Mapping[Hashable, float]):
        self.keys = list(values)
        order = sorted(self.keys, key=lambda k: values[k])
        self.sorted = [values[k] for k in order]
        self.pos = {k: i for i, k in enumerate(order)}
        self.values = values
        self._dev: Dict[float, List[float]] = {}

    def median(self, k: Hashable) -> float:
        return median_without(self.sorted, self.pos[k])

    def mad(self, k: Hashable) -> float:
        p = self.median(k)
        dev = self._dev.get(p)
        if dev is None:
            dev = self._dev[p] = sorted(abs(v - p) for v in self.sorted)
        own = abs(self.values[k] - p)
        return median_without(dev, bisect.bisect_left(dev, own))


def median_of_others(values: Sequence[Optional[float]]) -> List[Optional[float]]:
    """For each position, the median of the other positions' values that are not None (None when there are
    none): the leave-one-out median of a list, in O(n log n) for the whole list."""
    present = sorted(v for v in values if v is not None)
    out: List[Optional[float]] = []
    whole = _sorted_median(present)
    for v in values:
        if v is None:
            out.append(whole)
        elif len(present) < 2:
            out.append(None)
        else:
            out.append(median_without(present, bisect.bisect_left(present, v)))
    return out


def robust_scores(values: Mapping[Hashable, float], higher_is_better: bool,
                  noise: Optional[Mapping[Hashable, Optional[float]]] = None) -> Dict[Hashable, Dict[str, Any]]:
    """{key: {value, peer_median, relative, score, scale, flagged}} for every key with a usable value.

    noise: each value's uncertainty in log terms (median_uncertainty), None where unknown.
    Needs at least two usable values; fewer gives {}. O(n log n) for n values: each member's peers'
    median, MAD and noise come from the sorted group (LeaveOneOut), never from a pass over the others.
    """
    noise = noise or {}
    xs = {k: (math.log(v) if higher_is_better else -math.log(v)) for k, v in values.items() if _finite_positive(v)}
    if len(xs) < 2:
        return {}
    loo = LeaveOneOut(xs)
    keys = list(xs)
    peer_noises = median_of_others([noise.get(k) for k in keys])
    out: Dict[Hashable, Dict[str, Any]] = {}
    for k, peer_noise in zip(keys, peer_noises):
        x = xs[k]
        p = loo.median(k)
        mad = loo.mad(k)
        own = noise.get(k) or 0.0
        scale = max(MAD_TO_SIGMA * mad, math.hypot(own, peer_noise or 0.0), NOISE_FLOOR)
        deficit = p - x
        relative = math.exp(-deficit)
        score = deficit / scale
        peer_value = math.exp(p) if higher_is_better else math.exp(-p)
        out[k] = {"value": values[k], "peer_median": round(peer_value, 6), "relative": round(relative, 4),
                  "score": round(score, 2), "scale": round(scale, 4),
                  "flagged": score >= Z_FLAG and (1 - relative) >= MIN_EFFECT}
    return out
