"""Windows facts from the registry, through a `winreg`-like seam object.

`reg` is the `winreg` module in production and a fake with the same four names
(HKEY_LOCAL_MACHINE, OpenKey, QueryValueEx, CloseKey) in tests, so these paths are tested on Linux.
"""

from __future__ import annotations

import platform as _platform
from typing import Any, Optional

from gpudiag.platform._linux import virtualization_from_dmi

CURRENT_VERSION = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion"
CPU0 = r"HARDWARE\DESCRIPTION\System\CentralProcessor\0"
BIOS = r"HARDWARE\DESCRIPTION\System\BIOS"


def default_reg() -> Any:
    """The winreg module (ImportError off Windows): the production value of the `reg` seam."""
    import winreg  # only exists on Windows

    return winreg


def reg_value(reg: Any, subkey: str, name: str, hive: Any = None) -> Any:
    """One value under HKLM\\subkey, or None when the key/value is missing or access is denied."""
    if reg is None:
        return None
    try:
        key = reg.OpenKey(hive if hive is not None else reg.HKEY_LOCAL_MACHINE, subkey)
    except OSError:
        return None
    try:
        value, _type = reg.QueryValueEx(key, name)
        return value
    except OSError:
        return None
    finally:
        try:
            reg.CloseKey(key)
        except OSError:  # winreg fails with OSError only; closing is clean-up, what was read stands
            pass


def _windows_pretty(product: Optional[str], display: Optional[str], build: Optional[int]) -> str:
    """"Windows 11 Pro 23H2 (build 22631)": ProductName corrected by the build number,
    since Windows 11 still says Windows 10 there."""
    # Windows 11 still says "Windows 10 ..." in ProductName; build 22000 is the first Windows 11.
    name = product or "Windows"
    if build is not None and build >= 22000 and "Windows 10" in name:
        name = name.replace("Windows 10", "Windows 11")
    parts = [name]
    if display:
        parts.append(display)
    if build is not None:
        parts.append(f"(build {build})")
    return " ".join(parts)


def os_facts(reg: Any = None) -> dict:
    """system.os on Windows from the registry: product, display version, build and UBR, and the
    BIOS vendor for virtualization."""
    reg = reg if reg is not None else _safe_default_reg()
    product = reg_value(reg, CURRENT_VERSION, "ProductName")
    display = reg_value(reg, CURRENT_VERSION, "DisplayVersion") or reg_value(reg, CURRENT_VERSION, "ReleaseId")
    build_raw = reg_value(reg, CURRENT_VERSION, "CurrentBuildNumber") or reg_value(reg, CURRENT_VERSION, "CurrentBuild")
    try:
        build = int(build_raw) if build_raw is not None else None
    except (TypeError, ValueError):
        build = None
    ubr = reg_value(reg, CURRENT_VERSION, "UBR")
    kernel = f"10.0.{build}.{ubr}" if build is not None and isinstance(ubr, int) else (
        f"10.0.{build}" if build is not None else (_platform.version() or None))
    vendor = reg_value(reg, BIOS, "SystemManufacturer")
    model = reg_value(reg, BIOS, "SystemProductName")
    return {
        "name": "Windows",
        "pretty": _windows_pretty(product, display, build),
        "distro_id": None,
        "distro_version": display,
        "distro_like": None,
        "distro_codename": None,
        "kernel": kernel,
        "wsl": None,
        "container": None,
        "virtualization": virtualization_from_dmi(vendor, model),
        "signals": {"registry": CURRENT_VERSION, "wsl": [], "container": []},
    }


def cpu_brand(reg: Any = None) -> Optional[str]:
    """ProcessorNameString from the registry with its padding collapsed, or None."""
    reg = reg if reg is not None else _safe_default_reg()
    name = reg_value(reg, CPU0, "ProcessorNameString")
    return " ".join(name.split()) if isinstance(name, str) and name.strip() else None


def cpu_mhz(reg: Any = None) -> Optional[float]:
    """The registry's ~MHz (the nominal clock, MHz), or None: the fallback when psutil gives no
    maximum frequency."""
    reg = reg if reg is not None else _safe_default_reg()
    mhz = reg_value(reg, CPU0, "~MHz")
    return float(mhz) if isinstance(mhz, int) and mhz > 0 else None


def _safe_default_reg() -> Any:
    """winreg, or None off Windows, where every registry value then reads as missing."""
    try:
        return default_reg()
    except ImportError:  # not on Windows: every value reads as missing
        return None
