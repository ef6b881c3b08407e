"""macOS facts: platform.mac_ver, sysctl through libc (no subprocess), psutil."""

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


def memory_facts() -> dict:
    import psutil

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return {
        "total_bytes": vm.total, "available_bytes": vm.available,
        "swap_total_bytes": sw.total, "swap_used_bytes": sw.used,
        "cgroup_version": None, "cgroup_limit_bytes": None, "cgroup_limit_source": None,
        "cgroup_usage_bytes": None, "cgroup_oom_kills": None, "wsl_memory_cap_bytes": None,
        "overcommit_memory": None, "commit_limit_bytes": None, "committed_bytes": None,
        "oom_kills_since_boot": None,
        "budget_bytes": vm.available, "budget_source": "ram_available",
    }


def cpu_brand() -> Optional[str]:
    return sysctl_string("machdep.cpu.brand_string") or _platform.processor() or None
