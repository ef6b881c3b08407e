"""Windows CPU features without wmic (removed in Windows 11 25H2) or PowerShell (a second to start):
the registry's CentralProcessor key and three kernel32 calls.

    IsProcessorFeaturePresent(PF_*)     -> instruction sets (SSE4.2, AVX, AVX2, AVX-512F; ARM SVE, SME ...)
    GetLogicalProcessorInformation()    -> cores, SMT, packages, NUMA nodes and every cache instance
    GetNumaHighestNodeNumber()          -> NUMA node count when the above is unavailable

`api` is the seam: Kernel32Api in production, any object with feature_present(n),
logical_processor_information() -> bytes | None, numa_highest_node() -> int | None and
pointer_size in tests (tests/platform/test_cpu_features.py), so all of this runs on Linux.
"""

from __future__ import annotations

import platform as _platform
import re
import struct
from typing import Any, Dict, List, Optional

from gpudiag.platform import _cpu_common
from gpudiag.platform._windows import CPU0, reg_value, safe_default_reg

# winnt.h PF_* values (Microsoft's IsProcessorFeaturePresent documentation), Linux flag spelling.
X86_FEATURES = {10: "sse2", 13: "sse3", 36: "ssse3", 37: "sse4_1", 38: "sse4_2", 39: "avx", 40: "avx2",
                41: "avx512f", 42: "erms", 28: "rdrand", 32: "rdtscp", 33: "rdpid", 60: "bmi2", 61: "movdir64b"}
ARM_FEATURES = {29: "asimd", 30: "crypto", 31: "crc32", 34: "atomics", 43: "asimddp", 46: "sve", 47: "sve2",
                66: "i8mm", 67: "fphp", 68: "bf16", 70: "sme", 71: "sme2"}

RELATION_CORE, RELATION_NUMA, RELATION_CACHE, RELATION_PACKAGE = 0, 1, 2, 3
CACHE_TYPES = {0: "Unified", 1: "Instruction", 2: "Data", 3: "Trace"}


class Kernel32Api:
    """The real kernel32 calls through ctypes (Windows only)."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self.pointer_size = ctypes.sizeof(ctypes.c_void_p)

    def feature_present(self, n: int) -> bool:
        """Whether the CPU has feature PF_* `n` (IsProcessorFeaturePresent): Windows' instruction-set query."""
        return bool(self._k.IsProcessorFeaturePresent(n))

    def logical_processor_information(self) -> Optional[bytes]:
        """The raw SYSTEM_LOGICAL_PROCESSOR_INFORMATION array (this processor group), or None."""
        c = self._ctypes
        length = c.c_ulong(0)
        self._k.GetLogicalProcessorInformation(None, c.byref(length))  # fails, says the size needed
        if not length.value:
            return None
        buf = c.create_string_buffer(length.value)
        if not self._k.GetLogicalProcessorInformation(buf, c.byref(length)):
            return None
        return buf.raw[:length.value]

    def numa_highest_node(self) -> Optional[int]:
        """GetNumaHighestNodeNumber(), or None when the call fails."""
        n = self._ctypes.c_ulong(0)
        return n.value if self._k.GetNumaHighestNodeNumber(self._ctypes.byref(n)) else None


def parse_slpi(raw: bytes, pointer_size: int = 8) -> dict:
    """{cores, threads, packages, numa_nodes, caches: {L1d: {bytes_each, instances, bytes_total}}}.

    Each entry: ULONG_PTR ProcessorMask; LOGICAL_PROCESSOR_RELATIONSHIP Relationship; then a
    16-byte union aligned to 8 (CACHE_DESCRIPTOR = BYTE Level, BYTE Associativity, WORD LineSize,
    DWORD Size, PROCESSOR_CACHE_TYPE Type): 32 bytes per entry on 64-bit, 24 on 32-bit.
    """
    size = 32 if pointer_size == 8 else 24
    union_at = 16 if pointer_size == 8 else 8
    mask_fmt = "<Q" if pointer_size == 8 else "<I"
    cores = threads = packages = numa = 0
    caches: Dict[str, List[int]] = {}
    for off in range(0, len(raw) - size + 1, size):
        mask, = struct.unpack_from(mask_fmt, raw, off)
        relation, = struct.unpack_from("<i", raw, off + pointer_size)
        if relation == RELATION_CORE:
            cores += 1
            threads += bin(mask).count("1")
        elif relation == RELATION_PACKAGE:
            packages += 1
        elif relation == RELATION_NUMA:
            numa += 1
        elif relation == RELATION_CACHE:
            level, _assoc, _line, nbytes, ctype = struct.unpack_from("<BBHIi", raw, off + union_at)
            name = _cpu_common.CACHE_NAMES.get((str(level), CACHE_TYPES.get(ctype, "")),
                                                  f"L{level} {CACHE_TYPES.get(ctype, '')}".strip())
            caches.setdefault(name, []).append(nbytes)
    order = {"L1d": 0, "L1i": 1, "L2": 2, "L3": 3}
    return {"cores": cores or None, "threads": threads or None, "packages": packages or None,
            "numa_nodes": numa or None,
            "caches": {k: {"bytes_each": v[0] if len(set(v)) == 1 else None, "instances": len(v),
                           "bytes_total": sum(v)}
                       for k, v in sorted(caches.items(), key=lambda kv: order.get(kv[0], 9))}}


def parse_identifier(text: Optional[str]) -> Dict[str, str]:
    """ "Intel64 Family 6 Model 165 Stepping 5" -> {family: "6", model: "165", stepping: "5"}."""
    out = {}
    for key in ("Family", "Model", "Stepping", "Revision"):
        m = re.search(rf"\b{key}\s+(\w+)", text or "")
        if m:
            out[key.lower()] = m.group(1)
    return out


def _default_api() -> Any:
    """The real kernel32 seam, or None off Windows: facts() then says what was not read."""
    try:
        return Kernel32Api()
    except (ImportError, OSError, AttributeError):  # not Windows (ctypes has no WinDLL)
        return None


def facts(reg: Any = None, api: Any = None, logical: Optional[int] = None, physical: Optional[int] = None,
          arch: Optional[str] = None) -> dict:
    """system.cpu_features on Windows, shaped as on Linux, with lscpu's labels for the rows."""
    reg = reg if reg is not None else safe_default_reg()
    api = api if api is not None else _default_api()
    arch = arch or _platform.machine() or None
    is_arm = (arch or "").upper().startswith("ARM")
    table = ARM_FEATURES if is_arm else X86_FEATURES
    reasons = []
    flags: List[str] = []
    if api is not None:
        try:
            flags = [name for n, name in sorted(table.items()) if api.feature_present(n)]
        except OSError as exc:
            reasons.append(f"IsProcessorFeaturePresent failed: {exc}")
    else:
        reasons.append("kernel32 is not available: instruction sets, caches and NUMA not read")
    if is_arm:
        isa = {k: (k in flags) if api is not None else None for k in _cpu_common.ARM_KEYS}
        isa["family"] = "arm"
    else:
        isa = {k: (k in flags) if api is not None else None for k in ("sse4_2", "avx", "avx2", "avx512f")}
        # Windows reports AVX-512 Foundation only, and no FMA, VNNI or AMX bit.
        isa.update(fma=None, avx_vnni=None, avx512=None, amx=None, family="x86")
    topo: dict = {"caches": {}}
    raw = None
    if api is not None:
        try:
            raw = api.logical_processor_information()
        except OSError as exc:
            reasons.append(f"GetLogicalProcessorInformation failed: {exc}")
    if raw:
        topo = parse_slpi(raw, getattr(api, "pointer_size", 8))
    numa_nodes = topo.get("numa_nodes")
    if numa_nodes is None and api is not None:
        try:
            hi = api.numa_highest_node()
            numa_nodes = hi + 1 if hi is not None else None
        except OSError:
            numa_nodes = None
    ident = parse_identifier(reg_value(reg, CPU0, "Identifier"))
    vendor = reg_value(reg, CPU0, "VendorIdentifier")
    name = reg_value(reg, CPU0, "ProcessorNameString")
    mhz = reg_value(reg, CPU0, "~MHz")
    cores = topo.get("cores") or physical
    packages = topo.get("packages")
    rows: List[List[str]] = [["Architecture", arch or "unknown"], ["CPU(s)", str(logical or "unknown")]]
    if vendor:
        rows.append(["Vendor ID", str(vendor).strip()])
    rows.append(["Model name", " ".join(str(name).split()) if name else "unknown (registry ProcessorNameString not readable)"])
    for label, key in (("CPU family", "family"), ("Model", "model")):
        if key in ident:
            rows.append([label, ident[key]])
    if logical and cores:
        rows.append(["Thread(s) per core", str(max(1, logical // cores))])
        rows.append(["Core(s) per socket", str(cores // (packages or 1))])
    rows.append(["Socket(s)", str(packages) if packages else "unknown"])
    if "stepping" in ident:
        rows.append(["Stepping", ident["stepping"]])
    if isinstance(mhz, int) and mhz > 0:
        rows.append(["CPU max MHz", f"{float(mhz):.4f}"])
    rows.append(["Flags", " ".join(flags) if flags else "not read"])
    for cname, c in topo["caches"].items():
        rows.append([f"{cname} cache", _cpu_common.cache_row(c)])
    rows.append(["NUMA node(s)", str(numa_nodes) if numa_nodes else "unknown"])
    numa = {"nodes": numa_nodes, "cpus": {}, "source": "GetLogicalProcessorInformation" if topo.get("numa_nodes")
            else ("GetNumaHighestNodeNumber" if numa_nodes else None),
            "reason": None if numa_nodes else "not read"}
    return {"isa": isa, "isa_summary": _cpu_common.isa_summary(isa), "flags": flags, "caches": topo["caches"],
            "numa": numa, "rows": rows,
            "source": "registry CentralProcessor\\0, kernel32 IsProcessorFeaturePresent / GetLogicalProcessorInformation",
            "reason": "; ".join(reasons) or None}
