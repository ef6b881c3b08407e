"""What this machine can run, decided cheaply: no torch import, no NVML init, no CUDA init.

Each capability is available or not, with a reason that says what is missing and how to get it.
Probes that need more certainty (a CUDA device actually answering) check it themselves in their
isolated child and raise ProbeSkip.
"""

from __future__ import annotations

import functools
import importlib.util
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


def _nvml() -> Capability:
    """The `nvml` capability: pynvml importable and an NVML library on disk, found without loading either
    (loading and nvmlInit are the isolated probe's job, so deciding stays cheap)."""
    if importlib.util.find_spec("pynvml") is None:
        return Capability(False, "the pynvml module is missing: `pip install nvidia-ml-py`")
    from gpudiag.platform import libraries

    if libraries.nvml_library() is None:
        return Capability(False, f"NVML library {libraries.nvml_library_name()} not found: no NVIDIA driver is "
                                 "installed on this machine")
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
    from gpudiag import platform

    if platform.KIND == name:
        return Capability(True, "")
    return Capability(False, f"only meaningful on {name}; this is {platform.KIND}")


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
