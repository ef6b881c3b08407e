"""The timed part of the cycle tournament: interleaved rounds, intervals, background load, report rows.

Every prepared contestant (gpudiag/probes/cycle/strategies.py) is timed once per round, the order
rotating from round to round (gpudiag.measure.rounds), so a burst of load from elsewhere on the
machine hits every strategy alike instead of whichever ran at that moment. Rounds stop when the
intervals settle the comparison, or the mode's budget is spent. A row reports the median rate,
its spread, the number of timed runs (`samples`), the 95 % interval of its speedup over serial
(from the paired rounds' ratios, gpudiag.measure.stats.paired_ratio_ci) and the cores other programs kept busy
while it ran. A strategy that breaks, or whose work does not finish within its deadline inside
worker processes or threads, becomes a `failed` row naming it; the others are still measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from gpudiag import platform
from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.thresholds import NOISE_MARGIN_FRACTION, SIMPLICITY
from gpudiag.measure import stats
from gpudiag.measure.load import CpuMeter, busiest_others, machine_busy, process_cpu_snapshot
from gpudiag.measure.rounds import RoundsPlan, run_rounds
from gpudiag.probes.cycle import profiling, timeline
from gpudiag.probes.cycle import strategies
from gpudiag.probes.cycle.strategies import Contestant, Env, Plan, StrategyTimeout
from gpudiag.probes.cycle.workload import CustomLoopError, CustomSpec

# Rounds stop early once the recommendation's decisions are settled: the fastest contestant is either
# surely faster than a simpler one by the noise margin (the paired interval of their ratio wholly above
# 1.05: gpudiag.diagnose.confidence.clearly_above), or surely not (its top at or below 1.05); more rounds
# would not change the choice then.
# One run of ~80 ms sees the OS's CPU time in 10 ms ticks: quiet runs here read up to 0.36 cores of
# "other" load from that alone. A single run counts as disturbed only beyond the busy rule plus this.
RUN_TICK_NOISE_CORES = 0.4
# Rounds taken back for a burst of load elsewhere, at most: past that the load is not a burst, the
# rounds are kept, and the tournament is judged busy on them (its figures then describe that machine).
MAX_REJECTED_ROUNDS = 2


def record_timeline(c: Contestant, env: Env, cycles: int) -> dict:
    """Profile one more, untimed run of a contestant (profiling slows it down)."""
    if c.name == "processes":
        return timeline.empty_timeline(None, "each process has its own CUDA context; one profiler cannot "
                                             "see the others' kernels (see nvml_gpu_percent_median)")
    try:
        if env.profiler_cuda and c.plain is not None:
            return profiling.profile_timeline(lambda: c.plain(cycles), c.sync, cycles)
        if c.events_workload is not None:
            return profiling.events_timeline(c.events_workload, cycles)
        return timeline.empty_timeline(None, f"{env.profiler_reason}; CUDA-event timing is done for serial only")
    # The timeline reruns the user's step under the profiler: anything can be raised, and the timeline
    # is an extra whose failure must not lose the measurement.
    except Exception as exc:
        return timeline.empty_timeline(None, f"profiling failed: {strategies.error_where(exc)}")


def _nvml_median(c: Contestant, samples: Sequence[dict], t0: float,
                 window_s: float = timeline.NVML_PERIOD_MAX_S) -> Tuple[Optional[float], Optional[str]]:
    """(median NVML GPU percent, None) over the readings that describe this contestant's runs alone, or
    (None, why): the one GPU busy figure the processes strategy has, since one profiler cannot see other
    contexts. A reading averages the window_s before it (NVML's sample period), so it counts only when
    that whole window lies inside one timed run: a reading taken just after a switch describes mostly
    the strategy before."""
    runs = [(a - t0, b - t0) for a, b in c.intervals]
    inside = [s["gpu_percent"] for s in samples if timeline.reading_within(s["t_s"], window_s, runs)]
    if inside:
        return stats.median(inside), None
    if not samples:
        return None, "NVML gave no utilisation samples"
    longest = max((b - a for a, b in runs), default=0.0)
    return None, (f"NVML averages utilisation over {window_s:.2f} s before each reading; this strategy's runs "
                  f"(at most {longest:.2f} s) are shorter, so no reading describes it alone")


def speedup_interval(c: Contestant, other: Contestant, cycles: int):
    """95 % interval of a contestant's rate over another's, paired by round (gpudiag.measure.stats.paired_ratio_ci);
    a contestant that failed in round k has its rounds before k, paired with the other's first k."""
    a, b = c.rates(cycles), other.rates(cycles)
    n = min(len(a), len(b))
    return stats.paired_ratio_ci(a[:n], b[:n])


def _rank(c: Contestant) -> tuple:
    """(simplicity rank, workers) of a contestant: the order in which the recommendation prefers strategies at a tie."""
    return (SIMPLICITY.index(c.name) if c.name in SIMPLICITY else len(SIMPLICITY)), c.workers


def settled(contestants: Sequence[Contestant], serial: Contestant, cycles: int) -> bool:
    """True when more rounds would not change the recommendation: see the comment at the top."""
    live = [c for c in contestants if c.error is None and c.walls and not c.extra.get("one_thread")]
    if serial not in live:
        return False
    leader = max(live, key=lambda c: c.rate(cycles))
    for c in live:
        if c is leader or _rank(c) >= _rank(leader):
            continue
        ci = speedup_interval(leader, c, cycles)
        if ci is None or ci[0] <= 1 + NOISE_MARGIN_FRACTION < ci[1]:  # not surely faster, nor surely not
            return False
    return True


def _load_fields(c: Contestant) -> dict:
    """The row's other_busy_cores: CPU seconds other programs used per wall second while this contestant was
    timed (None when not measured), so a loaded run is visible next to its figure."""
    if c.load_wall_s <= 0:
        return {"other_busy_cores": None}
    return {"other_busy_cores": round(c.other_cpu_s / c.load_wall_s, 2)}


def _row_for(name: str, group: List[Contestant], plan: Plan, env: Env, samples, t0: float,
             serial: Optional[Contestant]) -> dict:
    """The report row of one strategy: its best worker count's figures, speedup interval, load, sweep (threads,
    processes) and GPU busy fields; a `failed` row naming the error when no contestant of it finished a run."""
    ok = [c for c in group if c.error is None and c.walls and not c.extra.get("one_thread")]
    if not ok:
        return strategies.empty_row(name, "failed", next((c.error for c in group if c.error), "no timed run finished"))
    best = max(ok, key=lambda c: c.rate(plan.cycles))
    row = strategies.measured_row(name, best.workers, plan.cycles, best.walls, best.torch_threads,
                          host_rss_bytes=best.host_rss_bytes,
                          peak_device_bytes=best.peak_device_bytes if env.device == "cuda" else None, **best.extra)

    def ci(c: Contestant):
        """Rounded 95 % speedup interval of a contestant over serial (None for serial itself or without serial)."""
        if serial is None or c is serial:
            return None
        return stats.rounded_interval(speedup_interval(c, serial, plan.cycles))

    row.update(samples=len(best.walls), speedup_ci95=ci(best), **_load_fields(best))
    one = next((c for c in group if c.extra.get("one_thread")), None)
    if one is not None:
        row["one_thread"] = _one_thread_block(one, best, plan.cycles)
    if name in ("threads", "processes"):
        row["sweep"] = [{"workers": c.workers, "cycles_per_s": round(c.rate(plan.cycles), 3) if c.walls else None,
                         "samples": len(c.walls), "speedup_ci95": ci(c) if c.walls else None,
                         "wall_s": [round(w, 5) for w in c.walls],
                         "torch_threads": c.torch_threads, "status": "ok" if c.error is None else "failed",
                         "reason": c.error or ""} for c in group]
    if env.device != "cuda":
        row.update(gpu_busy_fraction=None, gpu_busy_reason=strategies.CPU_REASON, nvml_gpu_percent_median=None,
                   nvml_gpu_percent_reason=strategies.CPU_REASON)
    else:
        tl = env.timelines.get(name) or {}
        row["gpu_busy_fraction"] = tl.get("busy_fraction")
        row["gpu_busy_reason"] = None if tl.get("busy_fraction") is not None else (tl.get("reason") or "not profiled")
        window = (env.nvml or {}).get("window_s") or timeline.NVML_PERIOD_MAX_S
        row["nvml_gpu_percent_median"], row["nvml_gpu_percent_reason"] = _nvml_median(best, samples, t0, window)
    return row


def _one_thread_block(one: Contestant, serial: Contestant, cycles: int) -> dict:
    """The serial row's `one_thread`: the plain loop timed with one intra-op thread in the same rounds, and its
    rate over the loop with torch's default threads (paired interval), so a reader sees both baselines."""
    rates = one.rates(cycles)
    return {"torch_threads": one.torch_threads, "status": "ok" if one.error is None and rates else "failed",
            "reason": one.error or "",
            "cycles_per_s": round(stats.median(rates), 3) if rates else None,
            "spread_fraction": None if len(rates) < 2 else round(stats.relative_spread(rates) or 0.0, 4),
            "samples": len(rates), "cycles": one.cycles_run(cycles), "wall_s": [round(w, 5) for w in one.walls],
            "vs_default": _round3(stats.ratio_of_medians(rates, serial.rates(cycles))),
            "vs_default_ci95": stats.rounded_interval(speedup_interval(one, serial, cycles)),
            **_load_fields(one)}


def _round3(x: Optional[float]) -> Optional[float]:
    """x to 3 decimals for the report (None stays None)."""
    return None if x is None else round(x, 3)


def _error_text(exc: BaseException) -> str:
    """The failed row's reason: a StrategyTimeout's own message (it already says what hung), else type: message at
    file:line."""
    return str(exc) if isinstance(exc, StrategyTimeout) else strategies.error_where(exc)


def _prepare_all(spec, plan: Plan, env: Env, rows: Dict[str, dict], groups: Dict[str, List[Contestant]]) -> None:
    """Prepare every strategy that can run here into groups; the others become skipped/failed rows."""
    custom = isinstance(spec, CustomSpec)
    cuda = env.device == "cuda"
    for name in strategies.PREPARE_ORDER:
        if not cuda and name in strategies.CUDA_ONLY:
            rows[name] = strategies.empty_row(name, "skipped", "needs a CUDA device: this machine ran the workload on the CPU")
            continue
        if name in ("threads", "processes") and not plan.workers:
            rows[name] = strategies.empty_row(name, "skipped", plan.workers_reason or "no worker count to measure")
            continue
        if custom and name not in strategies.CUSTOM_STRATEGIES:
            rows[name] = strategies.empty_row(name, "skipped", "needs the built-in workload: gpudiag cannot fuse cycles or "
                                                       "defer the syncs inside your own step")
            continue
        if name == "serial":
            t0 = time.perf_counter()
            groups[name] = strategies.PREPARE[name](spec, plan, env)
            env.serial_prepare_s = time.perf_counter() - t0
            continue
        try:
            groups[name] = strategies.PREPARE[name](spec, plan, env)
        except strategies.Skip as exc:
            rows[name] = strategies.empty_row(name, "skipped", str(exc))
            if hasattr(exc, "memory_check"):
                rows[name]["memory_check"] = exc.memory_check
        except CustomLoopError:
            raise
        # A user's --cycle step can raise anything while a strategy is prepared, and one strategy's failure
        # must not lose the others' measurements.
        except Exception as exc:
            rows[name] = strategies.empty_row(name, "failed", _error_text(exc))


@dataclass
class _Took:
    """What one timed run booked to its contestant: CPU seconds other programs used (other_s) and the hypervisor
    stole (steal_s) over its wall_s seconds; taken back with the run when its round is rejected."""

    other_s: float = 0.0
    steal_s: float = 0.0
    wall_s: float = 0.0


class _RoundTimer:
    """Times each contestant once per round (run_rounds' `once`) and judges each round (its `keep_round`): a round
    during which other programs took the cores is taken back, up to MAX_REJECTED_ROUNDS."""

    def __init__(self, plan: Plan, env: Env, serial: Contestant, meter: CpuMeter):
        self.plan, self.env, self.serial, self.meter = plan, env, serial, meter
        self.cores, self.run_cores = _cores(env)
        self.widest = max(plan.workers or [1])
        # Per run this round: (contestant, other cores during its run, CPU figures to take back).
        self.this_round: List[Tuple[Contestant, Optional[float], _Took]] = []
        self.rejected = 0
        self.lost_s = 0.0  # seconds spent in failed runs: not the other contestants' rounds budget

    def once(self, c: Contestant) -> None:
        """Time one contestant once (with a deadline for threads/processes) and book the CPU other programs used
        meanwhile; a failure fails that contestant only, except serial's, which fails the tournament."""
        timeout = None
        if c.name in ("threads", "processes"):  # work that may hang where the probe cannot see it
            base = stats.median(self.serial.walls) if self.serial.walls else self.env.serial_prepare_s
            timeout = strategies.work_timeout(strategies.RUN_TIMEOUT_MIN_S, base, self.plan.deadline)
        r0 = self.meter.read()
        n_before = len(c.walls)
        t_start = time.monotonic()
        try:
            c.once(self.plan.cycles, self.env.device == "cuda", timeout)
        except CustomLoopError:
            raise
        # A user's --cycle step (or a worker's error) can raise anything, and one strategy's failure
        # must not lose the others' measurements; serial's failure still fails the tournament.
        except Exception as exc:
            if c is self.serial:
                raise
            c.error = _error_text(exc)
        if len(c.walls) == n_before:  # failed: no figure, so no load beside one (a hang's wait is no round's)
            self.lost_s += time.monotonic() - t_start
            return
        r1 = self.meter.read()
        other, steal = self.meter.other_cores(r0, r1), self.meter.steal_cores(r0, r1)
        took = _Took()
        if other is not None:
            dt = r1[3] - r0[3]
            took = _Took(other * dt, (steal or 0.0) * dt, dt)
            c.other_cpu_s += took.other_s
            c.steal_cpu_s += took.steal_s
            c.load_wall_s += took.wall_s
        self.this_round.append((c, other, took))

    def keep_round(self) -> bool:
        """A round during which other programs took the cores (a burst of load) is taken back and rerun;
        after MAX_REJECTED_ROUNDS the load is not a burst, and the rounds are kept (and judged busy)."""
        cpu = sum(took.other_s for _, _, took in self.this_round)
        span = sum(took.wall_s for _, _, took in self.this_round)

        def busy(cores_taken: float) -> bool:
            """Whether other programs taking this many cores leave too few for the widest strategy."""
            return machine_busy(cores_taken, self.cores, self.widest, self.run_cores)

        # Over the whole round, or - allowing for the CPU clock's 10 ms ticks over one short run - in one run.
        disturbed = (span > 0 and busy(cpu / span)) or any(
            other is not None and busy(other - RUN_TICK_NOISE_CORES) for _, other, _ in self.this_round)
        disturbed = disturbed and self.rejected < MAX_REJECTED_ROUNDS
        if disturbed:
            self.rejected += 1
            for c, _, took in self.this_round:
                c.walls.pop()
                c.intervals.pop()
                c.other_cpu_s -= took.other_s
                c.steal_cpu_s -= took.steal_s
                c.load_wall_s -= took.wall_s
                c.rejected_other_s += took.other_s
                c.rejected_wall_s += took.wall_s
        self.this_round.clear()
        return not disturbed


def run_tournament(spec, plan: Plan, env: Env) -> List[dict]:
    """Every strategy's row, in STRATEGIES order, with speedup_vs_serial filled in.

    serial failing fails the tournament (nothing to compare against); any other strategy failing
    becomes a `failed` row. Also fills env.rounds (how many rounds, why they stopped) and
    env.load (the cores other programs kept busy during the rounds, and which ones, if visible).
    """
    rows: Dict[str, dict] = {}
    groups: Dict[str, List[Contestant]] = {}
    try:
        _prepare_all(spec, plan, env, rows, groups)
        serial = groups["serial"][0]
        if plan.target_run_s:  # from the one-thread loop where timed: see size_run
            plan.cycles = strategies.size_run(next((c for c in groups["serial"] if c.extra.get("one_thread")),
                                                   serial), plan)
            plan.profile_cycles = min(plan.cycles, plan.profile_cycles)
        contestants = [c for g in groups.values() for c in g]
        samples, t0 = _timed_rounds(contestants, serial, plan, env)
        if env.device == "cuda":
            for name, group in groups.items():
                ok = [c for c in group if c.error is None and c.walls]
                if ok:
                    best = max(ok, key=lambda c: c.rate(plan.cycles))
                    env.timelines[name] = record_timeline(best, env, plan.profile_cycles)
        for name, group in groups.items():
            rows[name] = _row_for(name, group, plan, env, samples, t0, serial)
    finally:
        _close_all(env, groups)
    base = rows["serial"]["cycles_per_s"]
    for r in rows.values():
        if r["cycles_per_s"] and base:
            r["speedup_vs_serial"] = round(r["cycles_per_s"] / base, 3)
    return [rows[n] for n in strategies.STRATEGIES]


def _timed_rounds(contestants: List[Contestant], serial: Contestant, plan: Plan, env: Env) -> Tuple[List[dict], float]:
    """Run the interleaved rounds (NVML sampled meanwhile on CUDA); fill env.rounds, env.nvml and env.load.
    Returns the NVML samples, each labelled with the strategy it describes alone, and their time origin."""
    meter = CpuMeter(env.own_pids, family=True, descendants=platform.descendant_pids)
    timer = _RoundTimer(plan, env, serial, meter)
    cuda = env.device == "cuda"
    sampler = timeline.UtilizationSampler(env.nvml_locate).start() if (cuda and env.nvml_locate is not None) else None
    t0 = sampler.t0 if sampler is not None else 0.0
    throttle = platform.ThrottleMeter()
    before, snap0, thr0 = meter.read(), process_cpu_snapshot(), throttle.read()
    try:
        rp = RoundsPlan(plan.repeats, plan.max_rounds or plan.repeats,
                        plan.rounds_budget_s if plan.rounds_budget_s is not None else float("inf"))
        env.rounds = dict(run_rounds(contestants, timer.once, rp,
                                     settled=lambda: settled(contestants, serial, plan.cycles),
                                     deadline=plan.deadline, active=lambda c: c.error is None,
                                     keep_round=timer.keep_round, max_rejected=MAX_REJECTED_ROUNDS,
                                     lost_s=lambda: timer.lost_s),
                          min_rounds=rp.min_rounds, max_rounds=rp.max_rounds,
                          budget_s=None if plan.rounds_budget_s is None else plan.rounds_budget_s)
    finally:
        env.nvml = sampler.stop() if sampler is not None else None
    after, snap1, thr1 = meter.read(), process_cpu_snapshot(), throttle.read()
    env.load = _tournament_load(meter, before, after, snap0, snap1, env, plan, contestants)
    # Over every round, rejected ones included: a quota throttles the whole tournament alike.
    env.load["throttling"] = platform.ThrottleMeter.delta(thr0, thr1)
    samples = (env.nvml or {}).get("samples", [])
    window = (env.nvml or {}).get("window_s") or timeline.NVML_PERIOD_MAX_S
    for smp in samples:  # the strategy each reading describes alone (its whole averaging window in one run)
        smp["strategy"] = next((c.name for c in contestants if timeline.reading_within(
            smp["t_s"], window, [(a - t0, b - t0) for a, b in c.intervals])), None)
    return samples, t0


def _close_all(env: Env, groups: Dict[str, List[Contestant]]) -> None:
    """Free every contestant's copy and worker pool (and the early pool when prepare_processes never took it)."""
    if env.early_pool is not None:  # started early but never handed to prepare_processes
        env.early_pool.close()
        env.early_pool = None
    for group in groups.values():
        for c in group:
            try:
                c.close()
            # close() runs the user's close() too: anything can be raised, and freeing a copy must not
            # hide the measurement or the real error.
            except Exception:
                pass


def _tournament_load(meter: CpuMeter, before, after, snap0, snap1, env: Env, plan: Plan,
                     contestants: Sequence[Contestant]) -> dict:
    """The cores other programs kept busy while the kept rounds ran (and over the whole tournament),
    judged against what the widest strategy needs."""
    cores, run_cores = _cores(env)
    overall = meter.other_cores(before, after)
    steal = meter.steal_cores(before, after)
    wall = (after[3] - before[3]) if before is not None and after is not None else 0.0
    kept_wall = sum(c.load_wall_s for c in contestants)
    kept = sum(c.other_cpu_s for c in contestants) / kept_wall if kept_wall > 0 else overall
    widest = max(plan.workers or [1])
    rounds = env.rounds or {}
    rejected, counted = int(rounds.get("rejected") or 0), int(rounds.get("rounds") or 0)
    visible = busiest_others(snap0, snap1, wall, own=set(meter.seen_pids()) | set(env.own_pids()) | _own_family())
    # Busy: the kept rounds were loaded, or load kept rejecting rounds until too few were left to judge.
    busy = machine_busy(kept, cores, widest, run_cores) or (rejected > 0 and counted < stats.MIN_SAMPLES_FOR_INTERVAL)
    seen = sum(v["cores"] for v in visible)
    return {"other_busy_cores": None if kept is None else round(max(0.0, kept), 2),
            "other_busy_cores_all_rounds": None if overall is None else round(overall, 2),
            "rejected_rounds": rejected,
            "steal_cores": None if steal is None else round(steal, 2),
            "usable_cores": cores, "run_cores": run_cores, "limit": env.cpu_limit, "widest_workers": widest,
            "busy": busy,
            "busiest_visible": visible,
            "not_visible_cores": None if overall is None else round(max(0.0, overall - seen), 2),
            "rule": "a round during which other programs left fewer than N - 0.5 of the usable cores free for the "
                    "widest strategy's N workers (under a CPU quota: of the cores the process may run on, beyond "
                    "what the quota lets it use) is rejected and rerun; busy when the kept rounds were loaded "
                    "like that, or too few rounds were left"}


def _cores(env: Env) -> tuple:
    """(usable cores, cores the process may run on) from the limit the probe recorded, else asked now."""
    limit = env.cpu_limit or cpu_limit.recorded(platform.cpu_limit())
    return cpu_limit.usable_cores(limit) or 1, cpu_limit.run_cores(limit)


def _own_family() -> set:
    """This process and its parents' chain up to the gpudiag command: never 'other' load (its descendants are the
    meter's seen_pids)."""
    import os

    import psutil

    out = {os.getpid()}
    try:
        for p in psutil.Process().parents():
            out.add(p.pid)
    except psutil.Error:
        pass
    return out


def winner(rows: Sequence[dict]) -> Optional[dict]:
    """The fastest ok row by median cycles/s (None when nothing was measured)."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("cycles_per_s")]
    return max(ok, key=lambda r: r["cycles_per_s"]) if ok else None
