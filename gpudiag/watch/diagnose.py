"""Findings, verdicts and the recommendation of a watch, from `probes.watch.data` alone.

Pure functions (no sampling, no hardware), tested on literal data. The verdicts use the same
causes as `gpudiag report` (gpudiag.diagnose.thresholds.CAUSES) plus `input_starvation`, with the
values supported / refuted / not_measured.

The watch recommendation (`report["recommendation"]` of a watch report, `source: "watch"`) says
what to change in the watched job, from where its time went: processes instead of threads
(GIL contention), more DataLoader workers (input starvation), CUDA graphs or larger batches (a
host-bound loop leaving the GPU idle), or nothing. It carries `confidence`:

- `clear`: one change is supported and every interval behind it lies on one side of its
  threshold (or nothing limits the job, clearly);
- `tie`: two or more changes are each clearly supported; the watch sees where the time goes, not
  what each change would gain, so it cannot rank them: the simplest is recommended and
  `tied_with` names the others;
- `too_noisy`: the deciding figures' 95 % intervals straddle their thresholds (too few samples,
  or a job that changes behaviour): the headline says how to get a clear answer;
- `none`: nothing that judges a strategy was measured (no py-spy and no NVML), with why.
Rules are in docs/watch.md.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional

from gpudiag.diagnose.thresholds import CAUSES
from gpudiag.platform.nvidia import classify_process
from gpudiag.probes.cuda.analysis import theoretical_gbps
from gpudiag.report.values import as_dict, as_list, num
from gpudiag.units import fmt_byte_rate, fmt_bytes, fmt_duration, fmt_pct

# gpudiag report's causes (diagnose.thresholds) plus the one only a watch sees, in the order the verdicts list them.
WATCH_CAUSES = CAUSES + ("input_starvation",)
CONFIDENCES = ("clear", "tie", "too_noisy", "none")
# Simplest change first: what a user has to touch in the job to adopt it.
SIMPLICITY = ("unchanged", "loader_workers", "cuda_graphs", "processes")

# GIL: held this share of the time or more, the GIL is busy enough to be the limit ...
GIL_HELD_BUSY = 0.7
# ... and below this it is free often enough that it is not.
GIL_HELD_FREE = 0.5
# Contended: a thread waited while another held it in at least this share of the native samples.
GIL_CONTENDED_MIN = 0.3
# Fewer GIL samples than this do not judge anything (the interval of a share over 20 samples is
# already +-20 points in the middle of the range).
MIN_GIL_SAMPLES = 20
# Input: the main thread waited for a DataLoader batch in at least this share of samples ...
INPUT_WAIT_SUPPORTED = 0.2
# ... and below this the loader keeps up.
INPUT_WAIT_REFUTED = 0.05
# The main thread loads its own batches (DataLoader num_workers=0) in at least this share of the loop's
# samples: moving the loading into DataLoader workers is worth predicting ...
MAIN_LOADING_SUPPORTED = 0.2
# ... from at least this many samples of the loop (as for the GIL: fewer give a +-20-point interval).
MIN_LOADER_SAMPLES = 20
# Workers are recommended only when the predicted gain (the middle of the two scheduling models in
# gpudiag.watch.recommend.loader_prediction) is at least this: below it, the change is not worth its
# memory (a copy of the dataset per worker) ...
LOADER_MIN_GAIN = 1.1
# ... and the fewest workers whose predicted gain is within this share of the best are recommended.
LOADER_WORKERS_TOLERANCE = 0.05
# GPU idle (no kernel in the sample) this share of the time or more leaves room to gain.
GPU_IDLE_MIN = 0.3
# GPU busy at least this share of the time: the host keeps it fed.
GPU_BUSY_FED = 0.9
# The memory limit is a risk when the projection reaches it within this time ...
MEMORY_HORIZON_S = 3600.0
# ... and critical within this one.
MEMORY_CRITICAL_S = 600.0
# PCIe counts as saturated when a sample reaches this share of the link's per-direction rate.
PCIE_SATURATED = 0.7
# Other programs using this many cores on average during the watch make the machine busy.
BUSY_BACKGROUND_CORES = 0.5


def _verdict(cause: str, verdict: str, summary: str, reason: str = "", figures: Optional[dict] = None) -> dict:
    """One verdict {cause, verdict, summary, reason, figures, sources}, shaped as gpudiag report's
    verdicts so that the views render both alike."""
    return {"cause": cause, "verdict": verdict, "summary": summary, "reason": reason, "figures": figures or {},
            "sources": {}}


def section_ok(data: dict, part: str) -> Optional[dict]:
    """Section `part` of the watch data when it ran (status ok), else None: its verdict is then
    not_measured."""
    sec = as_dict(data.get(part))
    return sec if sec.get("status") == "ok" else None


def _why(data: dict, part: str) -> str:
    """Why section `part` did not run (its own reason, else a generic one): a not_measured verdict's
    reason."""
    sec = as_dict(data.get(part))
    return sec.get("reason") or f"the {part} part did not run"


def _straddles(ci: Any, threshold: float) -> bool:
    """True when a 95 % interval [low, high] has `threshold` strictly inside: the figure
    cannot say on which side it lies (too few samples)."""
    return isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None and ci[0] < threshold < ci[1]


# ------------------------------------------------------------------ verdicts

def verdict_gil(data: dict) -> dict:
    """gil_contention: do several threads want the GIL and queue for it? (thresholds above)"""
    g = section_ok(data, "gil")
    if g is None:
        return _verdict("gil_contention", "not_measured", "", _why(data, "gil"))
    n = g.get("samples") or 0
    held, wanted, cont = num(g.get("held_fraction")), num(g.get("wanted_fraction")), num(g.get("contended_fraction"))
    k = g.get("threads_wanting_gil") or 0
    figs = {"samples": n, "held_fraction": held, "wanted_fraction": wanted, "contended_fraction": cont,
            "threads_wanting_gil": k, "python_threads": g.get("python_threads")}
    if n < MIN_GIL_SAMPLES:
        return _verdict("gil_contention", "not_measured", "", f"only {n} samples of the job's Python process "
                        f"({MIN_GIL_SAMPLES} are needed): watch a longer run or use a shorter --interval", figs)
    noisy = _straddles(g.get("held_ci95"), GIL_HELD_BUSY if (held or 0) >= GIL_HELD_FREE else GIL_HELD_FREE)
    if held is not None and held < GIL_HELD_FREE:
        v = _verdict("gil_contention", "refuted",
                     f"The job's Python process held the GIL in {fmt_pct(held)} of {n} samples: it is free most of "
                     "the time, so it does not limit the job.", figures=figs)
    elif k < 2:
        v = _verdict("gil_contention", "refuted",
                     f"One thread holds the GIL ({fmt_pct(held)} of {n} samples) and no other wants it: there is no "
                     "contention (the loop is single-threaded Python; more threads would only queue for it).", figures=figs)
    elif cont is not None:
        if held >= GIL_HELD_BUSY and cont >= GIL_CONTENDED_MIN:
            v = _verdict("gil_contention", "supported",
                         f"{k} threads want the GIL (held or waiting) in {fmt_pct(wanted)} of samples and hold it one "
                         f"at a time: in {fmt_pct(cont)} at least one waited while another held it.", figures=figs)
            noisy = noisy or _straddles(g.get("contended_ci95"), GIL_CONTENDED_MIN)
        else:
            v = _verdict("gil_contention", "refuted",
                         f"{k} threads use the GIL but seldom wait for it (a waiter in {fmt_pct(cont)} of samples).", figures=figs)
            noisy = noisy or _straddles(g.get("contended_ci95"), GIL_CONTENDED_MIN)
    else:
        shares = sorted((num(t.get("gil_fraction")) or 0 for t in as_list(g.get("threads"))), reverse=True)
        if held >= GIL_HELD_BUSY and len(shares) > 1 and shares[1] >= 0.2:
            v = _verdict("gil_contention", "supported",
                         f"The GIL was held in {fmt_pct(held)} of samples, taken in turns by {k} threads (waiting could "
                         "not be seen without native stacks).", figures=figs)
        else:
            v = _verdict("gil_contention", "refuted", f"The GIL was held in {fmt_pct(held)} of samples, mostly by one "
                         "thread.", figures=figs)
    v["noisy"] = noisy
    return v


def verdict_memory(data: dict) -> dict:
    """worker_memory: does the job reach its memory limit within MEMORY_HORIZON_S at its rate?"""
    m = section_ok(data, "memory")
    if m is None:
        return _verdict("worker_memory", "not_measured", "", _why(data, "memory"))
    proj = as_dict(m.get("projection"))
    secs = num(proj.get("seconds_to_limit"))
    first = as_dict(proj.get("first_to_hit"))
    figs = {"job_peak_bytes": m.get("job_peak_bytes"), "job_growth_bytes_per_s": proj.get("job_growth_bytes_per_s"),
            "headroom_bytes": proj.get("headroom_bytes"), "limit_bytes": proj.get("limit_bytes"),
            "limit_source": proj.get("limit_source"), "seconds_to_limit": secs}
    who = _label(first, m)
    if secs is not None and secs <= MEMORY_HORIZON_S:
        return _verdict("worker_memory", "supported",
                        f"At the measured rate ({fmt_byte_rate(proj.get('job_growth_bytes_per_s'))}) the job reaches the "
                        f"{_limit_name(proj)} in about {fmt_duration(secs)}; {who} would be the first killed.", figures=figs)
    if proj.get("reason") and secs is None and proj.get("limit_bytes") is None:
        return _verdict("worker_memory", "not_measured", "", str(proj["reason"]), figs)
    if secs is None:
        return _verdict("worker_memory", "refuted", f"No process of the job grew measurably; the job used at most "
                        f"{fmt_bytes(m.get('job_peak_bytes'))}, with {fmt_bytes(proj.get('headroom_bytes'))} left.", figures=figs)
    return _verdict("worker_memory", "refuted", f"The job grows ({fmt_byte_rate(proj.get('job_growth_bytes_per_s'))}) but "
                    f"would need {fmt_duration(secs)} to reach the {_limit_name(proj)}.", figures=figs)


def _limit_name(proj: dict) -> str:
    """The memory limit the projection counts against, in words ("cgroup memory limit"),
    for the verdict's sentence."""
    return {"ram": "machine's available RAM", "cgroup": "cgroup memory limit",
            "wsl_cap": "WSL2 VM's memory cap"}.get(proj.get("limit_source"), "memory limit")


def _label(first: dict, m: dict) -> str:
    """How the memory verdict names the process first to hit the limit (label and pid), "n/a"
    when the projection names none."""
    if not first:
        return "n/a"
    for p in as_list(m.get("processes")):
        if p.get("pid") == first.get("pid"):
            return f"{p.get('label') or p.get('role')} (pid {p.get('pid')})"
    return f"pid {first.get('pid')}"


def _is_desktop(name: Any) -> bool:
    """True when a GPU process (a name or a path, maybe a .exe) is the display server,
    compositor or Windows shell: they hold every desktop GPU, which is not sharing it."""
    return classify_process(str(name or ""))[0] == "display"  # the driver probe's own classification


def gpu_devices(data: dict) -> Optional[List[dict]]:
    """The GPU section's devices when NVML ran, else None: the GPU verdicts are then not_measured."""
    g = section_ok(data, "gpu")
    return [as_dict(x) for x in as_list(g.get("devices"))] if g else None


def verdict_gpu_shared(data: dict) -> dict:
    """gpu_shared: did a program other than the job and the desktop use the GPU?"""
    devs = gpu_devices(data)
    if devs is None:
        return _verdict("gpu_shared", "not_measured", "", _why(data, "gpu"))
    others = [(d.get("index"), p) for d in devs for p in as_list(d.get("other_processes"))]
    if not any(d.get("processes_listed") for d in devs):
        return _verdict("gpu_shared", "not_measured", "", "NVML did not list the processes on the GPU here")
    apps = [(i, p) for i, p in others if not _is_desktop(p.get("name"))]
    figs = {"other_processes": len(others), "apps": len(apps)}
    if apps:
        names = ", ".join(f"{os.path.basename(str(p.get('name') or p.get('pid')))} "
                          f"({'appeared at ' + format(p.get('first_seen_s'), '.1f') + ' s' if p.get('appeared_mid_run') else 'there from the start'})"
                          for _, p in apps[:4])
        return _verdict("gpu_shared", "supported", f"Other programs used the GPU during the run: {names}.", figures=figs)
    if others:
        return _verdict("gpu_shared", "refuted", "Only the desktop's own processes shared the GPU.", figures=figs)
    return _verdict("gpu_shared", "refuted", "No other process used the GPU during the run.", figures=figs)


def verdict_host_idle(data: dict) -> dict:
    """host_sync_idle: is the GPU idle while the main thread is busy in Python (host-bound)?"""
    devs = gpu_devices(data)
    if devs is None:
        return _verdict("host_sync_idle", "not_measured", "", _why(data, "gpu"))
    used = [d for d in devs if d.get("job_processes")] or devs
    idle = max((num(d.get("idle_fraction")) for d in used if num(d.get("idle_fraction")) is not None), default=None)
    busy = min((num(d.get("busy_fraction")) for d in used if num(d.get("busy_fraction")) is not None), default=None)
    figs = {"gpu_idle_fraction": idle, "gpu_busy_fraction": busy}
    if idle is None:
        return _verdict("host_sync_idle", "not_measured", "", "NVML gave no utilisation for the job's GPU", figs)
    g = section_ok(data, "gil")
    main_hold = None
    if g:
        threads = as_list(g.get("threads"))
        main = next((t for t in threads if t.get("name") == "MainThread"), threads[0] if threads else {})
        main_hold = num(as_dict(main).get("gil_fraction"))
    figs["main_thread_gil_fraction"] = main_hold
    if busy is not None and busy >= GPU_BUSY_FED:
        return _verdict("host_sync_idle", "refuted", f"The GPU was busy {fmt_pct(busy)} of the time: the host keeps it fed.",
                        figures=figs)
    if idle >= GPU_IDLE_MIN and main_hold is not None and main_hold >= GIL_HELD_BUSY:
        return _verdict("host_sync_idle", "supported",
                        f"The GPU had no kernel running in {fmt_pct(idle)} of samples while the main thread ran Python "
                        f"(held the GIL) {fmt_pct(main_hold)} of the time: the loop is host-bound.", figures=figs)
    if idle >= GPU_IDLE_MIN:
        return _verdict("host_sync_idle", "not_measured", "",
                        f"the GPU was idle in {fmt_pct(idle)} of samples, but the main thread was not busy in Python "
                        "(or the GIL part did not run): it waited elsewhere (see input_starvation)", figs)
    return _verdict("host_sync_idle", "refuted", f"The GPU was idle in only {fmt_pct(idle)} of samples.", figures=figs)


def verdict_pcie(data: dict, driver: Optional[dict]) -> dict:
    """pcie_bandwidth: did PCIe traffic come near the link's rate (link from the driver probe)?"""
    devs = gpu_devices(data)
    if devs is None:
        return _verdict("pcie_bandwidth", "not_measured", "", _why(data, "gpu"))
    ratios = []
    for d in devs:
        link = as_dict(next((g.get("pcie") for g in as_list(as_dict(driver).get("gpus")) if as_dict(g).get("index") == d.get("index")), {}))
        theo = theoretical_gbps(link.get("gen_max_system") if isinstance(link.get("gen_max_system"), int)
                                else link.get("gen_current"), link.get("width_max") if isinstance(
                                    link.get("width_max"), int) else link.get("width_current"))
        peak = max((num(as_dict(d.get(k)).get("peak")) or 0) for k in ("pcie_tx_kbps", "pcie_rx_kbps"))
        if theo and (d.get("pcie_tx_kbps") or d.get("pcie_rx_kbps")):
            ratios.append((d.get("index"), peak * 1e3 / 1e9 / theo, theo))
    if not ratios:
        return _verdict("pcie_bandwidth", "not_measured", "", "NVML gave no PCIe throughput or link width here")
    idx, ratio, theo = max(ratios, key=lambda r: r[1])
    figs = {"peak_share_of_link": ratio, "link_gbps_per_direction": theo}
    if ratio >= PCIE_SATURATED:
        return _verdict("pcie_bandwidth", "supported", f"PCIe traffic on GPU {idx} peaked at {fmt_pct(ratio)} of its link's "
                        f"{theo:.1f} GB/s per direction: copies are near the link's limit at times.", figures=figs)
    return _verdict("pcie_bandwidth", "refuted", f"PCIe traffic peaked at {fmt_pct(ratio)} of the link's {theo:.1f} GB/s.",
                    figures=figs)


def verdict_context_switch(data: dict) -> dict:
    """context_switch: refuted with one context per GPU; watch cannot time the switches."""
    devs = gpu_devices(data)
    if devs is None:
        return _verdict("context_switch", "not_measured", "", _why(data, "gpu"))
    most = max(devs, key=lambda d: len(as_list(d.get("job_processes"))))
    k = len(as_list(most.get("job_processes")))
    figs = {"job_processes_on_one_gpu": k}
    if k >= 2:
        return _verdict("context_switch", "not_measured", "",
                        f"{k} processes of the job share GPU {most.get('index')}, so the GPU time-slices between "
                        "their contexts; watch cannot time that: `gpudiag report --only contention` measures it", figs)
    return _verdict("context_switch", "refuted", "The job has at most one CUDA context per GPU: no context switching.",
                    figures=figs)


def verdict_driver_model(data: dict) -> dict:
    """driver_model: refuted without WDDM; under WDDM watch cannot time launches."""
    devs = gpu_devices(data)
    if devs is None:
        return _verdict("driver_model", "not_measured", "", _why(data, "gpu"))
    wddm = [d for d in devs if d.get("driver_model") == "WDDM"]
    if wddm:
        return _verdict("driver_model", "not_measured", "",
                        "the GPU runs under WDDM, which batches and delays launches; watch does not time launches: "
                        "`gpudiag report --only launch` measures their cost", {"wddm_gpus": len(wddm)})
    return _verdict("driver_model", "refuted", "No GPU runs under WDDM.", figures={"wddm_gpus": 0})


def verdict_input(data: dict) -> dict:
    """input_starvation: does the main thread wait for DataLoader batches (workers that cannot keep up), or
    load them itself (num_workers=0) for a large share of the loop?"""
    s = section_ok(data, "input_wait")
    if s is None:
        return _verdict("input_starvation", "not_measured", "", _why(data, "input_wait"))
    if not s.get("loader_seen"):
        return _verdict("input_starvation", "not_measured", "", s.get("reason") or "no DataLoader seen",
                        {"samples": s.get("samples")})
    f = num(s.get("fraction"))
    load, n_loop = num(s.get("loading_share")), s.get("loop_samples") or 0
    figs = {"wait_fraction": f, "samples": s.get("samples"),
            "main_thread_loading_fraction": s.get("main_thread_loading_fraction"),
            "main_thread_loading_share": load, "loop_samples": n_loop}
    if f is not None and f >= INPUT_WAIT_SUPPORTED:
        v = _verdict("input_starvation", "supported", f"The main thread waited for the next DataLoader batch in "
                     f"{fmt_pct(f)} of samples: the loader does not keep up.", figures=figs)
        v["noisy"] = _straddles(s.get("ci95"), INPUT_WAIT_SUPPORTED)
        return v
    if load is not None and load >= MAIN_LOADING_SUPPORTED:
        if n_loop < MIN_LOADER_SAMPLES:
            return _verdict("input_starvation", "not_measured", "",
                            f"the main thread loaded its own DataLoader batches in {fmt_pct(load)} of only {n_loop} samples "
                            f"of the loop ({MIN_LOADER_SAMPLES} are needed): watch a longer run or use a shorter "
                            "--interval", figs)
        v = _verdict("input_starvation", "supported",
                     f"The main thread loaded its own DataLoader batches (num_workers=0) in {fmt_pct(load)} of {n_loop} "
                     f"samples of the loop (95 % interval {_ci_text(s.get('loading_share_ci95'))}): the loop waits "
                     "for its input while it is made.", figures=figs)
        v["noisy"] = _straddles(s.get("loading_share_ci95"), MAIN_LOADING_SUPPORTED)
        return v
    loads = f" and loaded batches itself in {fmt_pct(load)}" if load else ""
    v = _verdict("input_starvation", "refuted", f"The main thread waited for DataLoader batches in {fmt_pct(f)} of "
                 f"samples{loads}.", figures=figs)
    v["noisy"] = bool((f is not None and f > INPUT_WAIT_REFUTED and _straddles(s.get("ci95"), INPUT_WAIT_SUPPORTED))
                      or (n_loop >= MIN_LOADER_SAMPLES and _straddles(s.get("loading_share_ci95"),
                                                                      MAIN_LOADING_SUPPORTED)))
    return v


def _ci_text(ci: Any) -> str:
    """A share's 95 % interval as "78-87 %", "n/a" when absent."""
    if isinstance(ci, list) and len(ci) == 2 and num(ci[0]) is not None and num(ci[1]) is not None:
        return f"{ci[0] * 100:.0f}-{ci[1] * 100:.0f} %"
    return "n/a"


def verdicts(data: dict, driver: Optional[dict] = None) -> List[dict]:
    """All eight verdicts of a watch, in gpudiag report's order plus input_starvation."""
    return [verdict_gil(data), verdict_context_switch(data), verdict_memory(data), verdict_pcie(data, driver),
            verdict_host_idle(data), verdict_gpu_shared(data), verdict_driver_model(data), verdict_input(data)]
