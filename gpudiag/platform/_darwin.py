"""macOS facts: platform.mac_ver, sysctl through libc (no subprocess)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform as _platform
from typing import Optional


def sysctl_string(name: str) -> Optional[str]:
    """sysctlbyname(name) as a string, or None (unknown name, no libc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        size = ctypes.c_size_t(0)
        if libc.sysctlbyname(name.encode(), None, ctypes.byref(size), None, 0) != 0 or size.value == 0:
            return None
        buf = ctypes.create_string_buffer(size.value)
        if libc.sysctlbyname(name.encode(), buf, ctypes.byref(size), None, 0) != 0:
            return None
        return buf.value.decode("utf-8", "replace").strip() or None
    except (OSError, AttributeError):
        return None


def sysctl_int(name: str) -> Optional[int]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        value = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return None
        return value.value
    except (OSError, AttributeError):
        return None


def os_facts() -> dict:
    release = _platform.mac_ver()[0] or None
    return {
        "name": "Darwin",
        "pretty": f"macOS {release}" if release else "macOS",
        "distro_id": None,
        "distro_version": release,
        "distro_like": None,
        "distro_codename": None,
        "kernel": _platform.release() or None,
        "wsl": None,
        "container": None,
        "virtualization": "hypervisor (kern.hv_vmm_present)" if sysctl_int("kern.hv_vmm_present") == 1 else None,
        "signals": {"wsl": [], "container": []},
    }


def cpu_brand() -> Optional[str]:
    return sysctl_string("machdep.cpu.brand_string") or _platform.processor() or None
