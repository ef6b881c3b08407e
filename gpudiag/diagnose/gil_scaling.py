"""The GIL rules: do threads and processes scale on the `gil` probe's micro-benchmark? Pure: the probe
calls judge() on its rows, and diagnose/verdicts/parallelism re-applies it to an older report's rows.

Scaling classification (per workload, at the largest worker count measured in both modes; the
thresholds are in gpudiag.diagnose.thresholds):
- a mode *scales* when its speedup reaches at least half of the ideal extra speedup:
  `speedup >= 1 + GIL_SCALE_FRACTION * (N - 1)` (N=2: 1.5x; N=4: 2.5x);
- a mode is *flat* when `speedup <= 1 + tolerance`, where the tolerance grows with the measured
  noise: `max(GIL_FLAT_MIN_TOLERANCE, GIL_FLAT_NOISE_FACTOR * worst relative spread of the two 1-worker baselines)`;
- when the tolerance exceeds GIL_FLAT_MAX_TOLERANCE, or is so wide that "flat" and "scales" overlap
  (`1 + tolerance >= 1 + GIL_SCALE_FRACTION * (N - 1)`), the measurement is too noisy to judge
  ("inconclusive"), instead of guessing. This keeps "near 1" and "near the core count" honest on a
  2-core machine where both are close together.
- with a 95 % interval per speedup (rows of this version), a mode scales only when its interval
  also excludes "no gain" (`low > 1`), and is flat only when its interval stays below the scaling
  line (`high < 1 + GIL_SCALE_FRACTION * (N - 1)`); in between: inconclusive.
- a speedup above the ideal N x (beyond SPEEDUP_CEILING_TOLERANCE, or with its whole interval above N) is
  impossible for N workers sharing the same total work: the 1-worker baseline was disturbed, so
  the verdict is inconclusive and says so;
- when other programs kept the cores busy (gpudiag.measure.load.machine_busy), the workload's
  verdict is inconclusive with that reason: the probe never states a verdict its own busy-machine
  finding contradicts.
- when a CPU quota throttled the workload's rounds (gpudiag.diagnose.cpu_limit.throttled), its
  verdict is inconclusive and says so by name: the workers shared the quota, not the cores. Under a
  limit that leaves 1 usable core only 1 worker is measured, and the verdict says why.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.thresholds import (
    GIL_FLAT_MAX_TOLERANCE,
    GIL_FLAT_MIN_TOLERANCE,
    GIL_FLAT_NOISE_FACTOR,
    GIL_SCALE_FRACTION,
    SPEEDUP_CEILING_TOLERANCE,
    THROTTLED_MIN_PERIODS,
)
from gpudiag.measure.load import machine_busy

WORKLOADS = ("python", "torch_op", "torch_dispatch", "cuda_launch")
MODES = ("threads", "processes")

# classify() outcomes
BOTH_SCALE = "threads_and_processes_scale"
ONLY_PROCESSES = "only_processes_scale"
ONLY_THREADS = "only_threads_scale"
NEITHER = "neither_scales"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not_measured"


def _row(rows: Sequence[dict], workload: str, mode: str, workers: int) -> Optional[dict]:
    """The row for (workload, mode, workers), or None when it was not measured (skipped workload, fewer cores)."""
    for r in rows:
        if r.get("workload") == workload and r.get("mode") == mode and r.get("workers") == workers:
            return r
    return None


def _interval(row: Optional[dict]) -> Optional[tuple]:
    """A row's speedup_ci95 as a (lo, hi) float pair, None when absent or malformed (a recorded or hand-edited
    report): classification then falls back to the point estimate."""
    ci = (row or {}).get("speedup_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return float(ci[0]), float(ci[1])
    return None


def above_ideal(speedup: Optional[float], workers: int, ci: Optional[Sequence[float]] = None) -> bool:
    """True when N workers sharing the same total work measured more than N x (beyond the tolerance)."""
    if speedup is None or workers < 1:
        return False
    return speedup > workers * (1 + SPEEDUP_CEILING_TOLERANCE) or (ci is not None and ci[0] > workers)


def compare_modes(rows: Sequence[dict], workload: str, one_worker_reason: Optional[str] = None) -> Dict[str, Any]:
    """Threads vs processes for one workload at the largest worker count measured in both modes.

    `one_worker_reason` says why only 1 worker was measured when the caller knows (a CPU limit)."""
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("workers"), int)
            and isinstance(r.get("speedup"), (int, float)) and not isinstance(r.get("speedup"), bool)]
    counts = {m: {r["workers"] for r in rows if r.get("workload") == workload and r.get("mode") == m}
              for m in MODES}
    common = sorted((counts["threads"] & counts["processes"]) - {1})
    out: Dict[str, Any] = {"workload": workload, "workers": None, "threads_speedup": None,
                           "processes_speedup": None, "threads_ci95": None, "processes_ci95": None,
                           "tolerance": None, "verdict": NOT_MEASURED, "reason": None}
    if not counts["threads"] and not counts["processes"]:
        out["reason"] = "not measured"
        return out
    if not common:
        out["reason"] = one_worker_reason or \
            "only 1 worker measured in both modes (1 usable core, or larger counts did not fit)"
        return out
    n = common[-1]
    t, p = _row(rows, workload, "threads", n), _row(rows, workload, "processes", n)
    t_ci, p_ci = _interval(t), _interval(p)
    # Noise is judged on the 1-worker baselines: the spread of a contended N-thread row is the GIL
    # hand-off itself (convoys), not measurement noise, and its median is what the verdict reads.
    spreads = [r["spread_fraction"] for r in (_row(rows, workload, "threads", 1), _row(rows, workload, "processes", 1))
               if r and isinstance(r.get("spread_fraction"), (int, float))]
    tol = max(GIL_FLAT_MIN_TOLERANCE, GIL_FLAT_NOISE_FACTOR * max(spreads, default=0.0))
    out.update(workers=n, threads_speedup=t["speedup"], processes_speedup=p["speedup"], tolerance=round(tol, 3),
               threads_ci95=list(t_ci) if t_ci else None, processes_ci95=list(p_ci) if p_ci else None)
    over = [(m, r["speedup"]) for m, r, ci in (("threads", t, t_ci), ("processes", p, p_ci))
            if above_ideal(r["speedup"], n, ci)]
    if over:
        m, sp = over[0]
        out["verdict"] = INCONCLUSIVE
        out["reason"] = (f"{m} measured {sp:.2f}x with {n} workers, above the ideal {n}x that {n} workers sharing "
                         "the same work can reach: the 1-worker baseline was slowed by something else")
        return out
    out["verdict"] = classify(t["speedup"], p["speedup"], n, tol, t_ci, p_ci)
    if out["verdict"] == INCONCLUSIVE:
        if tol > GIL_FLAT_MAX_TOLERANCE or 1 + tol >= 1 + GIL_SCALE_FRACTION * (n - 1):
            out["reason"] = f"timings too noisy to judge (spread {max(spreads):.0%} between repeats)"
        else:
            out["reason"] = "the speedups lie between 'flat' and 'scales', or their intervals reach both"
    return out


def classify(threads_speedup: float, processes_speedup: float, workers: int, tolerance: float,
             threads_ci: Optional[Sequence[float]] = None, processes_ci: Optional[Sequence[float]] = None) -> str:
    """Which modes scale at `workers` workers, given both speedups (and intervals) and the noise tolerance."""
    need = 1 + GIL_SCALE_FRACTION * (workers - 1)
    if tolerance > GIL_FLAT_MAX_TOLERANCE or 1 + tolerance >= need:  # "flat" and "scales" would overlap
        return INCONCLUSIVE

    def state(s: float, ci: Optional[Sequence[float]]) -> str:
        """One mode's state, "scales", "flat" or "between", from its speedup: at the scaling line with an interval above 1x,
        within noise of 1x with the interval below the line, else between."""
        lo, hi = (ci[0], ci[1]) if ci else (s, s)
        if s >= need and lo > 1:  # at the scaling line, and the gain is real (the interval excludes 1x)
            return "scales"
        if s <= 1 + tolerance and hi < need:
            return "flat"
        return "between"

    t, p = state(threads_speedup, threads_ci), state(processes_speedup, processes_ci)
    if t == "scales" and p == "scales":
        return BOTH_SCALE
    if p == "scales" and t == "flat":
        return ONLY_PROCESSES
    if t == "scales" and p == "flat":
        return ONLY_THREADS
    if t == "flat" and p == "flat":
        return NEITHER
    return INCONCLUSIVE  # partial scaling in between: say nothing rather than guess


def _throttled_workloads(per: Dict[str, Any]) -> Dict[str, dict]:
    """{workload: its throttling} for the workloads that ran throttled. A quick workload spans only a few quota
    periods, too few to judge alone: it is judged on all workloads' periods together (the same quota held
    through the probe)."""
    known = {w: t for w, t in per.items() if isinstance(t, dict) and isinstance(t.get("periods"), int)}
    periods = sum(t["periods"] for t in known.values())
    throttled = sum(t.get("throttled_periods") or 0 for t in known.values())
    pooled = {"periods": periods, "throttled_periods": throttled,
              "throttled_share": round(throttled / periods, 4) if periods else 0.0,
              "throttled_s": round(sum(t.get("throttled_s") or 0.0 for t in known.values()), 4)}
    out = {}
    for w, t in known.items():
        judged = t if t["periods"] >= THROTTLED_MIN_PERIODS else pooled
        if cpu_limit.throttled(judged):
            out[w] = judged
    return out


def _top(rows: Sequence[dict], workload: str) -> Optional[int]:
    """The largest worker count measured for `workload` (None if none): the verdict is judged there."""
    counts = [r["workers"] for r in rows if r.get("workload") == workload and isinstance(r.get("workers"), int)]
    return max(counts) if counts else None


def judge(data: Dict[str, Any], usable_cores: Optional[int] = None) -> Dict[str, Any]:
    """The gil probe's data -> {verdict: {workload: compare_modes() + other_busy_cores}, busy: {workload: cores},
    throttling: {workload: throttling}, cores, load}: each workload's verdict, made inconclusive (with the
    reason) where a CPU quota throttled it or other programs kept the cores busy."""
    rows = data.get("scaling") or []
    cpu = data.get("cpu") or {}
    limit = cpu.get("limit") or None
    cores = usable_cores or cpu.get("usable_cores")
    one = (f"only 1 worker measured: {cpu_limit.usable_text(limit)}, so threads and processes cannot run side "
           "by side here; more workers cannot help" if cpu_limit.usable_text(limit) and cores == 1 else None)
    verdict: Dict[str, Any] = {w: compare_modes(rows, w, one) for w in WORKLOADS}
    for w, why in (data.get("absent") or {}).items():
        if w in verdict:
            verdict[w]["reason"] = why
    load = data.get("other_busy_cores") or {}
    throttling = _throttled_workloads(cpu.get("throttling") or {})
    busy = {w: c for w, c in load.items()
            if c is not None and machine_busy(c, cores, verdict.get(w, {}).get("workers") or _top(rows, w),
                                              cpu_limit.run_cores(limit))}
    for w, v in verdict.items():
        v["other_busy_cores"] = load.get(w)
        if v["verdict"] == NOT_MEASURED:
            continue
        # Throttling first: under a quota it, not other programs, is what held the workers back.
        if w in throttling:
            v["verdict"] = INCONCLUSIVE
            v["reason"] = ((v["reason"] + "; ") if v["reason"] else "") + \
                f"{cpu_limit.throttled_text(limit, throttling[w])}: the workers took turns inside the quota"
        if w in busy:
            v["verdict"] = INCONCLUSIVE
            v["reason"] = ((v["reason"] + "; ") if v["reason"] else "") + \
                f"other processes kept {busy[w]:.1f} cores busy during the measurement"
    return {"verdict": verdict, "busy": busy, "throttling": throttling, "cores": cores, "load": load}
