"""Text files under a root folder: the leaf every Linux reader in platform/ shares.

`root` is the seam that lets each reader run on a fake tree in tests (tests/data/fakeroot_*).
Missing or unreadable files give None, never an exception.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional


def read_text(root: str, path: str) -> Optional[str]:
    """Contents of root + path, or None when absent/unreadable (permissions, /proc races)."""
    full = os.path.join(root, path.lstrip("/"))
    try:
        with open(full, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def exists(root: str, path: str) -> bool:
    """Whether root + path exists."""
    return os.path.exists(os.path.join(root, path.lstrip("/")))


def parse_kv_numbers(text: str) -> Dict[str, int]:
    """'name value [kB]' lines (meminfo, vmstat, memory.events, cpu.stat) -> {name: int}.

    meminfo values in kB are converted to bytes.
    """
    out: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) < 2:
            continue
        try:
            value = int(parts[1])
        except ValueError:
            continue
        if len(parts) >= 3 and parts[2] == "kB":
            value *= 1024
        out[parts[0]] = value
    return out


def int_or_none(text: Optional[str]) -> Optional[int]:
    """A /proc or cgroup file's text as an int, or None ("max", empty, unreadable): cgroup v2
    writes "max" for no limit."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_cpulist(text: Optional[str]) -> List[int]:
    """The CPUs of a kernel CPU list ("0-3,8,10-11": sysfs cpulist, cpuset.cpus) in order, each once;
    parts that are not numbers are skipped."""
    out = set()
    for part in (text or "").strip().split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return sorted(out)
