"""`gpudiag env`: the environment as GitHub-ready Markdown, fast.

No torch import (its version and CUDA build are read from files), no py-cpuinfo, NVML opened once
in-process. Covers what `python -m torch.utils.collect_env` shows that matters here, plus what it
does not: driver model, WSL, open/proprietary kernel module, GIL build, PCIe link, cgroup/WSL
memory caps, and who else holds the GPU.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from gpudiag import __version__
from gpudiag.redact import redact
from gpudiag.render import fmt_bytes


def _gpu_facts() -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(driver data, None) or (None, why not)."""
    from gpudiag import capabilities
    from gpudiag.backends.nvml import NvmlUnavailable
    from gpudiag.probes import driver

    nvml = capabilities.detect()["nvml"]
    if not nvml.available:
        return None, nvml.reason
    try:
        return driver.snapshot(), None
    except NvmlUnavailable as exc:
        return None, str(exc)


def _na(v: Any) -> str:
    if v is None or v == "n/a" or v == "":
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _row(rows: List[Tuple[str, str]], key: str, value: Any) -> None:
    rows.append((key, _na(value).replace("|", "\\|")))


def _link(pcie: Dict[str, Any]) -> str:
    if not isinstance(pcie, dict):
        return "n/a"
    cur = f"Gen{_na(pcie.get('gen_current'))} x{_na(pcie.get('width_current'))}"
    mx = f"Gen{_na(pcie.get('gen_max_card') if pcie.get('gen_max_card') not in (None, 'n/a') else pcie.get('gen_max_system'))}" \
         f" x{_na(pcie.get('width_max'))}"
    return f"{cur} now (idle links downtrain), max {mx}"


def collect_env() -> Dict[str, Any]:
    from gpudiag.probes import system

    data = system.collect(check_torch=False, detailed_cpu=False)
    drv, why = _gpu_facts()
    return {"system": data, "driver": drv, "driver_reason": why}


def to_markdown(env: Dict[str, Any]) -> str:
    s, drv = env["system"], env.get("driver")
    os_, py, cpu, mem, torch = s["os"], s["python"], s["cpu"], s["memory"], s["torch"]
    rows: List[Tuple[str, str]] = []
    _row(rows, "gpudiag", __version__)
    _row(rows, "OS", os_.get("pretty"))
    _row(rows, "Kernel", os_.get("kernel"))
    _row(rows, "WSL", f"WSL{os_['wsl']}" if os_.get("wsl") else "no")
    _row(rows, "Container / VM", " / ".join(x for x in (os_.get("container"), os_.get("virtualization")) if x) or "none seen")
    gil = "free-threaded build, GIL " + ("enabled" if py.get("gil_enabled") else "disabled") \
        if py.get("free_threaded_build") else "standard build (GIL)"
    _row(rows, "Python", f"{py.get('implementation')} {py.get('version')}, {gil}, "
                         f"switch interval {py.get('switch_interval_s', 0) * 1000:g} ms, start method {py.get('mp_start_method')}")
    _row(rows, "CPU", f"{cpu.get('brand') or 'n/a'} ({cpu.get('physical_cores')} cores / {cpu.get('logical_cores')} threads"
                      f"{', ' + str(cpu['affinity_cores']) + ' usable' if cpu.get('affinity_cores') not in (None, cpu.get('logical_cores')) else ''})")
    ram = f"{fmt_bytes(mem.get('total_bytes'))} total, {fmt_bytes(mem.get('available_bytes'))} available"
    if mem.get("cgroup_limit_bytes"):
        ram += f", cgroup limit {fmt_bytes(mem['cgroup_limit_bytes'])}"
    if mem.get("wsl_memory_cap_bytes"):
        ram += f", WSL2 cap {fmt_bytes(mem['wsl_memory_cap_bytes'])}"
    _row(rows, "RAM", ram)
    _row(rows, "Swap", fmt_bytes(mem.get("swap_total_bytes")) if mem.get("swap_total_bytes") else "none")
    _row(rows, "OOM kills since boot", mem.get("oom_kills_since_boot"))
    _row(rows, "vm.overcommit_memory", mem.get("overcommit_memory"))
    if torch.get("version"):
        _row(rows, "torch", f"{torch['version']}, " + (f"built with CUDA {torch['cuda_build']}" if torch.get("cuda_build")
                                                        else f"ROCm {torch['hip']}" if torch.get("hip") else "CPU-only build"))
    else:
        _row(rows, "torch", "not installed")
    if drv:
        km = drv.get("kernel_module") or {}
        _row(rows, "NVIDIA driver", f"{_na(drv.get('driver_version'))} (CUDA {_na(drv.get('cuda_driver_version'))} supported)")
        if km.get("flavour") or km.get("reason"):
            _row(rows, "Kernel module", km.get("flavour") and f"{km['flavour']} {km.get('version') or ''}".strip()
                 or km.get("reason"))
        if drv.get("mps_daemon_running") is not None:
            _row(rows, "MPS daemon", drv["mps_daemon_running"])
        win = drv.get("windows") or {}
        if win:
            hags = (win.get("hags") or {}).get("enabled")
            tdr = win.get("tdr") or {}
            _row(rows, "HAGS", {True: "on", False: "off", None: "OS default"}.get(hags, hags))
            _row(rows, "TDR", f"delay {_na(tdr.get('delay_s'))} s, level {_na(tdr.get('level'))}")
    else:
        _row(rows, "NVIDIA driver", f"not reachable: {env.get('driver_reason')}")

    out = ["## Environment (gpudiag env)", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    for g in (drv or {}).get("gpus") or []:
        if "error" in g:
            out += ["", f"**GPU {g.get('index')}**: {g['error']}"]
            continue
        procs = g.get("processes") or {}
        names = lambda kind: ", ".join(sorted({p.get("name") or str(p.get("pid")) for p in procs.get(kind) or []})) or "none"
        reasons = (g.get("clock_event_reasons") or {}).get("active") or []
        out += ["", f"### GPU {g.get('index')}: {_na(g.get('name'))}", "", "| | |", "|---|---|",
                f"| Memory | {fmt_bytes(g.get('memory_total_bytes'))} total, {fmt_bytes(g.get('memory_free_bytes'))} free |",
                f"| Driver model | {_na((g.get('driver_model') or {}).get('current'))} |",
                f"| PCIe link | {_link(g.get('pcie'))} |",
                f"| Persistence mode | {_na(g.get('persistence_mode'))} |",
                f"| Display active | {_na(g.get('display_active'))} |",
                f"| Clock events now | {', '.join(reasons) if reasons else 'none'} |",
                f"| Temperature / power | {_na(g.get('temperature_c'))} C / {_na(g.get('power_draw_w'))} of {_na(g.get('power_limit_w'))} W |",
                f"| Compute processes | {names('compute')} |",
                f"| Graphics processes | {names('graphics')} |"]
    if s.get("env"):
        out += ["", "<details><summary>Environment variables (allowlisted)</summary>", "", "| variable | value |", "|---|---|"]
        out += [f"| `{k}` | `{v}` |" for k, v in s["env"].items()]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


def env_markdown(identify: bool = True) -> str:
    return to_markdown(redact(collect_env(), identify=identify))
