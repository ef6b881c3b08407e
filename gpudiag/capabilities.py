"""What this machine can run, decided cheaply: no torch import, no NVML init, no CUDA init.

Each capability is available or not, with a reason that says what is missing and how to get it.
Probes that need more certainty (a CUDA device actually answering) check it themselves in their
isolated child and raise ProbeSkip.
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Dict, Optional

from gpudiag.backends import torch_meta
from gpudiag.backends.torch_meta import TORCH_HINT  # kept here too: the views and probes say it with CUDA_BUILD_HINT

CUDA_BUILD_HINT = "install a CUDA build from pytorch.org"


@dataclass(frozen=True)
class Capability:
    """One capability met or not; `reason` is the words a skipped probe shows (what is missing, how to get it)."""

    available: bool
    reason: str  # why not (empty when available)


def _nvml_library() -> Optional[str]:
    """Path or name of the NVML shared library if one is present, without loading it."""
    if sys.platform == "win32":
        candidates = [
            os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "System32", "nvml.dll"),
            os.path.join(os.environ.get("ProgramFiles", r"C:\Program Files"),
                         "NVIDIA Corporation", "NVSMI", "nvml.dll"),
        ]
        return next((p for p in candidates if os.path.exists(p)), None)
    for path in ("/usr/lib/wsl/lib/libnvidia-ml.so.1",):
        if os.path.exists(path):
            return path
    if sys.platform.startswith("linux"):
        return _linux_library("libnvidia-ml.so")
    return ctypes.util.find_library("nvidia-ml")


_LINUX_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib", "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib")


def _linux_library(stem: str) -> Optional[str]:
    """A shared library by the usual folders and the loader's cache (read as a file).

    Not ctypes.util.find_library: when the loader's cache misses, it runs gcc, which takes a
    second and leaves ccXXXXXX temp files in /tmp when Ctrl-C reaches it.
    """
    from gpudiag.platform import ldcache

    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(_LINUX_LIB_DIRS)
    for d in dirs:
        for name in (stem + ".1", stem):
            path = os.path.join(d, name)
            if os.path.exists(path):
                return path
    cached = ldcache.find(stem)
    return cached[0] if cached else None


def _nvml() -> Capability:
    """The `nvml` capability: pynvml importable and an NVML library on disk, found without loading either
    (loading and nvmlInit are the isolated probe's job, so deciding stays cheap)."""
    if importlib.util.find_spec("pynvml") is None:
        return Capability(False, "the pynvml module is missing: `pip install nvidia-ml-py`")
    if _nvml_library() is None:
        lib = "nvml.dll" if sys.platform == "win32" else "libnvidia-ml.so.1"
        return Capability(False, f"NVML library {lib} not found: no NVIDIA driver is installed on this machine")
    return Capability(True, "")


def _torch() -> Capability:
    """The `torch` capability, read from torch's package files: importing torch costs seconds."""
    if torch_meta.torch_version() is None:
        return Capability(False, f"torch is not installed: {TORCH_HINT}")
    return Capability(True, "")


def _cuda() -> Capability:
    """The `cuda` capability: a CUDA build of torch and an NVIDIA driver. Whether a device really answers
    is only known after CUDA init, which probes do in their child (and raise ProbeSkip)."""
    torch = _torch()
    if not torch.available:
        return torch
    if torch_meta.torch_cuda_version() is None:
        hip = torch_meta.torch_hip_version()
        if hip:
            return Capability(False, f"the installed torch {torch_meta.torch_version()} is a ROCm build (HIP {hip}): "
                                     "gpudiag's GPU probes measure NVIDIA GPUs through CUDA and NVML")
        return Capability(False, f"the installed torch {torch_meta.torch_version()} is a CPU-only build: "
                                 f"{CUDA_BUILD_HINT}")
    nvml = _nvml()
    if not nvml.available:
        return Capability(False, f"no NVIDIA GPU driver: {nvml.reason}")
    return Capability(True, "")


def _platform(name: str) -> Capability:
    """The `linux`/`windows` capability: met when this OS is `name`, for probes of OS-specific settings."""
    here = {"win32": "windows", "linux": "linux", "darwin": "macos"}.get(sys.platform, sys.platform)
    if here == name:
        return Capability(True, "")
    return Capability(False, f"only meaningful on {name}; this is {here}")


@functools.lru_cache(maxsize=1)
def detect() -> Dict[str, Capability]:
    """Every capability by name, decided once per process (cached): the runner (through missing()) and
    `gpudiag probes` read it, so a probe that cannot run here is skipped with its reason, not spawned."""
    return {
        "torch": _torch(),
        "nvml": _nvml(),
        "cuda": _cuda(),
        "linux": _platform("linux"),
        "windows": _platform("windows"),
    }


def missing(needs, caps: Optional[Dict[str, Capability]] = None) -> Optional[str]:
    """The reason the first unmet capability gives, or None when all are met."""
    caps = caps if caps is not None else detect()
    for need in needs:
        cap = caps.get(need)
        if cap is None:
            return f"unknown capability {need!r}"
        if not cap.available:
            return cap.reason
    return None
