"""Small, dependency-free statistics for timings: median, percentiles, spread."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional


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
