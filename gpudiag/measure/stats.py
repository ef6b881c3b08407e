"""Small, dependency-free statistics for timings: median, percentiles, spread, and the 95 %
interval of a speedup: from paired rounds (the cycle tournament) the sign-test interval of the
per-round ratio, otherwise a bootstrap over the rounds (see docs/recommendation.md)."""

from __future__ import annotations

import math
import random
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


def percentile(values: Iterable[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (q in 0..100), as numpy's default; None for no values."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float]) -> Optional[float]:
    """The 50th percentile (None for no values)."""
    return percentile(values, 50)


def summarize(values: Iterable[float]) -> Dict[str, Optional[float]]:
    """{n, median, p10, p90, min, max, mean} of a sample; every field None (n=0) for no values."""
    xs: List[float] = [float(v) for v in values]
    if not xs:
        return {"n": 0, "median": None, "p10": None, "p90": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(xs),
        "median": percentile(xs, 50),
        "p10": percentile(xs, 10),
        "p90": percentile(xs, 90),
        "min": min(xs),
        "max": max(xs),
        "mean": sum(xs) / len(xs),
    }


def relative_spread(values: Iterable[float]) -> Optional[float]:
    """(p90 - p10) / median: how noisy a measurement was; None when undefined."""
    s = summarize(values)
    if not s["n"] or not s["median"]:
        return None
    return (s["p90"] - s["p10"]) / s["median"]


# ------------------------------------------------------------------ intervals of a speedup
# A timed comparison is reported as a ratio of medians (e.g. cycles/s of a strategy over cycles/s
# of the plain loop) with a 95 % interval from a bootstrap over the measurement rounds. The rounds
# are interleaved (A B C, B C A, ...), so round i of every contestant saw the same moment of the
# machine: resampling whole rounds (a paired bootstrap) keeps that pairing, and a burst of load
# that slowed every contestant in one round does not widen the interval of their ratio.

DEFAULT_SEED = 1103  # fixed: the same samples always give the same interval (tests, recomputation)
MIN_SAMPLES_FOR_INTERVAL = 3
BOOTSTRAP_RESAMPLES = 2000

# Student t 97.5 % quantiles by degrees of freedom (standard tables); used to widen the bootstrap
# percentile interval for small samples, where plain percentiles are known to be too narrow.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 22: 2.074, 24: 2.064, 26: 2.056, 28: 2.048, 30: 2.042,
         40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    """Student t 97.5 % quantile for df degrees of freedom (table, linear between rows, 1.96 beyond)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        return 1.96
    hi = next(k for k in keys if k > df)
    lo = max(k for k in keys if k < df)
    return _T975[lo] + (_T975[hi] - _T975[lo]) * (df - lo) / (hi - lo)


def expanded_tail(n: int) -> float:
    """Tail probability (each side) for a 95 % bootstrap percentile interval from n samples.

    Hesterberg's "expanded percentile interval" (What Teachers Should Know About the Bootstrap,
    2015): use the percentiles at Phi(-sqrt(n/(n-1)) * t_{0.975, n-1}) instead of 2.5 %, which gives
    small samples about the coverage of a t interval (n=5: 0.1 %, n=10: 0.9 %, large n: 2.5 %).
    """
    if n < 2:
        return 0.0
    z = math.sqrt(n / (n - 1)) * t975(n - 1)
    return 0.5 * (1.0 + math.erf(-z / math.sqrt(2.0)))


def _median_sorted(xs: List[float]) -> float:
    """Median of xs, sorting it in place (xs must be a non-empty private copy): the core of ratio_of_medians and the
    bootstrap, which calls it thousands of times (no copy, no None checks)."""
    xs.sort()
    k = len(xs)
    mid = k // 2
    return xs[mid] if k % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def ratio_of_medians(num: Sequence[float], den: Sequence[float]) -> Optional[float]:
    """median(num) / median(den); None when either is empty or the denominator is not positive."""
    a, b = [float(x) for x in num], [float(x) for x in den]
    if not a or not b:
        return None
    mb = _median_sorted(b)
    return _median_sorted(a) / mb if mb > 0 else None


def bootstrap_ratio_ci(num: Sequence[float], den: Sequence[float], seed: int = DEFAULT_SEED,
                       resamples: int = BOOTSTRAP_RESAMPLES, paired: Optional[bool] = None
                       ) -> Optional[Tuple[float, float]]:
    """95 % interval of median(num) / median(den), e.g. a strategy's rate over the baseline's rate.

    Bootstrap over samples, deterministic for a given seed. Paired (whole rounds resampled
    together) when both have one sample per round (equal length), unless paired=False. The
    percentile interval is widened for small samples (expanded_tail). None with fewer than
    MIN_SAMPLES_FOR_INTERVAL samples on either side, or a non-positive value.
    """
    a, b = [float(x) for x in num], [float(x) for x in den]
    if len(a) < MIN_SAMPLES_FOR_INTERVAL or len(b) < MIN_SAMPLES_FOR_INTERVAL:
        return None
    if min(a) <= 0 or min(b) <= 0 or not all(math.isfinite(x) for x in a + b):
        return None
    if paired is None:
        paired = len(a) == len(b)
    paired = paired and len(a) == len(b)
    rng = random.Random(seed)
    na, nb = len(a), len(b)
    ra, rb = range(na), range(nb)
    ratios = []
    for _ in range(resamples):
        ia = rng.choices(ra, k=na)
        ib = ia if paired else rng.choices(rb, k=nb)
        ratios.append(_median_sorted([a[i] for i in ia]) / _median_sorted([b[i] for i in ib]))
    tail = 100.0 * expanded_tail(min(na, nb))
    return percentile(ratios, tail), percentile(ratios, 100.0 - tail)


# ------------------------------------------------------------------ the interval of a paired ratio
# The cycle tournament's speedups. Round i of two contestants ran at the same moment, so their ratio
# in that round (r_i = a_i / b_i) carries what the strategies differ by, with load that hit the
# whole round cancelled. The interval is that of the median of the r_i from the binomial (sign-test)
# order statistics: the true median lies below r_(k) with probability P(Bin(n, 1/2) < k), whatever
# the distribution of the r_i (bursts of load, bimodal stalls), as long as the rounds are alike.
# So it covers 95 % exactly as claimed, where a bootstrap over 3-5 rounds does not (a bootstrap of a
# median resamples few distinct values and its percentiles lie inside the rounds' range, which
# itself holds the median only with probability 1 - 2^(1-n): 75 % at 3 rounds, 94 % at 5). The
# price is honest too: no 95 % interval exists from fewer than 6 rounds (at 6-8 it spans the
# rounds' smallest to largest ratio; from 9 on the most extreme ones are left out).

MIN_ROUNDS_FOR_PAIRED_INTERVAL = 6


def _sign_rank(n: int, tail: float = 0.025) -> int:
    """The largest k with P(Bin(n, 1/2) < k) <= tail (0 when none): the interval is [r_(k), r_(n+1-k)]."""
    k, below = 0, 0.0
    while k < n:
        p = math.comb(n, k) / 2.0 ** n
        if below + p > tail:
            break
        below += p
        k += 1
    return k


def paired_ratio_ci(num: Sequence[float], den: Sequence[float]) -> Optional[Tuple[float, float]]:
    """95 % interval of a ratio from paired rounds: num[i] and den[i] were measured in the same round.

    The median of the per-round ratios, with the distribution-free interval described above, widened
    to hold ratio_of_medians (the point a report quotes next to it). None with fewer than
    MIN_ROUNDS_FOR_PAIRED_INTERVAL pairs, unequal lengths, or a value that is not positive and finite.
    """
    a, b = [float(x) for x in num], [float(x) for x in den]
    if len(a) != len(b) or len(a) < MIN_ROUNDS_FOR_PAIRED_INTERVAL:
        return None
    if min(a) <= 0 or min(b) <= 0 or not all(math.isfinite(x) for x in a + b):
        return None
    ratios = sorted(x / y for x, y in zip(a, b))
    k = _sign_rank(len(ratios))
    lo, hi = ratios[k - 1], ratios[len(ratios) - k]
    point = ratio_of_medians(a, b)
    return (lo, hi) if point is None else (min(lo, point), max(hi, point))


def interval_width_ratio(ci: Optional[Sequence[float]]) -> Optional[float]:
    """hi / lo of an interval of a positive quantity (1.10: the interval spans about +-5 %); None if unknown."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None or ci[0] <= 0:
        return None
    return float(ci[1]) / float(ci[0])


def rounded_interval(ci: Optional[Sequence[float]], digits: int = 3) -> Optional[List[float]]:
    """[lo, hi] rounded for a report (outward, so rounding never narrows the interval); None stays None."""
    if ci is None:
        return None
    scale = 10 ** digits
    return [math.floor(ci[0] * scale) / scale, math.ceil(ci[1] * scale) / scale]
