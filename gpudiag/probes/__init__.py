"""The probe registry: explicit, in the order they run (later probes may read earlier data)."""

from __future__ import annotations

from typing import List

from gpudiag.probes.base import Probe

# Each module defines PROBE and keeps heavy imports (torch, pynvml) inside its run function,
# so listing probes stays fast.
_MODULES = ("system", "driver", "gil", "cuda.launch", "cuda.contention", "cuda.pcie", "cycle")


def all_probes() -> List[Probe]:
    import importlib

    return [importlib.import_module(f"gpudiag.probes.{m}").PROBE for m in _MODULES]


def by_name(name: str) -> Probe:
    for p in all_probes():
        if p.name == name:
            return p
    raise KeyError(name)
