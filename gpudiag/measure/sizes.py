"""Human sizes for the command line: `1.5G`, `800M`, `512K`, `4096` (bytes) -> integers (gpudiag.units.fmt_bytes
writes them).

Suffixes are binary (K = 1024, M = 1024**2, G = 1024**3, T = 1024**4), as in `docker --memory`,
`ulimit` and `java -Xmx`, and as torch and nvidia-smi report memory (MiB, GiB). `KB`/`KiB`,
`MB`/`MiB`, ... are accepted as the same binary units, and a trailing `B` alone means bytes.
"""

from __future__ import annotations

import math
import re

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
MAX_SIZE = 2**60  # 1 EiB: more than any machine holds; bigger numbers are typos and overflow the checks
_SIZE = re.compile(r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: object) -> int:
    """`1.5G` -> 1610612736. Raises ValueError with a message that shows what is accepted."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        return _bounded(text)
    if isinstance(text, float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"size {text} is not a finite, non-negative number of bytes")
        return _bounded(int(round(text)))
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a size")
    raw = text.strip()
    if not raw:
        raise ValueError("empty size: give a number of bytes or a number with K, M, G or T (e.g. 1.5G, 800M)")
    if raw.startswith("-"):
        raise ValueError(f"size {text!r} is negative")
    m = _SIZE.match(raw)
    if not m:
        raise ValueError(f"cannot read size {text!r}: use a number of bytes or a number with K, M, G or T "
                         "(binary units, e.g. 1.5G, 800M, 512K)")
    value = float(m.group("num")) * _UNITS[m.group("unit").upper()]
    if not math.isfinite(value):
        raise ValueError(f"size {text[:40]!r} is larger than any machine's memory or disk (at most 1 EiB)")
    return _bounded(int(round(value)))


def _bounded(n: int) -> int:
    """n unchanged when at most MAX_SIZE (1 EiB), else ValueError: a typo like 8E is refused instead of being
    passed on as a budget no machine has."""
    if n > MAX_SIZE:
        raise ValueError(f"size {n} bytes is larger than any machine's memory or disk (at most 1 EiB)")
    return n
