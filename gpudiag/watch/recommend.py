"""The watch's findings and its recommendation (with `confidence`), from `probes.watch.data`.

See gpudiag.watch.diagnose for the verdicts and the meaning of each confidence level; the rules
for users are in docs/watch.md. Pure functions: no hardware, tested on literal data.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gpudiag.diagnose import cpu_limit
from gpudiag.probes.base import finding
from gpudiag.report.values import as_dict, as_list, num
from gpudiag.units import fmt_bytes, fmt_pct
from gpudiag.watch.diagnose import (BUSY_BACKGROUND_CORES, INPUT_WAIT_SUPPORTED, LOADER_MIN_GAIN, LOADER_WORKERS_TOLERANCE,
                                    MAIN_LOADING_SUPPORTED, MEMORY_CRITICAL_S, MIN_LOADER_SAMPLES, SIMPLICITY,
                                    gpu_devices, section_ok)
from gpudiag.watch.growth import wilson_interval


def _evidence(claim: str, value: Any, unit: Optional[str], source: str) -> dict:
    """One evidence row {claim, value, unit, source} of the recommendation, in the report's
    evidence shape."""
    return {"claim": claim, "value": value, "unit": unit, "source": source}


def _idle_under_quota(limit: Any) -> float:
    """Cores' worth the job's CPU quota leaves to others on the cores it runs on (2 cores, a 0.5-CPU quota:
    1.5): other programs take from those first, so only load beyond them took CPU from the job."""
    lim = as_dict(limit)
    run, quota = cpu_limit.run_cores(lim), num(lim.get("quota_cpus"))
    return max(0.0, run - quota) if cpu_limit.quota_binds(lim) and run and quota is not None else 0.0


def _cpu_context(data: dict) -> Dict[str, Any]:
    """What the job's CPU limit means for adding workers: {throttled, one_core, why, note}.

    `why` is the sentence that holds more workers back (the job ran throttled, or the limit leaves it one
    usable core), '' when nothing does; `note` is what the headline adds about the limit."""
    cpu = as_dict(data.get("cpu"))
    limit, thr = cpu.get("limit"), cpu.get("throttling")
    throttled = cpu_limit.throttled(thr)
    one_core = bool(cpu_limit.limit_text(limit)) and cpu_limit.usable_cores(limit) == 1
    why = (f"the job was {cpu_limit.throttled_text(limit, thr)}" if throttled else
           f"the job has {cpu_limit.usable_text(limit)}" if one_core else "")
    note = ""
    if throttled:
        note = (f" The job was {cpu_limit.throttled_text(limit, thr)}: more workers cannot help; raise the limit or run "
                "fewer CPU-bound threads.")
    elif cpu_limit.throttling_text(limit, thr):
        note = f" The job ran under {cpu_limit.limit_text(limit)}, {cpu_limit.throttling_text(limit, thr)}."
    return {"throttled": throttled, "one_core": one_core, "why": why, "note": note}


def _main_cost(mem: Optional[dict]) -> Optional[int]:
    """One more copy of the job's main process costs about its PSS (else USS, else RSS) at its peak."""
    for p in as_list(as_dict(mem).get("processes")):
        if p.get("role") == "main":
            return p.get("peak_pss_bytes") or p.get("peak_uss_bytes") or p.get("peak_rss_bytes")
    return None


def _cores(data: dict) -> Optional[int]:
    """The logical cores the watch saw (else the machine's usable cores), or None: a bound on how
    many processes to suggest."""
    c = as_dict(data.get("cpu")).get("logical_cores") or as_dict(data.get("machine")).get("usable_cores")
    return c if isinstance(c, int) and c > 0 else None


def process_plan(data: dict, wanting: int) -> Dict[str, Any]:
    """How many processes to run instead of `wanting` GIL-bound threads, and why that many.

    min(threads that want the GIL, usable cores, copies that fit in the memory headroom).
    """
    cores = as_dict(data.get("machine")).get("usable_cores") or _cores(data)
    mem = section_ok(data, "memory")
    cost = _main_cost(mem)
    headroom = as_dict(as_dict(mem).get("projection")).get("headroom_bytes") if mem else None
    fits = None
    if isinstance(cost, int) and cost > 0 and isinstance(headroom, (int, float)):
        fits = 1 + int(headroom // cost)  # the running process is already paid for
    limits = [("threads that want the GIL", wanting)]
    if isinstance(cores, int):
        limits.append(("usable cores", cores))
    if fits is not None:
        limits.append(("copies that fit in memory", fits))
    binding = min(limits, key=lambda x: x[1])
    return {"workers": max(1, binding[1]), "binding": binding[0], "cores": cores, "cost_bytes": cost, "fits": fits}


# ------------------------------------------------------------------ DataLoader workers

def _gain_ideal(p: float, n: int, cores: Optional[float]) -> float:
    """Steps' speedup when the loading (share p of a step) moves into n workers that run alongside the main
    thread, which keeps the rest (1 - p): the step takes as long as the slower of the two (Amdahl's serial
    part 1 - p, the workers' p / n), and no less than the whole step's CPU spread over the usable cores
    (1 / cores), with every core kept busy whenever a thread can run (the upper end)."""
    bounds = [1.0 - p, p / n] + ([1.0 / cores] if cores else [])
    return 1.0 / max(bounds)


def _gain_shared(p: float, n: int, cores: Optional[int]) -> float:
    """The same with the cores shared evenly: where the main thread and n workers outnumber the usable cores,
    each gets cores / (n + 1) of one whether or not the others are waiting (the lower end)."""
    share = min(1.0, cores / (n + 1)) if cores else 1.0
    return share / max(1.0 - p, p / n)


def _gain_beside(p: float, n: int, cores: Optional[int], others: float) -> float:
    """The gain if other programs keep the `others` cores they used during the watch (a scheduler that
    shares the CPU between sessions or cgroups, as Linux's autogroup and containers do, gives the job no
    more for having more threads): the upper model on the cores left, at least the one the loop had."""
    return _gain_ideal(p, n, max(1.0, cores - others) if cores else None)


def loader_prediction(share: float, samples: int, cores: Optional[int],
                      share_ci95: Optional[Sequence[float]] = None, others: float = 0.0) -> Dict[str, Any]:
    """What DataLoader workers would gain a loop whose main thread loads its own batches in `share` of
    `samples` samples, on `cores` usable cores (platform.usable_cores of the job; None: not known), while
    other programs kept `others` of those cores busy.

    For each worker count N from 1 to the usable cores (more workers than cores only share them, and
    PyTorch warns about it), the gain lies between two scheduling models (_gain_shared, _gain_ideal);
    the prediction is their middle, and its 95 % interval runs from the lower model at the worst end
    of the share's Wilson interval to the upper model at its best end (neither gain is monotonic in
    the share, so the peak at N / (N + 1) counts where it lies inside). The prediction is for the job on
    its cores; other programs' load can only widen the interval: its low end is also the gain with those
    programs keeping their cores (_gain_beside) where that is lower. N is the fewest workers whose
    predicted gain is within LOADER_WORKERS_TOLERANCE of the best.
    Returns {workers, speedup, speedup_ci95, upper_model, lower_model, share, share_ci95, samples, cores,
    other_cores, by_workers: [...]}.
    """
    p = min(1.0, max(0.0, float(share)))
    others = max(0.0, float(others or 0.0))
    ci = list(share_ci95) if share_ci95 is not None and len(share_ci95) == 2 else None
    if ci is None:
        w = wilson_interval(round(p * samples), samples)
        ci = list(w) if w else [p, p]
    lo_p, hi_p = min(ci[0], p), max(ci[1], p)
    top = cores if cores else max(1, min(64, math.ceil(hi_p / max(1e-9, 1.0 - hi_p))))
    rows = []
    for n in range(1, top + 1):
        pts = [lo_p, hi_p] + ([n / (n + 1)] if lo_p < n / (n + 1) < hi_p else [])
        upper, lower = _gain_ideal(p, n, cores), _gain_shared(p, n, cores)
        low = min(_gain_shared(x, n, cores) for x in pts)
        if others > 0:
            low = min([low] + [_gain_beside(x, n, cores, others) for x in pts])
        rows.append({"workers": n, "speedup": (upper + lower) / 2,
                     "speedup_ci95": [low, max(_gain_ideal(x, n, cores) for x in pts)],
                     "upper_model": upper, "lower_model": lower,
                     "beside_others_model": _gain_beside(p, n, cores, others)})
    best = max(r["speedup"] for r in rows)
    pick = next(r for r in rows if r["speedup"] >= (1 - LOADER_WORKERS_TOLERANCE) * best)
    return {"workers": pick["workers"], "speedup": pick["speedup"], "speedup_ci95": pick["speedup_ci95"],
            "upper_model": pick["upper_model"], "lower_model": pick["lower_model"],
            "share": p, "share_ci95": ci, "samples": samples, "cores": cores, "other_cores": others,
            "by_workers": [{k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]
                                if isinstance(v, list) else v) for k, v in r.items()} for r in rows]}


def _gpu_in_use(data: dict) -> bool:
    """True when the job had a process on a GPU (NVML saw it): pinned host memory then speeds its copies."""
    return any(as_list(d.get("job_processes")) for d in gpu_devices(data) or [])


def _loading_plan(data: dict, inp: dict) -> Optional[Dict[str, Any]]:
    """loader_plan when the input_starvation verdict is supported because the main thread loads its own
    batches (not because workers fall behind, whose advice stays as it was); else None."""
    if inp.get("verdict") != "supported" or (num(as_dict(inp.get("figures")).get("wait_fraction")) or 0) \
            >= INPUT_WAIT_SUPPORTED:
        return None
    return loader_plan(data)


def loader_plan(data: dict) -> Optional[Dict[str, Any]]:
    """The DataLoader change for a main thread that loads its own batches: the prediction (loader_prediction,
    on the job's usable cores as gpudiag.platform.cpu_limit read them for its pid), the settings to change,
    and one sentence; None when the input_wait part did not see the main thread loading enough to judge."""
    s = section_ok(data, "input_wait")
    share, n = num(as_dict(s).get("loading_share")), as_dict(s).get("loop_samples") or 0
    if s is None or share is None or share < MAIN_LOADING_SUPPORTED or n < MIN_LOADER_SAMPLES:
        return None
    cores = as_dict(data.get("machine")).get("usable_cores") or _cores(data)
    cores = cores if isinstance(cores, int) and cores > 0 else None
    cpu = as_dict(data.get("cpu"))
    # Other programs' load as the busy-machine finding counts it: beyond what the job's quota leaves idle.
    others = max(0.0, (num(cpu.get("background_cpu_cores")) or 0.0) - _idle_under_quota(cpu.get("limit")))
    pred = loader_prediction(share, n, cores, as_dict(s).get("loading_share_ci95"), others)
    settings: Dict[str, Any] = {"num_workers": pred["workers"], "persistent_workers": True}
    if _gpu_in_use(data):
        settings["pin_memory"] = True
    call = "DataLoader(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"
    lo, hi = pred["speedup_ci95"]
    where = (f"{cores} usable core{'s' if cores != 1 else ''} shared by the main thread and "
             f"{pred['workers']} worker{'s' if pred['workers'] != 1 else ''}" if cores else "usable cores not known")
    if cores and others >= BUSY_BACKGROUND_CORES:
        where += f"; the low end counts the {others:.1f} cores other programs kept busy during the watch"
    text = (f"The main thread loads its own batches (DataLoader num_workers=0) in {fmt_pct(share)} of {n} samples of "
            f"the loop: set {call} to load them in worker processes; predicted {pred['speedup']:.2f}x the steps "
            f"per second (95 % interval {lo:.2f}-{hi:.2f}x; {where}).")
    busy_doubt = bool(cores) and others >= BUSY_BACKGROUND_CORES and lo < LOADER_MIN_GAIN
    return dict(pred, settings=settings, call=call, text=text, worth=pred["speedup"] >= LOADER_MIN_GAIN,
                busy_doubt=busy_doubt)


# A supported verdict becomes a finding: (cause, code, the fix in words), most useful first.
_VERDICT_FINDINGS = (
    ("gil_contention", "WATCH_GIL_CONTENDED",
     "run the work of those threads in processes (multiprocessing with spawn, or torch.multiprocessing), or "
     "move it into code that releases the GIL"),
    ("worker_memory", "WATCH_MEMORY_LIMIT_AHEAD",
     "find what grows (a list of batches, cached tensors, a leak in a worker), or run fewer workers; persistent "
     "DataLoader workers and spawn copy the dataset into each worker"),
    ("input_starvation", "WATCH_INPUT_STARVED",
     "raise DataLoader(num_workers=...), set pin_memory=True and persistent_workers=True, or make each sample "
     "cheaper to load"),
    ("host_sync_idle", "WATCH_GPU_WAITS_FOR_HOST",
     "do more per launch (larger batches), capture the step as a CUDA graph, or take .item()/.cpu() syncs out "
     "of the loop"),
    ("gpu_shared", "WATCH_GPU_SHARED", "close the other programs using the GPU while the job runs"),
)


def findings(data: dict, verdicts: List[dict]) -> List[dict]:
    """Findings of a watch, most useful first; each with its evidence and the fix."""
    out = []
    by = {v["cause"]: v for v in verdicts}
    job = as_dict(data.get("job"))
    if job.get("mode") == "launch" and isinstance(job.get("exit_code"), int) and job["exit_code"] != 0:
        out.append(finding("WATCH_JOB_FAILED", "warning",
                           f"The job {job.get('ended') or 'failed'} after {job.get('duration_s', 0):.1f} s: the figures "
                           "cover the time it ran.",
                           {"exit_code": job.get("exit_code"), "duration_s": job.get("duration_s")},
                           "see the job's own output above the report for why it stopped"))
    plan = _loading_plan(data, by.get("input_starvation", {}))
    for cause, code, fix in _VERDICT_FINDINGS:
        v = by.get(cause, {})
        if v.get("verdict") != "supported":
            continue
        if cause == "input_starvation" and plan is not None:  # no workers yet: the settings, with their number
            code = "WATCH_INPUT_IN_MAIN_THREAD"
            fix = (f"set {plan['call']} (predicted {plan['speedup']:.2f}x the steps per second), or make each sample "
                   "cheaper to load" if plan["worth"] else "make each sample cheaper to load: workers would gain "
                   f"little here (predicted {plan['speedup']:.2f}x)")
        sev = "warning"
        if cause == "worker_memory":  # a kill within minutes is critical
            secs = num(v["figures"].get("seconds_to_limit"))
            sev = "critical" if secs is not None and secs <= MEMORY_CRITICAL_S else "warning"
        out.append(finding(code, sev, v["summary"], v.get("figures"), fix))
    for d in gpu_devices(data) or []:
        t = num(d.get("throttled_fraction"))
        if t is not None and t > 0:
            seen = ", ".join(k for k, s in as_dict(d.get("clock_event_reasons")).items() if s > 0)
            out.append(finding("WATCH_GPU_THROTTLED", "warning",
                               f"GPU {d.get('index')} was held below its clocks by heat or power in {fmt_pct(t)} of samples "
                               f"(reasons seen: {seen}).", {"throttled_fraction": t,
                                                            "clock_event_reasons": d.get("clock_event_reasons")},
                               "improve cooling or airflow; check the power limit (nvidia-smi -q -d POWER)"))
        if d.get("job_memory_reason") and d.get("driver_model") == "WDDM":
            out.append(finding("WATCH_GPU_MEMORY_PER_PROCESS_NA", "info",
                               f"GPU {d.get('index')}: {d['job_memory_reason']}.", {"driver_model": "WDDM"}, None))
    cpu = as_dict(data.get("cpu"))
    limit, thr = cpu.get("limit"), cpu.get("throttling")
    if cpu_limit.throttled(thr):
        out.append(finding("WATCH_CPU_THROTTLED", "warning",
                           f"The job was {cpu_limit.throttled_text(limit, thr)} ({num(as_dict(thr).get('throttled_s')) or 0:.1f} s "
                           "stalled in all): it wanted more CPU than the limit gives, so more threads or workers "
                           "cannot help.", {"throttling": thr, "limit": limit},
                           "raise the CPU limit (docker --cpus, Kubernetes resources.limits.cpu, systemd CPUQuota), or "
                           "run fewer CPU-bound threads (torch.set_num_threads, OMP_NUM_THREADS, DataLoader "
                           "num_workers) so they do not stall at the quota"))
    bg = num(cpu.get("background_cpu_cores"))
    if bg is not None and bg >= BUSY_BACKGROUND_CORES + _idle_under_quota(limit):
        names = ", ".join(f"{o.get('name')} ({o.get('cpu_cores', 0):.1f} cores)"
                          for o in as_list(cpu.get("busiest_other_processes"))[:3])
        out.append(finding("WATCH_MACHINE_BUSY", "warning",
                           f"Other programs used {bg:.1f} of {cpu.get('logical_cores')} cores on average during the watch"
                           + (f" (busiest: {names})" if names else "") + ": the job had less CPU than it would alone.",
                           {"background_cpu_cores": bg, "busiest_other_processes": cpu.get("busiest_other_processes")},
                           "watch again on a quieter machine before deciding on a worker count"))
    for part in ("gil", "memory", "cpu", "gpu"):
        sec = as_dict(data.get(part))
        if sec.get("status") in ("skipped", "failed") and sec.get("advice"):
            out.append(finding("WATCH_ACCESS_DENIED", "info", f"The {part} part was {sec['status']}: {sec['reason']}.",
                               {"part": part}, sec["advice"]))
    health = as_dict(as_dict(data.get("sampling")).get("samplers"))
    for name, h in health.items():
        h = as_dict(h)
        if h.get("stopped_reason") or (h.get("errors") or 0) > 0:
            out.append(finding("WATCH_SAMPLER_ERRORS", "info",
                               f"The {name} sampler had {h.get('errors')} failed ticks of {h.get('ticks')}"
                               + (f"; {h['stopped_reason']}" if h.get("stopped_reason") else f" (last: {h.get('last_error')})")
                               + ". The other samplers went on.", h, None))
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order.get(f["severity"], 3))  # stable: most useful first within a severity


# One change the watch can recommend: (strategy, workers, headline, the verdict behind it).
Option = Tuple[str, Optional[int], str, dict]


def _gil_and_quota_evidence(data: dict, ev: List[dict]) -> None:
    """The GIL shares and the CPU quota's throttled share, as evidence rows (when measured)."""
    g = as_dict(data.get("gil"))
    if g.get("status") == "ok":
        ev.append(_evidence("share of samples in which a thread of the job held the GIL", g.get("held_fraction"),
                            "fraction", "probes.watch.data.gil.held_fraction"))
        if g.get("wanted_fraction") is not None:
            ev.append(_evidence("share of samples in which a thread held or waited for the GIL", g.get("wanted_fraction"),
                                "fraction", "probes.watch.data.gil.wanted_fraction"))
    thr = as_dict(data.get("cpu")).get("throttling")
    if isinstance(thr, dict) and num(thr.get("throttled_share")) is not None:
        ev.append(_evidence("share of the job's scheduler periods that ended throttled by its CPU quota",
                            thr.get("throttled_share"), "fraction", "probes.watch.data.cpu.throttling.throttled_share"))


def _gil_option(data: dict, gil: dict, cpu: Dict[str, Any], ev: List[dict]) -> Tuple[Optional[Option], Optional[str]]:
    """Processes instead of threads where GIL contention is supported: (the option, None), or (None, the sentence
    that holds it back under the job's CPU limit); (None, None) when the GIL is not the limit."""
    if gil.get("verdict") != "supported":
        return None, None
    k = int(gil["figures"].get("threads_wanting_gil") or 2)
    if cpu["why"]:
        return None, f"{k} threads want the GIL, but processes would not run side by side either: {cpu['why']}."
    plan = process_plan(data, k)
    cost = f"each costs about {fmt_bytes(plan['cost_bytes'])}, {plan['fits']} fit" if plan["fits"] else \
        "their memory cost was not measured"
    cores = f", {plan['cores']} cores" if plan["cores"] else ""
    ev.append(_evidence("processes that fit in the memory headroom", plan["fits"], "processes",
                        "probes.watch.data.memory.projection.headroom_bytes / main process peak"))
    return ("processes", plan["workers"],
            f"{k} threads want the GIL {fmt_pct(gil['figures'].get('wanted_fraction') or gil['figures'].get('held_fraction'))} "
            f"of the time and hold it one at a time: run them as {plan['workers']} processes "
            f"({cost}{cores}; limited by {plan['binding']}).", gil), None


def _loader_option(data: dict, inp: dict, cpu: Dict[str, Any], plan: Optional[Dict[str, Any]],
                   ev: List[dict]) -> Tuple[Optional[Option], Optional[str], str]:
    """More DataLoader workers where input starvation is supported: (option, held-back sentence, note). The note is
    set when the main thread loads its own batches but workers would gain too little to recommend them."""
    if inp.get("verdict") != "supported":
        return None, None, ""
    if cpu["throttled"]:
        what = (f"The main thread loaded its own DataLoader batches in {fmt_pct(plan['share'])} of the loop"
                if plan is not None else
                f"The main thread waited for DataLoader batches {fmt_pct(inp['figures'].get('wait_fraction'))} of the time")
        return None, (f"{what}, but more loader workers cannot help: {cpu['why']}; make each sample cheaper "
                      "to load, or raise the limit."), ""
    if plan is not None:
        ev.append(_evidence("share of the loop's samples in which the main thread loaded its own DataLoader batches",
                            plan["share"], "fraction", "probes.watch.data.input_wait.loading_share"))
        ev.append(_evidence(f"predicted speedup of the loop's steps with {plan['workers']} DataLoader workers",
                            plan["speedup"], "x", "probes.watch.data.input_wait.loading_share, "
                            "probes.watch.data.machine.usable_cores (docs/watch.md)"))
        if plan["worth"]:
            return ("loader_workers", plan["workers"], plan["text"], inp), None, ""
        return None, None, (f" The main thread loads its own DataLoader batches in {fmt_pct(plan['share'])} of the loop, "
                            f"but DataLoader workers would gain little here (predicted {plan['speedup']:.2f}x"
                            + (f": {cpu['why']}" if cpu["why"] else f" on {plan['cores']} usable core"
                               + ("s" if plan["cores"] != 1 else "")) + "); make each sample cheaper to load.")
    workers = sum(1 for p in as_list(as_dict(data.get("memory")).get("processes")) if p.get("role") == "worker")
    return ("loader_workers", None,
            f"The main thread waited for DataLoader batches {fmt_pct(inp['figures'].get('wait_fraction'))} "
            f"of the time: give the DataLoader more workers than the {workers} seen "
            "(and pin_memory=True, persistent_workers=True).", inp), None, ""


def _host_option(gil: dict, host: dict) -> Optional[Option]:
    """CUDA graphs or larger batches where a host-bound loop leaves the GPU idle (and the GIL is not the cause)."""
    if host.get("verdict") != "supported" or gil.get("verdict") == "supported":
        return None
    return ("cuda_graphs", 1,
            f"The GPU sat idle {fmt_pct(host['figures'].get('gpu_idle_fraction'))} of the time while one "
            "thread ran Python: the loop is host-bound; capture the step as a CUDA graph or batch more "
            "work per launch (more threads would only queue for the GIL).", host)


def _environment_changes(rec: Dict[str, Any], mem: dict, shared: dict) -> str:
    """A memory limit ahead and a GPU shared with other programs go to environment_changes (and the memory
    projection to the evidence); returns the memory sentence the headline ends with ('' when none)."""
    mem_note = ""
    if mem.get("verdict") == "supported":
        mem_note = " " + mem["summary"]
        rec["environment_changes"].append({"code": "WATCH_MEMORY_LIMIT_AHEAD", "change": mem["summary"],
                                           "evidence": mem.get("figures")})
        secs = num(mem["figures"].get("seconds_to_limit"))
        rec["evidence"].append(_evidence("time until the job reaches the memory limit at the measured rate", secs,
                                         "s", "probes.watch.data.memory.projection.seconds_to_limit"))
    if shared.get("verdict") == "supported":
        rec["environment_changes"].append({"code": "WATCH_GPU_SHARED", "change": shared["summary"],
                                           "evidence": shared.get("figures")})
    return mem_note


def _nothing_judged(rec: Dict[str, Any], gil: dict, host: dict, notes: str) -> Dict[str, Any]:
    """confidence none: neither py-spy nor NVML judged a strategy; the headline says why."""
    reasons = "; ".join(f"{v.get('cause')}: {v.get('reason')}" for v in (gil, host) if v.get("reason"))
    rec["headline"] = ("No recommendation: nothing that judges a strategy was measured (" + (reasons or "no data")
                       + ")." + notes)
    rec["confidence_reason"] = "neither the GIL part (py-spy) nor the GPU part (NVML) produced a judgement"
    return rec


def _unchanged(rec: Dict[str, Any], judging: Sequence[dict], held_back: List[str], loader_note: str, cpu_note: str,
               mem_note: str) -> Dict[str, Any]:
    """strategy unchanged: no change is supported (or each is held back by the CPU limit); clear or too_noisy."""
    noisy = [v for v in judging if v.get("noisy")]
    rec["strategy"] = "unchanged"
    rec["confidence"] = "too_noisy" if noisy else "clear"
    parts = [v["summary"] for v in judging if v.get("verdict") == "refuted" and v.get("summary")]
    if held_back:
        rec["headline"] = ("No change that adds workers can help under this CPU limit: " + " ".join(held_back)
                           + " " + " ".join(parts[:1]) + mem_note).strip()
    else:
        rec["headline"] = ("Nothing measured here calls for another strategy: " + " ".join(parts[:2])
                           + loader_note + cpu_note + mem_note).strip()
    if noisy:
        rec["confidence_reason"] = ("the figures sit close to their thresholds (" + ", ".join(v["cause"] for v in noisy)
                                    + "): watch a longer run, or use a shorter --interval, for a clear answer")
        rec["headline"] += " Too noisy to be sure: watch a longer run (or use a shorter --interval)."
    else:
        rec["confidence_reason"] = "every judged figure lies clearly on one side of its threshold"
    return rec


def _choose(rec: Dict[str, Any], options: List[Option], plan: Optional[Dict[str, Any]], held_back: List[str],
            notes: str) -> Dict[str, Any]:
    """The simplest supported change, with its confidence: too_noisy (an interval straddles its threshold, or
    other programs' load could leave the loader's gain small), tie (several supported) or clear."""
    options = sorted(options, key=lambda o: SIMPLICITY.index(o[0]))
    best = options[0]
    rec["strategy"], rec["workers"] = best[0], best[1]
    if best[0] == "loader_workers" and plan is not None:
        rec["speedup"], rec["speedup_ci95"], rec["samples"] = plan["speedup"], plan["speedup_ci95"], plan["samples"]
        rec["settings"] = plan["settings"]
        rec["prediction"] = {k: plan[k] for k in ("share", "share_ci95", "samples", "cores", "other_cores",
                                                  "upper_model", "lower_model", "by_workers")}
    rec["headline"] = best[2] + "".join(" " + h for h in held_back) + notes
    rec["runners_up"] = [{"strategy": o[0], "workers": o[1], "why_not": "also supported; the watch cannot rank the "
                          "gains of different changes, so the simpler one comes first"} for o in options[1:]]
    if any(o[3].get("noisy") for o in options):
        rec["confidence"] = "too_noisy"
        rec["confidence_reason"] = ("the deciding figures' 95 % intervals straddle their thresholds ("
                                    + ", ".join(o[3]["cause"] for o in options if o[3].get("noisy"))
                                    + "): watch a longer run, or use a shorter --interval, before acting on this")
        rec["headline"] += " Too noisy to be sure: watch a longer run (or use a shorter --interval)."
    elif best[0] == "loader_workers" and plan is not None and plan["busy_doubt"]:
        # Not surer than the machine allows: while other programs keep their cores, the gain may not be worth it.
        rec["confidence"] = "too_noisy"
        rec["confidence_reason"] = (f"other programs kept {plan['other_cores']:.1f} of {plan['cores']} cores busy during "
                                    f"the watch: if they keep them, the workers gain as little as "
                                    f"{plan['speedup_ci95'][0]:.2f}x; watch again on a quieter machine")
        rec["headline"] += (f" Other programs kept {plan['other_cores']:.1f} of {plan['cores']} cores busy during the "
                            "watch: while they do, the gain may be far less; watch again on a quieter machine to be sure.")
        if len(options) > 1:
            rec["tied_with"] = [o[0] for o in options[1:]]
    elif len(options) > 1:
        rec["confidence"] = "tie"
        rec["tied_with"] = [o[0] for o in options[1:]]
        rec["confidence_reason"] = "several changes are each supported; the simplest is named first"
        rec["headline"] += " Also supported (a tie): " + " ".join(o[2] for o in options[1:])
    else:
        rec["confidence"] = "clear"
        rec["confidence_reason"] = "the deciding figures lie clearly beyond their thresholds"
    return rec


def recommend(data: dict, verdicts: List[dict]) -> Dict[str, Any]:
    """The watch recommendation: strategy, workers, confidence (+ tied_with), headline, evidence.

    Each change has its rule (processes for GIL contention, loader workers for input starvation, CUDA graphs
    for a host-bound loop); one the job's CPU limit makes useless is held back in words. The simplest
    supported change is recommended; none supported keeps the job unchanged."""
    by = {v["cause"]: v for v in verdicts}
    gil, inp, host, mem = (by.get(c, {}) for c in ("gil_contention", "input_starvation", "host_sync_idle",
                                                    "worker_memory"))
    rec: Dict[str, Any] = {"source": "watch", "strategy": None, "workers": None, "confidence": "none",
                           "tied_with": [], "headline": "", "confidence_reason": "", "evidence": [],
                           "verdicts": verdicts, "runners_up": [], "environment_changes": [],
                           "gpu_questions_answered": section_ok(data, "gpu") is not None}
    _gil_and_quota_evidence(data, rec["evidence"])
    cpu = _cpu_context(data)
    plan = _loading_plan(data, inp)
    gil_option, gil_held_back = _gil_option(data, gil, cpu, rec["evidence"])
    loader_option, loader_held_back, loader_note = _loader_option(data, inp, cpu, plan, rec["evidence"])
    options = [o for o in (gil_option, loader_option, _host_option(gil, host)) if o is not None]
    held_back = [h for h in (gil_held_back, loader_held_back) if h]  # changes that add CPU workers, withheld
    mem_note = _environment_changes(rec, mem, by.get("gpu_shared", {}))
    if not any(v.get("verdict") in ("supported", "refuted") for v in (gil, inp, host)):
        return _nothing_judged(rec, gil, host, cpu["note"] + mem_note)
    if not options:
        return _unchanged(rec, (gil, inp, host), held_back, loader_note, cpu["note"], mem_note)
    return _choose(rec, options, plan, held_back, cpu["note"] + mem_note)
