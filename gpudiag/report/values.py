"""Type-safe reads of report values, shared by every reader of a report (diagnose, views, watch, fleet).

Reports come from other gpudiag versions, other machines and sometimes a text editor: a value may
be missing or of another type anywhere. These return None (or an empty dict/list) instead of
raising, so a rule or a view says "n/a" rather than crash. (Where a figure came from, for evidence,
is gpudiag.diagnose.access's job.)
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple


def get(obj: Any, *keys: Any) -> Any:
    """obj[k1][k2]...; None as soon as a key or index is missing or the shape is wrong."""
    for k in keys:
        if isinstance(k, int) and not isinstance(k, bool):
            if not isinstance(obj, list) or not -len(obj) <= k < len(obj):
                return None
        elif not isinstance(obj, dict) or k not in obj:
            return None
        obj = obj[k]
    return obj


def num(x: Any) -> Optional[float]:
    """A finite number as a float, or None (bools, strings such as "n/a", NaN and None are not numbers)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def is_num(x: Any) -> bool:
    """True for a finite int or float but not a bool (JSON true would otherwise count as 1)."""
    return num(x) is not None


def as_int(x: Any) -> Optional[int]:
    """A whole number (a finite int, or a float with no fraction), else None: worker counts may arrive as 4.0."""
    n = num(x)
    return int(n) if n is not None and n == int(n) else None


def as_dict(x: Any) -> dict:
    """`x` if it is a dict, else {}."""
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    """`x` if it is a list, else []."""
    return x if isinstance(x, list) else []


def as_str(x: Any) -> Optional[str]:
    """A non-empty string, else None."""
    return x if isinstance(x, str) and x else None


def as_bool(x: Any) -> Optional[bool]:
    """A bool, else None (0/1 or "true" are not taken as answers)."""
    return x if isinstance(x, bool) else None


def interval(x: Any) -> Optional[Tuple[float, float]]:
    """A [low, high] pair of finite numbers with low <= high, else None."""
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        return None
    lo, hi = num(x[0]), num(x[1])
    if lo is None or hi is None or lo > hi:
        return None
    return lo, hi


def probe_result(report: Any, name: str) -> dict:
    """A probe's whole result dict (status, reason, data, findings), {} when the probe is absent."""
    return as_dict(get(report, "probes", name))


def probe_data(report: Any, name: str) -> dict:
    """A probe's data when it ran to the end (status ok); {} otherwise."""
    res = probe_result(report, name)
    return as_dict(res.get("data")) if res.get("status") == "ok" else {}
