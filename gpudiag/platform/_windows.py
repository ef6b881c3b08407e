"""Windows facts through a winreg-like seam (tests pass a fake; see tests/fakes.FakeWinreg)."""

from __future__ import annotations

from typing import Any, Optional

CPU_KEY = r"HARDWARE\DESCRIPTION\System\CentralProcessor\0"


def _winreg(reg: Any) -> Any:
    if reg is not None:
        return reg
    import winreg  # only on Windows

    return winreg


def reg_value(reg: Any, path: str, name: str) -> Any:
    """HKLM\\path\\name, or None when the key or value is absent or unreadable."""
    try:
        r = _winreg(reg)
        with r.OpenKey(r.HKEY_LOCAL_MACHINE, path) as key:
            return r.QueryValueEx(key, name)[0]
    except (OSError, ImportError):
        return None


def cpu_brand(reg: Any = None) -> Optional[str]:
    v = reg_value(reg, CPU_KEY, "ProcessorNameString")
    return v.strip() if isinstance(v, str) else None


def os_pretty(release: str, version: str) -> str:
    """'Windows 11 (build 22631)': Windows 11 still reports release '10'; build >= 22000 tells."""
    try:
        build = int(version.split(".")[-1])
    except (ValueError, IndexError):
        return f"Windows {release}"
    name = "11" if release == "10" and build >= 22000 else release
    return f"Windows {name} (build {build})"
