"""Environment changes (variables, driver settings, other processes) that the report's figures call for.

Only changes that matter for the recommended strategy are listed: nothing about the GPU when the
recommendation is for a loop that ran on the CPU, and persistence mode only when the strategy
starts worker processes (each one opens the GPU; persistence spares them the driver's start-up).
"""

from __future__ import annotations

from typing import List, Optional

from gpudiag.diagnose.access import evidence, findings_with, link_text, path, split_path
from gpudiag.diagnose.thresholds import FINDING_CODES, THROTTLE_REASON_WORDS
from gpudiag.diagnose.verdicts.gpu_sharing import closable, gpu_processes
from gpudiag.diagnose.verdicts.transfer import verdict_pcie_bandwidth
from gpudiag.report.values import as_int, as_list, as_str, get, probe_data


def environment_changes(report: dict, strategy: Optional[str] = None, device: Optional[str] = None) -> List[dict]:
    """Changes to the machine's setup that the report's data (or another probe's finding) supports,
    limited to those that matter for `strategy` running on `device` (None: not known)."""
    out: List[dict] = []
    gpu_matters = device != "cpu"

    def from_finding(key: str):
        hits = findings_with(report, FINDING_CODES[key])
        if not hits:
            return None
        p, i, f = hits[0]
        return f, [evidence(str(f.get("message") or f.get("code")), f.get("code"), None,
                            path("probes", p, "findings", i, "code"))]

    # CUDA_LAUNCH_BLOCKING=1: every launch waits for its kernel; a debugging switch left on.
    clb = as_str(get(probe_data(report, "system"), "env", "CUDA_LAUNCH_BLOCKING"))
    if not gpu_matters:
        clb = None
    if clb is not None and clb.strip() not in ("", "0"):
        out.append({"code": "UNSET_CUDA_LAUNCH_BLOCKING",
                    "change": f"Unset CUDA_LAUNCH_BLOCKING (it is {clb.strip()}): every kernel launch then waits "
                              "for the kernel to finish, which serialises the GPU; it is a debugging switch.",
                    "evidence": [evidence("CUDA_LAUNCH_BLOCKING is set", clb, None,
                                          path("probes", "system", "data", "env", "CUDA_LAUNCH_BLOCKING"))]})
    elif clb is None and gpu_matters and from_finding("launch_blocking"):
        f, ev = from_finding("launch_blocking")
        out.append({"code": "UNSET_CUDA_LAUNCH_BLOCKING",
                    "change": str(f.get("fix") or "Unset CUDA_LAUNCH_BLOCKING: it serialises every kernel launch."),
                    "evidence": ev})

    # Other processes on the GPU: desktop programs and other compute jobs can be closed; the desktop
    # itself (display server, compositor, Windows shell) cannot, whatever NVML calls it.
    procs, srcs = gpu_processes(report)
    can_close = [(p, s) for p, s in zip(procs or [], srcs) if closable(p)]
    if can_close and gpu_matters:
        names = sorted({p["name"] for p, _ in can_close})
        out.append({"code": "CLOSE_GPU_APPS",
                    "change": f"Close {', '.join(names)} (or turn off their hardware acceleration) while the run "
                              "goes: they share the GPU with it.",
                    "evidence": [evidence(f"{p['name']} holds GPU {p['gpu']} ({p['kind']})",
                                          get(report, *split_path(s)), None, s) for p, s in can_close]})
    elif procs is None and gpu_matters and from_finding("gpu_shared"):
        f, ev = from_finding("gpu_shared")
        out.append({"code": "CLOSE_GPU_APPS", "change": str(f.get("fix") or f.get("message")), "evidence": ev})

    gpus = as_list(get(probe_data(report, "driver"), "gpus"))
    os_name = as_str(get(probe_data(report, "system"), "os", "name"))
    wsl = as_int(get(probe_data(report, "system"), "os", "wsl"))
    # Persistence mode (Linux only): off, the driver tears down and re-initialises the GPU whenever
    # no client holds it, which every new worker process then pays for.
    pm_ev = [evidence(f"GPU {gi} persistence mode is off", False, None,
                      path("probes", "driver", "data", "gpus", gi, "persistence_mode"))
             for gi, g in enumerate(gpus) if get(g, "persistence_mode") is False]
    if pm_ev and os_name in (None, "Linux") and not wsl and strategy == "processes":
        out.append({"code": "ENABLE_PERSISTENCE_MODE",
                    "change": "Turn persistence mode on (`sudo nvidia-smi -pm 1`, or enable nvidia-persistenced) "
                              "so each new worker process does not pay for driver initialisation.",
                    "evidence": pm_ev})
    elif not gpus and strategy == "processes" and from_finding("persistence"):
        f, ev = from_finding("persistence")
        out.append({"code": "ENABLE_PERSISTENCE_MODE", "change": str(f.get("fix") or f.get("message")),
                    "evidence": ev})

    # Clocks held down by heat or power.
    th_ev = []
    for gi, g in enumerate(gpus):
        active = as_list(get(g, "clock_event_reasons", "active"))
        bad = [a for a in active if isinstance(a, str) and any(w in a.lower() for w in THROTTLE_REASON_WORDS)]
        if bad:
            th_ev.append(evidence(f"GPU {gi} clocks held down by {', '.join(bad)}", active, None,
                                  path("probes", "driver", "data", "gpus", gi, "clock_event_reasons", "active")))
    if th_ev and gpu_matters:
        out.append({"code": "FIX_GPU_THROTTLING",
                    "change": "The GPU's clocks are held down by power or temperature: plug the laptop in, use a "
                              "performance power profile, improve cooling, then measure again.",
                    "evidence": th_ev})
    elif not gpus and gpu_matters and from_finding("throttle"):
        f, ev = from_finding("throttle")
        out.append({"code": "FIX_GPU_THROTTLING", "change": str(f.get("fix") or f.get("message")), "evidence": ev})

    # A link below what card and slot support, read while a copy ran (idle links downtrain).
    pv = verdict_pcie_bandwidth(report)["figures"]
    if pv.get("link_degraded") and gpu_matters:
        b = ("probes", "pcie", "data", "link")
        out.append({"code": "FIX_PCIE_LINK",
                    "change": f"The PCIe link runs at {link_text(pv['link_gen'], pv['link_width'])} under load "
                              f"but supports {link_text(pv['link_gen_max'], pv['link_width_max'])}: reseat the card, "
                              "move it to a full-width slot, check BIOS PCIe settings and risers.",
                    "evidence": [
                        evidence("link generation under load", get(report, *b, "gen"), None, path(*b, "gen")),
                        evidence("link width under load", get(report, *b, "width"), "lanes", path(*b, "width"))]})
    elif gpu_matters and from_finding("pcie") and not probe_data(report, "pcie"):
        f, ev = from_finding("pcie")
        out.append({"code": "FIX_PCIE_LINK", "change": str(f.get("fix") or f.get("message")), "evidence": ev})
    return out
