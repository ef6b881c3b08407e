"""The seven verdicts, one per suspected cause, in the order the report shows them."""

from __future__ import annotations

from gpudiag.diagnose.verdicts.gpu_sharing import verdict_context_switch, verdict_driver_model, verdict_gpu_shared
from gpudiag.diagnose.verdicts.parallelism import verdict_gil_contention, verdict_worker_memory
from gpudiag.diagnose.verdicts.transfer import verdict_host_sync_idle, verdict_pcie_bandwidth

VERDICTS = (
    ("gil_contention", verdict_gil_contention),
    ("context_switch", verdict_context_switch),
    ("worker_memory", verdict_worker_memory),
    ("pcie_bandwidth", verdict_pcie_bandwidth),
    ("host_sync_idle", verdict_host_sync_idle),
    ("gpu_shared", verdict_gpu_shared),
    ("driver_model", verdict_driver_model),
)
