"""One section per probe in the HTML and Markdown report: status, findings, a readable view of its data
(key figures, tables, charts) and the raw data. Nothing is measured here; every access checks types.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from gpudiag.diagnose import cpu_limit
from gpudiag.report.values import as_dict, as_list, is_num
from gpudiag.units import fmt_bytes, fmt_pct
from gpudiag.views import charts, env_fields, fleet_view, watch_view
from gpudiag.views.format import (
    PROBE_TITLES,
    VIEW_ERRORS,
    chart,
    fmt_ci,
    fmt_num,
    fmt_x,
    na,
    status_badge,
    table,
    to_json,
)


def _stats_row(label: str, st: Any, unit: str) -> List[Any]:
    """A table row of a timing summary: label, median, p10, p90, sample count and unit ("n/a" where not measured)."""
    st = as_dict(st)
    return [label, na(st.get("median")), na(st.get("p10")), na(st.get("p90")), na(st.get("n")), unit]


def _view_system(data: dict) -> dict:
    """The system probe's section: OS, Python (GIL, switch interval, start method), CPU, RAM and limits, torch, allowlisted env and collect_env tables."""
    os_, py, cpu, mem, torch = (as_dict(data.get(k)) for k in ("os", "python", "cpu", "memory", "torch"))
    kv = [
        ("OS", os_.get("pretty") or os_.get("name")), ("Distro", " ".join(str(x) for x in (
            os_.get("distro_id"), os_.get("distro_version")) if x) or None),
        ("Kernel", os_.get("kernel")), ("WSL", f"WSL{os_['wsl']}" if os_.get("wsl") else "no"),
        ("Container / VM", " / ".join(str(x) for x in (os_.get("container"), os_.get("virtualization")) if x) or "none seen"),
        ("Python", " ".join(str(x) for x in (py.get("implementation"), py.get("version")) if x) or None),
        ("Free-threaded build", fmt_num(py.get("free_threaded_build"))),
        ("GIL enabled", fmt_num(py.get("gil_enabled")) + (" (checked after importing torch)" if py.get("gil_checked_after_torch") else "")),
        ("Switch interval", f"{fmt_num(py.get('switch_interval_s'))} s" if is_num(py.get("switch_interval_s")) else None),
        ("multiprocessing start method", py.get("mp_start_method")),
        ("CPU", cpu.get("brand")),
        ("Cores", f"{na(cpu.get('physical_cores'))} physical / {na(cpu.get('logical_cores'))} logical"
                  + (f" ({_usable(cpu)} usable by this process)" if is_num(_usable(cpu)) else "")),
        ("CPU limit", _cpu_limit_row(as_dict(cpu.get("limit")))),
        ("RAM", f"{fmt_bytes(mem.get('total_bytes'))} total, {fmt_bytes(mem.get('available_bytes'))} available"),
        ("Swap", f"{fmt_bytes(mem.get('swap_total_bytes'))} ({fmt_bytes(mem.get('swap_used_bytes'))} used)"),
        ("Memory limits", "; ".join(f"{k} {fmt_bytes(mem[v])}" for k, v in (
            ("cgroup", "cgroup_limit_bytes"), ("WSL cap", "wsl_memory_cap_bytes")) if is_num(mem.get(v))) or "none seen"),
        ("Budget for new workers", fmt_bytes(mem.get("budget_bytes"))),
        ("OOM kills since boot", na(mem.get("oom_kills_since_boot"))),
        ("vm.overcommit_memory", na(mem.get("overcommit_memory"))),
        ("torch", na(torch.get("version"), torch.get("reason_missing"))
         + (f" · CUDA {torch['cuda_build']}" if torch.get("cuda_build") else "")
         + (f" · cuDNN {torch['cudnn']}" if torch.get("cudnn") else "")),
    ]
    env = as_dict(data.get("env"))
    tables = [table("Environment variables (allowlisted)", ["name", "value"], [[k, v] for k, v in env.items()])] if env else []
    # collect_env's fields, the CPU block and the packages (views/env_fields.py, shared with `gpudiag env`)
    kv += env_fields.cpu_feature_rows(data)
    tables += [table(title, cols, rows, stack=True) for title, cols, rows in env_fields.report_tables(data)]
    return {"kv": kv, "tables": tables}


def _usable(cpu: dict) -> Any:
    """Usable cores of the system probe's CPU: the limit's (a quota counted) where recorded, else the affinity."""
    return as_dict(cpu.get("limit")).get("usable_cores", cpu.get("affinity_cores"))


def _cpu_limit_row(limit: dict) -> str:
    """'a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup); throttled in 4 % of its 120 periods since
    the cgroup was created', 'none (the machine's CPUs)', or 'n/a' in a report without it."""
    if not limit:
        return "n/a"
    text = cpu_limit.limit_text(limit) or "none (the machine's CPUs)"
    since = as_dict(limit.get("throttling_since_start"))
    if is_num(since.get("nr_periods")) and since["nr_periods"] and is_num(since.get("nr_throttled")):
        text += (f"; throttled in {fmt_pct(since['nr_throttled'] / since['nr_periods'])} of its "
                 f"{since['nr_periods']} periods since the cgroup was created")
    return text


def _throttling_row(data_cpu: dict, throttling: Any) -> Optional[tuple]:
    """('CPU limit while measuring', 'a CPU limit of ...; throttled in 3 % of 40 periods') or None without a limit."""
    limit = data_cpu.get("limit") if "limit" in data_cpu else None
    if not cpu_limit.limit_text(limit):
        return None
    thr = cpu_limit.throttling_text(limit, throttling)
    return ("CPU limit while measuring", cpu_limit.usable_text(limit) + (f"; {thr}" if thr else ""))


def _view_driver(data: dict) -> dict:
    """The driver probe's section: driver/CUDA/NVML versions, per-GPU table (memory, driver model, PCIe link, clock events, temp, power) and the processes sharing each GPU."""
    km = as_dict(data.get("kernel_module"))
    kv = [("Driver", data.get("driver_version")), ("CUDA driver API", data.get("cuda_driver_version")),
          ("NVML", data.get("nvml_version"))]
    if km.get("flavour") or km.get("version"):
        kv.append(("Kernel module", f"{km.get('flavour') or 'n/a'} {km.get('version') or ''}".strip()))
    if data.get("mps_daemon_running") is not None:
        kv.append(("MPS daemon running", fmt_num(data.get("mps_daemon_running"))))
    win = as_dict(data.get("windows"))
    if win:
        hags, tdr = as_dict(win.get("hags")), as_dict(win.get("tdr"))
        kv.append(("Hardware-accelerated GPU scheduling", na(hags.get("enabled")) + f" (HwSchMode {na(hags.get('raw'))})"))
        kv.append(("TDR", f"delay {na(tdr.get('delay_s'))} s, DDI delay {na(tdr.get('ddi_delay_s'))} s, level {na(tdr.get('level'))}"))
    gpu_rows, proc_rows = [], []
    for g in as_list(data.get("gpus")):
        g = as_dict(g)
        pcie, dm = as_dict(g.get("pcie")), as_dict(g.get("driver_model"))
        gpu_rows.append([
            na(g.get("index")), g.get("name") or "n/a",
            f"{fmt_bytes(g.get('memory_used_bytes'))} / {fmt_bytes(g.get('memory_total_bytes'))}",
            na(dm.get("current")) + (f" (pending {dm['pending']})" if dm.get("pending") not in (None, dm.get("current")) else ""),
            f"Gen{na(pcie.get('gen_current'))} x{na(pcie.get('width_current'))} "
            f"(max Gen{na(pcie.get('gen_max_card'))} x{na(pcie.get('width_max'))})",
            ", ".join(str(r) for r in as_list(as_dict(g.get("clock_event_reasons")).get("active"))) or "none",
            na(g.get("persistence_mode")), na(g.get("display_active")),
            f"{na(g.get('temperature_c'))} °C, {na(g.get('power_draw_w'))} / {na(g.get('power_limit_w'))} W"])
        procs = as_dict(g.get("processes"))
        for kind in ("compute", "graphics"):
            for p in as_list(procs.get(kind)):
                p = as_dict(p)
                proc_rows.append([na(g.get("index")), kind, str(p.get("pid", "n/a")), p.get("name") or "n/a",
                                  fmt_bytes(p.get("used_memory_bytes")) if is_num(p.get("used_memory_bytes")) else "n/a"])
    tables = [table("GPUs", ["index#", "name", "memory used / total", "driver model", "PCIe link", "clock events",
                             "persistence", "display", "temp, power"], gpu_rows, stack=True)]
    tables.append(table("Processes on the GPU", ["gpu#", "kind", "pid#", "name", "memory#"], proc_rows,
                        "Graphics processes (the desktop, a browser, VS Code) share the GPU with your work.")
                  if proc_rows else table("Processes on the GPU", ["note"], [["none listed by the driver"]]))
    return {"kv": kv, "tables": tables}


def _worker_memory(mem: dict) -> str:
    """The one per-worker host figure (per_worker_host_bytes, USS where the OS gives it) under its name,
    with the same measure at the other steps: the finding and the recommendation quote the same figure."""
    source = str(mem.get("per_worker_host_source") or "")
    if not is_num(mem.get("per_worker_host_bytes")):
        return "n/a"
    kind = "rss" if source.startswith("RSS") else "uss"
    steps = [f"{label}: {fmt_bytes(mem.get(f'{kind}_{key}_bytes'))}"
             for label, key in (("before torch", "before_torch"), ("after import torch", "after_torch"),
                                ("after CUDA init", "after_cuda"))
             if is_num(mem.get(f"{kind}_{key}_bytes")) and not source.endswith(label)]
    if not is_num(mem.get(f"{kind}_after_cuda_bytes")) and mem.get("reason_cuda"):
        steps.append(f"after CUDA init: n/a, {mem['reason_cuda']}")
    text = f"{fmt_bytes(mem['per_worker_host_bytes'])}" + (f", {source}" if source else "")
    return text + (f" ({'; '.join(steps)})" if steps else "")


def _view_gil(data: dict) -> dict:
    """The gil probe's section: threads vs processes scaling table and chart, worker start-up (s) and memory, and why a workload was not measured or inconclusive."""
    py, st, mem = as_dict(data.get("python")), as_dict(data.get("startup")), as_dict(data.get("memory"))
    rows = [as_dict(r) for r in as_list(data.get("scaling"))]
    rows.sort(key=lambda r: (str(r.get("workload")), str(r.get("mode")), r.get("workers") if is_num(r.get("workers")) else 0))
    scaling = table("Scaling", ["workload", "mode", "workers#", "throughput/s#", "speedup#", "95 % interval#",
                                "spread#", "rounds#"],
                    [[r.get("workload"), r.get("mode"), na(r.get("workers")), na(r.get("throughput_per_s")),
                      fmt_x(r.get("speedup")), fmt_ci(r.get("speedup_ci95")), fmt_pct(r.get("spread_fraction")),
                      na(r.get("samples") if r.get("samples") is not None else r.get("repeats"))] for r in rows])
    fits = as_dict(mem.get("fits"))
    kv = [("GIL enabled", fmt_num(py.get("gil_enabled"))), ("Free-threaded build", fmt_num(py.get("free_threaded_build"))),
          ("Process worker start-up", f"{na(st.get('total_s'))} s (spawn {na(st.get('spawn_s'))} s + import torch {na(st.get('import_torch_s'))} s)"),
          ("Host memory per process worker", _worker_memory(mem)),
          ("Device memory per CUDA context", fmt_bytes(mem.get("device_bytes_per_context")) if is_num(mem.get("device_bytes_per_context"))
           else na(None, mem.get("reason_cuda"))),
          ("Workers that fit", f"threads {na(fits.get('threads'))}, processes {na(fits.get('processes'))} "
                               f"(host budget {fmt_bytes(mem.get('budget_host_bytes'))}"
                               + (f", device budget {fmt_bytes(mem.get('budget_device_bytes'))})" if is_num(mem.get("budget_device_bytes")) else ")"))]
    gcpu = as_dict(data.get("cpu"))
    worst = max((as_dict(t) for t in as_dict(gcpu.get("throttling")).values() if as_dict(t).get("periods")),
                key=lambda t: t.get("throttled_share") or 0, default=None)
    row = _throttling_row(gcpu, worst)
    if row:
        kv.append(row)
    load = {k: v for k, v in as_dict(data.get("other_busy_cores")).items() if is_num(v)}
    if load:  # of the cores other programs share with gpudiag (more than its usable ones under a quota)
        cores = cpu_limit.run_cores(gcpu.get("limit")) or gcpu.get("usable_cores")
        kv.append(("Other programs while measuring", ", ".join(f"{k} {v:.2f}" for k, v in load.items())
                   + " cores" + (f" of {cores}" if is_num(cores) else "")))
    absent = as_dict(data.get("absent"))
    notes = [f"{k} not measured: {v}" for k, v in absent.items()]
    notes += [f"{w}: {as_dict(v).get('verdict')} - {as_dict(v).get('reason')}" for w, v in as_dict(data.get("verdict")).items()
              if as_dict(v).get("verdict") == "inconclusive" and as_dict(v).get("reason")]
    ch = chart("chart-gil", "Threads vs processes", charts.gil_chart(data),
               "Bars near 1x for threads mean the GIL serialises that workload; processes near the dashed "
               "ideal line mean the work itself scales. Compare the two bars of each workload. Whiskers are "
               "the 95 % interval; a bar above the ideal line by more than its interval means the 1-worker "
               "baseline was disturbed (the verdict then says inconclusive).", scaling)
    return {"kv": kv, "charts": [ch], "notes": notes}


def _view_launch(data: dict) -> dict:
    """The launch probe's section: launch overhead, tiny-kernel and synchronize latency (µs) and the CUDA graph speedup that shows whether launches are the bottleneck."""
    g = as_dict(data.get("graph"))
    lat = table("Latency", ["measure", "median#", "p10#", "p90#", "n#", "unit"],
                [_stats_row("launch overhead (host)", data.get("launch_overhead_us"), "µs"),
                 _stats_row("tiny kernel end to end", data.get("kernel_latency_us"), "µs"),
                 _stats_row("torch.cuda.synchronize()", data.get("sync_latency_us"), "µs")])
    kv = [("CUDA graph speedup", f"{fmt_x(g.get('speedup'))}: {na(g.get('eager_per_op_us'))} µs per op eager, "
                                 f"{na(g.get('graph_per_op_us'))} µs replayed ({na(g.get('ops_per_graph'))} ops per graph)")]
    return {"kv": kv, "tables": [lat]}


def _view_contention(data: dict) -> dict:
    """The contention probe's section: threads in one context vs processes with one context each, with the stretch that prices context switching."""
    ctx = as_dict(data.get("context"))
    kv = [("Kernel length", f"{na(data.get('kernel_ms'))} ms (alone: median {na(as_dict(data.get('solo_ms')).get('median'))} ms)"),
          ("Context creation", f"{na(ctx.get('create_s'))} s, {fmt_bytes(ctx.get('device_bytes'))} device memory"),
          ("MPS active", na(data.get("mps_active")))]
    th = table("Threads, one context", ["workers#", "wall s#", "ideal s#", "throughput vs 1#"],
               [[na(r.get("workers")), na(r.get("wall_s")), na(r.get("ideal_s")), fmt_x(r.get("throughput_vs_one"))]
                for r in map(as_dict, as_list(data.get("threads")))])
    pr = table("Processes, one context each", ["workers#", "wall s#", "ideal s#", "stretch#", "overhead#",
                                               "switch cost µs#", "time slice ms#"],
               [[na(r.get("workers")), na(r.get("wall_s")), na(r.get("ideal_s")), fmt_x(r.get("stretch")),
                 fmt_pct(r.get("overhead_fraction"), 1), na(r.get("switch_cost_us_est")), na(r.get("timeslice_ms_est"))]
                for r in map(as_dict, as_list(data.get("processes")))],
               "Stretch = wall time / ideal time-sharing; the overhead beyond 1x is what context switches cost.")
    return {"kv": kv, "tables": [th, pr]}


def _view_pcie(data: dict) -> dict:
    """The pcie probe's section: link generation and width (current vs max), bandwidth per transfer size (GB/s) as table and chart."""
    link = as_dict(data.get("link"))
    theo = data.get("theoretical_gbps_per_direction")
    kv = [("Link", f"Gen{na(link.get('gen'))} x{na(link.get('width'))} (max Gen{na(link.get('gen_max'))} "
                   f"x{na(link.get('width_max'))})" + (", read during a copy" if link.get("read_under_load") else "")),
          ("Theoretical per direction", f"{na(theo)} GB/s")]
    kv += [(f"Peak {k.replace('_gbps', '').replace('_', ' ')}", f"{na(v)} GB/s") for k, v in as_dict(data.get("peak")).items()]
    kv += [(f"Efficiency {k.replace('_', ' ')}", fmt_pct(v)) for k, v in as_dict(data.get("efficiency")).items()]
    pts = [as_dict(p) for p in as_list(data.get("points"))]
    order = {k: i for i, k in enumerate(("h2d", "d2h", "bidir", "pinned", "pageable"))}
    pts.sort(key=lambda p: (order.get(p.get("direction"), 9), order.get(p.get("memory"), 9),
                            p.get("size_bytes") if is_num(p.get("size_bytes")) else 0))
    tbl = table("Bandwidth per transfer size", ["direction", "memory", "size#", "median GB/s#", "p10#", "p90#", "n#"],
                [[charts.DIRECTION_LABELS.get(p.get("direction"), p.get("direction")), p.get("memory"),
                  fmt_bytes(p.get("size_bytes")), na(as_dict(p.get("gbps")).get("median")), na(as_dict(p.get("gbps")).get("p10")),
                  na(as_dict(p.get("gbps")).get("p90")), na(as_dict(p.get("gbps")).get("n"))] for p in pts])
    ch = chart("chart-pcie", "PCIe bandwidth vs transfer size", charts.pcie_chart(data),
               "Lines should climb to a plateau near the dashed link maximum; a plateau far below it points at a "
               "degraded link or a slow path. Pinned above pageable is normal; the reverse is worth a look.", tbl)
    return {"kv": kv, "charts": [ch]}


def _intra_op_row(strategies: List[dict]) -> Optional[tuple]:
    """("Plain loop's intra-op threads", ...) when the report timed the plain loop with one thread as well: both
    baselines, and the threads each worker of threads and processes had."""
    serial = next((s for s in strategies if s.get("name") == "serial"), {})
    one = as_dict(serial.get("one_thread"))
    if not is_num(one.get("cycles_per_s")) or not is_num(serial.get("cycles_per_s")):
        return None
    ci = fmt_ci(one.get("vs_default_ci95"))
    per = sorted({s.get("torch_threads") for s in strategies if s.get("name") in ("threads", "processes")
                  and is_num(s.get("torch_threads"))})
    return ("Plain loop's intra-op threads",
            f"{na(serial.get('torch_threads'))} (torch's default here): {serial['cycles_per_s']:.1f} cycles/s, spread "
            f"{fmt_pct(serial.get('spread_fraction'))}; with 1 thread: {one['cycles_per_s']:.1f} cycles/s "
            f"({fmt_x(one.get('vs_default'))}{', 95 % interval ' + ci if ci else ''}), spread "
            f"{fmt_pct(one.get('spread_fraction'))}. Speedups are over the default; threads and processes ran "
            + (f"{'/'.join(str(p) for p in per)} per worker" if per else "their own count per worker") + ".")


def _view_cycle(data: dict, rec: Optional[dict] = None) -> dict:
    """The cycle probe's section: workload, strategy tournament (cycles/s, interval), GPU idle timelines, gap
    histogram and NVML utilisation; each strategy says whether it is the recommended one (rec: the report's
    recommendation), tied with it, or the fastest."""
    wl = as_dict(data.get("workload"))
    kv = [("Workload", f"{na(wl.get('model'))}, batch {na(wl.get('batch'))}, {na(wl.get('params'))} parameters, "
                       f"{'forward+backward' if wl.get('train') else 'forward only'} on {na(wl.get('device'))}"),
          ("Cycles per strategy", na(wl.get("cycles"))), ("Host work per cycle", f"{na(wl.get('host_work_ms'))} ms")]
    if data.get("custom"):
        kv.append(("Your loop", str(data["custom"])))
    rounds, load = as_dict(data.get("rounds")), as_dict(data.get("load"))
    if is_num(rounds.get("rounds")):
        kv.append(("Timed rounds", f"{rounds['rounds']} interleaved rounds, stopped: {rounds.get('stopped_because') or 'n/a'}"))
    row = _throttling_row(load, load.get("throttling"))
    if row:
        kv.append(row)
    if is_num(load.get("other_busy_cores")):
        seen = ", ".join(f"{as_dict(v).get('name')} {as_dict(v).get('cores')}" for v in as_list(load.get("busiest_visible")))
        kv.append(("Other programs during the rounds",
                   f"{load['other_busy_cores']:.2f} of {na(load.get('run_cores') or load.get('usable_cores'))} cores"
                   + (" - busy: the figures describe a loaded machine" if load.get("busy") else "")
                   + (f" (visible: {seen})" if seen else "")))
    strategies = [as_dict(s) for s in as_list(data.get("strategies"))]
    threads_row = _intra_op_row(strategies)
    if threads_row:
        kv.append(threads_row)
    ok = [s for s in strategies if s.get("status") == "ok" and is_num(s.get("cycles_per_s"))]
    rec = as_dict(rec)
    recommended = rec.get("strategy") if rec.get("strategy") in {s.get("name") for s in ok} else None
    tied = [str(t) for t in as_list(rec.get("tied_with"))] if recommended else []
    fastest = max(ok, key=lambda s: s["cycles_per_s"])["name"] if ok else None
    tbl = table("Strategies", ["strategy", "status", "workers#", "cycles/s#", "vs serial#", "95 % interval#",
                               "rounds#", "other load#", "GPU busy#", "host mem#", "note"],
                [[s.get("name"), status_badge(s.get("status")), na(s.get("workers")), na(s.get("cycles_per_s")),
                  fmt_x(s.get("speedup_vs_serial")), fmt_ci(s.get("speedup_ci95")),
                  na(s.get("samples") if s.get("samples") is not None else s.get("repeats")),
                  f"{s['other_busy_cores']:.2f} cores" if is_num(s.get("other_busy_cores")) else "",
                  fmt_pct(s.get("gpu_busy_fraction")) if is_num(s.get("gpu_busy_fraction"))
                  else "n/a", fmt_bytes(s.get("host_rss_bytes") if is_num(s.get("host_rss_bytes"))
                                        else s.get("peak_host_bytes")),
                  "; ".join(x for x in (s.get("reason"), s.get("gpu_busy_reason"), ", ".join(
                      charts.strategy_notes(str(s.get("name")), recommended, tied, fastest))) if x)]
                 for s in strategies],
                stack=True)
    out = [chart("chart-tournament", "Strategy tournament", charts.tournament_chart(data, recommended, tied),
                 "Every strategy ran the same cycles in interleaved rounds. The longest bar is the fastest; the "
                 "whisker is the 95 % interval of its cycles/s, taken from its speedup's interval over the serial "
                 "baseline (your plain loop). Strategies that could not run here say why.", tbl)]
    idle = {k: v for k, v in as_dict(data.get("idle")).items() if isinstance(v, dict)}
    if idle:
        trows = []
        for name, t in idle.items():
            gaps, bd = as_dict(t.get("gaps")), as_dict(t.get("breakdown_ms"))
            trows.append([name, t.get("method") or "n/a", fmt_pct(t.get("busy_fraction")), na(gaps.get("count")),
                          ", ".join(fmt_num(x) for x in as_list(gaps.get("longest_ms"))[:5]) or "n/a",
                          na(bd.get("host_wait")), na(bd.get("sync_wait")),
                          na(bd.get("copy_wait")) if "copy_wait" in bd else "", na(bd.get("launch_overhead"))])
        ttbl = table("Timelines", ["run", "method", "GPU busy#", "gaps#", "longest gaps ms#", "host wait ms#",
                                   "sync wait ms#", "copy wait ms#", "launch ms#"], trows)
        out.append(chart("chart-idle", "Where the time went", charts.idle_breakdown_chart(idle),
                         "The GPU-busy share of the baseline against the fastest strategy, and the idle time split by cause "
                         "(in proportion to the measured breakdown): waiting for Python, host syncs such as .item(), "
                         "launch overhead.", ttbl))
        hrows = []
        for name, t in idle.items():
            for b in as_list(as_dict(t.get("gaps")).get("histogram")):
                b = as_dict(b)
                hrows.append([name, na(b.get("lo_ms")), na(b.get("hi_ms")) if b.get("hi_ms") is not None else "and longer",
                              na(b.get("count"))])
        out.append(chart("chart-gaps", "Idle gaps by length", charts.gap_histogram_chart(idle),
                         "Many short gaps mean launch overhead; a few long gaps (hundreds of ms or more) mean the GPU "
                         "waits for the host between iterations. The fastest strategy should have fewer long gaps.",
                         table("Gap histogram", ["run", "from ms#", "to ms#", "gaps#"], hrows)))
    nv = as_dict(data.get("nvml_utilization"))
    if nv.get("samples"):
        out.append(chart("chart-util", "GPU utilisation (NVML)", charts.utilization_chart(nv),
                         f"What nvidia-smi would have shown during the run (median {na(nv.get('median_percent'))} %). "
                         "NVML counts a sample as busy if any kernel ran in it, so this overstates real use.",
                         table("Utilisation samples", ["t s#", "GPU %#"],
                               [[na(as_dict(s).get("t_s")), na(as_dict(s).get("gpu_percent"))] for s in as_list(nv.get("samples"))])))
    return {"kv": kv, "charts": out}


# Raw data a page embeds under a probe's section, at most (compact JSON characters).
RAW_HTML_CHARS = 500_000

_VIEWS: Dict[str, Callable[..., dict]] = {
    "system": _view_system, "driver": _view_driver, "gil": _view_gil, "launch": _view_launch,
    "contention": _view_contention, "pcie": _view_pcie, "fleet": fleet_view.view, "watch": watch_view.view,
}


def probe_sections(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One section per probe: status, reason, findings, a readable view of its data, the raw data."""
    out = []
    for name, res in as_dict(report.get("probes")).items():
        res = as_dict(res)
        data = as_dict(res.get("data"))
        view: Dict[str, Any] = {}
        error = None
        if res.get("status") == "ok" and data:
            try:
                view = _view_cycle(data, report.get("recommendation")) if name == "cycle" else _VIEWS[name](data) if name in _VIEWS else {}
            except VIEW_ERRORS as exc:  # a report of another version: fall back to the raw data
                error = f"this view could not read the data ({type(exc).__name__}: {exc}); the raw data is below"
        # A fleet of thousands of ranks has megabytes of raw data: the page says where it is instead.
        raw_chars = len(json.dumps(data, default=str)) if data else 0
        raw = to_json(data) if data and raw_chars <= RAW_HTML_CHARS else ""
        out.append({
            "name": name, "title": PROBE_TITLES.get(name, name), "status": res.get("status"),
            "reason": res.get("reason") or "", "duration_s": res.get("duration_s") if is_num(res.get("duration_s")) else 0.0,
            "findings": [dict(f, probe=name) for f in as_list(res.get("findings")) if isinstance(f, dict)],
            "kv": [(k, "n/a" if v is None else v) for k, v in view.get("kv", [])],
            "tables": view.get("tables", []), "charts": view.get("charts", []), "notes": view.get("notes", []),
            "error": error, "raw": raw, "raw_chars": len(raw) if raw else raw_chars,
        })
    return out
