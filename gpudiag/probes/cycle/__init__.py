"""The `cycle` probe: a training-like loop (workload.py) run under each parallelism strategy
(strategies.py), with the GPU's idle gaps read from a profiler or CUDA-event timeline (timeline.py)."""

from gpudiag.probes.cycle.probe import PROBE

__all__ = ["PROBE"]
