"""Builds the synthetic view fixtures in this folder (run: python tests/recorded_views/build_fixtures.py).

These are TEST FIXTURES shaped to docs/report-contract.md so the views, charts and `compare` can be
developed and tested without the hardware: every number here is invented (gpudiag_version
"fixture") and they are never shipped as sample reports. Real reports live in sample_reports/.
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
GiB = 2**30


def stats(median, spread=0.1, n=9):
    return {"n": n, "median": median, "p10": median * (1 - spread), "p90": median * (1 + spread),
            "min": median * (1 - 1.5 * spread), "max": median * (1 + 2 * spread), "mean": median}


def ok(data, findings=(), duration=1.0):
    return {"status": "ok", "reason": "", "duration_s": duration, "data": data, "findings": list(findings)}


def skipped(reason):
    return {"status": "skipped", "reason": reason, "duration_s": 0.0, "data": {}, "findings": []}


def finding(code, severity, message, evidence=None, fix=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence, "fix": fix}


def system(os_name, pretty, distro_id, kernel, wsl=None, cores=(4, 8), ram=16 * GiB, torch_cuda="12.1",
           env=None, cpu="Intel(R) Core(TM) i5-9300H CPU @ 2.40GHz"):
    return {
        "os": {"name": os_name, "pretty": pretty, "distro_id": distro_id, "distro_version": None,
               "distro_like": None, "kernel": kernel, "wsl": wsl, "container": None, "virtualization": None},
        "python": {"version": "3.11.7", "implementation": "CPython", "free_threaded_build": False,
                   "gil_enabled": True, "gil_checked_after_torch": True, "switch_interval_s": 0.005,
                   "mp_start_method": "spawn" if os_name == "Windows" else "fork", "executable": "~/venv/bin/python"},
        "cpu": {"brand": cpu, "arch": "x86_64", "physical_cores": cores[0], "logical_cores": cores[1],
                "freq_current_mhz": 2400.0, "freq_max_mhz": 4100.0, "affinity_cores": cores[1]},
        "memory": {"total_bytes": ram, "available_bytes": int(ram * 0.55), "swap_total_bytes": 2 * GiB,
                   "swap_used_bytes": 0, "cgroup_limit_bytes": None, "cgroup_usage_bytes": None,
                   "cgroup_oom_kills": None, "wsl_memory_cap_bytes": None, "overcommit_memory": 0,
                   "oom_kills_since_boot": 0, "budget_bytes": int(ram * 0.45)},
        "torch": {"version": "2.3.1+cu121" if torch_cuda else "2.13.0+cpu", "cuda_build": torch_cuda,
                  "cudnn": "8.9.2" if torch_cuda else None, "hip": None, "reason_missing": None},
        "env": env or {},
    }


def driver(model, procs_graphics=(), flavour="proprietary", gen=(3, 3, 3), width=(16, 16)):
    return {
        "driver_version": "550.54.14" if model is None else "551.61", "cuda_driver_version": "12.4",
        "nvml_version": "12.550.54.14",
        "kernel_module": {"flavour": flavour, "version": "550.54.14", "source": "/proc/driver/nvidia/version"}
        if flavour else {"flavour": None, "version": None, "source": None},
        "mps_daemon_running": False if flavour else None,
        "windows": {"hags": {"raw": 2, "enabled": True}, "tdr": {"delay_s": 2, "ddi_delay_s": 5, "level": 3}}
        if model else None,
        "gpus": [{
            "index": 0, "name": "NVIDIA GeForce GTX 1650", "memory_total_bytes": 4 * GiB,
            "memory_used_bytes": int(0.6 * GiB), "memory_free_bytes": int(3.4 * GiB),
            "driver_model": {"current": model, "pending": model} if model else {"current": "n/a", "pending": "n/a"},
            "persistence_mode": "n/a" if model else False, "compute_mode": "Default", "mig_mode": "n/a",
            "display_active": True,
            "pcie": {"gen_current": gen[0], "gen_max_system": gen[1], "gen_max_card": gen[2],
                     "width_current": width[0], "width_max": width[1]},
            "clock_event_reasons": {"active": ["gpu_idle"], "raw": 1},
            "temperature_c": 52, "power_draw_w": 11.5, "power_limit_w": 50.0, "utilization_gpu_percent": 3,
            "processes": {"compute": [], "graphics": [{"pid": 1000 + i, "name": n, "used_memory_bytes": m}
                                                      for i, (n, m) in enumerate(procs_graphics)]},
        }],
    }


def gil(cores, py_threads, torch_threads, cuda=True):
    rows = []
    workers = [w for w in (1, 2, 4, 8) if w <= cores]
    base = {"python": 2.0e6, "torch_op": 310.0, "torch_dispatch": 41000.0, "cuda_launch": 52000.0}
    for wl in ("python", "torch_op", "torch_dispatch") + (("cuda_launch",) if cuda else ()):
        for mode in ("threads", "processes"):
            for w in workers:
                if mode == "processes":
                    sp = 1 + (w - 1) * 0.92
                elif wl == "python":
                    sp = 1 + (w - 1) * py_threads
                elif wl == "torch_op":
                    sp = 1 + (w - 1) * torch_threads
                else:
                    sp = 1 + (w - 1) * 0.12
                rows.append({"workload": wl, "mode": mode, "workers": w, "throughput_per_s": base[wl] * sp,
                             "speedup": round(sp, 3), "spread_fraction": 0.04, "repeats": 5})
    data = {
        "python": {"free_threaded_build": False, "gil_enabled": True, "switch_interval_s": 0.005},
        "workloads": {"python": {"description": "pure-Python loop", "unit": "iterations", "items_per_task": 200000},
                      "torch_op": {"description": "256x256 matmul, 1 intra-op thread", "unit": "matmuls", "items_per_task": 64},
                      "torch_dispatch": {"description": "tiny torch ops", "unit": "ops", "items_per_task": 5000}},
        "scaling": rows,
        "absent": {} if cuda else {"cuda_launch": "no CUDA device: torch.cuda.is_available() is False"},
        "startup": {"spawn_s": 0.05, "import_torch_s": 1.9, "total_s": 1.95},
        "memory": {"rss_before_torch_bytes": 12 * 2**20, "rss_after_torch_bytes": 380 * 2**20,
                   "rss_after_cuda_bytes": (1900 * 2**20) if cuda else None, "uss_after_torch_bytes": 330 * 2**20,
                   "device_bytes_per_context": (300 * 2**20) if cuda else None,
                   "reason_cuda": None if cuda else "no CUDA device",
                   "per_worker_host_bytes": (1900 if cuda else 380) * 2**20,
                   "per_worker_device_bytes": (300 * 2**20) if cuda else None,
                   "budget_host_bytes": int(6.5 * GiB), "budget_device_bytes": int(3.2 * GiB) if cuda else None,
                   "fits": {"threads": 8, "processes": 3 if cuda else 17}},
    }
    findings = [finding("GIL_BOUND_PYTHON", "warning",
                        f"GIL-bound: {workers[-1]} threads run pure-Python work {1 + (workers[-1] - 1) * py_threads:.2f}x "
                        f"faster than 1 thread; {workers[-1]} processes {1 + (workers[-1] - 1) * 0.92:.2f}x",
                        {"threads_speedup": 1 + (workers[-1] - 1) * py_threads}, "Use processes for Python-heavy work.")]
    return data, findings


def launch(overhead_us, graph_speedup):
    return {"launch_overhead_us": stats(overhead_us), "kernel_latency_us": stats(overhead_us * 2.1),
            "sync_latency_us": stats(overhead_us * 1.4),
            "graph": {"ops_per_graph": 100, "eager_per_op_us": overhead_us * 1.1,
                      "graph_per_op_us": overhead_us * 1.1 / graph_speedup, "speedup": graph_speedup}}


def contention(switch_us):
    return {"kernel_ms": 2.0, "solo_ms": stats(2.0, 0.02),
            "threads": [{"workers": w, "wall_s": 0.4 * w / min(w, 1.0), "ideal_s": 0.4 * w, "throughput_vs_one": 0.98}
                        for w in (1, 2, 4)],
            "processes": [{"workers": w, "wall_s": 0.4 * w * (1 + 0.02 * w * switch_us / 100), "ideal_s": 0.4 * w,
                           "stretch": 1 + 0.02 * w * switch_us / 100, "overhead_fraction": 0.02 * w * switch_us / 100,
                           "switch_cost_us_est": switch_us * (1 + 0.1 * w), "timeslice_ms_est": 2.0}
                          for w in (2, 4)],
            "context": {"create_s": 0.31, "device_bytes": 300 * 2**20}, "mps_active": False}


def pcie(peak_h2d, pageable_ratio, theo=15.75, gen=3, width=16):
    points = []
    for direction in ("h2d", "d2h", "bidir"):
        for memory in ("pinned", "pageable"):
            for k in range(12, 29, 2):
                size = 2**k
                peak = peak_h2d * (0.95 if direction == "d2h" else 1.0) * (1.6 if direction == "bidir" else 1.0)
                peak *= 1.0 if memory == "pinned" else pageable_ratio
                g = peak * size / (size + 2**18)  # latency-bound small transfers
                points.append({"direction": direction, "memory": memory, "size_bytes": size,
                               "gbps": stats(round(g, 3), 0.05, n=7)})
    return {"points": points,
            "link": {"gen": gen, "width": width, "gen_max": 3, "width_max": 16, "read_under_load": True},
            "theoretical_gbps_per_direction": theo,
            "peak": {"h2d_pinned_gbps": peak_h2d, "d2h_pinned_gbps": peak_h2d * 0.95,
                     "h2d_pageable_gbps": peak_h2d * pageable_ratio},
            "efficiency": {"h2d_pinned": peak_h2d / theo, "d2h_pinned": peak_h2d * 0.95 / theo}}


def timeline(busy, gaps, host, sync, launch_ms):
    return {"method": "profiler", "busy_fraction": busy,
            "gaps": {"count": sum(c for _, _, c in gaps),
                     "histogram": [{"lo_ms": lo, "hi_ms": hi, "count": c} for lo, hi, c in gaps],
                     "longest_ms": [1850.0, 1420.0, 990.0] if busy < 0.6 else [12.0, 9.5, 7.1]},
            "breakdown_ms": {"host_wait": host, "sync_wait": sync, "launch_overhead": launch_ms}}


def cycle(serial_cps, rows, winner, idle_busy=(0.46, 0.9), device="cuda"):
    strategies = []
    for name, status, reason, workers, cps in rows:
        strategies.append({"name": name, "status": status, "reason": reason, "workers": workers,
                           "cycles_per_s": cps, "speedup_vs_serial": (cps / serial_cps) if cps else None,
                           "gpu_busy_fraction": (idle_busy[0] if name == "serial" else idle_busy[1] if name == winner else 0.7)
                           if device == "cuda" and cps else None,
                           "gpu_busy_reason": None if device == "cuda" else "CPU device: no GPU timeline",
                           "peak_host_bytes": int(1.9 * GiB) * (workers or 1), "peak_device_bytes":
                           (300 * 2**20 * (workers or 1)) if device == "cuda" else None})
    data = {"workload": {"model": "mlp-4x512", "batch": 64, "params": 1_050_000, "cycles": 200, "device": device,
                         "host_work_ms": 2.0, "seed": 0, "train": False},
            "strategies": strategies, "custom": None,
            "idle": {}, "nvml_utilization": None}
    if device == "cuda":
        data["idle"] = {"serial": timeline(idle_busy[0], [(0, 1, 180), (1, 10, 60), (10, 100, 25), (100, 1000, 8), (1000, None, 2)],
                                           4200.0, 2600.0, 380.0),
                        winner: timeline(idle_busy[1], [(0, 1, 150), (1, 10, 12), (10, 100, 2)], 120.0, 60.0, 40.0)}
        data["nvml_utilization"] = {"samples": [{"t_s": i * 0.5, "gpu_percent": 40 + (i * 37) % 25} for i in range(20)],
                                    "median_percent": 50}
    return data


def verdicts(**given):
    causes = ("gil_contention", "context_switch", "worker_memory", "pcie_bandwidth", "host_sync_idle",
              "gpu_shared", "driver_model")
    out = []
    for c in causes:
        v, summary, figures = given.get(c, ("not_measured", "not measured on this machine", {}))
        out.append({"cause": c, "verdict": v, "summary": summary, "figures": figures,
                    "reason": "no CUDA device" if v == "not_measured" else None})
    return out


def report(created, host, probes, rec, mode="full"):
    return {"schema_version": 1, "gpudiag_version": "fixture", "created_at": created, "mode": mode,
            "redacted": True, "interrupted": False, "host": host, "probes": probes, "recommendation": rec}


def host_of(sysd, drv):
    g = (drv or {}).get("gpus") or []
    model = ((g[0].get("driver_model") or {}).get("current") if g else None)
    return {"os": sysd["os"]["pretty"], "kernel": sysd["os"]["kernel"], "wsl": sysd["os"]["wsl"], "container": None,
            "python": "CPython 3.11.7", "gil": True, "cpu": sysd["cpu"]["brand"],
            "physical_cores": sysd["cpu"]["physical_cores"], "logical_cores": sysd["cpu"]["logical_cores"],
            "ram_total_bytes": sysd["memory"]["total_bytes"], "torch": sysd["torch"]["version"],
            "torch_cuda": sysd["torch"]["cuda_build"], "driver_version": (drv or {}).get("driver_version"),
            "driver_model": model if model not in (None, "n/a") else None,
            "kernel_module": ((drv or {}).get("kernel_module") or {}).get("flavour"),
            "gpus": ["NVIDIA GeForce GTX 1650 (4.0 GiB)"] if g else []}


def gpu_ubuntu():
    s = system("Linux", "Ubuntu 22.04.4 LTS", "ubuntu", "6.5.0-41-generic")
    d = driver(None, procs_graphics=[("Xorg", 180 * 2**20), ("code", 95 * 2**20), ("firefox", 120 * 2**20)])
    g, gf = gil(8, 0.02, 0.7)
    rows = [("serial", "ok", "", 1, 9.1), ("deferred_sync", "ok", "", 1, 13.4), ("cuda_graph", "ok", "", 1, 17.8),
            ("streams", "ok", "", 1, 12.2), ("batched", "ok", "", 1, 16.9), ("threads", "ok", "", 4, 10.3),
            ("processes", "ok", "", 3, 15.2)]
    c = cycle(9.1, rows, "cuda_graph", (0.46, 0.91))
    probes = {
        "system": ok(s, duration=0.4),
        "driver": ok(d, [finding("GPU_SHARED_WITH_DISPLAY", "warning",
                                 "3 graphics processes hold the GPU (Xorg, code, firefox): the display and VS Code share it with your work",
                                 {"graphics": ["Xorg", "code", "firefox"]}, "Close VS Code's GPU acceleration or use the iGPU for the display.")],
                     duration=0.3),
        "gil": ok(g, gf, duration=9.8),
        "launch": ok(launch(6.8, 2.9), duration=3.1),
        "contention": ok(contention(85.0), duration=7.4),
        "pcie": ok(pcie(11.9, 0.55), [finding("PCIE_PAGEABLE_SLOW", "info", "pageable copies reach 55 % of pinned",
                                             {"ratio": 0.55}, "Use pin_memory=True in the DataLoader.")], duration=6.0),
        "cycle": ok(c, [finding("HOST_SYNC_IDLE_GAPS", "critical",
                                "The GPU is idle 54 % of the serial loop; 62 % of that idle time is the host waiting on .item() syncs",
                                {"busy_fraction": 0.46}, "Keep metrics on the device and sync every K cycles.")], duration=24.0),
    }
    rec = {"strategy": "cuda_graph", "workers": 1, "cycles_per_s": 17.8, "serial_cycles_per_s": 9.1, "speedup": 17.8 / 9.1,
           "headline": "On this machine, use cuda_graph with 1 worker: measured 17.8 cycles/s against 9.1 for the plain loop (1.96x).",
           "evidence": [{"claim": "cuda_graph cycles/s", "value": 17.8, "unit": "cycles/s",
                         "source": "probes.cycle.data.strategies[2].cycles_per_s"},
                        {"claim": "serial GPU busy fraction", "value": 0.46, "unit": "fraction",
                         "source": "probes.cycle.data.idle.serial.busy_fraction"}],
           "runners_up": [{"strategy": "batched", "workers": 1, "cycles_per_s": 16.9, "why_not": "5 % slower than cuda_graph"},
                          {"strategy": "processes", "workers": 3, "cycles_per_s": 15.2,
                           "why_not": "15 % slower and 3 x 1.9 GiB host memory"}],
           "environment_changes": [{"code": "GPU_SHARED_WITH_DISPLAY", "change": "Close VS Code or disable its GPU acceleration",
                                    "evidence": "code holds 95 MiB on GPU 0"}],
           "verdicts": verdicts(
               gil_contention=("supported", "Python threads gain 1.06x with 4 workers; processes 3.76x",
                               {"threads_speedup": 1.06, "processes_speedup": 3.76}),
               context_switch=("refuted", "a context switch costs ~94 us, 2 % of a 4-process run",
                               {"switch_cost_us": 94.0, "overhead_fraction": 0.02}),
               worker_memory=("supported", "each process worker needs 1.9 GiB host RAM: 3 fit in 6.5 GiB",
                              {"per_worker_host_gib": 1.9, "fit": 3}),
               pcie_bandwidth=("refuted", "pinned host->device reaches 11.9 GB/s (76 % of the x16 Gen3 link); a cycle moves 2 MB",
                               {"h2d_pinned_gbps": 11.9, "efficiency": 0.76}),
               host_sync_idle=("supported", "the GPU is idle 54 % of the serial loop; 62 % of it is host sync",
                               {"busy_fraction": 0.46}),
               gpu_shared=("supported", "Xorg, code and firefox hold the GPU", {"graphics_processes": 3}),
               driver_model=("refuted", "Linux driver: no WDDM batching", {"driver_model": None})),
           "gpu_questions_answered": True}
    return report("2026-11-20T10:00:00Z", host_of(s, d), probes, rec)


def gpu_windows():
    s = system("Windows", "Windows 11 Pro 23H2", None, "10.0.22631", env={"CUDA_LAUNCH_BLOCKING": "0"})
    d = driver("WDDM", procs_graphics=[("dwm.exe", None), ("explorer.exe", None)], flavour=None)
    g, gf = gil(8, 0.03, 0.75)
    rows = [("serial", "ok", "", 1, 14.2), ("deferred_sync", "ok", "", 1, 18.0), ("cuda_graph", "ok", "", 1, 19.5),
            ("streams", "ok", "", 1, 16.0), ("batched", "ok", "", 1, 21.3), ("threads", "ok", "", 4, 15.1),
            ("processes", "skipped", "not run: 4 workers x 1.9 GiB would not fit in 6.5 GiB available", 4, None)]
    c = cycle(14.2, rows, "batched", (0.81, 0.94))
    probes = {
        "system": ok(s, duration=0.5),
        "driver": ok(d, duration=0.4),
        "gil": ok(g, gf, duration=10.2),
        "launch": ok(launch(14.5, 3.6), [finding("WDDM_LAUNCH_OVERHEAD", "warning",
                                                 "kernel launches cost 14.5 us under WDDM",
                                                 {"median_us": 14.5}, "Use CUDA graphs or TCC where the card allows it.")],
                     duration=3.3),
        "contention": ok(contention(160.0), duration=8.0),
        "pcie": ok(pcie(6.1, 1.08, gen=3, width=8, theo=7.88), [finding("PCIE_LINK_DEGRADED", "warning",
                                                   "x8 Gen3 link in a x16 Gen3 slot", {"width": 8, "width_max": 16}, "Reseat the card.")],
                   duration=5.8),
        "cycle": ok(c, duration=22.0),
    }
    rec = {"strategy": "batched", "workers": 1, "cycles_per_s": 21.3, "serial_cycles_per_s": 14.2, "speedup": 21.3 / 14.2,
           "headline": "On this machine, use batched with 1 worker: measured 21.3 cycles/s against 14.2 for the plain loop (1.50x).",
           "evidence": [{"claim": "batched cycles/s", "value": 21.3, "unit": "cycles/s",
                         "source": "probes.cycle.data.strategies[4].cycles_per_s"}],
           "runners_up": [{"strategy": "cuda_graph", "workers": 1, "cycles_per_s": 19.5, "why_not": "8 % slower"}],
           "environment_changes": [],
           "verdicts": verdicts(
               gil_contention=("supported", "threads 1.09x, processes 3.76x", {"threads_speedup": 1.09}),
               driver_model=("supported", "WDDM launch overhead 14.5 us", {"launch_overhead_us": 14.5}),
               pcie_bandwidth=("supported", "link runs at x8: 6.1 GB/s", {"h2d_pinned_gbps": 6.1})),
           "gpu_questions_answered": True}
    return report("2026-11-21T18:30:00Z", host_of(s, d), probes, rec)


def cpu_linux():
    s = system("Linux", "Debian GNU/Linux 12 (bookworm)", "debian", "6.1.0-26-amd64", cores=(2, 2), ram=8 * GiB,
               torch_cuda=None, cpu="AMD EPYC 7B13")
    g, gf = gil(2, 0.01, 0.85, cuda=False)
    rows = [("serial", "ok", "", 1, 41.0), ("deferred_sync", "skipped", "needs a CUDA device", None, None),
            ("cuda_graph", "skipped", "needs a CUDA device", None, None),
            ("streams", "skipped", "needs a CUDA device", None, None), ("batched", "ok", "", 1, 55.0),
            ("threads", "ok", "", 2, 43.5), ("processes", "ok", "", 2, 70.2)]
    c = cycle(41.0, rows, "processes", device="cpu")
    nvml = "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver installed"
    probes = {
        "system": ok(s, duration=0.3),
        "driver": skipped(nvml),
        "gil": ok(g, gf, duration=8.7),
        "launch": skipped("needs a CUDA device: torch.cuda.is_available() is False (CPU-only torch build)"),
        "contention": skipped("needs a CUDA device: torch.cuda.is_available() is False (CPU-only torch build)"),
        "pcie": skipped("needs a CUDA device: torch.cuda.is_available() is False (CPU-only torch build)"),
        "cycle": ok(c, duration=14.0),
    }
    rec = {"strategy": "processes", "workers": 2, "cycles_per_s": 70.2, "serial_cycles_per_s": 41.0, "speedup": 70.2 / 41.0,
           "headline": "On this machine (CPU only), use processes with 2 workers: measured 70.2 cycles/s against 41.0 for the plain loop (1.71x). GPU questions were not answered here.",
           "evidence": [{"claim": "processes cycles/s", "value": 70.2, "unit": "cycles/s",
                         "source": "probes.cycle.data.strategies[6].cycles_per_s"}],
           "runners_up": [{"strategy": "batched", "workers": 1, "cycles_per_s": 55.0, "why_not": "22 % slower"}],
           "environment_changes": [],
           "verdicts": verdicts(gil_contention=("supported", "threads 1.01x, processes 1.92x with 2 workers",
                                                {"threads_speedup": 1.01, "processes_speedup": 1.92})),
           "gpu_questions_answered": False}
    return report("2026-11-28T12:00:00Z", host_of(s, None), probes, rec, mode="quick")


def foundation_only():
    """What the foundation alone writes: system + driver, no recommendation."""
    s = system("Linux", "Kali GNU/Linux Rolling", "kali", "6.6.9-amd64")
    d = driver(None)
    probes = {"system": ok(s), "driver": ok(d)}
    return report("2026-11-19T08:00:00Z", host_of(s, d), probes, None, mode="quick")


FIXTURES = {"gpu-ubuntu.json": gpu_ubuntu, "gpu-windows-wddm.json": gpu_windows, "cpu-linux.json": cpu_linux,
            "foundation-only.json": foundation_only}

if __name__ == "__main__":
    for name, fn in FIXTURES.items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as fh:
            json.dump(fn(), fh, indent=1, allow_nan=False)
            fh.write("\n")
        print("wrote", name)
