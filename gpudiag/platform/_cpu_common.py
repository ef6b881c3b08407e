"""CPU helpers every OS's reader shares (platform.cpu_features for Linux, _cpu_windows, _darwin): instruction
sets from flag names, lscpu's cache cells (sizes in gpudiag.units's words). A leaf: it imports no other platform module,
so the per-OS readers and the dispatch that calls them form no cycle.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from gpudiag.units import fmt_bytes

# ------------------------------------------------------------------ instruction sets

X86_KEYS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f")
_AVX512_ORDER = ("f", "cd", "bw", "dq", "vl", "ifma", "vbmi", "vbmi2", "vnni", "bitalg", "vpopcntdq",
                 "bf16", "fp16", "vp2intersect")
ARM_KEYS = ("asimd", "sve", "sve2", "bf16", "i8mm", "sme")


def isa_from_flags(flags: List[str], arch: Optional[str]) -> dict:
    """{avx2: bool, ..., avx512: [subsets], amx: [units]} from CPU flag names (Linux spelling)."""
    have = set(flags)
    arm = (arch or "").lower() in ("aarch64", "arm64", "armv8l") or "asimd" in have
    if arm:
        out: Dict[str, Any] = {k: k in have for k in ARM_KEYS}
        out["family"] = "arm"
        return out
    out = {k: k in have for k in X86_KEYS}
    subsets = {f[len("avx512"):].lstrip("_") for f in have if f.startswith("avx512")}
    out["avx512"] = [s for s in _AVX512_ORDER if s in subsets] + sorted(subsets - set(_AVX512_ORDER))
    out["amx"] = sorted(f[len("amx_"):] for f in have if f.startswith("amx_"))
    out["family"] = "x86"
    return out


def isa_summary(isa: Optional[dict]) -> Optional[str]:
    """One line: "AVX2 yes · AVX-512: f, bw, ... · AMX: no" (x86) or "NEON yes · SVE no ..." (ARM)."""
    if not isa:
        return None
    yn = {True: "yes", False: "no", None: "unknown"}
    if isa.get("family") == "arm":
        return " · ".join(f"{label} {yn[isa.get(k)]}" for label, k in (
            ("NEON", "asimd"), ("SVE", "sve"), ("SVE2", "sve2"), ("BF16", "bf16"), ("I8MM", "i8mm"), ("SME", "sme")))
    parts = [f"{label} {yn[isa.get(k)]}" for label, k in (("AVX", "avx"), ("AVX2", "avx2"), ("FMA", "fma"))]
    a512 = isa.get("avx512")
    parts.append("AVX-512: " + (", ".join(a512) if a512 else "no") if isinstance(a512, list) else
                 f"AVX-512F {yn[isa.get('avx512f')]}")
    if isa.get("avx_vnni") is not None:
        parts.append(f"AVX-VNNI {yn[isa.get('avx_vnni')]}")
    amx = isa.get("amx")
    parts.append("AMX: " + (", ".join(amx) if amx else "no") if isinstance(amx, list) else "AMX: not reported")
    return " · ".join(parts)


# ------------------------------------------------------------------ caches as lscpu writes them

def cache_row(c: dict) -> str:
    """lscpu's cache cell, total size and instance count: "96 KiB (2 instances)"."""
    n = c.get("instances")
    inst = f" ({n} instance{'s' if n != 1 else ''})" if n else ""
    return f"{fmt_bytes(c.get('bytes_total'))}{inst}"


# sysfs / Windows cache (level, type) -> lscpu's cache name
CACHE_NAMES = {("1", "Data"): "L1d", ("1", "Instruction"): "L1i", ("2", "Unified"): "L2",
               ("3", "Unified"): "L3", ("4", "Unified"): "L4"}
