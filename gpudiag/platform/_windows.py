"""Windows facts from the registry, through a `winreg`-like seam object.

`reg` is the `winreg` module in production and a fake with the same four names
(HKEY_LOCAL_MACHINE, OpenKey, QueryValueEx, CloseKey) in tests, so these paths are tested on Linux.
"""

from __future__ import annotations

import platform as _platform
import struct
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
    reg = reg if reg is not None else safe_default_reg()
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
    reg = reg if reg is not None else safe_default_reg()
    name = reg_value(reg, CPU0, "ProcessorNameString")
    return " ".join(name.split()) if isinstance(name, str) and name.strip() else None


def cpu_mhz(reg: Any = None) -> Optional[float]:
    """The registry's ~MHz (the nominal clock, MHz), or None: the fallback when psutil gives no
    maximum frequency."""
    reg = reg if reg is not None else safe_default_reg()
    mhz = reg_value(reg, CPU0, "~MHz")
    return float(mhz) if isinstance(mhz, int) and mhz > 0 else None


def safe_default_reg() -> Any:
    """winreg, or None off Windows, where every registry value then reads as missing."""
    try:
        return default_reg()
    except ImportError:  # not on Windows: every value reads as missing
        return None


# ------------------------------------------------------------------ CPU rate limit of a job object

# winnt.h JOB_OBJECT_CPU_RATE_CONTROL_* flags (Microsoft's JOBOBJECT_CPU_RATE_CONTROL_INFORMATION page).
_RATE_ENABLE, _RATE_WEIGHT_BASED, _RATE_HARD_CAP, _RATE_MIN_MAX = 0x1, 0x2, 0x4, 0x10
_JOB_CPU_RATE_CONTROL_CLASS = 15  # JobObjectCpuRateControlInformation


class JobApi:
    """QueryInformationJobObject on the calling process's job, through ctypes (Windows only)."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]

    def cpu_rate_control(self) -> Optional[bytes]:
        """The 8-byte JOBOBJECT_CPU_RATE_CONTROL_INFORMATION of this process's job, None outside a job."""
        c = self._ctypes
        buf = c.create_string_buffer(8)
        got = c.c_ulong(0)
        # hJob NULL: the job this process belongs to; the call fails when it belongs to none.
        if not self._k.QueryInformationJobObject(None, _JOB_CPU_RATE_CONTROL_CLASS, buf, 8, c.byref(got)):
            return None
        return buf.raw[:8]


def default_job_api() -> Any:
    """The real job-object seam, or None off Windows."""
    try:
        return JobApi()
    except (ImportError, OSError, AttributeError):  # not Windows (ctypes has no WinDLL)
        return None


def job_cpu_limit(api: Any, logical_cpus: Optional[int]) -> dict:
    """A hard CPU rate cap of this process's job object as a quota in CPUs (the least of the rate
    and the max rate), by kind; {} when there is no job, no cap, or it is only a weight or a soft target.

    The rate is in cycles per 10,000 of *all* the machine's processors, so 2500 on 8 CPUs is 2 CPUs.
    A rate without the hard-cap flag only applies under contention, and a weight is a share: neither
    stops a job on an idle machine, so neither is a limit. Only the job this process is directly in is
    read; a stricter enclosing job of a nested set is not visible through this call.
    """
    raw = api.cpu_rate_control() if api is not None else None
    if not raw or len(raw) < 8 or not logical_cpus:
        return {}
    flags, value = struct.unpack("<II", raw[:8])
    if not flags & _RATE_ENABLE or flags & _RATE_WEIGHT_BASED:
        return {}
    if flags & _RATE_MIN_MAX:
        rate = (value >> 16) & 0xFFFF  # MaxRate, the high WORD; MinRate is a reservation, not a cap
    elif flags & _RATE_HARD_CAP:
        rate = value
    else:
        return {}
    if not 0 < rate < 10000:
        return {}
    return {"quota_cpus": round(rate / 10000 * logical_cpus, 4), "quota_period_us": None,
            "quota_source": "Windows job object CPU rate (hard cap)"}
