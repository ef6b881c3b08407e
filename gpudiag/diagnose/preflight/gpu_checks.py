"""Checks on the GPU and its driver: NVML, visibility, torch's CUDA build, other processes, VRAM, clocks, link,
persistence, and HAGS/TDR on Windows. Pure functions of the facts dict.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from gpudiag.backends.nvml import NA, THROTTLING_REASONS
from gpudiag.diagnose.preflight.model import Check, Plan, num, version_tuple
from gpudiag.diagnose.preflight.needs import fit_status, need_text
from gpudiag.diagnose.thresholds import GPU_IDLE_UTILIZATION_PERCENT
from gpudiag.units import fmt_bytes


def driver_host(facts: Mapping[str, Any]) -> str:
    """linux | wsl2 | windows | macos | ...: the driver probe's view when it has one, else platform.KIND."""
    drv = facts.get("driver") or {}
    return drv.get("host") or facts.get("platform") or ""


def visible_nvml_indices(cvd: Optional[str], count: int) -> Tuple[Optional[List[int]], str]:
    """NVML indices CUDA will see, in CUDA order, from CUDA_VISIBLE_DEVICES.

    CUDA reads the comma list up to the first invalid entry (an index out of range, a repeat or
    garbage) and ignores the rest. GPU-/MIG- UUIDs cannot be mapped without UUIDs, which gpudiag does
    not collect (privacy): (None, note) then.
    """
    if cvd is None:
        return list(range(count)), "CUDA_VISIBLE_DEVICES not set: every GPU is visible"
    if not cvd.strip():
        return [], "CUDA_VISIBLE_DEVICES is set but empty"
    out: List[int] = []
    for token in cvd.split(","):
        token = token.strip()
        if re.match(r"(?i)^(GPU|MIG)-", token):
            return None, "CUDA_VISIBLE_DEVICES selects GPUs by UUID"
        if not re.match(r"^\d+$", token):
            break
        index = int(token)
        if index >= count or index in out:
            break
        out.append(index)
    return out, f"CUDA_VISIBLE_DEVICES={cvd}"


def cuda_order_unknown(facts: Mapping[str, Any]) -> Optional[str]:
    """Why CUDA's device numbers cannot be mapped to NVML's, or None when they can.

    NVML lists GPUs in PCI bus order; CUDA numbers them fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID,
    and CUDA_VISIBLE_DEVICES indices count in CUDA's order too. The two orders agree with one GPU, with
    CUDA_DEVICE_ORDER=PCI_BUS_ID, or when every GPU is the same model (equally fast GPUs keep their bus
    order); otherwise only the PCI bus id (facts["cuda_device_match"]) tells which GPU is which.
    """
    drv = facts.get("driver") if isinstance(facts.get("driver"), dict) else {}
    gpus = [g for g in (drv or {}).get("gpus") or [] if isinstance(g, dict)]
    if len(gpus) < 2 or (facts.get("env") or {}).get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return None
    names = {g.get("name") if isinstance(g.get("name"), str) and g.get("name") != NA else f"?{g.get('index')}"
             for g in gpus}
    if len(names) == 1:
        return None
    return (f"with {len(gpus)} different GPUs CUDA numbers them fastest-first and NVML by PCI bus, so gpudiag "
            "cannot tell which one a CUDA device number means: set CUDA_DEVICE_ORDER=PCI_BUS_ID")


def resolve_gpu(facts: Mapping[str, Any], plan: Plan) -> Tuple[Optional[Dict[str, Any]], str]:
    """The driver data of the GPU the run will use (CUDA device `plan.device`), or (None, why not).

    facts["cuda_device_match"] ({device, nvml_index|None, by, reason?}), set where torch gave the device's
    PCI bus id or is a ROCm build (fleet), decides; otherwise CUDA's numbering is mapped to NVML's
    (cuda_order_unknown says when it cannot be).
    """
    nv = facts.get("nvml") or {}
    if not nv.get("reachable"):
        return None, "NVML not reachable"
    drv = facts.get("driver")
    if not isinstance(drv, dict):
        return None, facts.get("driver_reason") or "no driver facts"
    gpus = [g for g in drv.get("gpus") or [] if isinstance(g, dict)]
    match = facts.get("cuda_device_match")
    if isinstance(match, dict) and match.get("device") == plan.device:
        index = match.get("nvml_index")
        if index is None:
            return None, match.get("reason") or (f"NVML lists no GPU at CUDA device {plan.device}'s PCI bus id: not "
                                                 "an NVIDIA GPU NVML can read, so none of its facts are reported")
    else:
        visible, note = visible_nvml_indices((facts.get("env") or {}).get("CUDA_VISIBLE_DEVICES"), len(gpus))
        if visible is None:
            if len(gpus) == 1:
                visible = [0]
            else:
                return None, f"{note}; with {len(gpus)} GPUs gpudiag cannot tell which one is device {plan.device}"
        if plan.device >= len(visible):
            return None, f"CUDA device {plan.device} does not exist ({len(visible)} visible)"
        unknown = cuda_order_unknown(facts)
        if unknown:
            return None, unknown
        index = visible[plan.device]
    gpu = next((g for g in gpus if g.get("index") == index), None)
    if gpu is None:
        return None, f"no NVML data for GPU {index}"
    if gpu.get("error"):
        return None, f"NVML cannot read GPU {index}: {gpu['error']}"
    return gpu, ""


def gpu_tag(gpu: Mapping[str, Any]) -> str:
    """"GPU 0 (NVIDIA GeForce GTX 1650)", or "GPU 0" where NVML gives no name: how every message names it."""
    name = gpu.get("name")
    return f"GPU {gpu.get('index')}" + (f" ({name})" if isinstance(name, str) and name != NA else "")


def check_nvml(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`nvml`: fail when the driver/NVML cannot be reached (with NVML's reason); else pass with the driver
    version, the CUDA version it supports and the GPU count, which every later GPU check relies on."""
    nv = facts.get("nvml") or {}
    if not nv.get("reachable"):
        return Check("nvml", "fail", f"NVIDIA driver/NVML not reachable: {nv.get('reason') or 'unknown reason'}",
                     {"reason": nv.get("reason")})
    drv = facts.get("driver") or {}
    version, cuda = drv.get("driver_version"), drv.get("cuda_driver_version")
    count = len(drv.get("gpus") or [])
    parts = [f"NVIDIA driver {version}" if version not in (None, NA) else "NVIDIA driver"]
    if cuda not in (None, NA):
        parts.append(f"(supports CUDA {cuda})")
    parts.append(f"reachable, {count} GPU{'s' if count != 1 else ''}")
    if not facts.get("driver"):
        parts = [f"NVML reachable; driver details unavailable: {facts.get('driver_reason')}"]
    return Check("nvml", "pass", " ".join(parts),
                 {"driver_version": version, "cuda_driver_version": cuda, "gpu_count": count})


def check_gpu_visible(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`gpu_visible`: fail when the driver lists no GPU, CUDA_VISIBLE_DEVICES hides every one, or CUDA device
    `plan.device` maps to none; pass naming its NVML GPU, noting where CUDA and NVML may order GPUs apart."""
    env = facts.get("env") or {}
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    ev: Dict[str, Any] = {"CUDA_VISIBLE_DEVICES": cvd, "device": plan.device}
    if cvd is not None and not cvd.strip():
        return Check("gpu_visible", "fail", "CUDA_VISIBLE_DEVICES is set but empty: CUDA will see no GPU "
                     "(unset it, or set it to the GPU index, e.g. 0)", ev)
    nv = facts.get("nvml") or {}
    if not nv.get("reachable"):
        return Check("gpu_visible", "skip", "NVML not reachable, so no GPU can be listed", ev)
    drv = facts.get("driver")
    if not isinstance(drv, dict):
        return Check("gpu_visible", "skip", f"no driver facts: {facts.get('driver_reason')}", ev)
    count = len(drv.get("gpus") or [])
    ev["gpu_count"] = count
    if count == 0:
        return Check("gpu_visible", "fail", "the NVIDIA driver answers but lists no GPU", ev)
    visible, note = visible_nvml_indices(cvd, count)
    ev["visible_nvml_indices"] = visible
    if visible == []:
        return Check("gpu_visible", "fail", f"{note} hides every GPU (CUDA stops at the first invalid entry; "
                     f"valid indices are 0..{count - 1})", ev)
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        # Mixed GPUs in CUDA's fastest-first order: the GPU is there, gpudiag cannot tell which one it is.
        return Check("gpu_visible", "warn" if why == cuda_order_unknown(facts) else "fail", why, ev)
    ev["nvml_index"] = gpu.get("index")
    msg = f"CUDA device {plan.device} is {gpu_tag(gpu)}"
    total = num(gpu.get("memory_total_bytes"))
    if total:
        msg += f", {fmt_bytes(total)}"
    if cvd is not None:
        msg += f" ({note})"
    if visible and len(visible) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" \
            and not facts.get("cuda_device_match"):
        msg += "; the GPUs are alike, so CUDA's order is their PCI order (CUDA_DEVICE_ORDER=PCI_BUS_ID makes it sure)"
    return Check("gpu_visible", "pass", msg, ev)


def check_torch_cuda(facts: Mapping[str, Any], plan: Plan) -> Check:
    """torch's CUDA build against the driver's CUDA version.

    Rule (NVIDIA CUDA Compatibility guide, "Minor Version Compatibility", CUDA 11+): a runtime of
    CUDA X.Y runs on a driver that supports X.0 or later within the same major version, with a
    limited feature set (no JIT of PTX newer than the driver). So: driver >= torch -> pass; same
    major, older minor -> warn (runs unless torch has to JIT PTX for this GPU); older major, or
    older minor before CUDA 11 -> fail.
    """
    t = facts.get("torch") or {}
    version, cuda, hip = t.get("version"), t.get("cuda"), t.get("hip")
    ev = {"torch_version": version, "torch_cuda": cuda, "torch_hip": hip}
    if not version:
        return Check("torch_cuda", "skip", "torch is not installed in this Python; run preflight from the "
                     "environment that will run the training to check its torch build", ev)
    if hip:
        return Check("torch_cuda", "fail", f"torch {version} is a ROCm build (HIP {hip}): it cannot use an "
                     "NVIDIA GPU; install a CUDA build from pytorch.org", ev)
    if not cuda:
        return Check("torch_cuda", "fail", f"torch {version} is a CPU-only build: it cannot use the GPU; "
                     "install a CUDA build from pytorch.org", ev)
    drv = facts.get("driver") or {}
    dcuda = drv.get("cuda_driver_version") if (facts.get("nvml") or {}).get("reachable") else None
    ev["driver_cuda"] = dcuda
    want, have = version_tuple(cuda), version_tuple(dcuda)
    if have is None:
        why = "NVML not reachable" if not (facts.get("nvml") or {}).get("reachable") else "the driver does not say"
        return Check("torch_cuda", "skip", f"torch {version} is built for CUDA {cuda}; the driver's CUDA "
                     f"version is unknown ({why})", ev)
    if want is None:
        return Check("torch_cuda", "skip", f"cannot read torch's CUDA version {cuda!r}", ev)
    if have >= want:
        return Check("torch_cuda", "pass", f"torch {version} (CUDA {cuda}) runs on this driver (supports CUDA "
                     f"{dcuda})", ev)
    if have[0] == want[0] and want[0] >= 11:
        return Check("torch_cuda", "warn", f"torch {version} is built for CUDA {cuda} but the driver supports "
                     f"CUDA {dcuda}: it runs through CUDA minor version compatibility, but kernels that need "
                     "newer PTX JIT-compiled fail; update the driver to be safe", ev)
    return Check("torch_cuda", "fail", f"torch {version} needs CUDA {cuda} but the driver only supports CUDA "
                 f"{dcuda}: update the NVIDIA driver or install a torch build for CUDA {have[0]}.x", ev)


def _proc_rows(gpu: Mapping[str, Any], kind: str) -> Any:
    """The GPU's `kind` (compute/graphics) process rows, or NA where NVML cannot list them (WSL2)."""
    rows = (gpu.get("processes") or {}).get(kind, NA)
    return rows if isinstance(rows, list) else NA


def _proc_name(row: Mapping[str, Any]) -> str:
    """How a process is named in a message: its name, with the app label where it adds one ("code (VS Code)")."""
    name = row.get("name")
    if not name:
        return f"pid {row.get('pid')}"
    label = row.get("label")
    if row.get("category") == "app" and label and label.lower() != str(name).lower():
        return f"{name} ({label})"
    return str(name)


def _names(rows: Sequence[Mapping[str, Any]]) -> str:
    """The distinct process names of `rows`, comma-separated."""
    seen: List[str] = []
    for r in rows:
        n = _proc_name(r)
        if n not in seen:
            seen.append(n)
    return ", ".join(seen)


def check_gpu_processes(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`gpu_processes`: warn when other compute processes (they time-share the GPU) or desktop programs
    (they draw on it) use the run's GPU; pass when none does; skip where NVML cannot list them."""
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("gpu_processes", "skip", why)
    compute, graphics = _proc_rows(gpu, "compute"), _proc_rows(gpu, "graphics")
    if compute is NA and graphics is NA:
        return Check("gpu_processes", "skip", f"NVML does not list the processes on {gpu_tag(gpu)} here "
                     "(usual under WSL2)")
    own = {facts.get("pid")}
    compute = [r for r in (compute if compute is not NA else []) if r.get("pid") not in own]
    graphics = [r for r in (graphics if graphics is not NA else []) if r.get("pid") not in own]
    # Windows (WDDM) lists desktop processes in both lists (C+G). A known desktop/app process there is
    # drawing, not computing; any other process in both lists counts once, as compute.
    gpids = {r.get("pid") for r in graphics}
    drawing = {r.get("pid") for r in compute if r.get("pid") in gpids and r.get("category") in ("display", "app")}
    compute = [r for r in compute if r.get("pid") not in drawing]
    cpids = {r.get("pid") for r in compute}
    graphics = [r for r in graphics if r.get("pid") not in cpids]
    brief = lambda rows: [{"pid": r.get("pid"), "name": r.get("name"),  # noqa: E731
                           "used_memory_bytes": r.get("used_memory_bytes")} for r in rows]
    ev = {"gpu": gpu.get("index"), "compute": brief(compute), "graphics": brief(graphics)}
    if not compute and not graphics:
        return Check("gpu_processes", "pass", f"no other process on {gpu_tag(gpu)}", ev)
    parts = []
    if compute:
        used = sum(num(r.get("used_memory_bytes")) or 0 for r in compute)
        parts.append(f"compute: {_names(compute)}" + (f" ({fmt_bytes(used)})" if used else ""))
    if graphics:
        parts.append(f"graphics: {_names(graphics)}")
    tail = (" - they time-share the GPU with your run" if compute else
            " - the desktop draws on this GPU and competes for it; close GPU-accelerated apps for a long run")
    return Check("gpu_processes", "warn", f"{gpu_tag(gpu)} is shared: {'; '.join(parts)}{tail}", ev)


def check_vram(facts: Mapping[str, Any], plan: Plan, need: Mapping[str, Any]) -> Check:
    """`vram`: the workers' device memory need against the GPU's free memory now: fail if it does not fit,
    warn above 90 % of it (TIGHT_FRACTION), pass otherwise; skip where NVML does not say what is free."""
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("vram", "skip", why)
    free, total = num(gpu.get("memory_free_bytes")), num(gpu.get("memory_total_bytes"))
    ev = {"gpu": gpu.get("index"), "free_bytes": free, "total_bytes": total,
          "need_bytes": need["total_device_bytes"], "per_worker_bytes": need["device_bytes"],
          "source": need["device_source"]}
    if free is None:
        return Check("vram", "skip", f"NVML does not report free memory on {gpu_tag(gpu)}", ev)
    status = fit_status(need["total_device_bytes"], free)
    verdict = {"fail": "does not fit in", "warn": "barely fits in", "pass": "fits in"}[status]
    return Check("vram", status, f"{need_text(need, plan, 'device')} {verdict} {fmt_bytes(free)} free"
                 + (f" of {fmt_bytes(total)}" if total else "") + f" on GPU {gpu.get('index')}", ev)


def check_clocks(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`clocks`: warn when heat or power holds the clocks down right now (a long run would be slower),
    naming the reasons, temperature and power; pass otherwise."""
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("clocks", "skip", why)
    ce = gpu.get("clock_event_reasons") or {}
    active = ce.get("active")
    ev = {"gpu": gpu.get("index"), "active": active, "raw": ce.get("raw"),
          "temperature_c": gpu.get("temperature_c"), "power_draw_w": gpu.get("power_draw_w"),
          "power_limit_w": gpu.get("power_limit_w")}
    if not isinstance(active, list):
        return Check("clocks", "skip", f"NVML does not report clock-event reasons on {gpu_tag(gpu)}", ev)
    throttling = [r for r in active if r in THROTTLING_REASONS]
    if throttling:
        extra = []
        if num(gpu.get("temperature_c")) is not None:
            extra.append(f"{gpu['temperature_c']} C")
        if num(gpu.get("power_draw_w")) is not None and num(gpu.get("power_limit_w")) is not None:
            extra.append(f"{gpu['power_draw_w']} W of {gpu['power_limit_w']} W")
        return Check("clocks", "warn", f"{gpu_tag(gpu)} clocks are held down right now by {', '.join(throttling)}"
                     + (f" ({', '.join(extra)})" if extra else "") + ": a long run will be slower", ev)
    return Check("clocks", "pass", "no thermal or power throttling right now"
                 + (" (GPU idle)" if "gpu_idle" in active else ""), ev)


def _gpu_idle(gpu: Mapping[str, Any]) -> bool:
    """True when the GPU idles (NVML's gpu_idle reason, or under 10 % busy): an idle link's low generation
    is power saving, not a fault."""
    active = (gpu.get("clock_event_reasons") or {}).get("active")
    util = num(gpu.get("utilization_gpu_percent"))
    return (isinstance(active, list) and "gpu_idle" in active) or (util is not None and util < GPU_IDLE_UTILIZATION_PERCENT)


def check_pcie(facts: Mapping[str, Any], plan: Plan) -> Check:
    """Width below max, or a slot slower than the card: warn. A lower generation at idle is normal
    power saving (links train up under load), so it only warns when the GPU is busy."""
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("pcie_link", "skip", why)
    p = gpu.get("pcie") or {}
    gen, gen_sys, gen_card = (num(p.get(k)) for k in ("gen_current", "gen_max_system", "gen_max_card"))
    width, width_max = num(p.get("width_current")), num(p.get("width_max"))
    idle = _gpu_idle(gpu)
    ev = {"gpu": gpu.get("index"), "pcie": dict(p), "gpu_idle": idle}
    if gen is None and width is None:
        return Check("pcie_link", "skip", f"NVML does not report the PCIe link of {gpu_tag(gpu)}", ev)
    now = f"Gen{int(gen) if gen else '?'} x{int(width) if width else '?'}"
    problems, notes = [], []
    if width is not None and width_max is not None and width < width_max:
        problems.append(f"running x{int(width)} of x{int(width_max)} lanes")
    if gen_sys is not None and gen_card is not None and gen_sys < gen_card:
        problems.append(f"the slot/CPU allows Gen{int(gen_sys)} but the card supports Gen{int(gen_card)}")
    if gen is not None and gen_sys is not None and gen < gen_sys:
        if idle:
            notes.append(f"Gen{int(gen)} of Gen{int(gen_sys)} at idle is normal power saving")
        else:
            problems.append(f"Gen{int(gen)} of Gen{int(gen_sys)} while the GPU is busy")
    if problems:
        return Check("pcie_link", "warn", f"link {now} below its maximum: {'; '.join(problems)}"
                     + (" (an idle link may downtrain; `gpudiag report --only pcie` reads it under load)"
                        if idle else ""), ev)
    return Check("pcie_link", "pass", f"link {now}" + (f" ({'; '.join(notes)})" if notes else " at its maximum"), ev)


def check_persistence(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`persistence_mode` (Linux only): warn when it is off on a GPU with no display, so each new CUDA
    process pays the driver's start-up again; pass when on or a display keeps the driver up."""
    host = driver_host(facts)
    if host not in ("linux",):
        return Check("persistence_mode", "skip", "Linux only" + (" (under WSL2 the Windows driver manages the GPU)"
                                                                 if host == "wsl2" else ""))
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("persistence_mode", "skip", why)
    mode, display = gpu.get("persistence_mode"), gpu.get("display_active")
    ev = {"gpu": gpu.get("index"), "persistence_mode": mode, "display_active": display}
    if mode is True:
        return Check("persistence_mode", "pass", "persistence mode on", ev)
    if mode is not False:
        return Check("persistence_mode", "skip", "NVML does not report persistence mode", ev)
    if display is True:
        return Check("persistence_mode", "pass", "persistence mode off, but the display keeps the driver "
                     "initialised", ev)
    return Check("persistence_mode", "warn", "persistence mode off on a GPU with no display: when no client "
                 "holds it the driver tears down, and the next CUDA process pays its start-up again (up to "
                 "seconds); `sudo nvidia-smi -pm 1` or enable nvidia-persistenced", ev)


def check_windows_hags(facts: Mapping[str, Any], plan: Plan) -> Check:
    """Reported so runs are compared with the same setting; it changes how work is scheduled and the
    desktop shares the GPU, but no source says which way is faster for CUDA, so it never warns."""
    win = (facts.get("driver") or {}).get("windows")
    if driver_host(facts) != "windows" or not isinstance(win, dict):
        return Check("windows_hags", "skip", "Windows only")
    hags = win.get("hags") or {}
    ev = {"hags": hags}
    raw, enabled = hags.get("raw"), hags.get("enabled")
    if enabled is True:
        return Check("windows_hags", "pass", f"hardware-accelerated GPU scheduling on (HwSchMode={raw}); compare "
                     "runs with the same setting", ev)
    if enabled is False:
        return Check("windows_hags", "pass", f"hardware-accelerated GPU scheduling off (HwSchMode={raw})", ev)
    if raw is None and "could not read" not in str(hags.get("reason", "")):
        return Check("windows_hags", "pass", "HwSchMode not set: Windows uses its default for this GPU "
                     "(Settings > Display > Graphics shows it)", ev)
    return Check("windows_hags", "skip", hags.get("reason") or f"unrecognised HwSchMode {raw!r}", ev)


def check_windows_tdr(facts: Mapping[str, Any], plan: Plan) -> Check:
    """`windows_tdr`: warn when a WDDM GPU that drives a display resets work running longer than TdrDelay
    (<= 2 s); pass under TCC/MCDM, with TDR off, or without a display; skip off Windows."""
    win = (facts.get("driver") or {}).get("windows")
    if driver_host(facts) != "windows" or not isinstance(win, dict):
        return Check("windows_tdr", "skip", "Windows only")
    tdr = win.get("tdr") or {}
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("windows_tdr", "skip", why, {"tdr": tdr})
    model = (gpu.get("driver_model") or {}).get("current")
    display = gpu.get("display_active")
    delay, level = num(tdr.get("delay_s")), tdr.get("level")
    ev = {"gpu": gpu.get("index"), "tdr": tdr, "driver_model": model, "display_active": display}
    if model not in (None, "WDDM"):
        return Check("windows_tdr", "pass", f"{gpu_tag(gpu)} runs {model}, not WDDM: display timeouts do "
                     "not cut kernels short", ev)
    if level == 0:
        return Check("windows_tdr", "pass", "timeout detection off (TdrLevel=0): long kernels are not killed, "
                     "a hung one freezes the display", ev)
    if delay is None:
        return Check("windows_tdr", "skip", tdr.get("reason") or "TdrDelay unknown", ev)
    default = " (the default)" if "delay_s" in (tdr.get("defaults") or []) else ""
    if display is True and delay <= 2:
        return Check("windows_tdr", "warn", f"TdrDelay {delay:g} s{default} on a GPU that drives a display: a "
                     f"kernel or batch running longer than {delay:g} s is killed ('display driver stopped "
                     "responding'); keep batches short or raise TdrDelay", ev)
    return Check("windows_tdr", "pass", f"TdrDelay {delay:g} s{default}"
                 + ("" if display is True else "; no display on this GPU"), ev)
