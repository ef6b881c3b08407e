"""What a probe is: a name, the capabilities it needs, and a run function returning plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

SEVERITIES = ("info", "warning", "critical")


def finding(code: str, severity: str, message: str, evidence: Any = None, fix: Optional[str] = None) -> dict:
    """A finding: a stable upper-case code, a severity, what was seen, the numbers behind it, the fix."""
    if not code.isupper() or " " in code:
        raise ValueError(f"finding code must be UPPER_SNAKE_CASE, got {code!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return {"code": code, "severity": severity, "message": message, "evidence": evidence, "fix": fix}


@dataclass
class ProbeContext:
    """What a probe gets: the time budget mode, its timeout, options, and earlier probes' data."""

    mode: str = "quick"  # "quick" | "full"
    timeout_s: float = 60.0
    options: Dict[str, Any] = field(default_factory=dict)
    # Plain data of probes that already finished in this run (name -> data), e.g. `cycle` reads `gil`.
    results: Dict[str, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        """True in quick mode (the default budget): probes size their sweeps and repeats by it."""
        return self.mode == "quick"


@dataclass
class ProbeOutput:
    """What a probe's run returns: plain JSON-able data (the report's probes.<name>.data) and its findings."""

    data: Dict[str, Any]
    findings: List[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Probe:
    """One measurement. `run` must be a module-level function so a spawned child can import it."""

    name: str  # stable snake_case, the key in report["probes"]
    title: str
    summary: str  # one line for `gpudiag probes`
    run: Callable[[ProbeContext], ProbeOutput]
    needs: Tuple[str, ...] = ()  # capability names, see gpudiag.capabilities
    isolate: bool = True  # run in a spawned child (anything touching CUDA/NVML or that may hang)
    # Linux: fork its child from the run's start server, which has imported torch and this module already
    # (gpudiag.startserver), instead of spawning one that imports them again; elsewhere it is spawned.
    preload: bool = False
    timeout_s: float = 60.0  # default per-probe timeout in quick mode
    full_timeout_s: Optional[float] = None  # default in full mode (None: same as timeout_s)

    def default_timeout(self, mode: str) -> float:
        """Seconds the runner lets this probe run in `mode`: full_timeout_s in full mode where set, else timeout_s."""
        if mode == "full" and self.full_timeout_s is not None:
            return self.full_timeout_s
        return self.timeout_s


class ProbeSkip(Exception):
    """Raised by a probe that finds, once running, that it cannot measure here (e.g. no CUDA device).

    The message is the reason shown to the user: say what is missing and how to get it.
    """
