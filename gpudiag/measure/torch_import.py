"""What a fresh interpreter pays to import torch, measured once where probe processes are forked from.

On Linux the runner starts one start server per run (gpudiag.startserver): an interpreter that
imports torch and the probes' modules once, and from which each probe process is forked instead of
spawned, so that no probe imports torch again. The server calls `measure()` while it imports torch;
every process forked from it (the probe, and the worker processes the probe forks) inherits the
figures, read with `record()`:

    rec = torch_import.record()     # None: this process was not forked from a start server
    rec["import_torch_s"], rec["uss_after_torch_bytes"] ...

They are what one spawned worker process costs, the figures the gil probe reports as the start-up
and the memory of a process worker: a forked worker shares the server's pages until it writes
them, so its own memory would understate what the user's spawned worker costs.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

_RECORD: Optional[Dict[str, Any]] = None


def _memory() -> Dict[str, Optional[int]]:
    """{"rss", "uss"} of this process in bytes (uss None where psutil cannot read it)."""
    import psutil

    proc = psutil.Process()
    rss = proc.memory_info().rss
    try:
        uss: Optional[int] = proc.memory_full_info().uss
    except (psutil.Error, AttributeError, OSError):
        uss = None
    return {"rss": int(rss), "uss": int(uss) if uss is not None else None}


def measure(spawn_s: Optional[float] = None) -> Dict[str, Any]:
    """Import torch in this (fresh) interpreter and keep what it cost; the record, also kept for `record()`.

    spawn_s: the caller's figure for this process's creation to this call (interpreter start-up and the imports
    before it: gpudiag.platform.process_age_s). A failing import is recorded ("error"), not raised: the server
    must still start, and the probes then meet the same failure themselves.
    """
    global _RECORD
    before = _memory()
    rec: Dict[str, Any] = {"pid": os.getpid(), "spawn_s": spawn_s, "import_torch_s": None, "error": None,
                           "rss_before_torch_bytes": before["rss"], "uss_before_torch_bytes": before["uss"],
                           "rss_after_torch_bytes": None, "uss_after_torch_bytes": None}
    t0 = time.perf_counter()
    try:
        import torch  # noqa: F401  (imported for the processes forked from here)
    except Exception as exc:  # a broken torch raises anything at import; the probes report it themselves
        rec["error"] = f"{type(exc).__name__}: {exc}"
    else:
        rec["import_torch_s"] = time.perf_counter() - t0
        after = _memory()
        rec["rss_after_torch_bytes"], rec["uss_after_torch_bytes"] = after["rss"], after["uss"]
    _RECORD = rec
    return rec


def record() -> Optional[Dict[str, Any]]:
    """The start server's record when this process was forked from one (with torch imported), else None."""
    if _RECORD is None or _RECORD.get("error") or _RECORD.get("import_torch_s") is None:
        return None
    return dict(_RECORD)
