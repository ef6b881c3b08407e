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

import math
from typing import Any, Dict, Hashable, Mapping, Optional

from gpudiag.measure.stats import median

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


def robust_scores(values: Mapping[Hashable, float], higher_is_better: bool,
                  noise: Optional[Mapping[Hashable, Optional[float]]] = None) -> Dict[Hashable, Dict[str, Any]]:
    """{key: {value, peer_median, relative, score, scale, flagged}} for every key with a usable value.

    noise: each value's uncertainty in log terms (median_uncertainty), None where unknown.
    Needs at least two usable values; fewer gives {}.
    """
    noise = noise or {}
    xs = {k: (math.log(v) if higher_is_better else -math.log(v)) for k, v in values.items() if _finite_positive(v)}
    if len(xs) < 2:
        return {}
    out: Dict[Hashable, Dict[str, Any]] = {}
    for k, x in xs.items():
        peers = [v for j, v in xs.items() if j != k]
        p = median(peers)
        mad = median([abs(v - p) for v in peers])
        peer_noise = median([n for j, n in noise.items() if j != k and j in xs and n is not None] or [0.0])
        own = noise.get(k) or 0.0
        scale = max(MAD_TO_SIGMA * mad, math.hypot(own, peer_noise), NOISE_FLOOR)
        deficit = p - x
        relative = math.exp(-deficit)
        score = deficit / scale
        peer_value = math.exp(p) if higher_is_better else math.exp(-p)
        out[k] = {"value": values[k], "peer_median": round(peer_value, 6), "relative": round(relative, 4),
                  "score": round(score, 2), "scale": round(scale, 4),
                  "flagged": score >= Z_FLAG and (1 - relative) >= MIN_EFFECT}
    return out
