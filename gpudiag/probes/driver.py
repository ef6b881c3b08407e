"""Probe `driver`: the NVIDIA driver, each GPU's state, and who else is using the GPU.

`collect()` (gpudiag.platform.gpu_driver) gathers the data through the NVML seam and the OS facts in
gpudiag.platform.nvidia; `analyze()` here turns the data into findings. Both are reused by `gpudiag env`
and `gpudiag preflight`: no torch, no CUDA, one NVML session.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

from gpudiag.backends import nvml as nvml_backend
from gpudiag.platform import gpu_driver
# The probe's data: `gpudiag env`, preflight, fleet and watch collect it through these names too.
from gpudiag.platform.gpu_driver import collect, snapshot  # noqa: F401
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, ProbeSkip, finding
from gpudiag.units import fmt_bytes

# A link reading counts as "under load" above this GPU utilisation (links downtrain at idle).
_BUSY_PERCENT = 50
# TdrDelay at or below this (seconds) kills kernels that run longer on a display GPU.
_TDR_SHORT_S = 2


# ----------------------------------------------------------------------------- findings

def _names(rows: Iterable[dict]) -> str:
    """The distinct labels of process rows, comma-separated, for a finding's message."""
    seen: List[str] = []
    for r in rows:
        label = r.get("label") or r.get("name") or f"an unnamed process (pid {r.get('pid')})"
        if label not in seen:
            seen.append(label)
    return ", ".join(seen)


def _brief(rows: Iterable[dict]) -> List[dict]:
    """Process rows cut to pid, name and memory for a finding's evidence (no category/label noise)."""
    return [{"pid": r.get("pid"), "name": r.get("name"), "used_memory_bytes": r.get("used_memory_bytes")}
            for r in rows]


def _proc_rows(gpu: dict, kind: str) -> List[dict]:
    """The GPU's `kind` (compute/graphics) process rows, or [] where NVML could not list them."""
    rows = (gpu.get("processes") or {}).get(kind)
    return rows if isinstance(rows, list) else []


def _sharing_findings(gpu: dict, tag: str, host: Any, own: set) -> List[dict]:
    """Who else uses the GPU: the desktop drawing on it, desktop programs, other compute processes (`own`: gpudiag's
    pids, never counted)."""
    out: List[dict] = []
    idx = gpu.get("index")
    graphics = _proc_rows(gpu, "graphics")
    compute = _proc_rows(gpu, "compute")
    every: Dict[Any, dict] = {}
    for r in graphics + compute:  # C+G processes (Windows) are in both lists
        every.setdefault(r.get("pid"), r)
    drawing = {r.get("pid") for r in graphics}
    computing = {r.get("pid") for r in compute}
    if (gpu.get("driver_model") or {}).get("current") == "WDDM":
        # Under WDDM every desktop program shows as C+G (graphics and compute): count C+G as drawing.
        computing -= drawing
    mine = [r for r in every.values() if r.get("pid") not in own]
    desktop = [r for r in mine if r.get("category") == "display"]
    # Known desktop apps, and unknown processes that only draw (no CUDA context of their own).
    apps = [r for r in mine if r.get("category") == "app"
            or (r.get("category") == "other" and r.get("pid") not in computing)]
    others = [r for r in mine if r.get("category") == "other" and r.get("pid") in computing]

    display_active = gpu.get("display_active") is True
    if desktop or display_active:
        fix = ("Drive the display from another GPU: on a hybrid laptop run the desktop on the integrated "
               "GPU (PRIME on-demand / Optimus), on a desktop plug the monitor into the other GPU or the "
               "motherboard; or run long jobs from a text console or over SSH with no desktop session.")
        if host in ("windows", "wsl2"):
            fix = ("Under WDDM the desktop always shares the GPU it is drawn on: connect the monitor to the "
                   "integrated GPU (or set the desktop apps to 'Power saving' in Settings > Display > Graphics) "
                   "so the NVIDIA GPU only runs your job.")
        what = _names(desktop) if desktop else "a display"
        out.append(finding(
            "GPU_SHARED_WITH_DISPLAY", "warning",
            f"{tag} also draws the desktop ({what}): the display server/compositor gets GPU time slices "
            "between your kernels and can stall them while it redraws.",
            {"gpu": idx, "display_active": gpu.get("display_active"), "processes": _brief(desktop)}, fix))
    if apps:
        out.append(finding(
            "GPU_SHARED_WITH_APP", "warning",
            f"{tag} is used by desktop programs ({_names(apps)}): each holds its own GPU context, and the GPU "
            "time-slices between them and your work, so throughput drops while they draw - the "
            "'GPU looks dead while VS Code runs' effect.",
            {"gpu": idx, "processes": _brief(apps)},
            "Close them during long runs, or turn off their hardware acceleration (VS Code: "
            "\"disable-hardware-acceleration\": true in argv.json; browsers: Settings > System), or on a hybrid "
            "laptop let them run on the integrated GPU."))
    if others:
        used = [r.get("used_memory_bytes") for r in others if isinstance(r.get("used_memory_bytes"), int)]
        out.append(finding(
            "OTHER_COMPUTE_PROCESSES", "warning",
            f"{tag} already runs {len(others)} other compute process(es) ({_names(others)}): they share "
            "the GPU by time-slicing and hold device memory"
            + (f" ({fmt_bytes(sum(used))})." if used else "."),
            {"gpu": idx, "processes": _brief(others)},
            "Stop them or wait for them before a long run; `nvidia-smi` lists them."))
    return out


def _clock_findings(gpu: dict, tag: str) -> List[dict]:
    """Clocks held down right now by heat or power."""
    out: List[dict] = []
    idx = gpu.get("index")
    ce = gpu.get("clock_event_reasons") or {}
    throttling = ce.get("throttling")
    if isinstance(throttling, list) and throttling:
        out.append(finding(
            "CLOCKS_THROTTLED", "warning",
            f"{tag} clocks are held down right now by {', '.join(throttling)} "
            f"(temperature {gpu.get('temperature_c')} C, power {gpu.get('power_draw_w')} W of "
            f"{gpu.get('power_limit_w')} W).",
            {"gpu": idx, "reasons": throttling, "raw": ce.get("raw"), "temperature_c": gpu.get("temperature_c"),
             "power_draw_w": gpu.get("power_draw_w"), "power_limit_w": gpu.get("power_limit_w")},
            "Thermal: clean the fans, raise the laptop, use a cooler room or a lower power profile. Power cap: on a "
            "laptop plug in the charger and pick a performance power mode; `nvidia-smi -q -d PERFORMANCE` "
            "shows the cause over time."))
    return out


def _pcie_findings(gpu: dict, tag: str) -> List[dict]:
    """A link below its maximum (a warning only under load: idle links downtrain) or a slot slower than the card."""
    out: List[dict] = []
    idx = gpu.get("index")
    pcie = gpu.get("pcie") or {}
    gen, gen_sys, gen_card = pcie.get("gen_current"), pcie.get("gen_max_system"), pcie.get("gen_max_card")
    width, width_max = pcie.get("width_current"), pcie.get("width_max")
    below = []
    if isinstance(gen, int) and isinstance(gen_sys, int) and gen < gen_sys:
        below.append(f"Gen{gen} of Gen{gen_sys}")
    if isinstance(width, int) and isinstance(width_max, int) and width < width_max:
        below.append(f"x{width} of x{width_max}")
    if below:
        util = gpu.get("utilization_gpu_percent")
        busy = isinstance(util, int) and util >= _BUSY_PERCENT
        out.append(finding(
            "PCIE_LINK_BELOW_MAX", "warning" if busy else "info",
            f"{tag} PCIe link runs at {' and '.join(below)}"
            + (f" while the GPU is {util}% busy." if busy else
               f" at {util}% utilisation: links downtrain when idle, so this must be confirmed under load "
               "(the pcie probe reads the link during a copy)."),
            {"gpu": idx, "pcie": pcie, "utilization_gpu_percent": util},
            "If it stays low under load: reseat the card, use a x16 slot wired to the CPU, check BIOS PCIe "
            "settings and risers." if busy else None))
    if isinstance(gen_sys, int) and isinstance(gen_card, int) and gen_sys < gen_card:
        out.append(finding(
            "PCIE_SLOT_LIMITS_CARD", "info",
            f"{tag} supports PCIe Gen{gen_card} but this slot/system allows Gen{gen_sys}: host<->device "
            "copies top out at the slot's rate.",
            {"gpu": idx, "gen_max_card": gen_card, "gen_max_system": gen_sys},
            "Use a slot of the card's generation if the board has one; otherwise keep transfers few and large."))
    return out


def _setup_findings(gpu: dict, tag: str, host: Any) -> List[dict]:
    """How the GPU is set up: persistence mode, the Windows driver model (and a pending change), a restricted compute
    mode, MIG."""
    out: List[dict] = []
    idx = gpu.get("index")
    if host == "linux" and gpu.get("persistence_mode") is False:
        out.append(finding(
            "PERSISTENCE_MODE_OFF", "info",
            f"{tag} persistence mode is off: when no process holds the GPU the driver tears its state down, "
            "and the next CUDA start pays the re-initialisation again (noticeable on headless machines).",
            {"gpu": idx, "persistence_mode": False},
            "sudo nvidia-smi -pm 1, or enable nvidia-persistenced (systemctl enable --now nvidia-persistenced)."))

    dm = gpu.get("driver_model") or {}
    if dm.get("current") == "WDDM" and host == "windows":
        out.append(finding(
            "DRIVER_MODEL_WDDM", "info",
            f"{tag} runs under the WDDM driver model: Windows schedules it together with the desktop, "
            "kernel launches go through WDDM command batching (launch latency higher and more variable than "
            "on Linux or TCC), NVML cannot attribute memory to processes, and kernels running longer than "
            "the TDR delay are reset.",
            {"gpu": idx, "driver_model": dm, "display_active": gpu.get("display_active")},
            "Prefer fewer, larger kernels or CUDA graphs (compare in the launch and cycle probes). A GPU that "
            "drives no display can switch to TCC/MCDM with `nvidia-smi -dm` where the product supports it "
            "(not GeForce)."))
    if dm.get("current") and dm.get("pending") and dm.get("current") != dm.get("pending"):
        out.append(finding(
            "DRIVER_MODEL_CHANGE_PENDING", "info",
            f"{tag} driver model changes from {dm['current']} to {dm['pending']} at the next reboot.",
            {"gpu": idx, "driver_model": dm}, "Reboot to apply it before measuring."))

    mode = gpu.get("compute_mode")
    if mode == "Prohibited":
        out.append(finding(
            "COMPUTE_MODE_RESTRICTED", "critical",
            f"{tag} compute mode is Prohibited: no process can create a CUDA context on it.",
            {"gpu": idx, "compute_mode": mode}, "sudo nvidia-smi -i %s -c DEFAULT" % idx))
    elif mode in ("Exclusive_Process", "Exclusive_Thread"):
        out.append(finding(
            "COMPUTE_MODE_RESTRICTED", "warning",
            f"{tag} compute mode is {mode}: only one process can hold a CUDA context at a time, so a "
            "processes strategy with several workers on this GPU fails (unless MPS serves them).",
            {"gpu": idx, "compute_mode": mode}, "sudo nvidia-smi -i %s -c DEFAULT" % idx))

    mig = (gpu.get("mig_mode") or {}).get("current")
    if mig is True:
        out.append(finding(
            "MIG_ENABLED", "info",
            f"{tag} is partitioned with MIG: CUDA sees MIG instances, not the whole GPU, and NVML does "
            "not report utilisation for it.",
            {"gpu": idx, "mig_mode": gpu.get("mig_mode")}, None))
    return out


def _memory_health_findings(gpu: dict, tag: str) -> List[dict]:
    """Uncorrectable ECC errors or a failed row remapping, and retirements waiting for a reset."""
    out: List[dict] = []
    idx = gpu.get("index")
    ecc = gpu.get("ecc") or {}
    unc = {k: ecc.get(k) for k in ("volatile_uncorrected", "aggregate_uncorrected")
           if isinstance(ecc.get(k), int) and ecc.get(k) > 0}
    rows = ecc.get("remapped_rows") if isinstance(ecc.get("remapped_rows"), dict) else {}
    if unc or rows.get("failure"):
        out.append(finding(
            "ECC_ERRORS", "critical",
            f"{tag} reports uncorrectable memory errors {unc or ''}"
            + (" and a failed row remapping" if rows.get("failure") else "") + ": results may be wrong "
            "and processes on it may be killed.",
            {"gpu": idx, "ecc": ecc},
            "Drain the GPU, reset it (nvidia-smi -r) and, if errors return, have it serviced."))
    if rows.get("pending") or ecc.get("retired_pages_pending") is True:
        out.append(finding(
            "GPU_RESET_PENDING", "warning",
            f"{tag} has memory pages/rows waiting to be retired: they take effect only after a GPU reset.",
            {"gpu": idx, "remapped_rows": rows or None, "retired_pages_pending": ecc.get("retired_pages_pending")},
            "Reset the GPU when it is idle (nvidia-smi -r) or reboot."))
    return out


def _gpu_findings(gpu: dict, data: dict, own: set) -> List[dict]:
    """Findings for one readable GPU, in this order: who else shares it (desktop, apps, other compute),
    throttling, PCIe link, persistence, driver and compute mode, MIG, ECC. `own`: pids of gpudiag itself,
    never counted."""
    tag = f"GPU {gpu.get('index')} ({gpu.get('name')})"
    host = data.get("host")
    return (_sharing_findings(gpu, tag, host, own) + _clock_findings(gpu, tag) + _pcie_findings(gpu, tag)
            + _setup_findings(gpu, tag, host) + _memory_health_findings(gpu, tag))


def analyze(data: Dict[str, Any], own_pids: Optional[Iterable[int]] = None) -> List[dict]:
    """Findings from `driver` data. own_pids: processes that are the caller itself (not 'others')."""
    own = set(own_pids) if own_pids is not None else {os.getpid(), os.getppid()}
    out: List[dict] = []
    gpus = [g for g in data.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        out.append(finding(
            "NO_GPU_VISIBLE", "critical",
            "The NVIDIA driver answers but shows no GPU to this system (a container without the GPU "
            "passed through, or the GPU fell off the bus).",
            {"gpu_count": data.get("gpu_count"), "driver_version": data.get("driver_version")},
            "Containers: run with --gpus all (NVIDIA Container Toolkit). Otherwise check `nvidia-smi` and "
            "`dmesg` for Xid errors."))
    for gpu in gpus:
        if "error" in gpu:
            out.append(finding("GPU_UNREADABLE", "critical", f"GPU {gpu.get('index')} could not be read: "
                               f"{gpu['error']}", {"gpu": gpu.get("index")},
                               "Check `nvidia-smi` and `dmesg` for Xid errors; a reset or reboot may be needed."))
            continue
        out.extend(_gpu_findings(gpu, data, own))

    host = data.get("host")
    if host == "wsl2":
        models = sorted({(g.get("driver_model") or {}).get("current") for g in gpus} - {None})
        out.append(finding(
            "WSL2_GPU_PARAVIRTUALIZED", "info",
            "The GPU is reached through WSL2's paravirtualised /dev/dxg: each submission crosses VMBus to the "
            f"Windows driver ({'/'.join(models) or 'WDDM'}), so launch latency, transfer rates and what NVML "
            "shows (no per-process list, no MPS) differ from native Linux.",
            {"driver_model": models, "driver_version": data.get("driver_version")},
            "Compare with native Linux or Windows if launch latency or transfers look slow; keep "
            "work in few, large kernels and batch host<->device copies."))
    if data.get("mps_daemon_running") is True:
        out.append(finding(
            "MPS_ACTIVE", "info",
            "An NVIDIA MPS daemon is running: CUDA processes that connect to it share one GPU context, so "
            "kernels from several processes can run at the same time instead of time-slicing.",
            {"mps_daemon_running": True},
            "Keep it in mind when reading the processes strategy; stop it with `echo quit | "
            "nvidia-cuda-mps-control` to measure without it."))

    win = data.get("windows") or {}
    hags = win.get("hags") or {}
    tdr = win.get("tdr") or {}
    if hags.get("enabled") is True:
        out.append(finding(
            "HAGS_ENABLED", "info",
            "Hardware-accelerated GPU scheduling is on (HwSchMode=2): the GPU schedules its own work queues. "
            "It changes launch latency and how the desktop shares the GPU; compare runs with the same setting.",
            {"hags": hags}, "Settings > System > Display > Graphics > Change default graphics settings "
            "(reboot to apply) if you want to compare."))
    wddm = [g for g in gpus if (g.get("driver_model") or {}).get("current") == "WDDM"]
    delay = tdr.get("delay_s")
    if host == "windows" and wddm and isinstance(delay, (int, float)) and delay <= _TDR_SHORT_S:
        display = [g.get("index") for g in wddm if g.get("display_active") is True]
        out.append(finding(
            "TDR_DELAY_SHORT", "warning" if display else "info",
            f"Windows resets a WDDM GPU whose work does not yield for {delay:g} s (TdrDelay"
            f"{', the default' if 'delay_s' in (tdr.get('defaults') or []) else ''}): a single long kernel or "
            "a large batch is killed with 'display driver stopped responding'"
            + (f" (GPU {', '.join(map(str, display))} drives a display)." if display else "."),
            {"tdr": tdr, "wddm_gpus": [g.get("index") for g in wddm], "display_gpus": display},
            "Keep each kernel/batch well under the delay, or raise TdrDelay (DWORD, seconds) under "
            "HKLM\\SYSTEM\\CurrentControlSet\\Control\\GraphicsDrivers and reboot; Microsoft meant these keys "
            "for testing, so note the change."))
    if host == "windows" and tdr.get("level") == 0:
        out.append(finding(
            "TDR_DISABLED", "info",
            "GPU timeout detection is off (TdrLevel=0): a hung kernel freezes the display instead of being reset.",
            {"tdr": tdr}, "Remove TdrLevel (default 3, recover) unless you disabled it on purpose."))
    return out


# ----------------------------------------------------------------------------- the probe

def run(ctx: ProbeContext, lib: Any = None) -> ProbeOutput:
    """Open NVML, collect, analyze. No NVML: skipped with the reason (which library is missing).

    lib: a pynvml-like module (tests pass tests.fakes.FakeNvml); None imports pynvml.
    """
    system = (ctx.results or {}).get("system") or {}
    host = gpu_driver.host_from_os_facts(system.get("os") if isinstance(system, dict) else None)
    try:
        data = snapshot(lib, host=host)
    except nvml_backend.NvmlUnavailable as exc:
        raise ProbeSkip(str(exc)) from None
    return ProbeOutput(data, analyze(data))


PROBE = Probe(
    name="driver",
    title="NVIDIA driver and GPU state",
    summary="driver/CUDA versions, driver model, PCIe link, throttling, and who else uses the GPU (NVML)",
    run=run,
    needs=("nvml",),
    isolate=True,
    timeout_s=30,
)
