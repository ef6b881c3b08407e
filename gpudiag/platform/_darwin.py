"""macOS facts: platform.mac_ver, sysctl through libc (no subprocess)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform as _platform
from typing import Optional

from gpudiag.platform import _cpu_common
from gpudiag.units import fmt_bytes


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
    """sysctlbyname(name) as a C int (kern.hv_vmm_present, hw.* counts), or None (unknown
    name, no libc)."""
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
    """system.os on macOS: the release (platform.mac_ver), the Darwin kernel, and a hypervisor when
    kern.hv_vmm_present says one."""
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
    """The CPU's name (machdep.cpu.brand_string, "Apple M2 Pro"), else platform.processor(), or None."""
    return sysctl_string("machdep.cpu.brand_string") or _platform.processor() or None


def sysctl_int64(name: str) -> Optional[int]:
    """sysctlbyname(name) as a 64-bit integer (cache sizes are int64), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        value = ctypes.c_int64(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return None
        # a 4-byte value (hw.optional.*) fills the low half on little-endian Macs
        return value.value if size.value == 8 else value.value & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def _sysctl(name: str):
    """A string or integer sysctl, whichever the name holds."""
    if name.startswith(("machdep.cpu.brand", "machdep.cpu.vendor", "hw.machine")):
        return sysctl_string(name)
    return sysctl_int64(name)


# hw.optional names -> Linux flag spelling (Intel Macs, then Apple silicon's FEAT_* names)
_MAC_FLAGS = (("hw.optional.sse4_2", "sse4_2"), ("hw.optional.avx1_0", "avx"), ("hw.optional.avx2_0", "avx2"),
              ("hw.optional.fma", "fma"), ("hw.optional.avx512f", "avx512f"), ("hw.optional.avx512bw", "avx512bw"),
              ("hw.optional.avx512dq", "avx512dq"), ("hw.optional.avx512vl", "avx512vl"),
              ("hw.optional.avx512vnni", "avx512_vnni"), ("hw.optional.neon", "asimd"),
              ("hw.optional.arm.FEAT_BF16", "bf16"), ("hw.optional.arm.FEAT_I8MM", "i8mm"),
              ("hw.optional.arm.FEAT_SME", "sme"))


def cpu_features(sysctl=None) -> dict:
    """system.cpu_features on macOS from sysctl (`sysctl` is a seam: name -> int | str | None)."""
    get = sysctl or _sysctl
    arch = _platform.machine() or None
    flags = [flag for name, flag in _MAC_FLAGS if get(name) == 1]
    isa = _cpu_common.isa_from_flags(flags, arch)
    caches = {}
    for label, name in (("L1d", "hw.l1dcachesize"), ("L1i", "hw.l1icachesize"), ("L2", "hw.l2cachesize"),
                        ("L3", "hw.l3cachesize")):
        n = get(name)
        if isinstance(n, int) and n > 0:
            caches[label] = {"bytes_each": n, "instances": None, "bytes_total": n}
    rows = [["Architecture", arch or "unknown"], ["CPU(s)", str(get("hw.logicalcpu") or "unknown")]]
    vendor = get("machdep.cpu.vendor")
    if vendor:
        rows.append(["Vendor ID", vendor])
    rows.append(["Model name", get("machdep.cpu.brand_string") or "unknown"])
    phys, pkgs = get("hw.physicalcpu"), get("hw.packages")
    if isinstance(phys, int) and phys:
        rows.append(["Core(s) per socket", str(phys // (pkgs or 1))])
    rows.append(["Socket(s)", str(pkgs or "unknown")])
    rows.append(["Flags", " ".join(flags) if flags else "none of the checked hw.optional features"])
    rows += [[f"{k} cache", f"{fmt_bytes(c['bytes_each'])} (per core or cluster, as sysctl reports it)"]
             for k, c in caches.items()]
    rows.append(["NUMA node(s)", "1 (macOS has one memory node)"])
    return {"isa": isa, "isa_summary": _cpu_common.isa_summary(isa), "flags": flags, "caches": caches,
            "numa": {"nodes": 1, "cpus": {}, "source": "macOS (uniform memory)", "reason": None},
            "rows": rows, "source": "sysctl hw.* / machdep.cpu.*", "reason": None}
