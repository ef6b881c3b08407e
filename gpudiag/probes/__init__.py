"""The probe registry: explicit, in the order they run (later probes may read earlier data)."""

from __future__ import annotations

from typing import List

from gpudiag.probes.base import Probe

# Each module defines PROBE and keeps heavy imports (torch, pynvml) inside its run function,
# so listing probes stays fast.
_MODULES = ("system", "driver", "gil", "cuda.launch", "cuda.contention", "cuda.pcie", "cycle")


def all_probes() -> List[Probe]:
    """Every registered Probe, in run order (system first, cycle last: later probes read earlier ones' data);
    imports each module, whose heavy imports wait inside its run function."""
    import importlib

    return [importlib.import_module(f"gpudiag.probes.{m}").PROBE for m in _MODULES]
