"""Values with units, in the words every output uses: bytes, fractions as percentages, durations, rates.

One formatter per kind, so a figure reads the same in the HTML, the Markdown, the terminal, a finding
and a verdict. A leaf: it imports nothing from gpudiag, so every layer may use it.

- bytes: binary units, the largest that fits; whole numbers from 100 up and where the value is whole
  in that unit, else one decimal: "500 B", "4 KiB", "3.2 MiB", "512 MiB", "1.5 GiB", "80 GiB".
- fractions (0..1) as percentages: "44 %" (more digits when asked: "4.5 %").
- durations in words: "40 s", "14 minutes", "2.5 hours", "3.0 days".
- rates: three significant figures without an exponent: 41.3, 22.0, 165, 0.0452.

A value that is not a finite number (None, "n/a", a bool, NaN) is shown as `missing` ("n/a").
"""

from __future__ import annotations

import math
from typing import Any, Optional

MISSING = "n/a"
_BYTE_UNITS = (("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30), ("TiB", 2**40), ("PiB", 2**50))


def finite(x: Any) -> Optional[float]:
    """x as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _in_unit(v: float) -> str:
    """A non-negative value in its unit: whole when it is whole or from 100 up, else one decimal."""
    if v == int(v) or round(v, 1) >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def fmt_bytes(n: Any, missing: str = MISSING) -> str:
    """Bytes in the largest binary unit that fits: "500 B", "4 KiB", "3.2 MiB", "512 MiB", "1.5 GiB"."""
    x = finite(n)
    if x is None:
        return missing
    sign = "-" if x < 0 else ""
    a = abs(x)
    i = max((k for k, (_, factor) in enumerate(_BYTE_UNITS) if a >= factor), default=-1)
    text = _in_unit(a / _BYTE_UNITS[i][1]) if i >= 0 else f"{a:.0f}"
    if text == "1024" and i + 1 < len(_BYTE_UNITS):  # 1023.97 MiB rounds to a whole GiB, not "1024 MiB"
        i, text = i + 1, "1"
    unit = _BYTE_UNITS[i][0] if i >= 0 else "B"
    return f"{sign if text != '0' else ''}{text} {unit}"


def fmt_byte_rate(n: Any, missing: str = MISSING) -> str:
    """Bytes per second: "12 MiB/s", "300 B/s", "-1.5 MiB/s" (memory shrinking)."""
    text = fmt_bytes(n, missing)
    return text if text == missing else f"{text}/s"


def fmt_pct(fraction: Any, digits: int = 0, missing: str = MISSING) -> str:
    """A 0..1 fraction as a percentage: 0.44 -> "44 %"; digits after the point as asked (1: "4.5 %")."""
    x = finite(fraction)
    return missing if x is None else f"{x * 100:.{digits}f} %"


def fmt_duration(seconds: Any, missing: str = MISSING) -> str:
    """A duration in words, to the precision a reader plans with: "40 s", "14 minutes", "2.5 hours", "3.0 days"."""
    s = finite(seconds)
    if s is None:
        return missing
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} minutes"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} hours"
    return f"{s / 86400:.1f} days"


def fmt_rate(x: Any, missing: str = MISSING) -> str:
    """A rate (cycles/s, GB/s) to three significant figures without an exponent: 41.3, 22.0, 165, 0.0452."""
    v = finite(x)
    if v is None:
        return missing
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"
