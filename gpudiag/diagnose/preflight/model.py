"""What preflight works with: the plan (what the user will run), a check's result, the overall result, and the
per-worker defaults with their sources (docs/preflight.md).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from gpudiag.backends.nvml import NA  # what the NVML seam writes for a value the GPU/driver does not give

STATUSES = ("pass", "warn", "fail", "skip")


STRATEGIES = ("threads", "processes")


MAX_WORKERS = 100_000  # more than any machine runs: a bigger number is a typo, and overflows the arithmetic
MAX_DEVICE = 4096


# Conservative per-worker defaults, used only when neither a saved report nor a flag gives a figure.
# Sources (docs/preflight.md, research/methods.md 7.3): a CUDA context takes ~300-400 MB of device
# memory with lazy module loading (measured 287 MB LAZY vs 667 MB EAGER, pytorch#107667/#109888)
# and host RSS after importing torch and initialising CUDA is ~1-2 GB (1.9 GB max RSS, pytorch#12873).
DEFAULT_PROCESS_HOST_BYTES = 2 * 2**30


DEFAULT_PROCESS_DEVICE_BYTES = 768 * 2**20


# Threads share one process and one CUDA context; each thread adds its own tensors and buffers.
DEFAULT_THREAD_HOST_BYTES = 128 * 2**20


DEFAULT_THREAD_DEVICE_BYTES = 256 * 2**20


DEFAULT_LABEL = "conservative default, no saved report"  # docs/preflight.md says where the figures come from


REPORT_GLOB = "gpudiag-report-*.json"


MAX_REPORTS_READ = 20  # newest by modification time; keeps the search cheap in a folder of old reports


ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "CUDA_DEVICE_ORDER", "CUDA_MODULE_LOADING",
             "PYTORCH_NO_CUDA_MEMORY_CACHING")


@dataclass
class Check:
    """One preflight check's outcome: name, status (pass | warn | fail | skip), a sentence for the user and the facts it was judged on."""
    name: str
    status: str  # pass | warn | fail | skip
    message: str
    evidence: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """The check as a JSON-ready dict (the shape `gpudiag preflight --json` prints)."""
        return {"name": self.name, "status": self.status, "message": self.message, "evidence": self.evidence}


@dataclass(frozen=True)
class Plan:
    """What the user is about to run; the checks compare the machine against it."""
    workers: int = 1
    strategy: str = "processes"
    device: int = 0
    ram_per_worker: Optional[int] = None
    vram_per_worker: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    min_free_disk: Optional[int] = None


class PreflightFailed(RuntimeError):
    """Raised by `PreflightResult.raise_if_failed()`; `.result` holds every check."""

    def __init__(self, result: "PreflightResult"):
        self.result = result
        super().__init__("gpudiag preflight: NOT READY: " + "; ".join(result.reasons()))


@dataclass
class PreflightResult:
    """Every check of one preflight run plus the plan it judged (workers, strategy, device) and how long it took (s); ready unless a check blocks."""
    checks: List[Check]
    workers: int
    strategy: str
    per_worker: Dict[str, Any]
    duration_s: float
    strict: bool = False
    device: int = 0

    def blocking(self) -> List[Check]:
        """The checks that make it not ready: any fail; with strict, any warn too."""
        bad = ("fail", "warn") if self.strict else ("fail",)
        return [c for c in self.checks if c.status in bad]

    @property
    def ready(self) -> bool:
        """True when no check blocks (no fail; with strict, no warn either): whether the planned run may start."""
        return not self.blocking()

    def reasons(self) -> List[str]:
        """"name: message" of each blocking check: what to fix before the run can start."""
        return [f"{c.name}: {c.message}" for c in self.blocking()]

    def check(self, name: str) -> Optional[Check]:
        """The check with this name, or None when it did not run: lets a caller test one condition."""
        return next((c for c in self.checks if c.name == name), None)

    def raise_if_failed(self) -> "PreflightResult":
        """This result when ready, so a script can chain it; raises PreflightFailed naming the blocking checks otherwise."""
        if not self.ready:
            raise PreflightFailed(self)
        return self

    def to_dict(self) -> Dict[str, Any]:
        """The whole result as a JSON-ready dict (ready, strict, checks, plan, per-worker needs, duration in s)."""
        return {"ready": self.ready, "strict": self.strict, "checks": [c.to_dict() for c in self.checks],
                "workers": self.workers, "strategy": self.strategy, "device": self.device,
                "per_worker": self.per_worker, "duration_s": round(self.duration_s, 3)}

    def to_json(self) -> str:
        """The result as indented JSON text, for `--json` and for logging from a training script."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def format_text(self) -> str:
        """One line per check, then READY / NOT READY and the reasons."""
        width = max(len(c.name) for c in self.checks) if self.checks else 0
        lines = [f"gpudiag preflight: {self.workers} worker{'s' if self.workers != 1 else ''}, "
                 f"{self.strategy}, CUDA device {self.device}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper():<4}  {c.name:<{width}}  {c.message}")
        warns = [c.name for c in self.checks if c.status == "warn"]
        if self.ready:
            tail = f" ({len(warns)} warning{'s' if len(warns) != 1 else ''}: {', '.join(warns)})" if warns else ""
            lines.append(f"READY{tail}  [{self.duration_s:.2f} s]")
        else:
            lines.append(f"NOT READY{' (--strict: warnings count)' if self.strict else ''}  [{self.duration_s:.2f} s]")
            lines.extend(f"  - {r}" for r in self.reasons())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_text()


def num(value: Any) -> Optional[float]:
    """A usable number, or None for None / "n/a" / bools / anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def version_tuple(text: Any) -> Optional[Tuple[int, int]]:
    """(major, minor) parsed from a version string such as "12.4" or "550.54.15", or None when unknown: driver and CUDA minimums compare as tuples."""
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?", str(text)) if text not in (None, NA) else None
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def display_path(path: str) -> str:
    """A path safe to print and share: relative to the current folder, or with the home folder as ~."""
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute)
        if not rel.startswith(".."):
            return rel
    except ValueError:  # another drive on Windows
        pass
    home = os.path.expanduser("~")
    if home and home != "~" and (absolute == home or absolute.startswith(home + os.sep)):
        return "~" + absolute[len(home):]
    return absolute


def worst(statuses: Iterable[str]) -> str:
    """The most severe status among the checks' (fail > warn > pass > skip), "pass" for none: one status for a group of checks."""
    order = {"fail": 3, "warn": 2, "pass": 1, "skip": 0}
    return max(statuses, key=lambda s: order[s], default="pass")
