"""The facts `gpudiag env` prints, gathered in this process on the fast path: no torch import, no py-cpuinfo,
no CUDA. The same collectors as the `system` and `driver` probes; views/env_summary.py only renders them.

    collect(environ, session_factory) -> {"system": system data with its findings,
                                          "driver": {"data", "findings"} or {"unavailable": reason}}
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from gpudiag import platform
from gpudiag.backends import nvml
from gpudiag.platform import inventory, toolchain
from gpudiag.probes import driver, system


def collect_system(environ: Optional[Mapping[str, str]] = None, pending: Optional[toolchain.Pending] = None) -> dict:
    """The `system` data on the fast path, with its findings. `pending` is a platform.inventory.start() handle
    whose compiler subprocesses are already running."""
    data = system.collect(detailed_cpu=False, import_torch=False, environ=environ, pending=pending)
    data["findings"] = system.findings_for(data)
    return data


def collect_driver(session_factory: Optional[Callable] = None) -> dict:
    """{"data": driver data, "findings": [...]} or {"unavailable": "no NVIDIA driver: <reason>"}."""
    session_factory = session_factory or nvml.session
    try:
        with session_factory() as n:
            data = driver.collect(n)
    except nvml.NvmlUnavailable as exc:
        return {"unavailable": f"no NVIDIA driver: {exc}"}
    return {"data": data, "findings": driver.analyze(data)}


def collect(environ: Optional[Mapping[str, str]] = None, session_factory: Optional[Callable] = None) -> dict:
    """Both, the compilers' `--version` runs started first so they overlap NVML and the file reads."""
    pending = inventory.start(environ, kind=platform.KIND)
    gpu = collect_driver(session_factory)
    return {"system": collect_system(environ, pending), "driver": gpu}
