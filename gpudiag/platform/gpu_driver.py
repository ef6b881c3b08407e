"""The `driver` data (docs/report-contract.md): the NVIDIA driver and each GPU's state through NVML
(gpudiag.backends.nvml), and the host's driver stack (platform.nvidia: kernel module and MPS on Linux, WSL2's
paravirtualised GPU, HAGS and TDR on Windows). The `driver` probe, `gpudiag env`, preflight, fleet and watch
all collect it here; probes.driver.analyze turns it into findings.

Values NVML does not give on a GPU/driver/OS are the string "n/a" (NotSupported is data).
GPU UUIDs, serial numbers, command lines and user names are never read into the data.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from gpudiag.backends import nvml as nvml_backend
from gpudiag.backends.nvml import NA
from gpudiag.platform import nvidia


def _bool(value: Any) -> Any:
    """NVML enable/disable ints as bool; NA stays NA."""
    if value is NA or not isinstance(value, int):
        return NA
    return bool(value)


def _num(value: Any, scale: float = 1.0, ndigits: Optional[int] = None) -> Any:
    """An NVML number times `scale`, rounded to `ndigits` (mW -> W with 1e-3); NA for NA, bools and non-numbers."""
    if value is NA or not isinstance(value, (int, float)) or isinstance(value, bool):
        return NA
    v = value * scale
    return round(v, ndigits) if ndigits is not None else v


def _pair(value: Any) -> List[Any]:
    """NVML's [current, pending] answers (MIG mode, ECC mode) as a 2-list, or [NA, NA] when it gave none."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return list(value)
    return [NA, NA]


def _memory(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """Total, used and free device memory in bytes, read without a CUDA context (NA each where NVML cannot say)."""
    info = n.call("nvmlDeviceGetMemoryInfo", h)
    if info is NA:
        return {"memory_total_bytes": NA, "memory_used_bytes": NA, "memory_free_bytes": NA}
    return {"memory_total_bytes": getattr(info, "total", NA),
            "memory_used_bytes": getattr(info, "used", NA),
            "memory_free_bytes": getattr(info, "free", NA)}


def _driver_model(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """{current, pending} driver model (WDDM/TCC/MCDM) with None and a reason off Windows, where NVML has none:
    WDDM is what puts the desktop and the batching of launches in the way."""
    pair = n.driver_model(h)
    if pair is NA:
        return {"current": None, "pending": None,
                "reason": "NVML reports a driver model only for Windows drivers (WDDM/TCC/MCDM)"}
    current, pending = (None if v is NA else v for v in pair)
    return {"current": current, "pending": pending}


def _pcie(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """Current and maximum PCIe generation and width as NVML reports them ("n/a" where the GPU does not say):
    the idle link downtrains, so max vs current tells a slot limit from power saving."""
    return {
        "gen_current": n.call("nvmlDeviceGetCurrPcieLinkGeneration", h),
        "gen_max_system": n.call("nvmlDeviceGetMaxPcieLinkGeneration", h),  # device and system
        "gen_max_card": n.call("nvmlDeviceGetGpuMaxPcieLinkGeneration", h),  # device alone
        "width_current": n.call("nvmlDeviceGetCurrPcieLinkWidth", h),
        "width_max": n.call("nvmlDeviceGetMaxPcieLinkWidth", h),
    }


def _clock_events(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """The reason mask, its names, and the subset that means heat/power (not idle or app clocks)."""
    raw = n.clock_event_reasons(h)
    if not isinstance(raw, int):
        return {"raw": NA, "active": NA, "throttling": NA}
    active = nvml_backend.decode_clock_event_reasons(raw)
    return {"raw": raw, "active": active, "throttling": [r for r in active if r in nvml_backend.THROTTLING_REASONS]}


def _ecc(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """ECC mode, volatile/aggregate corrected and uncorrected error counts, pending page retirement and
    row remapping (NA where the GPU has no ECC, as GeForce): uncorrectable errors make results wrong."""
    mode = _pair(n.call("nvmlDeviceGetEccMode", h))
    out: Dict[str, Any] = {"enabled": _bool(mode[0])}
    for counter, cname in ((nvml_backend.NVML_VOLATILE_ECC, "volatile"),
                           (nvml_backend.NVML_AGGREGATE_ECC, "aggregate")):
        for etype, ename in ((nvml_backend.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
                             (nvml_backend.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected")):
            out[f"{cname}_{ename}"] = n.call("nvmlDeviceGetTotalEccErrors", h, etype, counter)
    pending = n.call("nvmlDeviceGetRetiredPagesPendingStatus", h)
    out["retired_pages_pending"] = _bool(pending)
    rows = n.call("nvmlDeviceGetRemappedRows", h)
    if isinstance(rows, (list, tuple)) and len(rows) == 4:
        out["remapped_rows"] = {"correctable": rows[0], "uncorrectable": rows[1],
                                "pending": bool(rows[2]), "failure": bool(rows[3])}
    else:
        out["remapped_rows"] = NA
    return out


def _processes(n: nvml_backend.Nvml, h: Any, procs_lazy) -> Dict[str, Any]:
    """{compute: [...], graphics: [...]} with names: NVML's first, else the process list's."""
    out: Dict[str, Any] = {}
    for kind in ("compute", "graphics"):
        listed = n.processes(h, kind)
        if listed is NA:
            out[kind] = NA
            continue
        rows = []
        for p in listed:
            pid = p["pid"]
            raw = n.process_name(pid) if pid is not None else None
            if raw is None and pid is not None:
                raw = procs_lazy().get(pid)
            name = nvidia.clean_process_name(raw)
            category, label = nvidia.classify_process(name)
            rows.append({"pid": pid, "name": name, "used_memory_bytes": p["used_memory_bytes"],
                         "category": category, "label": label if name else None})
        out[kind] = rows
    return out


def _gpu(n: nvml_backend.Nvml, index: int, procs_lazy) -> Dict[str, Any]:
    """One GPU's entry of the `driver` data (docs/report-contract.md), or {index, error} when NVML cannot
    give its handle, so one lost GPU does not hide the others."""
    try:
        h = n.handle(index)
    except nvml_backend.NvmlError as exc:
        # An NVML error for one GPU (GpuIsLost, NoPermission) must not hide the others.
        return {"index": index, "error": str(exc)}
    util = n.call("nvmlDeviceGetUtilizationRates", h)
    mig = _pair(n.call("nvmlDeviceGetMigMode", h))
    compute_mode = n.call("nvmlDeviceGetComputeMode", h)
    gpu: Dict[str, Any] = {"index": index, "name": n.call("nvmlDeviceGetName", h)}
    gpu.update(_memory(n, h))
    gpu.update({
        "driver_model": _driver_model(n, h),
        "persistence_mode": _bool(n.call("nvmlDeviceGetPersistenceMode", h)),
        "compute_mode": nvml_backend.COMPUTE_MODES.get(compute_mode, f"unknown({compute_mode})")
        if isinstance(compute_mode, int) else NA,
        "mig_mode": {"current": _bool(mig[0]), "pending": _bool(mig[1])},
        "display_attached": _bool(n.call("nvmlDeviceGetDisplayMode", h)),
        "display_active": _bool(n.call("nvmlDeviceGetDisplayActive", h)),
        "pcie": _pcie(n, h),
        "clock_event_reasons": _clock_events(n, h),
        "temperature_c": n.call("nvmlDeviceGetTemperature", h, nvml_backend.NVML_TEMPERATURE_GPU),
        "power_draw_w": _num(n.call("nvmlDeviceGetPowerUsage", h), 1e-3, 2),
        "power_limit_w": _num(n.first(["nvmlDeviceGetEnforcedPowerLimit",
                                       "nvmlDeviceGetPowerManagementLimit"], h), 1e-3, 2),
        "utilization_gpu_percent": getattr(util, "gpu", NA) if util is not NA else NA,
        "utilization_memory_percent": getattr(util, "memory", NA) if util is not NA else NA,
        "ecc": _ecc(n, h),
        "processes": _processes(n, h, procs_lazy),
    })
    return gpu


def collect(n: nvml_backend.Nvml, root: str = "/", reg: Any = None, *, host: Optional[str] = None,
            procs: Optional[Mapping[int, str]] = None) -> Dict[str, Any]:
    """The `driver` data (docs/report-contract.md) from an open NVML session.

    root: filesystem root for /proc and /sys reads (a fake tree in tests).
    reg: a winreg-like object for the Windows settings (a fake in tests; None = the real registry
         on Windows). host: "linux" | "wsl2" | "windows" | ...; None = detect (platform.nvidia.gpu_host).
    procs: a {pid: name} snapshot used to name GPU processes NVML cannot name, and to spot the MPS
         daemon; None = read the live process list when (and only when) it is needed.
    """
    host = host or nvidia.gpu_host(root, reg)
    snapshot: Dict[str, Any] = {"procs": procs}

    def procs_lazy() -> Mapping[int, str]:
        """The {pid: name} snapshot, read once and only if a GPU process needs naming (it walks every process)."""
        if snapshot["procs"] is None:
            snapshot["procs"] = nvidia.process_snapshot()
        return snapshot["procs"]

    count = n.device_count()
    data: Dict[str, Any] = {
        "host": host,
        "driver_version": n.call("nvmlSystemGetDriverVersion"),
        "cuda_driver_version": nvml_backend.cuda_version_string(
            n.first(["nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"])),
        "nvml_version": n.call("nvmlSystemGetNVMLVersion"),
        "kernel_module": None,
        "mps_daemon_running": None,
        "windows": None,
        "gpu_count": count,
        "gpus": [_gpu(n, i, procs_lazy) for i in range(count)],
    }
    if host == "linux":
        data["kernel_module"] = nvidia.kernel_module(root)
        data["mps_daemon_running"] = nvidia.mps_daemon_running(procs_lazy())
    elif host == "wsl2":
        data["kernel_module"] = {"flavour": None, "version": None, "source": None,
                                 "reason": "WSL2: the GPU is paravirtualised through /dev/dxg; the NVIDIA "
                                           "driver runs on Windows, there is no Linux nvidia module"}
    elif host == "windows":
        data["windows"] = nvidia.windows_graphics_settings(reg)
    return data


def snapshot(lib: Any = None, **kwargs: Any) -> Dict[str, Any]:
    """The `driver` data in one call (for `gpudiag env` and `preflight`): opens and closes NVML.

    Raises gpudiag.backends.nvml.NvmlUnavailable with the reason in words when NVML cannot start.
    kwargs go to collect() (root, reg, host, procs).
    """
    with nvml_backend.session(lib) as n:
        return collect(n, **kwargs)


def host_from_os_facts(os_facts: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The driver stack the `system` probe's OS facts name ("windows", "wsl2"), or None to detect it here."""
    if not isinstance(os_facts, Mapping):
        return None
    if os_facts.get("name") == "Windows":
        return "windows"
    if os_facts.get("wsl") == 2:
        return "wsl2"
    return None
