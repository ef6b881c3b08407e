"""Memory growth and the time to the memory limit: robust slopes, their intervals, the projection.

Pure functions over (t_s, bytes) samples, so the rules are tested on literal inputs. The slope is
Theil-Sen (the median of pairwise slopes): one allocation spike or a freed cache does not tilt it
the way a least-squares line is tilted. Its 95 % interval is Sen's rank interval from Kendall's S
(Sen 1968; the interval used by hydrology's trend tests), so "growing" is only claimed when the
interval excludes zero.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, TypeVar

Z95 = 1.959964
# Pairwise slopes are O(n^2): thin long runs to this many evenly spaced samples first.
MAX_FIT_POINTS = 160
T = TypeVar("T")  # a point of any kind: thin() keeps what it is given
# The first part of a process's life is imports and model loading, not its steady growth.
WARMUP_FRACTION = 0.15
# Fewer samples than this do not make a slope worth quoting.
MIN_FIT_POINTS = 6
# Below this rate a process is "flat" whatever its interval says: 64 KiB/s is 225 MiB an hour,
# under the resolution of RSS on a busy machine over a short watch.
FLAT_BYTES_PER_S = 64 * 1024


def wilson_interval(successes: int, n: int, z: float = Z95) -> Optional[Tuple[float, float]]:
    """95 % Wilson score interval of a proportion; None for n == 0.

    Exists because sample shares (GIL held in 47 of 50 dumps) need an honest interval at the
    ends of [0, 1], where the normal approximation gives impossible bounds.
    """
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def thin(points: Sequence[T], limit: int = MAX_FIT_POINTS) -> List[T]:
    """At most `limit` points, evenly spaced by index, first and last kept (for fits and charts)."""
    pts = list(points)
    if len(pts) <= limit:
        return pts
    step = (len(pts) - 1) / (limit - 1)
    return [pts[round(i * step)] for i in range(limit)]


def theil_sen(points: Sequence[Tuple[float, float]]) -> Optional[Dict[str, float]]:
    """{slope, low, high, n}: the Theil-Sen slope (units of y per unit of x) with Sen's 95 % interval.

    None when there are fewer than two distinct x values.
    """
    pts = thin([(float(x), float(y)) for x, y in points])
    slopes = []
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            dx = pts[j][0] - pts[i][0]
            if dx > 0:
                slopes.append((pts[j][1] - pts[i][1]) / dx)
    if not slopes:
        return None
    slopes.sort()
    m = len(slopes)
    mid = m // 2
    slope = slopes[mid] if m % 2 else (slopes[mid - 1] + slopes[mid]) / 2
    n = len(pts)
    # Var(S) without tie correction; ties only widen the true interval a little.
    c = Z95 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lo_i = int(math.floor((m - c) / 2))
    hi_i = int(math.ceil((m + c) / 2))
    low = slopes[max(0, min(m - 1, lo_i))]
    high = slopes[max(0, min(m - 1, hi_i))]
    return {"slope": slope, "low": low, "high": high, "n": n}


def growth(points: Sequence[Tuple[float, float]]) -> Dict[str, object]:
    """A process's steady growth in bytes/s, after its warm-up, with the interval and the window.

    Returns {growth_bytes_per_s, growth_ci95, growth_window_s, growth_samples, growing, reason};
    growth_bytes_per_s is None (with a reason) when too few samples remain after the warm-up.
    `growing` is True only when the interval's low end is above FLAT_BYTES_PER_S.
    """
    pts = sorted((float(t), float(b)) for t, b in points if b is not None)
    out: Dict[str, object] = {"growth_bytes_per_s": None, "growth_ci95": None, "growth_window_s": None,
                              "growth_samples": 0, "growing": False, "reason": None}
    if len(pts) < MIN_FIT_POINTS:
        out["reason"] = f"{len(pts)} memory samples; {MIN_FIT_POINTS} are needed for a growth rate"
        return out
    skip = int(len(pts) * WARMUP_FRACTION)
    fit = pts[skip:] if len(pts) - skip >= MIN_FIT_POINTS else pts[-MIN_FIT_POINTS:]
    ts = theil_sen(fit)
    if ts is None:
        out["reason"] = "all memory samples at one instant"
        return out
    out.update(growth_bytes_per_s=ts["slope"], growth_ci95=[ts["low"], ts["high"]],
               growth_window_s=fit[-1][0] - fit[0][0], growth_samples=len(fit),
               growing=ts["low"] > FLAT_BYTES_PER_S)
    return out


def project(processes: Sequence[dict], limit: Optional[dict]) -> Dict[str, object]:
    """When the job's growing processes reach the memory limit, and which one the OOM killer takes.

    processes: [{pid, name, role, last_bytes, growth_bytes_per_s, growing, alive}] (last_bytes:
    the figure the limit counts, see memory analysis; alive: still there at the end of the watch). limit: {limit_bytes, limit_source,
    headroom_bytes} or None. Only processes still alive whose growth interval excludes zero
    count. The OOM killer picks the process with the largest badness score, which is mostly its
    resident memory; so first_to_hit is the process projected to be largest when the headroom is
    gone (an approximation: oom_score_adj and swap also count).
    """
    out: Dict[str, object] = {"limit_bytes": None, "limit_source": None, "headroom_bytes": None,
                              "job_growth_bytes_per_s": None, "seconds_to_limit": None,
                              "first_to_hit": None, "reason": None}
    if not limit or not isinstance(limit.get("headroom_bytes"), (int, float)):
        out["reason"] = "no memory limit could be read on this machine"
        return out
    out.update(limit_bytes=limit.get("limit_bytes"), limit_source=limit.get("limit_source"),
               headroom_bytes=limit.get("headroom_bytes"))
    growing = [p for p in processes if p.get("alive") and p.get("growing")
               and isinstance(p.get("growth_bytes_per_s"), (int, float)) and p["growth_bytes_per_s"] > 0]
    if not growing:
        out["reason"] = "no process of the job grew measurably while it was watched"
        out["job_growth_bytes_per_s"] = 0.0
        return out
    rate = sum(p["growth_bytes_per_s"] for p in growing)
    out["job_growth_bytes_per_s"] = rate
    headroom = max(0.0, float(limit["headroom_bytes"]))
    seconds = headroom / rate
    out["seconds_to_limit"] = seconds
    alive = [p for p in processes if p.get("alive") and isinstance(p.get("last_bytes"), (int, float))]

    def at_limit(p: dict) -> float:
        """A process's projected size when the headroom is gone."""
        r = p["growth_bytes_per_s"] if p in growing else 0.0
        return p["last_bytes"] + r * seconds

    if alive:
        victim = max(alive, key=at_limit)
        out["first_to_hit"] = {"pid": victim.get("pid"), "name": victim.get("name"), "role": victim.get("role"),
                               "projected_bytes": at_limit(victim)}
    return out

