"""Probe `cycle`: the user's loop, run under every parallelism strategy; GPU idle gaps of the baseline and winner.

Each strategy runs the same number of cycles of the same seeded workload (gpudiag/probes/cycle/workload.py)
per timed run, in interleaved rounds (gpudiag/probes/cycle/tournament.py), and is reported as cycles/s
against `serial` with a 95 % interval and the CPU other programs used meanwhile. On CUDA, each
in-process strategy is profiled once more after its timed runs to get its GPU busy fraction and
idle gaps, and NVML utilisation is sampled during the timed runs. With `--cycle MODULE:FACTORY`
the user's own step is measured instead.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from gpudiag import platform
from gpudiag.diagnose import cpu_limit
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, finding

# Cycles per timed run, and the rounds (at least, at most, wall-seconds budget for all rounds):
# short runs, many interleaved rounds, so an interval can be computed and load averages out.
DEFAULT_CYCLES = {("cpu", "quick"): 12, ("cpu", "full"): 60, ("cuda", "quick"): 50, ("cuda", "full"): 200}
# At least 6 rounds: the fewest from which a paired 95 % interval exists (gpudiag.measure.stats.paired_ratio_ci);
# and on the CPU in quick mode 2.4 s of them (3 s of 16-cycle runs from issue 22 to 27, 2.5 s before): about 9
# rounds of the built-in workload on 2 quiet cores, from which the interval leaves out the most extreme round on
# each side. Over 6-7 rounds it spans them all, and processes over threads spanned 0.95-1.29x and 0.96-1.51x on
# quiet runs: too wide to call them a tie. Runs of 12 cycles take three quarters of the time of 16 (the workers'
# start and hand-over are well under 1 ms of a 60-80 ms run), and the load readings around each run no longer walk
# every process on the machine: 2.4 s holds as many rounds as 3 s did (6-7 of each, interleaved, on the loaded VM).
ROUNDS = {("cpu", "quick"): (6, 16, 2.4), ("cpu", "full"): (7, 30, 25.0),
          ("cuda", "quick"): (6, 10, 10.0), ("cuda", "full"): (7, 30, 90.0)}
# A --cycle step's run: this long for the plain loop with one intra-op thread (with torch's default where that is
# one thread, or on a GPU): strategies.size_run.
CUSTOM_TARGET_S = {"quick": 0.15, "full": 1.0}
# A --cycle step on the CPU in quick mode gets twice the rounds' budget: its runs are sized to 0.1-0.15 s of the
# plain loop (the built-in's take 0.03-0.04 s), so 2.5 s held 5-6 rounds of issue 22's step, and its threads' rounds
# scatter by +-15 % (the GIL hands over between them): the interval of processes over threads spanned 0.95-1.39x
# over 6 rounds, 0.95-1.28x over 10. About 11 rounds separate a tie from a 35 % difference.
CUSTOM_ROUNDS_BUDGET_S = {("cpu", "quick"): 5.0}
PROFILE_CYCLES = {"quick": 30, "full": 60}  # at most, in the profiled run (CUDA)
DEADLINE_FRACTION = 0.8  # of the probe timeout: rounds end by then, leaving time for rows and close
IDLE_WARN_BUSY_FRACTION = 0.6
RAISE_LIMIT = "Raise the CPU limit (docker --cpus, Kubernetes resources.limits.cpu, systemd CPUQuota)"


def worker_counts(mode: str, cores: int) -> List[int]:
    """Worker counts tried for threads and processes from the usable cores (a CPU quota counted): the user's 4
    (capped by cores) in quick mode; none on 1 usable core, where a second worker can only take turns with the
    first (and under a quota its figure follows the quota's periods, not the strategy)."""
    if cores < 2:
        return []
    if mode == "quick":
        return [min(4, max(2, cores))]
    top = max(4, min(cores, 8))
    return sorted(c for c in {2, 4, min(cores, 8)} if 2 <= c <= top)


def make_plan(mode: str, device: str, cores: int, options: Dict[str, Any], cycles: Optional[int] = None):
    """The tournament's Plan (cycles per run, warm-up, rounds min/max and wall budget, worker counts): --quick/--full
    and the device set how long it measures; cycle_* options override it for tests and benchmarks."""
    from gpudiag.probes.cycle.strategies import Plan, even_shares

    quick = mode == "quick"
    key = (device, "quick" if quick else "full")
    workers = options.get("cycle_workers") or worker_counts(mode, cores)
    workers = [int(w) for w in (workers if isinstance(workers, (list, tuple)) else [workers])]
    cycles = int(options.get("cycle_cycles") or even_shares(cycles or DEFAULT_CYCLES[key], workers))
    reason = None if workers else _no_workers_reason(cores, options.get("cpu_limit"))
    lo, hi, budget = ROUNDS[key]
    if options.get("cycle"):
        budget = CUSTOM_ROUNDS_BUDGET_S.get(key, budget)
    if "cycle_repeats" in options:  # an exact number of rounds (tests, benchmarks)
        lo = hi = int(options["cycle_repeats"])
        budget = None
    return Plan(
        cycles=cycles,
        warmup=int(options.get("cycle_warmup", 3 if device == "cpu" else 10)),
        repeats=lo,
        workers=workers,
        fuse=4 if device == "cpu" else 8,
        sync_every=8,
        streams=4,
        profile_cycles=min(cycles, PROFILE_CYCLES[key[1]]),
        max_rounds=hi,
        rounds_budget_s=budget,
        workers_reason=reason,
    )


def _no_workers_reason(cores: int, limit: Optional[dict]) -> str:
    """Why threads and processes were not measured on 1 usable core, naming a CPU limit where one binds."""
    why = cpu_limit.usable_text(limit) or f"{cores} usable core"
    return (f"{why}: a second worker could only take turns with the first, so more workers cannot help and "
            "none were measured")


def _host_budget(ctx: ProbeContext):
    """Memory new worker processes may use: the system probe's budget, else what psutil says is available."""
    budget = ((ctx.results.get("system") or {}).get("memory") or {}).get("budget_bytes")
    if isinstance(budget, (int, float)) and budget > 0:
        return int(budget), "system probe budget_bytes"
    import psutil

    return int(psutil.virtual_memory().available), "psutil available memory (system probe did not run)"


def _profiler_support():
    """(True, None) when torch.profiler can record CUDA kernels, else (False, why): decides between the profiler
    timeline and the CUDA-event fallback, and the reason is reported instead of an empty timeline."""
    try:
        from torch.profiler import ProfilerActivity, supported_activities

        if ProfilerActivity.CUDA in supported_activities():
            return True, None
        return False, "this torch build's profiler has no CUDA activity (built without CUPTI/kineto)"
    # ImportError: a torch without torch.profiler; AttributeError: one without supported_activities;
    # RuntimeError: the C++ side failing to list its activities (a broken CUDA/CUPTI install).
    except (ImportError, AttributeError, RuntimeError) as exc:
        return False, f"torch.profiler unavailable: {type(exc).__name__}: {exc}"


def _nvml_locate(torch) -> Any:
    """The PCI bus id of the current CUDA device, else its index: what the NVML sampler matches it by. None under
    a ROCm build: its torch.cuda device is an AMD GPU, which NVML does not describe."""
    from gpudiag.backends import nvml

    if getattr(torch.version, "hip", None):
        return None
    index = torch.cuda.current_device()
    return nvml.pci_bus_id(torch.cuda.get_device_properties(index)) or index


def run(ctx: ProbeContext) -> ProbeOutput:
    """The cycle probe's data and findings; starts the worker processes first so their torch import overlaps
    this one, and closes them whatever happens."""
    started = time.monotonic()
    from gpudiag.probes.cycle import strategies

    host_budget, host_source = _host_budget(ctx)
    gil_mem = (ctx.results.get("gil") or {}).get("memory") or {}
    limit = platform.cpu_limit()
    cores = limit["usable_cores"]  # affinity, cpuset and a CPU quota: what workers can really use
    tried = ctx.options.get("cycle_workers") or worker_counts(ctx.mode, cores)
    tried = tried if isinstance(tried, (list, tuple)) else [tried]
    # Worker processes first: their spawn and torch import overlap this process's own.
    early = strategies.start_workers_early(max((int(w) for w in tried), default=0), host_budget,
                                           gil_mem.get("per_worker_host_bytes"))
    try:
        return _run(ctx, started, early, host_budget, host_source, gil_mem, limit)
    finally:
        if early is not None:
            early.close()  # idempotent: normally the tournament has closed it already


def _run(ctx: ProbeContext, started: float, early, host_budget, host_source, gil_mem: dict, limit: dict) -> ProbeOutput:
    """The body of run(): sizes the workload (built-in) or the user's cycle count (--cycle), runs the tournament
    and assembles strategies, winner, GPU idle timelines and NVML utilisation into the probe's data."""
    import psutil
    import torch

    from gpudiag.probes.cycle import strategies, tournament

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cores = limit["usable_cores"]
    torch_default = torch.get_num_threads()
    # torch sizes its intra-op pool from the CPUs it may run on, not from a CPU quota: under a 1-CPU quota on
    # 2 cores it starts 2 threads, which stall each other at the quota (TORCH_THREADS_ABOVE_CPU_LIMIT says so).
    # Every strategy shares the threads the limit really gives.
    default_threads = max(1, min(torch_default, cores))
    torch.set_num_threads(default_threads)
    profiler_cuda, profiler_reason = _profiler_support() if cuda else (False, "no CUDA device")

    if cuda:
        free_bytes, free_source = int(torch.cuda.mem_get_info()[0]), "torch.cuda.mem_get_info free"
    else:
        free_bytes, free_source = host_budget, host_source
    plan = make_plan(ctx.mode, device, cores, dict(ctx.options, cpu_limit=limit))
    plan.deadline = started + DEADLINE_FRACTION * ctx.timeout_s
    spec, workload_info = _workload_spec(ctx, plan, device, free_bytes, free_source)
    workload_info.update({"torch_threads_default": torch_default, "torch_threads": default_threads,
                          "logical_cores": os.cpu_count(), "usable_cores": cores})

    env = strategies.Env(device=device, default_threads=default_threads, profiler_cuda=profiler_cuda,
                         profiler_reason=profiler_reason, nvml_locate=_nvml_locate(torch) if cuda else None,
                         host_budget_bytes=host_budget, host_budget_source=host_source,
                         gil_per_worker_host_bytes=gil_mem.get("per_worker_host_bytes"),
                         gil_per_worker_device_bytes=gil_mem.get("per_worker_device_bytes"), early_pool=early,
                         cpu_limit=cpu_limit.recorded(limit))
    if early is not None:
        env.pools.append(early)
    rows = tournament.run_tournament(spec, plan, env)
    workload_info.update(cycles=plan.cycles, profile_cycles=plan.profile_cycles if cuda else None)
    best = tournament.winner(rows)
    if cuda:
        device_info = {"type": "cuda", "name": torch.cuda.get_device_name(), "profiler_cuda": profiler_cuda,
                       "profiler_reason": profiler_reason}
    else:
        device_info = {"type": "cpu", "name": None, "profiler_cuda": False, "profiler_reason": profiler_reason}

    data = {
        "workload": workload_info,
        "device": device_info,
        "strategies": rows,
        "winner": best["name"] if best else None,
        **_gpu_fields(env, best, cuda),
        "custom": ctx.options.get("cycle") or None,
        "host_rss_bytes": psutil.Process().memory_info().rss,
        "rounds": env.rounds,
        "load": env.load,
    }
    return ProbeOutput(data, findings_for(data))


def _workload_spec(ctx: ProbeContext, plan, device: str, free_bytes, free_source) -> tuple:
    """(the workload spec the strategies run, its description for the report): the user's step (--cycle) or the
    built-in workload sized to the free memory. A --cycle step without cycle_cycles gets plan.target_run_s set,
    so the tournament sizes its runs once every strategy is prepared."""
    from gpudiag.probes.cycle import workload

    custom_ref = ctx.options.get("cycle")
    spec: Any
    if custom_ref:
        workload.parse_ref(custom_ref)
        spec = workload.CustomSpec(custom_ref, device, os.getcwd())
        if not ctx.options.get("cycle_cycles"):  # sized by the tournament once every strategy is prepared
            plan.target_run_s = CUSTOM_TARGET_S[ctx.mode]
            plan.profile_cycles = PROFILE_CYCLES[ctx.mode]  # and capped by the sized cycles there
        info = spec.describe()
    else:
        copies = max(plan.workers, default=0) + 2  # processes + threads copies alive at once, plus serial
        inf, hid, bat = workload.choose_size(device, ctx.mode, free_bytes, copies)
        host_ms = float(ctx.options.get("cycle_host_work_ms", workload.HOST_WORK_MS[ctx.mode]))
        spec = workload.WorkloadSpec(device=device, in_features=inf, hidden=hid, batch=bat,
                                     train=bool(ctx.options.get("cycle_train", False)),
                                     host_work_iters=workload.calibrate_host_work(host_ms), host_work_ms=host_ms)
        info = spec.describe()
        info["estimated_bytes_per_copy"] = spec.estimated_bytes(fuse=plan.fuse)
    builtin, cuda = not custom_ref, device == "cuda"
    info.update({"cycles": plan.cycles, "warmup_cycles": plan.warmup, "repeats": plan.repeats,
                 "rounds_min": plan.repeats, "rounds_max": plan.max_rounds,
                 "rounds_budget_s": plan.rounds_budget_s,
                 "workers_tried": plan.workers,
                 "fuse": plan.fuse if builtin else None,
                 "sync_every": plan.sync_every if (builtin and cuda) else None,
                 "streams": plan.streams if (builtin and cuda) else None,
                 "profile_cycles": plan.profile_cycles if cuda else None,
                 "sized_from": {"free_bytes": free_bytes, "source": free_source,
                                "fraction": workload.MEMORY_FRACTION} if builtin else None})
    return spec, info


def _gpu_fields(env, best: Optional[dict], cuda: bool) -> Dict[str, Any]:
    """The data's idle / idle_reason (GPU idle timelines of serial and the fastest strategy) and
    nvml_utilization / nvml_utilization_reason fields."""
    from gpudiag.probes.cycle import timeline

    if not cuda:
        return {"idle": None, "idle_reason": "no CUDA device: GPU idle gaps need a GPU; the workload ran on the CPU",
                "nvml_utilization": None, "nvml_utilization_reason": "no CUDA device"}
    idle = {"serial": env.timelines.get("serial") or timeline.empty_timeline(None, "not profiled")}
    if best is not None and best["name"] != "serial":
        idle[best["name"]] = env.timelines.get(best["name"]) or timeline.empty_timeline(
            None, "each process has its own CUDA context; one profiler cannot see the whole GPU"
            if best["name"] == "processes" else "not profiled")
    nvml_util = env.nvml
    nvml_reason = None if nvml_util and nvml_util.get("n") else (nvml_util or {}).get("reason", "not sampled")
    return {"idle": idle, "idle_reason": None, "nvml_utilization": nvml_util, "nvml_utilization_reason": nvml_reason}


def _ci_text(row: dict) -> str:
    """The " (95 % interval a-bx, n rounds)" suffix of the fastest-strategy finding, or the note that there were
    too few rounds for one: a speedup is never stated without its sample count."""
    ci = row.get("speedup_ci95")
    n = row.get("samples") or row.get("repeats")
    if ci:
        return f" (95 % interval {ci[0]:.2f}-{ci[1]:.2f}x, {n} rounds)"
    return f" ({n} rounds, too few for an interval)" if n else ""


def _conditions_findings(data: dict, quality: dict, again: str) -> List[dict]:
    """The findings about the conditions the tournament ran in (a throttling CPU quota, torch's threads above the
    CPU limit, a busy machine, a speedup beyond what the workers can give): they say how far its figures hold."""
    out = []
    if quality["throttled"]:
        load = data.get("load") or {}
        out.append(finding(
            "CYCLE_THROTTLED", "warning",
            f"The strategy tournament ran {quality['throttled_text']}: the strategies' rates are what this limit "
            "allows, measured in stalls of up to one period each, and more workers cannot help.",
            {"throttling": load.get("throttling"), "limit": load.get("limit"),
             "torch_threads": data["workload"].get("torch_threads")},
            RAISE_LIMIT + "."))
    wl = data.get("workload") or {}
    limit = (data.get("load") or {}).get("limit")
    default, used = wl.get("torch_threads_default"), wl.get("torch_threads")
    if isinstance(default, int) and isinstance(used, int) and default > used and cpu_limit.limit_text(limit):
        out.append(finding(
            "TORCH_THREADS_ABOVE_CPU_LIMIT", "warning",
            f"torch starts {default} intra-op threads here, more than the {cpu_limit.usable_text(limit)}: torch counts "
            "the CPUs it may run on, not a CPU quota, so in your own job those threads take turns inside the "
            f"limit. The tournament ran every strategy with {used} thread{'s' if used != 1 else ''}.",
            {"torch_threads_default": default, "torch_threads": used, "limit": limit},
            f"Call torch.set_num_threads({used}) at the start of the job (or set OMP_NUM_THREADS={used}), or raise "
            "the CPU limit."))
    if quality["busy"]:
        load = data.get("load") or {}
        out.append(finding(
            "MACHINE_BUSY_DURING_TOURNAMENT", "warning",
            "The strategy tournament ran on a busy machine: " + quality["reasons"][0] + ". Its figures describe "
            "that busy machine, and the parallel strategies lose most (they need the cores that were taken).",
            {"other_busy_cores": quality["other_busy_cores"], "usable_cores": quality["usable_cores"],
             "widest_workers": quality["widest_workers"], "steal_cores": load.get("steal_cores"),
             "busiest_visible": quality["visible"], "rule": load.get("rule")},
            "Close other CPU-heavy work (or wait for it) and run `gpudiag report` again."))
    for r in quality["above_ceiling"]:
        out.append(finding(
            "CYCLE_SPEEDUP_ABOVE_WORKERS", "warning",
            f"{r['name']} with {r['workers']} workers measured {r['speedup_vs_serial']:.2f}x the plain loop: more "
            f"than {r['workers']} workers sharing the same cycles can give, so the plain loop's runs were slowed "
            "by something else and no speedup over it is stated.",
            {"strategy": r["name"], "workers": r["workers"], "speedup_vs_serial": r["speedup_vs_serial"],
             "speedup_ci95": list(r["speedup_ci95"]) if r.get("speedup_ci95") else None,
             "serial_spread_fraction": quality["baseline_spread"]},
            again))
    return out


def findings_for(data: dict) -> List[dict]:
    """Findings from the tournament's data (pure: tested on recorded data)."""
    from gpudiag.diagnose import confidence
    from gpudiag.diagnose.access import strategy_rows

    rows = {r["name"]: r for r in data["strategies"]}
    serial = rows.get("serial") or {}
    win = rows.get(data.get("winner") or "")
    quality = confidence.cycle_quality(data, strategy_rows({"probes": {"cycle": {"status": "ok", "data": data}}}))
    # Advice that can work: under a throttling quota, a quiet machine changes nothing.
    again = (RAISE_LIMIT + " and run `gpudiag report` again." if quality["throttled"] else "Run again on a quiet machine.")
    out = _conditions_findings(data, quality, again)
    presentable = not quality["reasons"]
    if win and serial.get("cycles_per_s") and presentable:
        w = f" with {win['workers']} workers" if (win.get("workers") or 1) > 1 else ""
        out.append(finding(
            "CYCLE_FASTEST_STRATEGY", "info",
            f"Fastest measured here: {win['name']}{w}, {win['cycles_per_s']:.1f} cycles/s, "
            f"{win['speedup_vs_serial']:.2f}x the plain loop ({serial['cycles_per_s']:.1f} cycles/s)"
            + (_ci_text(win) if win["name"] != "serial" else "") + "; the recommendation says whether that is "
            "clearly ahead of the simpler strategies.",
            {"strategy": win["name"], "workers": win["workers"], "cycles_per_s": win["cycles_per_s"],
             "serial_cycles_per_s": serial["cycles_per_s"], "speedup_vs_serial": win["speedup_vs_serial"],
             "speedup_ci95": win.get("speedup_ci95"), "samples": win.get("samples"),
             "device": data["workload"].get("device")},
            None))
    elif quality["noisy_baseline"] and not quality["busy"]:
        out.append(finding(
            "CYCLE_BASELINE_NOISY", "warning",
            f"No strategy is named fastest: {quality['reasons'][0]}.",
            {"serial_spread_fraction": quality["baseline_spread"]},
            again))
    stalls = quality["intra_op_stalls"]
    if stalls:
        one = serial.get("one_thread") or {}
        out.append(finding(
            "CYCLE_INTRA_OP_STALLS", "warning",
            f"The plain loop with torch's {stalls['torch_threads']} intra-op threads varied by "
            f"{100 * stalls['spread']:.0f} % between rounds, with one thread by {100 * stalls['one_thread_spread']:.0f} % "
            "in the same rounds: intra-op threads wait for each other at the end of every op, so whenever another "
            "program takes a core for a moment the op stalls. That is how this loop runs on this machine; the "
            "strategies are compared against it as measured.",
            {"torch_threads": stalls["torch_threads"], "serial_spread": stalls["spread"],
             "one_thread_spread": stalls["one_thread_spread"], "one_thread_cycles_per_s": one.get("cycles_per_s"),
             "serial_cycles_per_s": serial.get("cycles_per_s")},
            "On a shared machine, run each worker with one intra-op thread (torch.set_num_threads(1)), as the "
            "threads and processes strategies do here."))
    tl = (data.get("idle") or {}).get("serial") or {}
    busy = tl.get("busy_fraction")
    if isinstance(busy, (int, float)) and busy < IDLE_WARN_BUSY_FRACTION:
        split = tl.get("breakdown_ms") or {}
        top = max(split, key=split.get) if split else None
        out.append(finding(
            "CYCLE_GPU_IDLE_GAPS", "warning",
            f"In the plain loop the GPU was busy {busy * 100:.0f}% of the time; "
            f"{tl['gaps']['count']} idle gaps" + (f", mostly {top.replace('_', ' ')}" if top else "") + ".",
            {"busy_fraction": busy, "gaps": tl.get("gaps"), "breakdown_ms": split, "method": tl.get("method")},
            "Keep metrics on the GPU and sync every few cycles, batch cycles, or capture the cycle in a CUDA graph; "
            "the strategy table shows which one helps here."))
    mem = (rows.get("processes") or {}).get("memory_check") or {}
    if mem.get("limited_by") and mem.get("fits", 0) < mem.get("wanted", 0):
        out.append(finding(
            "CYCLE_PROCESSES_LIMITED_BY_MEMORY", "warning",
            f"Only {mem['fits']} of {mem['wanted']} worker processes fit in {mem['limited_by']} memory.",
            mem, "Use fewer processes, threads, or batching; or free memory before the run."))
    for r in data["strategies"]:
        if r["status"] == "failed":
            out.append(finding("CYCLE_STRATEGY_FAILED", "warning", f"Strategy {r['name']} failed: {r['reason']}",
                               {"strategy": r["name"], "reason": r["reason"]}, None))
    return out


PROBE = Probe(
    name="cycle",
    title="Cycle tournament",
    summary="runs a model of your loop (or yours: --cycle) under each strategy; GPU idle gaps",
    run=run,
    needs=("torch",),
    isolate=True,
    preload=True,
    timeout_s=120.0,
    full_timeout_s=600.0,
)
