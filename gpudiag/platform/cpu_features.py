"""CPU instruction sets, caches, topology and NUMA: what `lscpu` (collect_env's CPU block on Linux)
and `wmic cpu` (on Windows) print, read from files and OS calls instead.

    facts(kind, root, reg, api, sysctl) -> system.cpu_features:
      {isa: {...}, isa_summary: str, flags: [str], caches: {L1d: {...}, ...}, numa: {...},
       rows: [[label, value], ...],  # lscpu's labels, in lscpu's order
       source, reason}

Linux reads /proc/cpuinfo and /sys/devices/system/{cpu,node} (one cache-size read per cache
instance, not per CPU); Windows reads the registry and kernel32 (platform._cpu_windows); macOS
reads sysctl (platform._darwin). Instruction sets decide CPU-side throughput: torch picks its CPU
kernels (DEFAULT / AVX2 / AVX512) and oneDNN its bf16/int8 paths (AVX512_BF16, AMX) from them.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

# The shared helpers, also read through this module (views/env_fields: cache_row; tests).
from gpudiag.platform._cpu_common import (  # noqa: F401
    CACHE_NAMES,
    cache_row,
    isa_from_flags,
    isa_summary,
)
from gpudiag.platform._files import exists, parse_cpulist, read_text
from gpudiag.platform._linux import virtualization_from_dmi

# ------------------------------------------------------------------ Linux

def parse_size(text: Optional[str]) -> Optional[int]:
    """sysfs cache size "48K" / "32768K" / "1M" -> bytes."""
    m = re.match(r"^\s*(\d+)\s*([KMG]?)", text or "")
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}[m.group(2)]


def parse_cpuinfo(text: str) -> List[Dict[str, str]]:
    """/proc/cpuinfo as one {key: value} per processor block (keys as the kernel spells them)."""
    blocks, current = [], {}
    for line in (text or "").splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks



def linux_caches(root: str, cpus: List[int]) -> Dict[str, dict]:
    """{L1d: {bytes_each, instances, bytes_total}, ...}: lscpu's "sum of all", one read per instance.

    Level and type are read once per cacheN index from cpu0; size and shared_cpu_list once per
    distinct instance (CPUs in a known shared list are skipped), so 128 CPUs cost ~130 reads.
    """
    base = "/sys/devices/system/cpu"
    first = cpus[0] if cpus else 0
    out: Dict[str, dict] = {}
    index = 0
    while exists(root, f"{base}/cpu{first}/cache/index{index}"):
        d0 = f"{base}/cpu{first}/cache/index{index}"
        level = (read_text(root, d0 + "/level") or "").strip()
        kind = (read_text(root, d0 + "/type") or "").strip()
        name = CACHE_NAMES.get((level, kind), f"L{level} {kind}".strip())
        covered: set = set()
        sizes: List[int] = []
        for cpu in cpus:
            if cpu in covered:
                continue
            d = f"{base}/cpu{cpu}/cache/index{index}"
            size = parse_size(read_text(root, d + "/size"))
            shared = parse_cpulist(read_text(root, d + "/shared_cpu_list")) or [cpu]
            covered.update(shared)
            if size is not None:
                sizes.append(size)
        if sizes:
            out[name] = {"bytes_each": sizes[0] if len(set(sizes)) == 1 else None,
                         "instances": len(sizes), "bytes_total": sum(sizes)}
        index += 1
    return out


def linux_numa(root: str) -> dict:
    """{nodes, cpus: {node: cpulist}, source, reason}."""
    base = "/sys/devices/system/node"
    online = read_text(root, base + "/online")
    if online is None:
        return {"nodes": None, "cpus": {}, "source": None,
                "reason": "no /sys/devices/system/node (kernel without NUMA support): one memory node"}
    nodes = parse_cpulist(online)
    cpus = {str(n): (read_text(root, f"{base}/node{n}/cpulist") or "").strip() for n in nodes}
    return {"nodes": len(nodes), "cpus": cpus, "source": base, "reason": None}


def linux_vulnerabilities(root: str) -> List[Tuple[str, str]]:
    """[(lscpu label, state)] from /sys/devices/system/cpu/vulnerabilities (lscpu's own source)."""
    folder = os.path.join(root, "sys/devices/system/cpu/vulnerabilities")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for n in names:
        state = (read_text(root, f"/sys/devices/system/cpu/vulnerabilities/{n}") or "").strip()
        out.append(("Vulnerability " + n.replace("_", " ").capitalize(), state))
    return out


def hypervisor_vendor(root: str) -> Tuple[Optional[str], Optional[str]]:
    """(vendor as lscpu names it, where it came from). lscpu asks CPUID leaf 0x40000000, which Python
    cannot; the paravirtual clock source, /sys/hypervisor and DMI name the same hypervisors."""
    xen = (read_text(root, "/sys/hypervisor/type") or "").strip()
    if xen:
        return xen.capitalize(), "/sys/hypervisor/type"
    clocks = read_text(root, "/sys/devices/system/clocksource/clocksource0/available_clocksource") or ""
    for marker, name in (("kvm-clock", "KVM"), ("hyperv", "Microsoft"), ("xen", "Xen"), ("vmware", "VMware")):
        if marker in clocks:
            return name, "available_clocksource " + marker
    dmi = virtualization_from_dmi(read_text(root, "/sys/class/dmi/id/sys_vendor"),
                                  read_text(root, "/sys/class/dmi/id/product_name"))
    names = {"kvm": "KVM", "qemu": "KVM", "hyper-v": "Microsoft", "vmware": "VMware", "xen": "Xen",
             "virtualbox": "KVM", "aws": "KVM", "gce": "KVM", "parallels": "Parallels"}
    if dmi:
        return names.get(dmi, dmi), "DMI sys_vendor/product_name"
    return None, None


_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu", "0x48": "HiSilicon",
                     "0x4e": "NVIDIA", "0x50": "APM", "0x51": "Qualcomm", "0x61": "Apple", "0x63": "Arm China",
                     "0x6d": "Microsoft", "0xc0": "Ampere"}


def _mhz(khz_text: Optional[str]) -> Optional[float]:
    """A sysfs frequency in kHz as MHz, or None when absent or malformed."""
    try:
        return int((khz_text or "").strip()) / 1000.0
    except ValueError:
        return None


def linux_facts(root: str = "/", logical: Optional[int] = None, physical: Optional[int] = None) -> dict:
    """system.cpu_features on Linux, from a real or fake root."""
    text = read_text(root, "/proc/cpuinfo")
    if not text:
        return {"isa": None, "isa_summary": None, "flags": [], "caches": {}, "numa": linux_numa(root),
                "rows": [], "source": None, "reason": "/proc/cpuinfo is not readable"}
    blocks = parse_cpuinfo(text)
    procs = [b for b in blocks if "processor" in b] or blocks
    first = procs[0] if procs else {}
    arch = _platform.machine() if root == "/" else (first.get("CPU architecture") and "aarch64") or "x86_64"
    flags = (first.get("flags") or first.get("Features") or "").split()
    isa = isa_from_flags(flags, arch)
    online_text = read_text(root, "/sys/devices/system/cpu/online")
    online = parse_cpulist(online_text) or list(range(len(procs)))
    n_logical = logical or len(procs) or len(online) or None
    sockets = len({b.get("physical id") for b in procs if "physical id" in b}) or None
    cores = len({(b.get("physical id"), b.get("core id")) for b in procs if "core id" in b}) or physical
    rows: List[List[str]] = [["Architecture", arch]]
    if isa["family"] == "x86":
        rows.append(["CPU op-mode(s)", "32-bit, 64-bit" if "lm" in flags else "32-bit"])
    elif arch in ("aarch64", "arm64"):
        rows.append(["CPU op-mode(s)", "64-bit (32-bit support not checked)"])
    if first.get("address sizes"):
        rows.append(["Address sizes", first["address sizes"]])
    rows.append(["Byte Order", "Little Endian" if sys.byteorder == "little" else "Big Endian"])
    rows.append(["CPU(s)", str(n_logical) if n_logical else "unknown"])
    if online_text:
        rows.append(["On-line CPU(s) list", online_text.strip()])
    offline = (read_text(root, "/sys/devices/system/cpu/offline") or "").strip()
    if offline:
        rows.append(["Off-line CPU(s) list", offline])
    vendor = first.get("vendor_id") or _ARM_IMPLEMENTERS.get((first.get("CPU implementer") or "").lower(),
                                                                  first.get("CPU implementer"))
    if vendor:
        rows.append(["Vendor ID", vendor])
    model_name = first.get("model name") or (f"CPU part {first['CPU part']} (lscpu maps part numbers to names)"
                                             if first.get("CPU part") else None)
    rows.append(["Model name", model_name or "unknown"])
    for label, key in (("CPU family", "cpu family"), ("Model", "model")):
        if first.get(key):
            rows.append([label, first[key]])
    if n_logical and cores:
        rows.append(["Thread(s) per core", str(max(1, n_logical // cores))])
        rows.append(["Core(s) per socket", str(cores // (sockets or 1))])
    rows.append(["Socket(s)", str(sockets) if sockets else "unknown (no `physical id` in /proc/cpuinfo)"])
    if first.get("stepping"):
        rows.append(["Stepping", first["stepping"]])
    boost = (read_text(root, "/sys/devices/system/cpu/cpufreq/boost") or "").strip()
    if boost in ("0", "1"):
        rows.append(["Frequency boost", "enabled" if boost == "1" else "disabled"])
    cpu0 = f"/sys/devices/system/cpu/cpu{online[0] if online else 0}/cpufreq"
    fmax, fmin = _mhz(read_text(root, cpu0 + "/cpuinfo_max_freq")), _mhz(read_text(root, cpu0 + "/cpuinfo_min_freq"))
    if fmax:
        cur = [_mhz(read_text(root, f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq")) for c in online]
        cur = [c for c in cur if c]
        if cur:
            rows.append(["CPU(s) scaling MHz", f"{round(100 * sum(cur) / len(cur) / fmax)}%"])
        rows.append(["CPU max MHz", f"{fmax:.4f}"])
    if fmin:
        rows.append(["CPU min MHz", f"{fmin:.4f}"])
    bogo = first.get("bogomips") or first.get("BogoMIPS")
    if bogo:
        rows.append(["BogoMIPS", bogo])
    rows.append(["Flags", " ".join(flags) if flags else "none listed in /proc/cpuinfo"])
    if "vmx" in flags or "svm" in flags:
        rows.append(["Virtualization", "VT-x" if "vmx" in flags else "AMD-V"])
    if "hypervisor" in flags:
        vendor_hv, hv_source = hypervisor_vendor(root)
        rows.append(["Hypervisor vendor", f"{vendor_hv} (from {hv_source})" if vendor_hv
                     else "not identified (lscpu asks CPUID, which gpudiag cannot from Python)"])
        rows.append(["Virtualization type", "full"])
    caches = linux_caches(root, online)
    for name, c in caches.items():
        rows.append([f"{name} cache", cache_row(c)])
    numa = linux_numa(root)
    if numa["nodes"]:
        rows.append(["NUMA node(s)", str(numa["nodes"])])
        rows += [[f"NUMA node{n} CPU(s)", cpus] for n, cpus in numa["cpus"].items()]
    else:
        rows.append(["NUMA node(s)", numa["reason"]])
    rows += [list(v) for v in linux_vulnerabilities(root)]
    return {"isa": isa, "isa_summary": isa_summary(isa), "flags": flags, "caches": caches, "numa": numa,
            "rows": rows, "source": "/proc/cpuinfo, /sys/devices/system/cpu, /sys/devices/system/node",
            "reason": None}


# ------------------------------------------------------------------ dispatch

def facts(kind: str, root: str = "/", reg: Any = None, api: Any = None,
          sysctl: Optional[Callable[[str], Any]] = None) -> dict:
    """system.cpu_features for this OS; never raises (a failed read becomes `reason`)."""
    import psutil

    logical, physical = psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
    if kind == "windows":
        from gpudiag.platform import _cpu_windows

        return _cpu_windows.facts(reg=reg, api=api, logical=logical, physical=physical)
    if kind == "macos":
        from gpudiag.platform import _darwin

        return _darwin.cpu_features(sysctl=sysctl)
    return linux_facts(root, logical=logical if root == "/" else None, physical=physical if root == "/" else None)
