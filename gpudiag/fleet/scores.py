"""Robust outlier scores: how much worse than its peers one rank (or node) is, in units of noise.

For each member k of a set of comparable values (same metric, same device kind and model):
  x = log(value), negated for lower-is-better metrics, so that higher x is better;
  P = median of the *other* members' x (leave-one-out: a straggler cannot drag its own reference);
  deficit = P - x (> 0: worse than the peers); relative = exp(-deficit) (0.5: half as fast);
  scale = max(1.4826 x MAD of the others' x, the repeat noise of k and of its peers, NOISE_FLOOR);
  score = deficit / scale, a robust z-score (1.4826 x MAD estimates one standard deviation).
Logs make "half as fast" the same size for GB/s and for microseconds. With two members MAD is 0
and the measured repeat noise alone sets the scale: two values can still be told apart, but only
by more than their own noise. A member is flagged when score >= Z_FLAG and it is at least
MIN_EFFECT slower (a GPU 5 % slower than its peers is a "lemon", research anchors-2 B.7).
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
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def repeat_noise(fig: Mapping[str, Any]) -> Optional[float]:
    """Half the p10..p90 spread of a figure's repeats in log terms (~ relative noise), or None."""
    lo, hi = fig.get("p10"), fig.get("p90")
    if not (_finite_positive(lo) and _finite_positive(hi)):
        return None
    return abs(math.log(hi) - math.log(lo)) / 2


def robust_scores(values: Mapping[Hashable, float], higher_is_better: bool,
                  noise: Optional[Mapping[Hashable, Optional[float]]] = None) -> Dict[Hashable, Dict[str, Any]]:
    """{key: {value, peer_median, relative, score, scale, flagged}} for every key with a usable value.

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
        scale = max(MAD_TO_SIGMA * mad, own, peer_noise, NOISE_FLOOR)
        deficit = p - x
        relative = math.exp(-deficit)
        score = deficit / scale
        peer_value = math.exp(p) if higher_is_better else math.exp(-p)
        out[k] = {"value": values[k], "peer_median": round(peer_value, 6), "relative": round(relative, 4),
                  "score": round(score, 2), "scale": round(scale, 4),
                  "flagged": score >= Z_FLAG and (1 - relative) >= MIN_EFFECT}
    return out
