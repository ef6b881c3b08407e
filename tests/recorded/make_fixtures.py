"""Writes the recommendation test fixtures in this folder: `python tests/recorded/make_fixtures.py`.

These are TEST FIXTURES, never sample reports: every file says `"gpudiag_version": "fixture"`. They
follow docs/report-contract.md; the magnitudes follow the user's story (shared/seed/README.md) and
the measured references in shared/research/methods.md (PCIe Gen3 x16 = 15.75 GB/s per direction,
pinned copies at 77-82 % of it; ~300 MB of device memory per CUDA context with lazy loading; RSS up
to ~1.9 GB per CUDA worker process; 5-20 us host-side launch time). Keeping them in a script keeps
the scenarios consistent with each other and easy to review; the JSON files are what tests read.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from gpudiag.measure import stats  # noqa: E402
from gpudiag.probes.cycle import probe as cycle_probe  # noqa: E402
from gpudiag.probes.gil import analysis as gil_analysis  # noqa: E402
from gpudiag.report.contract import summarize_host  # noqa: E402

GiB, MiB = 2**30, 2**20
NO_CUDA = ("no CUDA device: torch 2.13.0+cpu is a CPU-only build; run on a machine with an NVIDIA GPU "
           "and a CUDA build of torch")
NO_NVML = ("NVML library not found (libnvidia-ml.so.1): no NVIDIA driver is installed; install the NVIDIA "
           "driver to measure the GPU")


def st(median, p10, p90, n=20, lo=None, hi=None):
    """A stats object ({n, median, p10, p90, min, max, mean}) shaped like gpudiag.measure.stats.summarize."""
    lo = p10 * 0.97 if lo is None else lo
    hi = p90 * 1.05 if hi is None else hi
    return {"n": n, "median": median, "p10": p10, "p90": p90, "min": round(lo, 3), "max": round(hi, 3),
            "mean": round((p10 + median + p90) / 3, 3)}


def ok(data, findings=(), duration=1.0):
    return {"status": "ok", "reason": "", "duration_s": duration, "data": data, "findings": list(findings)}


def skipped(reason):
    return {"status": "skipped", "reason": reason, "duration_s": 0.0, "data": {}, "findings": []}


def failed(reason, duration=5.0):
    return {"status": "failed", "reason": reason, "duration_s": duration, "data": {}, "findings": []}


def finding(code, severity, message, evidence=None, fix=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence, "fix": fix}


def system(os_, cpu, memory, torch, env=None, python=None):
    py = {"version": "3.11.9", "implementation": "CPython", "free_threaded_build": False, "gil_enabled": True,
          "gil_checked_after_torch": True, "switch_interval_s": 0.005, "mp_start_method": "fork",
          "executable": "~/venv/bin/python"}
    py.update(python or {})
    return {"os": os_, "python": py, "cpu": cpu, "memory": memory, "torch": torch, "env": env or {}}


def linux_os(pretty, distro_id, version, kernel, like="debian", container=None, virtualization=None):
    return {"name": "Linux", "pretty": pretty, "distro_id": distro_id, "distro_version": version,
            "distro_like": like, "kernel": kernel, "wsl": None, "container": container,
            "virtualization": virtualization}


def memory(total, available, budget, swap_total=0, swap_used=0, oom=0, cgroup_limit=None, cgroup_oom=None):
    return {"total_bytes": total, "available_bytes": available, "swap_total_bytes": swap_total,
            "swap_used_bytes": swap_used, "cgroup_limit_bytes": cgroup_limit,
            "cgroup_usage_bytes": None if cgroup_limit is None else int(cgroup_limit * 0.2),
            "cgroup_oom_kills": cgroup_oom, "wsl_memory_cap_bytes": None, "overcommit_memory": 0,
            "oom_kills_since_boot": oom, "budget_bytes": budget,
            "budget_source": "cgroup_limit_minus_usage" if cgroup_limit is not None and budget < available
            else "ram_available"}


# Per-round variation of a quiet machine: seven interleaved rounds, median exactly 1 (so a row's
# median rate is the figure given), p10-p90 about 4 % apart as measured on a quiet 2-core VM.
JITTER = (0.97, 0.985, 0.995, 1.0, 1.005, 1.02, 1.03)


def round_factors(k, width=1.0):
    """The jitter in the k-th order (each row varies on its own), scaled by width; median stays 1."""
    order = [JITTER[(i * (2 * k + 1) + k) % len(JITTER)] for i in range(len(JITTER))]
    return [1 + (f - 1) * width for f in order]


def scaling(table, width=1.0):
    """{(workload, mode): {workers: throughput}} -> contract rows (via the probe's own scaling_rows:
    median, spread, samples, and the paired-bootstrap interval of each speedup)."""
    measurements = []
    for k, ((workload, mode), points) in enumerate(table.items()):
        for j, (n, thr) in enumerate(sorted(points.items())):
            items = 1_000_000
            walls = [items / (thr * f) for f in round_factors(3 * k + j, width)]
            measurements.append({"workload": workload, "mode": mode, "workers": n, "items": items, "wall_s": walls})
    return gil_analysis.scaling_rows(measurements)


WORKLOADS = {
    "python": {"description": "pure-Python integer loop (holds the GIL)", "unit": "loops", "items_per_task": 200000},
    "torch_op": {"description": "512x512 float32 matmul, one intra-op thread per worker", "unit": "matmuls",
                 "items_per_task": 40},
    "torch_dispatch": {"description": "1-element torch.add, dispatch-bound", "unit": "ops", "items_per_task": 20000},
}


def gil(table, mem, cuda=False, cores=2, other=0.03, width=1.0):
    workloads = dict(WORKLOADS)
    if cuda:
        workloads["cuda_launch"] = {"description": "1-element CUDA add, launch-bound", "unit": "launches",
                                    "items_per_task": 20000}
    data = {"python": {"free_threaded_build": False, "gil_enabled": True, "switch_interval_s": 0.005},
            "cpu": {"usable_cores": cores, "logical_cores": cores},
            "workloads": workloads, "scaling": scaling(table, width),
            "absent": {} if cuda else {"cuda_launch": NO_CUDA},
            "startup": {"spawn_s": 0.11, "import_torch_s": 1.38 if not cuda else 2.05,
                        "total_s": 1.49 if not cuda else 2.16},
            "memory": mem,
            "other_busy_cores": {w: other for w in workloads if w != "cuda_launch" or cuda}}
    data["verdict"] = gil_analysis.analyse(data, usable_cores=cores)["verdict"]  # what the probe itself writes
    return data


def gil_findings(data, cores):
    """The probe's own findings for this data (so a fixture never disagrees with its probe)."""
    return gil_analysis.analyse(data, usable_cores=cores)["findings"]


_STRAT_K = {"serial": 0, "deferred_sync": 1, "cuda_graph": 2, "streams": 3, "batched": 4, "threads": 5, "processes": 6}


def strat(name, status="ok", workers=1, cps=None, serial=None, busy=None, reason="", busy_reason=None,
          host=None, dev=None, width=1.0, factors=None, other=0.03):
    """A strategy row; per-round rates (serial's too) are kept in `_rates` until finish_cycle() turns
    them into samples, spread and the 95 % interval of the speedup, as the tournament does."""
    row = {"name": name, "status": status, "reason": reason, "workers": workers,
           "cycles_per_s": cps, "speedup_vs_serial": round(cps / serial, 3) if cps and serial else None,
           "gpu_busy_fraction": busy, "gpu_busy_reason": busy_reason,
           "host_rss_bytes": host, "peak_device_bytes": dev}
    if status != "ok":
        row.update(cycles_per_s=None, speedup_vs_serial=None, gpu_busy_fraction=None,
                   gpu_busy_reason=busy_reason or "not measured: " + status, repeats=0, samples=0,
                   speedup_ci95=None, other_busy_cores=None)
        return row
    row["_rates"] = [cps * f for f in (factors or round_factors(_STRAT_K.get(name, 0), width))]
    row["other_busy_cores"] = other
    return row


def finish_cycle(cyc, usable_cores, other=0.03, busy=False, visible=()):
    """samples / wall_s / spread / speedup_ci95 from the per-round rates, sweeps for threads and
    processes, and the tournament's load block: what gpudiag.probes.cycle.tournament writes."""
    cycles = cyc["workload"]["cycles"]
    rows = cyc["strategies"]
    serial = next(r for r in rows if r["name"] == "serial")
    base = serial.get("_rates")
    for r in rows:
        rates = r.pop("_rates", None)
        if rates is None:
            continue
        r["wall_s"] = [round(cycles / x, 5) for x in rates]
        r["samples"] = r["repeats"] = len(rates)
        r["cycles"] = cycles
        r["spread_fraction"] = round(stats.relative_spread(rates), 4)
        r["speedup_ci95"] = (None if r is serial or not base else
                             stats.rounded_interval(stats.bootstrap_ratio_ci(rates, base)))
        if r["name"] in ("threads", "processes"):
            r.setdefault("sweep", [{"workers": r["workers"], "cycles_per_s": r["cycles_per_s"],
                                    "samples": r["samples"], "speedup_ci95": r["speedup_ci95"],
                                    "torch_threads": 1, "status": "ok", "reason": ""}])
    widest = max([r["workers"] or 1 for r in rows if r["name"] in ("threads", "processes") and r["status"] == "ok"],
                 default=1)
    cyc["load"] = {"other_busy_cores": other, "other_busy_cores_all_rounds": other, "rejected_rounds": 0,
                   "steal_cores": 0.0, "usable_cores": usable_cores,
                   "widest_workers": widest, "busy": busy, "busiest_visible": list(visible),
                   "not_visible_cores": round(max(0.0, other - sum(v["cores"] for v in visible)), 2),
                   "rule": "busy when other programs leave fewer than N - 0.5 of the usable cores free for the "
                           "widest strategy's N workers"}
    cyc["rounds"] = {"rounds": len(base or []), "rejected": 0, "stopped_because": "intervals tight"}
    ok = [r for r in rows if r["status"] == "ok" and r["cycles_per_s"]]
    cyc["winner"] = max(ok, key=lambda r: r["cycles_per_s"])["name"] if ok else None
    cyc["workload"].setdefault("logical_cores", usable_cores)
    return cyc


def timeline(busy, cycles, cps, host, sync, launch, longest):
    wall_ms = 1000.0 * cycles / cps
    idle_ms = wall_ms * (1 - busy)
    scale = idle_ms / (host + sync + launch)  # split the idle time in the given proportions
    h, s, la = (round(x * scale, 1) for x in (host, sync, launch))
    count = int(cycles * 3)
    return {"method": "profiler", "busy_fraction": busy,
            "gaps": {"count": count,
                     "histogram": [{"lo_ms": 0.0, "hi_ms": 0.1, "count": int(count * 0.55)},
                                   {"lo_ms": 0.1, "hi_ms": 1.0, "count": int(count * 0.25)},
                                   {"lo_ms": 1.0, "hi_ms": 10.0, "count": int(count * 0.17)},
                                   {"lo_ms": 10.0, "hi_ms": 100.0, "count": count - int(count * 0.55)
                                    - int(count * 0.25) - int(count * 0.17)}],
                     "longest_ms": longest},
            "breakdown_ms": {"host_wait": h, "sync_wait": s, "launch_overhead": la}}


def gpu(name, mem_total, used, pm, display, pcie, reasons, util, graphics=(), compute=(), temp=52, power=(9.1, 75.0)):
    bits = {"gpu_idle": 0x1, "sw_power_cap": 0x4, "hw_slowdown": 0x8, "sw_thermal_slowdown": 0x20}
    return {"index": 0, "name": name, "memory_total_bytes": mem_total, "memory_used_bytes": used,
            "memory_free_bytes": mem_total - used,
            "driver_model": {"current": None, "pending": None}, "persistence_mode": pm,
            "compute_mode": "Default", "mig_mode": "n/a", "display_active": display, "pcie": pcie,
            "clock_event_reasons": {"active": list(reasons), "raw": sum(bits.get(r, 0) for r in reasons)},
            "temperature_c": temp, "power_draw_w": power[0], "power_limit_w": power[1],
            "utilization_gpu_percent": util,
            "processes": {"compute": [{"pid": p, "name": n, "used_memory_bytes": m} for p, n, m in compute],
                          "graphics": [{"pid": p, "name": n, "used_memory_bytes": m} for p, n, m in graphics]}}


def driver(version, cuda, flavour, gpus, findings=()):
    return ok({"driver_version": version, "cuda_driver_version": cuda, "nvml_version": "12." + version,
               "kernel_module": {"flavour": flavour, "version": version, "source": "/proc/driver/nvidia/version"},
               "mps_daemon_running": False, "windows": None, "gpus": gpus}, findings, duration=0.4)


def launch(overhead, kernel, sync, eager, graph_op, ops=100):
    return ok({"launch_overhead_us": overhead, "kernel_latency_us": kernel, "sync_latency_us": sync,
               "graph": {"ops_per_graph": ops, "eager_per_op_us": eager, "graph_per_op_us": graph_op,
                         "speedup": round(eager / graph_op, 2)}}, duration=3.2)


def contention(proc_rows, thread_rows, ctx_s, ctx_bytes):
    return ok({"kernel_ms": 2.0, "solo_ms": st(2.01, 1.99, 2.04),
               "threads": [{"workers": w, "wall_s": round(0.4 * w / t, 3), "ideal_s": 0.4 * w,
                            "throughput_vs_one": t} for w, t in thread_rows],
               "processes": [{"workers": w, "wall_s": round(0.4 * w * s, 3), "ideal_s": 0.4 * w, "stretch": s,
                              "overhead_fraction": round(1 - 1 / s, 3), "switch_cost_us_est": c,
                              "timeslice_ms_est": ts} for w, s, c, ts in proc_rows],
               "context": {"create_s": ctx_s, "device_bytes": ctx_bytes}, "mps_active": False}, duration=9.5)


def pcie(gen, width, gen_max, width_max, h2d, d2h, h2d_pageable, d2h_pageable, findings=()):
    per_lane = {3: 0.985, 4: 1.969}[gen]
    theo = round(per_lane * width, 2)
    points = []
    for size in (64 * 1024, 1 * MiB, 16 * MiB, 256 * MiB):
        frac = {64 * 1024: 0.35, 1 * MiB: 0.8, 16 * MiB: 0.97, 256 * MiB: 1.0}[size]
        for direction, pinned, pageable in (("h2d", h2d, h2d_pageable), ("d2h", d2h, d2h_pageable)):
            for mem, peak in (("pinned", pinned), ("pageable", pageable)):
                m = round(peak * frac, 2)
                points.append({"direction": direction, "memory": mem, "size_bytes": size,
                               "gbps": st(m, round(m * 0.96, 2), round(m * 1.01, 2), n=10)})
    return ok({"points": points,
               "link": {"gen": gen, "width": width, "gen_max": gen_max, "width_max": width_max,
                        "read_under_load": True},
               "theoretical_gbps_per_direction": theo,
               "peak": {"h2d_pinned_gbps": h2d, "d2h_pinned_gbps": d2h, "h2d_pageable_gbps": h2d_pageable,
                        "d2h_pageable_gbps": d2h_pageable},
               "efficiency": {"h2d_pinned": round(h2d / theo, 3), "d2h_pinned": round(d2h / theo, 3),
                              "h2d_pageable": round(h2d_pageable / theo, 3),
                              "d2h_pageable": round(d2h_pageable / theo, 3)}}, findings, duration=6.1)


def report(created, probes, mode="quick"):
    cyc = probes.get("cycle")
    if cyc and cyc["status"] == "ok" and not cyc["findings"]:
        cyc["findings"] = cycle_probe.findings_for(cyc["data"])  # what the probe itself says of these figures
    rep = {"schema_version": 1, "gpudiag_version": "fixture", "created_at": created, "mode": mode,
           "redacted": True, "interrupted": False, "host": summarize_host(probes), "probes": probes,
           "recommendation": None}
    return rep


CPU_SKIPS = {"driver": skipped(NO_NVML), "launch": skipped(NO_CUDA), "contention": skipped(NO_CUDA),
             "pcie": skipped(NO_CUDA)}
CPU_TORCH = {"version": "2.13.0+cpu", "cuda_build": None, "cudnn": None, "hip": None, "reason_missing": None}


def cpu_cycle(serial, batched, threads, processes, model, cycles, cores=2, finish=True):
    """A tournament on the CPU device: the GPU-only strategies are skipped with the reason."""
    nogpu = "the cycle ran on the CPU: there is no GPU timeline"
    return (finish_cycle if finish else lambda c, _cores: c)({"workload": {"model": model, "batch": 64, "params": 1_054_208, "cycles": cycles, "device": "cpu",
                         "host_work_ms": 2.0, "seed": 0, "train": True},
            "strategies": [
                strat("serial", cps=serial[1], serial=serial[1], busy_reason=nogpu, host=serial[2]),
                strat("deferred_sync", "skipped", reason="needs a CUDA device: on the CPU every result is "
                      "already on the host"),
                strat("cuda_graph", "skipped", reason="needs a CUDA device (CUDA graphs capture GPU work)"),
                strat("streams", "skipped", reason="needs a CUDA device (CUDA streams)"),
                strat("batched", workers=batched[0], cps=batched[1], serial=serial[1], busy_reason=nogpu,
                      host=batched[2]),
                strat("threads", workers=threads[0], cps=threads[1], serial=serial[1], busy_reason=nogpu,
                      host=threads[2]),
                strat("processes", workers=processes[0], cps=processes[1], serial=serial[1], busy_reason=nogpu,
                      host=processes[2]),
            ],
            "idle": {}, "nvml_utilization": None, "custom": None}, cores)


# ---------------------------------------------------------------- (1) GIL-bound, CPU-only, 2 cores

def gil_bound_cpu():
    sysd = system(linux_os("Ubuntu 22.04.4 LTS", "ubuntu", "22.04", "5.15.0-119-generic", virtualization="kvm"),
                  {"brand": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "arch": "X86_64", "physical_cores": 2,
                   "logical_cores": 2, "freq_current_mhz": 2900.0, "freq_max_mhz": 2900.0, "affinity_cores": 2},
                  memory(8_331_005_952, 6_242_103_296, 4_993_682_636), CPU_TORCH)
    g = gil({("python", "threads"): {1: 9.82e6, 2: 9.61e6}, ("python", "processes"): {1: 9.75e6, 2: 18.83e6},
             ("torch_op", "threads"): {1: 61.5, 2: 114.2}, ("torch_op", "processes"): {1: 62.0, 2: 118.4},
             ("torch_dispatch", "threads"): {1: 2.31e5, 2: 2.05e5},
             ("torch_dispatch", "processes"): {1: 2.29e5, 2: 4.35e5}},
            {"rss_before_torch_bytes": 13_459_456, "rss_after_torch_bytes": 318_423_040,
             "rss_after_cuda_bytes": None, "uss_after_torch_bytes": 271_048_704, "device_bytes_per_context": None,
             "reason_cuda": NO_CUDA, "per_worker_host_bytes": 318_423_040, "per_worker_device_bytes": None,
             "budget_host_bytes": 4_993_682_636, "budget_device_bytes": None,
             "fits": {"threads": 64, "processes": 15}})
    gil_f = gil_findings(g, 2)
    cyc = cpu_cycle((1, 22.0, 352_000_000), (4, 25.3, 401_000_000), (2, 23.1, 360_000_000),
                    (2, 41.3, 702_000_000), "mlp 3x512", 60)
    return report("2026-11-28T15:30:00Z", {
        "system": ok(sysd, duration=0.3), **CPU_SKIPS, "gil": ok(g, gil_f, duration=8.7),
        "cycle": ok(cyc, duration=14.2)})


# ---------------------------------------------------------------- (2) GPU shared with the desktop

def shared_desktop():
    sysd = system(linux_os("Ubuntu 22.04.4 LTS", "ubuntu", "22.04", "6.8.0-48-generic"),
                  {"brand": "Intel(R) Core(TM) i7-9700 CPU @ 3.00GHz", "arch": "X86_64", "physical_cores": 8,
                   "logical_cores": 8, "freq_current_mhz": 3000.0, "freq_max_mhz": 4700.0, "affinity_cores": 8},
                  memory(16_647_897_088, 11_213_148_160, 8_970_518_528, swap_total=2 * GiB),
                  {"version": "2.5.1+cu124", "cuda_build": "12.4", "cudnn": "90100", "hip": None,
                   "reason_missing": None})
    gpus = [gpu("NVIDIA GeForce GTX 1650", 4 * GiB, 612 * MiB, False, True,
                {"gen_current": 1, "gen_max_system": 3, "gen_max_card": 3, "width_current": 16, "width_max": 16},
                ["gpu_idle"], 3,
                graphics=[(2825, "/usr/lib/xorg/Xorg", 221 * MiB), (3058, "/usr/bin/gnome-shell", 38 * MiB),
                          (4064, "/usr/share/code/code", 67 * MiB)])]
    drv_f = [finding("GPU_SHARED_WITH_DISPLAY", "warning", "GPU 0 also drives the desktop: Xorg, gnome-shell, "
                     "code hold it (326 MiB)", fix="Close code or turn off its hardware acceleration during "
                     "long runs.")]
    g = gil({("python", "threads"): {1: 1.21e7, 2: 1.18e7, 4: 1.17e7, 8: 1.16e7},
             ("python", "processes"): {1: 1.20e7, 2: 2.37e7, 4: 4.61e7, 8: 8.02e7},
             ("torch_op", "threads"): {1: 88.0, 2: 171.0, 4: 322.0, 8: 548.0},
             ("torch_op", "processes"): {1: 87.1, 2: 170.2, 4: 331.0, 8: 571.0},
             ("torch_dispatch", "threads"): {1: 3.1e5, 2: 2.7e5, 4: 2.5e5, 8: 2.4e5},
             ("torch_dispatch", "processes"): {1: 3.0e5, 2: 5.9e5, 4: 11.4e5, 8: 19.8e5},
             ("cuda_launch", "threads"): {1: 1.05e5, 2: 0.98e5, 4: 0.93e5},
             ("cuda_launch", "processes"): {1: 1.04e5, 2: 1.71e5, 4: 2.05e5}},
            {"rss_before_torch_bytes": 14_102_528, "rss_after_torch_bytes": 412_094_464,
             "rss_after_cuda_bytes": 1_562_378_240, "uss_after_torch_bytes": 351_272_960,
             "device_bytes_per_context": 310 * MiB, "reason_cuda": None, "per_worker_host_bytes": 1_562_378_240,
             "per_worker_device_bytes": 310 * MiB, "budget_host_bytes": 8_970_518_528,
             "budget_device_bytes": 2_960_000_000, "fits": {"threads": 64, "processes": 5}}, cuda=True, cores=8)
    serial = 38.5
    cyc = {"workload": {"model": "mlp 3x1024", "batch": 256, "params": 3_152_899, "cycles": 200, "device": "cuda:0",
                        "host_work_ms": 2.0, "seed": 0, "train": True},
           "strategies": [
               strat("serial", cps=serial, serial=serial, busy=0.44, host=1_580_000_000, dev=420 * MiB),
               strat("deferred_sync", workers=8, cps=49.1, serial=serial, busy=0.58, host=1_580_000_000, dev=421 * MiB),
               strat("cuda_graph", cps=57.6, serial=serial, busy=0.66, host=1_601_000_000, dev=468 * MiB),
               strat("streams", workers=4, cps=44.0, serial=serial, busy=0.51, host=1_590_000_000, dev=470 * MiB),
               strat("batched", workers=4, cps=71.8, serial=serial, busy=0.83, host=1_610_000_000, dev=612 * MiB),
               strat("threads", workers=4, cps=36.2, serial=serial, busy=0.43, host=1_640_000_000, dev=455 * MiB),
               strat("processes", workers=2, cps=52.3, serial=serial, busy=0.71, host=3_190_000_000, dev=850 * MiB),
           ],
           "idle": {"serial": timeline(0.44, 200, serial, 41, 49, 10, [41.2, 38.7, 35.0]),
                    "batched": timeline(0.83, 200, 71.8, 55, 25, 20, [12.4, 11.9, 9.8])},
           "nvml_utilization": {"samples": [{"t_s": round(0.5 * i, 1), "gpu_percent": p} for i, p in
                                            enumerate([41, 47, 45, 52, 44, 39, 45, 48, 46, 43])],
                                "median_percent": 45.0},
           "custom": None}
    finish_cycle(cyc, 8)
    return report("2026-11-28T16:02:11Z", {
        "system": ok(sysd, duration=0.4),
        "driver": driver("550.120", "12.4", "proprietary", gpus, drv_f),
        "gil": ok(g, duration=11.9),
        "launch": launch(st(7.8, 7.1, 9.0), st(14.5, 13.8, 16.9), st(9.1, 8.4, 11.0), 7.9, 3.3),
        "contention": contention([(2, 1.04, 55.0, 2.1), (4, 1.06, 62.0, 2.0)], [(2, 1.02), (4, 1.03)], 0.21,
                                 310 * MiB),
        "pcie": pcie(3, 16, 3, 16, 12.3, 13.1, 6.2, 7.4),
        "cycle": ok(cyc, duration=19.6)})


# ---------------------------------------------------------------- (3) processes would not fit in RAM (Kali)

def no_fit_kali():
    sysd = system(linux_os("Kali GNU/Linux Rolling", "kali", "2023.4", "6.5.0-kali3-amd64"),
                  {"brand": "Intel(R) Core(TM) i5-10300H CPU @ 2.50GHz", "arch": "X86_64", "physical_cores": 4,
                   "logical_cores": 8, "freq_current_mhz": 2500.0, "freq_max_mhz": 4500.0, "affinity_cores": 8},
                  memory(8_176_349_184, 6_871_947_673, 6 * GiB, swap_total=1 * GiB, swap_used=int(0.4 * GiB), oom=3),
                  {"version": "2.4.1+cu121", "cuda_build": "12.1", "cudnn": "90100", "hip": None,
                   "reason_missing": None},
                  env={"CUDA_LAUNCH_BLOCKING": "1", "CUDA_VISIBLE_DEVICES": "0"})
    sys_f = [finding("CUDA_LAUNCH_BLOCKING_ON", "critical", "CUDA_LAUNCH_BLOCKING=1: every kernel launch waits "
                     "for the kernel to finish", {"CUDA_LAUNCH_BLOCKING": "1"}, "Unset CUDA_LAUNCH_BLOCKING."),
             finding("OOM_KILLS_SINCE_BOOT", "warning", "The kernel OOM killer has killed 3 processes since boot",
                     {"oom_kill": 3, "source": "/proc/vmstat"})]
    gpus = [gpu("NVIDIA GeForce GTX 1650", 4 * GiB, 298 * MiB, False, False,
                {"gen_current": 3, "gen_max_system": 3, "gen_max_card": 3, "width_current": 16, "width_max": 16},
                ["sw_thermal_slowdown"], 0, temp=87, power=(43.7, 50.0))]
    per_worker = int(1.9 * GiB)
    g = gil({("python", "threads"): {1: 1.02e7, 2: 0.99e7, 4: 0.98e7},
             ("python", "processes"): {1: 1.01e7, 2: 1.98e7, 4: 3.52e7},
             ("torch_op", "threads"): {1: 70.2, 2: 133.0, 4: 231.0},
             ("torch_op", "processes"): {1: 69.8, 2: 136.0, 4: 248.0},
             ("torch_dispatch", "threads"): {1: 2.6e5, 2: 2.3e5, 4: 2.2e5},
             ("torch_dispatch", "processes"): {1: 2.6e5, 2: 5.0e5, 4: 8.9e5}},
            {"rss_before_torch_bytes": 13_860_864, "rss_after_torch_bytes": 455_081_984,
             "rss_after_cuda_bytes": per_worker, "uss_after_torch_bytes": 398_458_880,
             "device_bytes_per_context": 296 * MiB, "reason_cuda": None, "per_worker_host_bytes": per_worker,
             "per_worker_device_bytes": 296 * MiB, "budget_host_bytes": 6 * GiB,
             "budget_device_bytes": int(3.3 * GiB), "fits": {"threads": 24, "processes": 3}}, cuda=True, cores=8)
    gil_f = [finding("WORKERS_DO_NOT_FIT", "critical", "4 process workers x 1.9 GiB = 7.6 GiB would not fit in "
                     "the 6.0 GiB budget; 3 fit", fix="Use at most 3 process workers, or threads.")]
    serial = 30.2
    cyc = {"workload": {"model": "mlp 3x1024", "batch": 256, "params": 3_152_899, "cycles": 200, "device": "cuda:0",
                        "host_work_ms": 2.0, "seed": 0, "train": True},
           "strategies": [
               strat("serial", cps=serial, serial=serial, busy=0.52, host=per_worker, dev=410 * MiB),
               strat("deferred_sync", workers=8, cps=33.1, serial=serial, busy=0.57, host=per_worker, dev=411 * MiB),
               strat("cuda_graph", "failed", reason="RuntimeError: CUDA error: operation not permitted when stream "
                     "is capturing at cycle.py:214"),
               strat("streams", workers=4, cps=31.0, serial=serial, busy=0.54, host=per_worker, dev=470 * MiB),
               strat("batched", workers=4, cps=45.2, serial=serial, busy=0.78, host=per_worker, dev=598 * MiB),
               strat("threads", workers=4, cps=29.1, serial=serial, busy=0.50, host=per_worker + 60 * MiB,
                     dev=452 * MiB),
               strat("processes", workers=4, cps=52.8, serial=serial, busy=0.74, host=5_910_000_000,
                     dev=4 * 410 * MiB),
           ],
           "idle": {"serial": timeline(0.52, 200, serial, 30, 60, 10, [88.0, 61.3, 44.9]),
                    "batched": timeline(0.78, 200, 45.2, 45, 35, 20, [30.1, 22.8, 19.0])},
           "nvml_utilization": {"samples": [{"t_s": round(0.5 * i, 1), "gpu_percent": p} for i, p in
                                            enumerate([49, 55, 53, 51, 57, 50, 52, 54])],
                                "median_percent": 52.5},
           "custom": None}
    finish_cycle(cyc, 8)
    return report("2026-11-28T17:45:40Z", {
        "system": ok(sysd, sys_f, duration=0.5),
        "driver": driver("535.183.01", "12.2", "proprietary", gpus),
        "gil": ok(g, gil_f, duration=12.4),
        "launch": launch(st(24.9, 23.0, 29.8), st(41.0, 38.2, 47.5), st(12.8, 11.9, 15.0), 25.1, 24.0),
        "contention": contention([(2, 1.21, 380.0, 1.9), (4, 1.32, 420.0, 1.9)], [(2, 0.97), (4, 0.95)], 0.34,
                                 296 * MiB),
        "pcie": pcie(3, 16, 3, 16, 11.9, 12.6, 5.1, 6.0),
        "cycle": ok(cyc, duration=24.3)})


# ---------------------------------------------------------------- (4) launch-bound loop: graphs win

def launch_bound_graphs():
    sysd = system(linux_os("Ubuntu 24.04.1 LTS", "ubuntu", "24.04", "6.8.0-49-generic"),
                  {"brand": "AMD Ryzen 7 5800X 8-Core Processor", "arch": "X86_64", "physical_cores": 8,
                   "logical_cores": 16, "freq_current_mhz": 3800.0, "freq_max_mhz": 4850.0, "affinity_cores": 16},
                  memory(33_546_305_536, 29_120_913_408, 23_296_730_726, swap_total=8 * GiB),
                  {"version": "2.5.1+cu124", "cuda_build": "12.4", "cudnn": "90100", "hip": None,
                   "reason_missing": None}, python={"version": "3.12.7", "mp_start_method": "fork"})
    gpus = [gpu("NVIDIA GeForce RTX 3060", 12 * GiB, 301 * MiB, True, False,
                {"gen_current": 4, "gen_max_system": 4, "gen_max_card": 4, "width_current": 8, "width_max": 16},
                ["gpu_idle"], 0, temp=38, power=(16.2, 170.0))]
    g = gil({("python", "threads"): {1: 1.45e7, 2: 1.41e7, 4: 1.40e7, 8: 1.39e7},
             ("python", "processes"): {1: 1.44e7, 2: 2.86e7, 4: 5.66e7, 8: 10.2e7},
             ("torch_op", "threads"): {1: 121.0, 2: 238.0, 4: 460.0, 8: 842.0},
             ("torch_op", "processes"): {1: 120.0, 2: 239.0, 4: 471.0, 8: 880.0},
             ("torch_dispatch", "threads"): {1: 4.1e5, 2: 3.6e5, 4: 3.3e5, 8: 3.2e5},
             ("torch_dispatch", "processes"): {1: 4.0e5, 2: 7.9e5, 4: 15.5e5, 8: 29.8e5},
             ("cuda_launch", "threads"): {1: 4.9e4, 2: 4.5e4, 4: 4.3e4, 8: 4.2e4},
             ("cuda_launch", "processes"): {1: 4.8e4, 2: 9.1e4, 4: 15.9e4, 8: 21.0e4}},
            {"rss_before_torch_bytes": 14_680_064, "rss_after_torch_bytes": 430_964_736,
             "rss_after_cuda_bytes": 1_352_663_040, "uss_after_torch_bytes": 372_244_480,
             "device_bytes_per_context": 290 * MiB, "reason_cuda": None, "per_worker_host_bytes": 1_352_663_040,
             "per_worker_device_bytes": 290 * MiB, "budget_host_bytes": 23_296_730_726,
             "budget_device_bytes": int(10.5 * GiB), "fits": {"threads": 128, "processes": 17}}, cuda=True, cores=16)
    pcie_f = [finding("PCIE_LINK_DEGRADED", "warning", "PCIe link runs at Gen4 x8 under load; the card supports "
                      "x16", {"gen": 4, "width": 8, "width_max": 16}, "Move the card to a x16 slot.")]
    serial = 55.0
    cyc = {"workload": {"model": "mlp 8x256 (many small ops)", "batch": 32, "params": 527_369, "cycles": 300,
                        "device": "cuda:0", "host_work_ms": 0.5, "seed": 0, "train": False},
           "strategies": [
               strat("serial", cps=serial, serial=serial, busy=0.29, host=1_370_000_000, dev=330 * MiB),
               strat("deferred_sync", workers=8, cps=58.1, serial=serial, busy=0.31, host=1_370_000_000, dev=331 * MiB),
               strat("cuda_graph", cps=166.0, serial=serial, busy=0.88, host=1_391_000_000, dev=352 * MiB),
               strat("streams", workers=4, cps=61.2, serial=serial, busy=0.34, host=1_380_000_000, dev=360 * MiB),
               strat("batched", workers=4, cps=118.0, serial=serial, busy=0.63, host=1_380_000_000, dev=390 * MiB),
               strat("threads", workers=4, cps=47.9, serial=serial, busy=0.26, host=1_420_000_000, dev=352 * MiB),
               strat("processes", workers=4, cps=152.0, serial=serial, busy=0.81, host=5_430_000_000,
                     dev=4 * 330 * MiB),
           ],
           "idle": {"serial": timeline(0.29, 300, serial, 26, 7.5, 66.5, [3.1, 2.9, 2.2]),
                    "cuda_graph": timeline(0.88, 300, 166.0, 60, 25, 15, [1.9, 1.2, 0.9])},
           "nvml_utilization": {"samples": [{"t_s": round(0.5 * i, 1), "gpu_percent": p} for i, p in
                                            enumerate([97, 99, 98, 99, 97, 98])],
                                "median_percent": 98.0},
           "custom": None}
    finish_cycle(cyc, 16)
    return report("2026-11-29T09:12:03Z", {
        "system": ok(sysd, duration=0.3),
        "driver": driver("560.35.03", "12.6", "open", gpus),
        "gil": ok(g, duration=12.0),
        "launch": launch(st(20.3, 18.9, 23.5), st(31.0, 29.2, 36.1), st(11.2, 10.4, 13.9), 20.1, 6.6, ops=200),
        "contention": contention([(2, 1.03, 40.0, 2.0), (4, 1.04, 45.0, 2.0)], [(2, 1.01), (4, 1.02)], 0.18,
                                 290 * MiB),
        "pcie": pcie(4, 8, 4, 16, 13.2, 13.6, 7.9, 8.8, pcie_f),
        "cycle": ok(cyc, duration=21.7)}, mode="full")


# ---------------------------------------------------------------- (5) CPU-only container, every CUDA probe skipped

def cpu_only_container():
    sysd = system(linux_os("Debian GNU/Linux 12 (bookworm)", "debian", "12", "6.1.0-26-amd64", like=None,
                           container="docker"),
                  {"brand": "AMD EPYC 7B13", "arch": "X86_64", "physical_cores": 2, "logical_cores": 4,
                   "freq_current_mhz": 2450.0, "freq_max_mhz": None, "affinity_cores": 4},
                  memory(16_771_330_048, 12_460_019_712, int(3.2 * GiB), cgroup_limit=4 * GiB, cgroup_oom=0),
                  CPU_TORCH, python={"version": "3.12.7", "mp_start_method": "fork"})
    g = gil({("python", "threads"): {1: 8.9e6, 2: 8.7e6, 4: 8.6e6},
             ("python", "processes"): {1: 8.8e6, 2: 17.1e6, 4: 24.9e6},
             ("torch_op", "threads"): {1: 55.0, 2: 104.0, 4: 150.0},
             ("torch_op", "processes"): {1: 54.1, 2: 105.0, 4: 158.0},
             ("torch_dispatch", "threads"): {1: 2.1e5, 2: 1.9e5, 4: 1.8e5},
             ("torch_dispatch", "processes"): {1: 2.1e5, 2: 4.0e5, 4: 5.7e5}},
            {"rss_before_torch_bytes": 12_976_128, "rss_after_torch_bytes": 340_787_200,
             "rss_after_cuda_bytes": None, "uss_after_torch_bytes": 290_455_552, "device_bytes_per_context": None,
             "reason_cuda": NO_CUDA, "per_worker_host_bytes": 340_787_200, "per_worker_device_bytes": None,
             "budget_host_bytes": int(3.2 * GiB), "budget_device_bytes": None,
             "fits": {"threads": 64, "processes": 10}}, cores=4)
    cyc = cpu_cycle((1, 18.4, 349_000_000), (4, 41.0, 420_000_000), (4, 27.5, 371_000_000),
                    (4, 39.2, 1_402_000_000), "mlp 3x512", 60, cores=4)
    return report("2026-11-28T18:20:55Z", {
        "system": ok(sysd, duration=0.3), **CPU_SKIPS, "gil": ok(g, duration=9.9), "cycle": ok(cyc, duration=15.8)})


# ---------------------------------------------------------------- (6) partial: older shape, probes failed

def partial():
    sysd = {"os": {"name": "Linux", "pretty": "Ubuntu 20.04.6 LTS", "kernel": "5.4.0-196-generic"},
            "cpu": {"logical_cores": 4}, "memory": {"total_bytes": 8_252_092_416}}  # older shape: fewer keys
    gpus = [{"index": 0, "name": "NVIDIA GeForce GTX 1650", "memory_total_bytes": 4 * GiB,
             "persistence_mode": "n/a", "driver_model": {"current": "n/a", "pending": "n/a"}}]  # no process lists
    return report("2026-11-27T08:00:00Z", {
        "system": ok(sysd, duration=0.2),
        "driver": driver("470.256.02", "11.4", None, gpus),
        "gil": failed("killed by signal 9 (SIGKILL) - likely the out-of-memory killer", 31.0),
        "launch": failed("RuntimeError: CUDA error: no kernel image is available for execution on the device "
                         "at launch.py:88", 2.1),
        "cycle": failed("timed out after 120 s", 120.0)})


# ---------------------------------------------------------------- (7) a busy 2-core VM: too noisy to judge

def busy_two_core():
    """The story's busy run: another program kept one of the two cores busy. The plain loop (2 intra-op
    threads) stalls whenever a core is taken, so its rate swings by an order of magnitude between
    rounds, while 2 one-thread workers keep going: 231 cycles/s against 19.3, "11.9x"."""
    sysd = system(linux_os("Debian GNU/Linux 12 (bookworm)", "debian", "12", "6.1.0-26-amd64", like=None,
                           virtualization="kvm"),
                  {"brand": "AMD EPYC 7B13", "arch": "X86_64", "physical_cores": 1, "logical_cores": 2,
                   "freq_current_mhz": 2450.0, "freq_max_mhz": None, "affinity_cores": 2},
                  memory(25_273_917_440, 22_911_000_000, 22_911_000_000), CPU_TORCH)
    g = gil({("python", "threads"): {1: 1.2e7, 2: 1.17e7}, ("python", "processes"): {1: 1.19e7, 2: 1.31e7},
             ("torch_op", "threads"): {1: 2900.0, 2: 3100.0}, ("torch_op", "processes"): {1: 2880.0, 2: 3300.0},
             ("torch_dispatch", "threads"): {1: 4.6e5, 2: 2.9e5},
             ("torch_dispatch", "processes"): {1: 4.7e5, 2: 5.4e5}},
            {"rss_before_torch_bytes": 13_459_456, "rss_after_torch_bytes": 231_000_000,
             "rss_after_cuda_bytes": None, "uss_after_torch_bytes": 147_000_000, "device_bytes_per_context": None,
             "reason_cuda": NO_CUDA, "per_worker_host_bytes": 147_000_000, "per_worker_device_bytes": None,
             "budget_host_bytes": 22_911_000_000, "budget_device_bytes": None,
             "fits": {"threads": 20000, "processes": 155}}, cores=2, other=1.02, width=4.0)
    swings = [0.31, 0.55, 0.8, 1.0, 1.9, 3.1, 7.4]  # the plain loop's rounds: stalled, then not
    cyc = cpu_cycle((1, 19.3, 351_000_000), (4, 24.1, 398_000_000), (2, 190.0, 362_000_000),
                    (2, 231.0, 701_000_000), "mlp 512-1024-1024-10", 20, cores=2, finish=False)
    serial = next(r for r in cyc["strategies"] if r["name"] == "serial")
    rates = {r["name"]: [x * r["cycles_per_s"] for x in (swings if r is serial else round_factors(_STRAT_K[r["name"]],
                                                                                                 3.0))]
             for r in cyc["strategies"] if r["status"] == "ok"}
    for r in cyc["strategies"]:
        if r["name"] in rates:
            r["_rates"] = rates[r["name"]]
    finish_cycle(cyc, 2, other=1.02, busy=True, visible=[{"name": "python3", "cores": 0.98}])
    return report("2026-11-29T10:40:00Z", {
        "system": ok(sysd, duration=0.3), **CPU_SKIPS, "gil": ok(g, gil_findings(g, 2), duration=7.0),
        "cycle": ok(cyc, duration=6.2)})


# ---------------------------------------------------------------- (8) a tie: batching as fast as processes

def tie_eight_core():
    """An 8-core desktop without a GPU: fusing 4 cycles per step (batched, 1.40x) and 4 worker
    processes (1.46x) cannot be told apart; batched is the simpler change to a loop."""
    sysd = system(linux_os("Ubuntu 24.04.1 LTS", "ubuntu", "24.04", "6.8.0-49-generic"),
                  {"brand": "AMD Ryzen 7 5800X 8-Core Processor", "arch": "X86_64", "physical_cores": 8,
                   "logical_cores": 8, "freq_current_mhz": 3800.0, "freq_max_mhz": 4850.0, "affinity_cores": 8},
                  memory(33_546_305_536, 29_120_913_408, 23_296_730_726, swap_total=8 * GiB), CPU_TORCH)
    g = gil({("python", "threads"): {1: 1.45e7, 2: 1.41e7, 4: 1.40e7, 8: 1.39e7},
             ("python", "processes"): {1: 1.44e7, 2: 2.86e7, 4: 5.66e7, 8: 10.2e7},
             ("torch_op", "threads"): {1: 121.0, 2: 238.0, 4: 460.0, 8: 842.0},
             ("torch_op", "processes"): {1: 120.0, 2: 239.0, 4: 471.0, 8: 880.0},
             ("torch_dispatch", "threads"): {1: 4.1e5, 2: 3.6e5, 4: 3.3e5, 8: 3.2e5},
             ("torch_dispatch", "processes"): {1: 4.0e5, 2: 7.9e5, 4: 15.5e5, 8: 29.8e5}},
            {"rss_before_torch_bytes": 14_680_064, "rss_after_torch_bytes": 430_964_736,
             "rss_after_cuda_bytes": None, "uss_after_torch_bytes": 372_244_480, "device_bytes_per_context": None,
             "reason_cuda": NO_CUDA, "per_worker_host_bytes": 372_244_480, "per_worker_device_bytes": None,
             "budget_host_bytes": 23_296_730_726, "budget_device_bytes": None,
             "fits": {"threads": 128, "processes": 62}}, cores=8)
    cyc = cpu_cycle((1, 100.0, 352_000_000), (4, 140.0, 401_000_000), (4, 118.0, 380_000_000),
                    (4, 146.0, 1_402_000_000), "mlp 512-1024-1024-10", 60, cores=8)
    return report("2026-11-29T11:05:00Z", {
        "system": ok(sysd, duration=0.3), **CPU_SKIPS, "gil": ok(g, gil_findings(g, 8), duration=6.0),
        "cycle": ok(cyc, duration=7.5)})


SCENARIOS = {
    "gil_bound_cpu": gil_bound_cpu,
    "shared_desktop": shared_desktop,
    "no_fit_kali": no_fit_kali,
    "launch_bound_graphs": launch_bound_graphs,
    "cpu_only_container": cpu_only_container,
    "partial": partial,
    "busy_two_core": busy_two_core,
    "tie_eight_core": tie_eight_core,
}


def main() -> None:
    for name, build in SCENARIOS.items():
        rep = build()
        json.loads(json.dumps(rep, allow_nan=False))  # plain JSON, no NaN
        with open(os.path.join(HERE, name + ".json"), "w", encoding="utf-8", newline="\n") as fh:
            fh.write(json.dumps(rep, indent=2) + "\n")
        print("wrote", name + ".json")


if __name__ == "__main__":
    main()
