"""The watch's findings and its recommendation (with `confidence`), from `probes.watch.data`.

See gpudiag.watch.diagnose for the verdicts and the meaning of each confidence level; the rules
for users are in docs/watch.md. Pure functions: no hardware, tested on literal data.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from gpudiag.diagnose import cpu_limit as cl
from gpudiag.probes.base import finding
from gpudiag.report.values import as_dict, as_list, num
from gpudiag.watch import diagnose as dg
from gpudiag.watch.growth import fmt_duration


def _evidence(claim: str, value: Any, unit: Optional[str], source: str) -> dict:
    """One evidence row {claim, value, unit, source} of the recommendation, in the report's
    evidence shape."""
    return {"claim": claim, "value": value, "unit": unit, "source": source}


def _idle_under_quota(limit: Any) -> float:
    """Cores' worth the job's CPU quota leaves to others on the cores it runs on (2 cores, a 0.5-CPU quota:
    1.5): other programs take from those first, so only load beyond them took CPU from the job."""
    lim = as_dict(limit)
    run, quota = cl.run_cores(lim), num(lim.get("quota_cpus"))
    return max(0.0, run - quota) if cl.quota_binds(lim) and run and quota is not None else 0.0


def _cpu_context(data: dict) -> Dict[str, Any]:
    """What the job's CPU limit means for adding workers: {throttled, one_core, why, note}.

    `why` is the sentence that holds more workers back (the job ran throttled, or the limit leaves it one
    usable core), '' when nothing does; `note` is what the headline adds about the limit."""
    cpu = as_dict(data.get("cpu"))
    limit, thr = cpu.get("limit"), cpu.get("throttling")
    throttled = cl.throttled(thr)
    one_core = bool(cl.limit_text(limit)) and cl.usable_cores(limit) == 1
    why = (f"the job was {cl.throttled_text(limit, thr)}" if throttled else
           f"the job has {cl.usable_text(limit)}" if one_core else "")
    note = ""
    if throttled:
        note = (f" The job was {cl.throttled_text(limit, thr)}: more workers cannot help; raise the limit or run "
                "fewer CPU-bound threads.")
    elif cl.throttling_text(limit, thr):
        note = f" The job ran under {cl.limit_text(limit)}, {cl.throttling_text(limit, thr)}."
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
    mem = dg._ok(data, "memory")
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
    for cause, code, fix in _VERDICT_FINDINGS:
        v = by.get(cause, {})
        if v.get("verdict") != "supported":
            continue
        sev = "warning"
        if cause == "worker_memory":  # a kill within minutes is critical
            secs = num(v["figures"].get("seconds_to_limit"))
            sev = "critical" if secs is not None and secs <= dg.MEMORY_CRITICAL_S else "warning"
        out.append(finding(code, sev, v["summary"], v.get("figures"), fix))
    for d in dg._gpus(data) or []:
        t = num(d.get("throttled_fraction"))
        if t is not None and t > 0:
            seen = ", ".join(k for k, s in as_dict(d.get("clock_event_reasons")).items() if s > 0)
            out.append(finding("WATCH_GPU_THROTTLED", "warning",
                               f"GPU {d.get('index')} was held below its clocks by heat or power in {dg.pct(t)} of samples "
                               f"(reasons seen: {seen}).", {"throttled_fraction": t,
                                                            "clock_event_reasons": d.get("clock_event_reasons")},
                               "improve cooling or airflow; check the power limit (nvidia-smi -q -d POWER)"))
        if d.get("job_memory_reason") and d.get("driver_model") == "WDDM":
            out.append(finding("WATCH_GPU_MEMORY_PER_PROCESS_NA", "info",
                               f"GPU {d.get('index')}: {d['job_memory_reason']}.", {"driver_model": "WDDM"}, None))
    cpu = as_dict(data.get("cpu"))
    limit, thr = cpu.get("limit"), cpu.get("throttling")
    if cl.throttled(thr):
        out.append(finding("WATCH_CPU_THROTTLED", "warning",
                           f"The job was {cl.throttled_text(limit, thr)} ({num(as_dict(thr).get('throttled_s')) or 0:.1f} s "
                           "stalled in all): it wanted more CPU than the limit gives, so more threads or workers "
                           "cannot help.", {"throttling": thr, "limit": limit},
                           "raise the CPU limit (docker --cpus, Kubernetes resources.limits.cpu, systemd CPUQuota), or "
                           "run fewer CPU-bound threads (torch.set_num_threads, OMP_NUM_THREADS, DataLoader "
                           "num_workers) so they do not stall at the quota"))
    bg = num(cpu.get("background_cpu_cores"))
    if bg is not None and bg >= dg.BUSY_BACKGROUND_CORES + _idle_under_quota(limit):
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


def recommend(data: dict, verdicts: List[dict]) -> Dict[str, Any]:
    """The watch recommendation: strategy, workers, confidence (+ tied_with), headline, evidence."""
    by = {v["cause"]: v for v in verdicts}
    gil, inp, host, mem = (by.get(c, {}) for c in ("gil_contention", "input_starvation", "host_sync_idle",
                                                    "worker_memory"))
    g = as_dict(data.get("gil"))
    rec: Dict[str, Any] = {"source": "watch", "strategy": None, "workers": None, "confidence": "none",
                           "tied_with": [], "headline": "", "confidence_reason": "", "evidence": [],
                           "verdicts": verdicts, "runners_up": [], "environment_changes": [],
                           "gpu_questions_answered": dg._ok(data, "gpu") is not None}
    ev = rec["evidence"]
    if g.get("status") == "ok":
        ev.append(_evidence("share of samples in which a thread of the job held the GIL", g.get("held_fraction"),
                            "fraction", "probes.watch.data.gil.held_fraction"))
        if g.get("wanted_fraction") is not None:
            ev.append(_evidence("share of samples in which a thread held or waited for the GIL", g.get("wanted_fraction"),
                                "fraction", "probes.watch.data.gil.wanted_fraction"))
    cpu = _cpu_context(data)
    thr = as_dict(data.get("cpu")).get("throttling")
    if isinstance(thr, dict) and num(thr.get("throttled_share")) is not None:
        ev.append(_evidence("share of the job's scheduler periods that ended throttled by its CPU quota",
                            thr.get("throttled_share"), "fraction", "probes.watch.data.cpu.throttling.throttled_share"))
    held_back = []  # changes that add CPU workers, withheld under the CPU limit (in words)
    options = []  # (strategy, workers, headline, verdict)
    if gil.get("verdict") == "supported" and cpu["why"]:
        held_back.append(f"{int(gil['figures'].get('threads_wanting_gil') or 2)} threads want the GIL, but processes "
                         f"would not run side by side either: {cpu['why']}.")
    elif gil.get("verdict") == "supported":
        k = int(gil["figures"].get("threads_wanting_gil") or 2)
        plan = process_plan(data, k)
        cost = f"each costs about {dg.gib(plan['cost_bytes'])}, {plan['fits']} fit" if plan["fits"] else \
            "their memory cost was not measured"
        cores = f", {plan['cores']} cores" if plan["cores"] else ""
        options.append(("processes", plan["workers"],
                        f"{k} threads want the GIL {dg.pct(gil['figures'].get('wanted_fraction') or gil['figures'].get('held_fraction'))} "
                        f"of the time and hold it one at a time: run them as {plan['workers']} processes "
                        f"({cost}{cores}; limited by {plan['binding']}).", gil))
        ev.append(_evidence("processes that fit in the memory headroom", plan["fits"], "processes",
                            "probes.watch.data.memory.projection.headroom_bytes / main process peak"))
    if inp.get("verdict") == "supported" and cpu["throttled"]:
        held_back.append(f"The main thread waited for DataLoader batches {dg.pct(inp['figures'].get('wait_fraction'))} "
                         f"of the time, but more loader workers cannot help: {cpu['why']}; make each sample cheaper "
                         "to load, or raise the limit.")
    elif inp.get("verdict") == "supported":
        workers = sum(1 for p in as_list(as_dict(data.get("memory")).get("processes")) if p.get("role") == "worker")
        options.append(("loader_workers", None,
                        f"The main thread waited for DataLoader batches {dg.pct(inp['figures'].get('wait_fraction'))} "
                        f"of the time: give the DataLoader more workers than the {workers} seen "
                        "(and pin_memory=True, persistent_workers=True).", inp))
    if host.get("verdict") == "supported" and gil.get("verdict") != "supported":
        options.append(("cuda_graphs", 1,
                        f"The GPU sat idle {dg.pct(host['figures'].get('gpu_idle_fraction'))} of the time while one "
                        "thread ran Python: the loop is host-bound; capture the step as a CUDA graph or batch more "
                        "work per launch (more threads would only queue for the GIL).", host))
    mem_note = ""
    if mem.get("verdict") == "supported":
        mem_note = " " + mem["summary"]
        rec["environment_changes"].append({"code": "WATCH_MEMORY_LIMIT_AHEAD", "change": mem["summary"],
                                           "evidence": mem.get("figures")})
        secs = num(mem["figures"].get("seconds_to_limit"))
        ev.append(_evidence("time until the job reaches the memory limit at the measured rate", secs, "s",
                            "probes.watch.data.memory.projection.seconds_to_limit"))
    if by.get("gpu_shared", {}).get("verdict") == "supported":
        rec["environment_changes"].append({"code": "WATCH_GPU_SHARED", "change": by["gpu_shared"]["summary"],
                                           "evidence": by["gpu_shared"].get("figures")})
    judged = [v for v in (gil, inp, host) if v.get("verdict") in ("supported", "refuted")]
    if not judged:
        reasons = "; ".join(f"{v.get('cause')}: {v.get('reason')}" for v in (gil, host) if v.get("reason"))
        rec["headline"] = ("No recommendation: nothing that judges a strategy was measured (" + (reasons or "no data")
                           + ")." + cpu["note"] + mem_note)
        rec["confidence_reason"] = "neither the GIL part (py-spy) nor the GPU part (NVML) produced a judgement"
        return rec
    noisy = [v for v in (gil, inp, host) if v.get("noisy")]
    if not options:
        rec["strategy"] = "unchanged"
        rec["confidence"] = "too_noisy" if noisy else "clear"
        parts = [v["summary"] for v in (gil, inp, host) if v.get("verdict") == "refuted" and v.get("summary")]
        if held_back:
            rec["headline"] = ("No change that adds workers can help under this CPU limit: " + " ".join(held_back)
                               + " " + " ".join(parts[:1]) + mem_note).strip()
        else:
            rec["headline"] = ("Nothing measured here calls for another strategy: " + " ".join(parts[:2])
                               + cpu["note"] + mem_note).strip()
        if noisy:
            rec["confidence_reason"] = ("the figures sit close to their thresholds (" + ", ".join(v["cause"] for v in noisy)
                                        + "): watch a longer run, or use a shorter --interval, for a clear answer")
            rec["headline"] += " Too noisy to be sure: watch a longer run (or use a shorter --interval)."
        else:
            rec["confidence_reason"] = "every judged figure lies clearly on one side of its threshold"
        return rec
    options.sort(key=lambda o: dg.SIMPLICITY.index(o[0]))
    best = options[0]
    rec["strategy"], rec["workers"] = best[0], best[1]
    rec["headline"] = best[2] + "".join(" " + h for h in held_back) + cpu["note"] + mem_note
    rec["runners_up"] = [{"strategy": o[0], "workers": o[1], "why_not": "also supported; the watch cannot rank the "
                          "gains of different changes, so the simpler one comes first"} for o in options[1:]]
    if any(o[3].get("noisy") for o in options):
        rec["confidence"] = "too_noisy"
        rec["confidence_reason"] = ("the deciding figures' 95 % intervals straddle their thresholds ("
                                    + ", ".join(o[3]["cause"] for o in options if o[3].get("noisy"))
                                    + "): watch a longer run, or use a shorter --interval, before acting on this")
        rec["headline"] += " Too noisy to be sure: watch a longer run (or use a shorter --interval)."
    elif len(options) > 1:
        rec["confidence"] = "tie"
        rec["tied_with"] = [o[0] for o in options[1:]]
        rec["confidence_reason"] = "several changes are each supported; the simplest is named first"
        rec["headline"] += " Also supported (a tie): " + " ".join(o[2] for o in options[1:])
    else:
        rec["confidence"] = "clear"
        rec["confidence_reason"] = "the deciding figures lie clearly beyond their thresholds"
    return rec


def memory_summary_line(data: dict) -> Optional[str]:
    """'worker 2 (pid 123) is killed in about 14 minutes at this rate' or None, for the terminal."""
    mem = dg._ok(data, "memory")
    if not mem:
        return None
    proj = as_dict(mem.get("projection"))
    secs = num(proj.get("seconds_to_limit"))
    if secs is None:
        return None
    return (f"at this rate ({dg.gib(proj.get('job_growth_bytes_per_s'))}/s) {dg._label(as_dict(proj.get('first_to_hit')), mem)} "
            f"is the first killed, in about {fmt_duration(secs)} ({dg._limit_name(proj)})")
