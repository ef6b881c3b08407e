"""OS facts behind one dispatch: probes ask here and never test sys.platform themselves.

`root` points Linux readers at a fake tree in tests; `reg` is a winreg-like seam on Windows.
Nothing here imports torch unless asked (`python_facts(check_torch=True)`, `torch_facts(import_torch=True)`),
and nothing initialises CUDA.
"""

from __future__ import annotations

import multiprocessing
import os
import platform as _pyplatform
import sys
import sysconfig
from typing import Any, Dict, Optional

import psutil

from gpudiag.backends import torch_meta
from gpudiag.platform import _darwin, _linux, _windows


def _system(system: Optional[str]) -> str:
    return system or {"win32": "Windows", "darwin": "Darwin"}.get(sys.platform, "Linux")


def os_facts(root: str = "/", environ: Optional[Dict[str, str]] = None, system: Optional[str] = None) -> Dict[str, Any]:
    environ = dict(os.environ) if environ is None else environ
    system = _system(system)
    uname = _pyplatform.uname()
    if system == "Linux":
        return _linux.os_facts(root, environ, uname.release)
    base = {"name": system, "distro_id": None, "distro_version": None, "distro_like": None,
            "kernel": uname.release, "wsl": None, "container": None, "virtualization": None}
    if system == "Windows":
        base.update(pretty=_windows.os_pretty(uname.release, uname.version), kernel=uname.version)
    else:
        base.update(pretty=f"macOS {_pyplatform.mac_ver()[0] or uname.release}")
    return base


def memory_facts(root: str = "/", system: Optional[str] = None, wsl: Optional[int] = None) -> Dict[str, Any]:
    """RAM, swap, limits and OOM evidence; `budget_bytes` is what new workers may still use."""
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    out: Dict[str, Any] = {
        "total_bytes": vm.total, "available_bytes": vm.available,
        "swap_total_bytes": sw.total, "swap_used_bytes": sw.used,
        "cgroup_version": None, "cgroup_limit_bytes": None, "cgroup_usage_bytes": None, "cgroup_oom_kills": None,
        "wsl_memory_cap_bytes": None, "overcommit_memory": None, "oom_kills_since_boot": None,
        "commit_limit_bytes": None, "committed_as_bytes": None,
    }
    budget = vm.available
    if _system(system) == "Linux":
        cg = _linux.cgroup_memory(root)
        out.update(cgroup_version=cg["version"], cgroup_limit_bytes=cg["limit_bytes"],
                   cgroup_usage_bytes=cg["usage_bytes"], cgroup_oom_kills=cg["oom_kills"])
        out.update(_linux.memory_extras(root))
        if wsl is None:
            wsl = _linux.detect_wsl(_linux.read(root, "/proc/version"),
                                    _linux.read(root, "/proc/sys/kernel/osrelease"), dict(os.environ))
        if wsl == 2:
            # The WSL2 VM's RAM *is* the cap (.wslconfig memory=, 50 % of the host by default).
            out["wsl_memory_cap_bytes"] = vm.total
        # The budget is the tightest of: free RAM, headroom under the cgroup limit, and, in strict
        # overcommit mode, headroom under the commit limit (CUDA reserves large host ranges there).
        if cg["limit_bytes"] is not None:
            budget = min(budget, max(0, cg["limit_bytes"] - (cg["usage_bytes"] or 0)))
        if out["overcommit_memory"] == 2 and out["commit_limit_bytes"] and out["committed_as_bytes"] is not None:
            budget = min(budget, max(0, out["commit_limit_bytes"] - out["committed_as_bytes"]))
    out["budget_bytes"] = budget
    return out


def cpu_facts(detailed: bool = False, root: str = "/", system: Optional[str] = None, reg: Any = None) -> Dict[str, Any]:
    """CPU brand and cores. detailed=True asks py-cpuinfo, which costs over a second (never in `env`)."""
    system = _system(system)
    brand = None
    if detailed:
        try:
            import cpuinfo

            brand = cpuinfo.get_cpu_info().get("brand_raw") or None
        except Exception:  # py-cpuinfo shells out to many tools; any failure falls back to the fast path
            brand = None
    if not brand:
        if system == "Linux":
            brand = _linux.cpu_brand(root)
        elif system == "Windows":
            brand = _windows.cpu_brand(reg)
        else:
            brand = _darwin.cpu_brand()
    brand = brand or _pyplatform.processor() or None
    freq = None
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        pass
    try:
        affinity = len(psutil.Process().cpu_affinity())
    except (AttributeError, OSError, psutil.Error):
        affinity = None
    return {
        "brand": brand,
        "arch": _pyplatform.machine() or None,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "affinity_cores": affinity,
        "freq_current_mhz": round(freq.current) if freq and freq.current else None,
        "freq_max_mhz": round(freq.max) if freq and freq.max else None,
    }


def python_facts(check_torch: bool = False) -> Dict[str, Any]:
    """The interpreter and its GIL; with check_torch, the GIL state is read after importing torch,
    since importing an extension without free-threading support re-enables it."""
    imported = False
    if check_torch and torch_meta.torch_version() is not None:
        try:
            import torch  # noqa: F401

            imported = True
        except Exception:
            imported = False
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))  # 0 on regular Windows builds
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    # The platform default (the first listed), not this process's own method: probes run in spawned
    # children, where get_start_method() would say "spawn" even on Linux where users get "fork".
    methods = multiprocessing.get_all_start_methods()
    start = methods[0] if methods else None
    return {
        "version": _pyplatform.python_version(),
        "implementation": _pyplatform.python_implementation(),
        "free_threaded_build": free_threaded,
        "gil_enabled": bool(is_enabled()) if is_enabled else True,
        "gil_checked_after_torch": imported,
        "switch_interval_s": sys.getswitchinterval(),
        "mp_start_method": start,
        "executable": sys.executable,
    }


def torch_facts(import_torch: bool = False) -> Dict[str, Any]:
    """torch's version and build, never initialising CUDA; cuDNN only when importing is allowed."""
    from gpudiag.capabilities import TORCH_HINT

    version = torch_meta.torch_version()
    out = {"version": version, "cuda_build": torch_meta.torch_cuda_version(), "hip": torch_meta.torch_hip_version(),
           "cudnn": None, "reason_missing": None if version else f"torch is not installed: {TORCH_HINT}"}
    if version and import_torch:
        try:
            import torch

            # cudnn.version() reads the library's version; it does not create a CUDA context.
            out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
            out["num_threads"] = torch.get_num_threads()
        except Exception as exc:
            out["import_error"] = f"{type(exc).__name__}: {exc}"
    return out
