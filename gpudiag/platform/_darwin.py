"""macOS facts (no NVIDIA GPUs there since 10.13; reported so a report still says what it ran on)."""

from __future__ import annotations

import subprocess
from typing import Optional


def cpu_brand() -> Optional[str]:
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                             text=True, timeout=2)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
