"""The strategies of the cycle tournament: each one prepared into contestants ready to be timed.

Strategies: serial (the baseline), deferred_sync, cuda_graph, streams (CUDA only), batched,
threads, processes. Each is first *prepared* (model built, warmed up, graph captured, workers
started) into one or more contestants (threads and processes: one per worker count tried). The
timed rounds, their statistics and the report rows are gpudiag/probes/cycle/tournament.py.

Processes run in long-lived spawned workers: start-up (spawn + import torch) is paid once,
measured, and excluded from cycles_per_s. The pool is `gpudiag.measure.workers.WorkerPool`,
reached through `start_pool`; `start_workers_early` starts it before anything else is prepared,
so the workers' torch import overlaps the probe's own. Every call into the workers, and every
threads run, has a deadline: a step that hangs only there fails its own row, by name, and the
other strategies' figures are kept.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import psutil

from gpudiag.measure import stats
from gpudiag.measure.workers import ThreadTeam, WorkerPool, WorkerTimeout
from gpudiag.probes.cycle.workload import CustomSpec, WorkloadSpec, build, host_work
from gpudiag.units import fmt_bytes

STRATEGIES = ("serial", "deferred_sync", "cuda_graph", "streams", "batched", "threads", "processes")
CUDA_ONLY = ("deferred_sync", "cuda_graph", "streams")
CUSTOM_STRATEGIES = ("serial", "cuda_graph", "threads", "processes")
# Used only to decide whether N workers can start at once before one has been measured.
CONSERVATIVE_HOST_BYTES_PER_WORKER = 2 * 2**30
CONSERVATIVE_DEVICE_BYTES_PER_WORKER = 1 * 2**30
DEVICE_FREE_FRACTION = 0.8  # of free device memory new worker contexts may take
CPU_REASON = "no CUDA device: the workload ran on the CPU"
# Deadlines inside the probe for work that may hang where the probe cannot see it (worker
# processes, worker threads): generous multiples of what the same work took in the probe itself,
# with floors for slow first steps. Past them the strategy fails by name; the rest is kept.
PREPARE_TIMEOUT_MIN_S = 30.0
RUN_TIMEOUT_MIN_S = 10.0
TIMEOUT_FACTOR = 20.0


@dataclass
class Plan:
    """How much to measure (from --quick/--full and the machine)."""

    cycles: int  # per timed run, the same for every strategy
    warmup: int
    repeats: int  # rounds at least (each contestant timed once per round)
    workers: List[int]  # worker counts tried for threads and processes (best one reported)
    fuse: int  # batched: cycles per fused step
    sync_every: int  # deferred_sync: cycles between host syncs
    streams: int  # streams: cycles in flight
    profile_cycles: int  # cycles under torch.profiler for the idle timeline (CUDA)
    max_rounds: Optional[int] = None  # rounds at most (None: exactly `repeats`)
    rounds_budget_s: Optional[float] = None  # wall seconds for the rounds (None: no budget stop)
    deadline: Optional[float] = None  # monotonic time by which the rounds must end (probe timeout)
    workers_reason: Optional[str] = None  # why `workers` is empty (1 usable core): threads/processes skipped
    target_run_s: Optional[float] = None  # set (a --cycle step): `cycles` is sized to this serial run time once
    #                                       every strategy is prepared (size_run)


@dataclass
class Env:
    """Facts about this machine the strategies need, and what the tournament recorded on the side."""

    device: str  # "cuda" | "cpu"
    default_threads: int  # torch.get_num_threads() at start
    profiler_cuda: bool = False  # torch.profiler can record CUDA kernels
    profiler_reason: Optional[str] = None
    nvml_locate: Any = None  # PCI bus id or NVML index of the GPU; None: no sampling
    host_budget_bytes: Optional[int] = None  # memory new worker processes may use
    host_budget_source: Optional[str] = None
    gil_per_worker_host_bytes: Optional[int] = None  # from the gil probe, when it ran
    gil_per_worker_device_bytes: Optional[int] = None
    early_pool: Any = None  # worker processes started before anything was prepared (start_workers_early)
    serial_prepare_s: Optional[float] = None  # how long building + warming up serial took here
    timelines: Dict[str, dict] = field(default_factory=dict)  # strategy -> idle timeline (CUDA)
    nvml: Optional[dict] = None  # the sampler's result over the whole tournament (CUDA)
    rounds: Optional[dict] = None  # how many timed rounds ran and why they stopped
    load: Optional[dict] = None  # what other programs used of the CPU during the rounds
    pools: List[Any] = field(default_factory=list)  # every worker pool started (their CPU time is ours)
    cpu_limit: Optional[dict] = None  # gpudiag.diagnose.cpu_limit.recorded(platform.cpu_limit()): usable cores

    def own_pids(self) -> List[int]:
        """PIDs of the worker processes alive now: CPU they use is the tournament's, not other load."""
        return [pid for p in self.pools for pid in p.pids]


class Skip(Exception):
    """A strategy that cannot run here; the message is the row's reason."""


def shares(total: int, n: int) -> List[Tuple[int, int]]:
    """Split `total` cycles over n workers as (start, count); the first ones take the remainder."""
    base, extra = divmod(total, n)
    out, start = [], 0
    for i in range(n):
        c = base + (1 if i < extra else 0)
        out.append((start, c))
        start += c
    return out


def even_shares(cycles: int, workers: Sequence[int]) -> int:
    """`cycles` rounded up to a multiple of every worker count tried, so N workers always share the cycles evenly:
    with 13 cycles 2 workers run 7 and 6, and the run waits for the 7 - a 7 % handicap that comes and goes with
    the cycle count, which is sized afresh each run for a --cycle step."""
    step = 1
    for n in workers:
        step = step * n // math.gcd(step, n)
    return max(step, -(-int(cycles) // step) * step)


MIN_RUN_CYCLES = 4  # a slow step (seconds per cycle) still gets a few cycles per worker
MAX_RUN_CYCLES = 20000
SIZING_WINDOW_S = 0.1  # steps timed one by one for this long (at most 50) to size a run


def size_run(loop: "Contestant", plan: Plan) -> int:
    """Cycles per timed run for a --cycle step: as many as fit plan.target_run_s of the prepared, warmed-up plain
    loop, from its fastest single step, at least MIN_RUN_CYCLES, shared evenly by the workers (even_shares).

    `loop` is the plain loop with one intra-op thread where it is timed (the work each worker thread runs; on
    issue 22's step it ran 101-111 cycles/s in every quiet run, while with torch's 2 threads it ran at about 110
    in some runs and 150 in others, which sized the runs at 12 or 16 cycles, and the threads strategy, whose
    handover of the GIL at each run's start and end weighs more in a shorter run, came out 1.50x or 1.27x of
    the plain loop against processes' 1.81x or 1.29x). Called once every strategy is prepared, so nothing of the
    probe's own runs meanwhile: sized earlier, while the worker processes imported torch on both cores, the
    step got 4 cycles instead of 16 in two of five quiet runs; and from the fastest step, not the mean, because a
    moment of load slows some steps, not the step.
    """
    n, start, fastest = 0, time.perf_counter(), float("inf")
    while n < 50 and (n == 0 or time.perf_counter() - start < SIZING_WINDOW_S):
        fastest = min(fastest, loop.step_s())
        n += 1
    cycles = max(MIN_RUN_CYCLES, min(MAX_RUN_CYCLES, int((plan.target_run_s or 0.0) / max(fastest, 1e-6))))
    return even_shares(cycles, plan.workers or [1])


def fit_workers(wanted: int, per_worker_host: Optional[int], host_budget: Optional[int],
                per_worker_device: Optional[int] = None, device_budget: Optional[int] = None) -> Tuple[int, Optional[str]]:
    """How many of `wanted` workers fit, and which memory limited it ("host"/"device"/None)."""
    n, limit = wanted, None
    if per_worker_host and host_budget is not None:
        fit = int(host_budget // per_worker_host)
        if fit < n:
            n, limit = fit, "host"
    if per_worker_device and device_budget is not None:
        fit = int(device_budget // per_worker_device)
        if fit < n:
            n, limit = fit, "device"
    return max(0, n), limit


def _rss() -> int:
    """This process's resident set in bytes: the host memory a contestant's copy costs, reported per row."""
    return psutil.Process().memory_info().rss


def error_where(exc: BaseException) -> str:
    """"Type: message at file:line" of an exception: a failed row names where it broke without carrying a traceback
    (or a home path) into the report."""
    tb = traceback.extract_tb(exc.__traceback__)
    return f"{type(exc).__name__}: {exc}" + (f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "")


# ---------------------------------------------------------------- rows

def empty_row(name: str, status: str, reason: str, workers: Optional[int] = None) -> dict:
    """A report row with every figure None and the status/reason given: skipped and failed strategies keep the
    same keys as measured ones, so views and the schema need no special case."""
    return {"name": name, "status": status, "reason": reason, "workers": workers, "cycles_per_s": None,
            "speedup_vs_serial": None, "spread_fraction": None, "repeats": 0, "cycles": None,
            "torch_threads": None, "gpu_busy_fraction": None, "gpu_busy_reason": reason,
            "nvml_gpu_percent_median": None, "nvml_gpu_percent_reason": reason, "host_rss_bytes": None,
            "peak_device_bytes": None}


def measured_row(name: str, workers: int, cycles: int, walls: Sequence[float], torch_threads: int, **extra) -> dict:
    """A measured row: median cycles/s over the timed runs, their relative spread, the walls in seconds and the
    torch thread count; `extra` adds strategy-specific fields (workers' start-up, memory check...)."""
    rates = [cycles / w for w in walls if w > 0]
    row = empty_row(name, "ok", "", workers)
    row.update({"cycles_per_s": round(stats.median(rates), 3) if rates else None,
                "spread_fraction": None if len(rates) < 2 else round(stats.relative_spread(rates) or 0.0, 4),
                "repeats": len(rates), "cycles": cycles, "wall_s": [round(w, 5) for w in walls],
                "torch_threads": torch_threads, "gpu_busy_reason": None})
    row.update(extra)
    return row


# ---------------------------------------------------------------- contestants

class Contestant:
    """One strategy at one worker count, prepared and ready to be timed.

    `timed(n)` runs n cycles and returns the wall seconds (device work included); `plain(n)` runs
    n cycles untimed (for the profiler). `close()` frees what it holds. `share` < 1 times that share of
    the plan's cycles (at least one) per run, and its rates count those: a contestant that needs no
    long runs (no threads or processes to start) costs the rounds less.
    """

    def __init__(self, name: str, workers: int, torch_threads: int, timed: Callable[[int], float],
                 plain: Optional[Callable[[int], None]] = None, sync: Callable[[], None] = lambda: None,
                 close: Callable[[], None] = lambda: None, events_workload: Any = None,
                 rss_of: Callable[[], int] = _rss, peak_device_of: Optional[Callable[[], Optional[int]]] = None,
                 limits: Optional[dict] = None, share: float = 1.0, **extra):
        self.name, self.workers, self.torch_threads = name, workers, torch_threads
        self.share = share
        self.limits = limits  # {"timeout_s": ...} read by timed() where the work can be abandoned
        self._timed, self.plain, self.sync, self._close, self._rss_of = timed, plain, sync, close, rss_of
        self._peak_device_of = peak_device_of
        self.events_workload = events_workload  # a built-in Workload: CUDA-event timeline fallback
        self.extra = extra
        self.walls: List[float] = []
        self.intervals: List[Tuple[float, float]] = []  # monotonic start/end of each timed run
        self.error: Optional[str] = None
        self.host_rss_bytes: Optional[int] = None
        self.peak_device_bytes: Optional[int] = None
        self.other_cpu_s = 0.0  # CPU other programs used while this contestant was timed
        self.steal_cpu_s = 0.0
        self.load_wall_s = 0.0  # wall time those figures cover
        self.rejected_other_s = 0.0  # the same for rounds taken back because other programs were busy
        self.rejected_wall_s = 0.0

    def once(self, cycles: int, cuda: bool, timeout_s: Optional[float] = None) -> None:
        """One timed run of `cycles` cycles; timeout_s bounds it where the work can be abandoned."""
        import torch

        if self.limits is not None:
            self.limits["timeout_s"] = timeout_s
        torch.set_num_threads(self.torch_threads)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.monotonic()
        self.walls.append(self._timed(self.cycles_run(cycles)))
        self.intervals.append((t0, time.monotonic()))
        if cuda:
            peak = self._peak_device_of() if self._peak_device_of else int(torch.cuda.max_memory_allocated())
            self.peak_device_bytes = max(self.peak_device_bytes or 0, peak or 0) or None
        if self.host_rss_bytes is None:
            self.host_rss_bytes = self._rss_of()

    def step_s(self) -> float:
        """Wall seconds of one untimed cycle with this contestant's threads (sizing a run; not a sample)."""
        import torch

        torch.set_num_threads(self.torch_threads)
        return self._timed(1)

    def cycles_run(self, cycles: int) -> int:
        """Cycles in each of this contestant's timed runs when the plan's runs have `cycles`."""
        return cycles if self.share >= 1 else max(1, round(cycles * self.share))

    def rate(self, cycles: int) -> float:
        """Median cycles/s over this contestant's timed runs (0.0 before any): what ranks contestants and the sweep."""
        rates = self.rates(cycles)
        return stats.median(rates) if rates else 0.0

    def rates(self, cycles: int) -> List[float]:
        """cycles/s of each timed run, in round order."""
        n = self.cycles_run(cycles)
        return [n / w for w in self.walls if w > 0]

    def close(self) -> None:
        """Free what the contestant holds (model copies, worker pool): called once by the tournament after the rounds."""
        self._close()


def _loop_timer(run: Callable[[int], None], sync: Callable[[], None]) -> Callable[[int], float]:
    """A timed(n) for an in-process strategy: wall seconds of n cycles including the final device sync, so queued
    GPU work is counted in the cycle it belongs to."""
    def timed(n: int) -> float:
        """Wall seconds of n cycles of `run`, device work included (perf_counter around run + sync)."""
        t0 = time.perf_counter()
        run(n)
        sync()
        return time.perf_counter() - t0
    return timed


def prepare_serial(spec, plan: Plan, env: Env) -> List[Contestant]:
    """The baseline contestant: the plain loop, one copy, warmed up; every speedup is stated against it.

    Where torch's default gives the loop more than one intra-op thread, the same loop is also timed with one
    (a second contestant on the same copy, `one_thread`): each worker of threads and processes runs with
    default / N threads, so the serial row says what the loop does per thread as well as as it runs. The
    two differ most on a machine where other programs come and go: intra-op threads wait for each other
    at the end of every op, and one of them descheduled stalls them all."""
    w = build(spec)
    w.run_cycles(plan.warmup)
    w.sync()
    out = [Contestant("serial", 1, env.default_threads, _loop_timer(w.run_cycles, w.sync), w.run_cycles, w.sync,
                      w.close, events_workload=w if isinstance(spec, WorkloadSpec) else None)]
    if env.default_threads > 1 and env.device != "cuda":  # on a GPU the host threads barely matter
        # Half the cycles: a plain loop has no threads or processes to start, so a shorter run measures it as well,
        # and the rounds - which the honest intervals need many of - cost less.
        out.append(Contestant("serial", 1, 1, _loop_timer(w.run_cycles, w.sync), None, w.sync, lambda: None,
                              share=0.5, one_thread=True))
    return out


def prepare_deferred_sync(spec: WorkloadSpec, plan: Plan, env: Env) -> List[Contestant]:
    """The deferred_sync contestant: metrics stay on the GPU and are brought to the host every plan.sync_every
    cycles, to measure what the per-cycle `.item()` round trips cost."""
    import torch

    w = build(spec)
    k = plan.sync_every

    def run(n: int) -> None:
        """n cycles with one host sync per `k` of them (and one for the remainder)."""
        pending = []
        for i in range(n):
            pending.append(torch.stack(w.forward_metrics(*w.batch(i))))
            if len(pending) == k:
                w.metrics.extend(tuple(r) for r in torch.stack(pending).tolist())  # the one host sync
                pending.clear()
            host_work(spec.host_work_iters)
        if pending:
            w.metrics.extend(tuple(r) for r in torch.stack(pending).tolist())

    run(plan.warmup)
    w.sync()
    return [Contestant("deferred_sync", 1, env.default_threads, _loop_timer(run, w.sync), run, w.sync, w.close,
                       sync_every=k)]


def prepare_streams(spec: WorkloadSpec, plan: Plan, env: Env) -> List[Contestant]:
    """The streams contestant (forward-only): cycles issued round-robin on plan.streams CUDA streams, to see whether
    overlapping independent cycles fills the GPU's idle gaps; Skip for training cycles, which would race."""
    import torch

    if spec.train:
        raise Skip("training steps update shared weights: cycles on several streams would race; "
                   "measured for forward-only cycles")
    w = build(spec)
    k = plan.streams
    main = torch.cuda.current_stream()
    streams = [torch.cuda.Stream() for _ in range(k)]

    def run(n: int) -> None:
        """n cycles spread over the streams, joined back to the main stream each time `k` are in flight."""
        for s in streams:
            s.wait_stream(main)  # the input pool and weights were made on the main stream
        pending = []
        for i in range(n):
            with torch.cuda.stream(streams[i % k]):
                pending.append(torch.stack(w.forward_metrics(*w.batch(i))))
            host_work(spec.host_work_iters)
            if len(pending) == k or i == n - 1:
                for s in streams:
                    main.wait_stream(s)
                w.metrics.extend(tuple(r) for r in torch.stack(pending).tolist())
                pending.clear()

    run(plan.warmup)
    w.sync()
    return [Contestant("streams", k, env.default_threads, _loop_timer(run, w.sync), run, w.sync, w.close, streams=k)]


def prepare_batched(spec: WorkloadSpec, plan: Plan, env: Env) -> List[Contestant]:
    """The batched contestant: plan.fuse cycles fused into one larger step with one host sync, to measure what
    fewer, bigger launches gain over the same work cycle by cycle."""
    w = build(spec)
    k = plan.fuse

    def run(n: int) -> None:
        """n cycles as fused steps of up to `k` cycles each, host work still paid once per cycle."""
        for i in range(0, n, k):
            m = min(k, n - i)
            values = w.fused_metrics(*w.batch(i, fuse=m), m).tolist()  # one host sync per fused step
            w.metrics.extend(tuple(r) for r in values)
            for _ in range(m):
                host_work(spec.host_work_iters)

    run(max(plan.warmup, k))
    w.sync()
    return [Contestant("batched", 1, env.default_threads, _loop_timer(run, w.sync), run, w.sync, w.close,
                       cycles_per_step=k)]


def prepare_cuda_graph(spec, plan: Plan, env: Env) -> List[Contestant]:
    """Capture one cycle's device work once, replay it per cycle; Skip when capture fails."""
    import torch

    w = build(spec)
    custom = isinstance(spec, CustomSpec)
    if custom:
        # A step that synchronises cannot be captured, and a failed capture is best not tried in
        # the process that measures everything else: ask CUDA's sync debug mode first.
        w.sync()
        torch.cuda.set_sync_debug_mode("error")
        try:
            w.step()
        # The user's step can raise anything; under sync debug mode any failure means it cannot be captured,
        # and that is this strategy's skip, not the tournament's failure.
        except Exception as exc:
            raise Skip("your step() synchronises with the host (e.g. .item(), .cpu(), printing a tensor), so it "
                       f"cannot be captured in a CUDA graph: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}; "
                       "see docs/cycle.md") from None
        finally:
            torch.cuda.set_sync_debug_mode("default")
        w.sync()
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    try:
        if custom:
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture stream, as the CUDA graphs docs ask
                for _ in range(3):
                    w.step()
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(graph):
                w.step()
        else:
            x0, y0 = w.batch(0)
            static_x, static_y = x0.clone(), y0.clone()
            side.wait_stream(torch.cuda.current_stream())  # after the clones, which run on the main stream
            with torch.cuda.stream(side):
                for _ in range(3):
                    w.forward_metrics(static_x, static_y)
            torch.cuda.current_stream().wait_stream(side)
            if spec.train:
                w.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                static_out = w.forward_metrics(static_x, static_y)
        torch.cuda.synchronize()
    # Capture runs the user's (or the built-in) step under stream capture: torch raises RuntimeError for a
    # capture-unsafe op, but user code can raise anything; either way only cuda_graph is skipped.
    except Exception as exc:
        try:
            torch.cuda.synchronize()
        except Exception:  # best-effort drain after the failure being reported below: its error must not replace it
            pass  # the capture's error state; reported through the reason below
        hint = (" (a step that calls .item(), prints a tensor or syncs in another way cannot be captured; "
                "see docs/cycle.md)" if custom else "")
        raise Skip(f"CUDA graph capture failed: {type(exc).__name__}: {exc}{hint}") from None

    if custom:
        def run(n: int) -> None:
            """Replay the captured user step n times (its Python side effects do not run again: reported with the row)."""
            for _ in range(n):
                graph.replay()
    else:
        def run(n: int) -> None:
            """n cycles by graph replay: inputs copied into the static buffers, metrics read back per cycle as the loop does."""
            for i in range(n):
                x, y = w.batch(i)
                static_x.copy_(x)
                static_y.copy_(y)
                graph.replay()
                loss, acc, norm = static_out
                w.metrics.append((loss.item(), acc.item(), norm.item()))
                host_work(spec.host_work_iters)

    run(plan.warmup)
    w.sync()
    extra = {"replays_python_side_effects": False} if custom else {}
    return [Contestant("cuda_graph", 1, env.default_threads, _loop_timer(run, w.sync), run, w.sync, w.close, **extra)]


def _threads_once(team: ThreadTeam, workloads: list, parts: List[Tuple[int, int]],
                  timeout_s: Optional[float] = None) -> float:
    """Run each workload's share in its own thread of the team, all released together; wall seconds."""
    return team.run(lambda w, start, count: w.run_cycles(count, start),
                    [(w, s, c) for w, (s, c) in zip(workloads, parts)], finish=workloads[0].sync, timeout_s=timeout_s)


def prepare_threads(spec, plan: Plan, env: Env) -> List[Contestant]:
    """Per worker count N: N long-lived Python threads (a ThreadTeam, like a thread pool kept across the loop),
    each with its own copy of the workload, sharing the cycles."""
    import torch

    out = []
    for n in plan.workers:
        per = max(1, env.default_threads // n)
        torch.set_num_threads(per)  # before the threads' first torch op: each thread keeps the count it first saw
        workloads = [build(spec) for _ in range(n)]
        team = ThreadTeam(n)
        # Warmed up as they will be timed: side by side, each in its own thread of the team. The first time threads
        # run the step costs more (the allocator's per-thread arenas, thread-local state in torch): warmed up one
        # after another in this thread, the first timed round was the slowest, by up to a third.
        warm = work_timeout(PREPARE_TIMEOUT_MIN_S, env.serial_prepare_s, plan.deadline)
        try:
            _threads_once(team, workloads, [(0, plan.warmup)] * n, warm)
        except BaseException as exc:  # cleanup and re-raise: no team of this strategy outlives its failure
            team.close()
            for c in out:
                c.close()
            if isinstance(exc, TimeoutError):
                raise StrategyTimeout(f"{n} threads did not finish their {plan.warmup} warm-up cycles within "
                                      f"{warm:.0f} s (the step hangs or crawls in worker threads; they cannot be "
                                      "stopped and were left behind)") from None
            raise

        limits: Dict[str, Any] = {}

        def timed(c: int, ws=workloads, team=team, limits=limits) -> float:
            """Wall seconds of c cycles shared over the threads; StrategyTimeout past limits["timeout_s"] (threads that
            hang cannot be killed, so the row fails by name instead of the probe hanging)."""
            limit_s = limits.get("timeout_s")
            try:
                return _threads_once(team, ws, shares(c, len(ws)), limit_s)
            except TimeoutError:
                raise StrategyTimeout(f"{len(ws)} threads did not finish {c} cycles within {limit_s:.0f} s (the step "
                                      "hangs or crawls in worker threads; they cannot be stopped and were left "
                                      "behind)") from None

        def close(ws=workloads, team=team) -> None:
            """End the team's threads and close every thread's workload copy."""
            team.close()
            for w in ws:
                w.close()

        out.append(Contestant("threads", n, per, timed, lambda c, t=timed: t(c), workloads[0].sync, close,
                              limits=limits))
    torch.set_num_threads(env.default_threads)
    return out


# ---------------------------------------------------------------- worker processes

def _fork_when() -> Optional[Callable[[], bool]]:
    """Fork the workers while that is safe (gpudiag.platform.fork_is_safe) when this process came from the start
    server with torch imported (gpudiag.measure.torch_import): they then start without importing it again."""
    from gpudiag import platform
    from gpudiag.measure import torch_import

    return platform.fork_is_safe if torch_import.record() is not None else None


def start_pool(n: int, initializer: Callable, initargs: Sequence = ()):
    """Start n long-lived worker processes (the `gil` probe's pool) and wait until each ran `initializer`."""
    return WorkerPool(n, initializer=initializer, initargs=initargs, fork_when=_fork_when())


# Worker-side functions: module level, so spawned workers can import them.
_STATE: Dict[str, Any] = {}


def _worker_init() -> dict:
    """Paid once per worker: import torch (what start-up costs a ProcessPoolExecutor too)."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    return {"import_torch_s": round(time.perf_counter() - t0, 4), "rss_bytes": _rss()}


def _worker_prepare(spec, warmup: int) -> dict:
    """Worker side: build and warm up this worker's copy of the workload (replacing any earlier one); its RSS and
    reserved device bytes, which decide how many workers fit."""
    import torch

    old = _STATE.pop("w", None)
    if old is not None:
        old.close()
    w = build(spec)
    w.run_cycles(warmup)
    w.sync()
    _STATE["w"] = w
    dev = None
    if getattr(spec, "device", "cpu") == "cuda":
        torch.cuda.reset_peak_memory_stats()
        dev = int(torch.cuda.memory_reserved())
    return {"rss_bytes": _rss(), "device_reserved_bytes": dev}


def _worker_run(start: int, count: int, torch_threads: int) -> dict:
    """Worker side: run this worker's share of the cycles; its RSS and peak allocated device bytes for the row."""
    import torch

    torch.set_num_threads(torch_threads)
    w = _STATE["w"]
    w.run_cycles(count, start)
    w.sync()
    dev = None
    if str(getattr(w, "device", "cpu")).startswith("cuda"):
        dev = int(torch.cuda.max_memory_allocated())
    return {"rss_bytes": _rss(), "peak_device_bytes": dev}


def _free_device_bytes() -> Optional[int]:
    """Free device memory in bytes now (torch.cuda.mem_get_info): measured before and after one worker prepares,
    to know what a worker context really takes."""
    import torch

    return int(torch.cuda.mem_get_info()[0])


def _host_per_worker(spec, env: Env) -> Tuple[int, str]:
    """Host bytes one worker process will take, and where the figure came from."""
    work_bytes = spec.estimated_bytes() if isinstance(spec, WorkloadSpec) else 0
    if env.gil_per_worker_host_bytes:
        return env.gil_per_worker_host_bytes + work_bytes, "gil probe"
    return CONSERVATIVE_HOST_BYTES_PER_WORKER, "conservative default"


def start_workers_early(wanted: int, host_budget: Optional[int], gil_per_worker_host_bytes: Optional[int],
                        slack_bytes: int = 256 * 2**20) -> Optional[WorkerPool]:
    """Start `wanted` worker processes now, without waiting, when they surely fit in host memory.

    Called before the probe imports torch and prepares the in-process strategies, so the workers'
    own torch import runs meanwhile. Surely fit: the gil probe's per-worker figure (plus slack for
    the workload copy) or the conservative default, times `wanted`, within the host budget. Else
    None, and prepare_processes takes the careful path (one worker measured first).
    """
    per = (gil_per_worker_host_bytes + slack_bytes) if gil_per_worker_host_bytes else CONSERVATIVE_HOST_BYTES_PER_WORKER
    if wanted < 2 or host_budget is None or fit_workers(wanted, per, host_budget)[0] < wanted:
        return None
    pool = WorkerPool(0, initializer=_worker_init, fork_when=_fork_when())
    pool.start(wanted)
    return pool


def work_timeout(floor_s: float, took_s: Optional[float], deadline: Optional[float]) -> float:
    """A deadline for work in workers: TIMEOUT_FACTOR x what it took here (at least floor_s), within the probe's."""
    t = max(floor_s, TIMEOUT_FACTOR * took_s) if took_s else floor_s
    if deadline is not None:
        t = min(t, max(1.0, deadline - time.monotonic()))
    return t


class StrategyTimeout(RuntimeError):
    """Work inside worker processes or threads did not finish within its deadline."""


def prepare_processes(spec, plan: Plan, env: Env) -> List[Contestant]:
    """Per worker count N: N spawned processes (each its own CUDA context) sharing the cycles.

    Memory is checked before launch: per-worker figures from the gil probe when it ran; else a
    conservative default decides whether all can start at once, or one is started and measured
    first. Start-up is timed on its own and excluded from the rates. Workers started early
    (env.early_pool) are used when there are enough of them.
    """
    wanted = max(plan.workers)
    cuda = env.device == "cuda"
    dev_free = _free_device_bytes() if cuda else None
    dev_budget = int(dev_free * DEVICE_FREE_FRACTION) if cuda else None
    work_bytes = spec.estimated_bytes() if isinstance(spec, WorkloadSpec) else 0
    check: Dict[str, Any] = {"wanted": wanted, "budget_host_bytes": env.host_budget_bytes,
                             "budget_host_source": env.host_budget_source, "budget_device_bytes": dev_budget}
    per_host, source = _host_per_worker(spec, env)
    if source == "gil probe":
        per_dev = (env.gil_per_worker_device_bytes + work_bytes) if (cuda and env.gil_per_worker_device_bytes) else None
    else:
        per_dev = CONSERVATIVE_DEVICE_BYTES_PER_WORKER if cuda else None
    n, limit = fit_workers(wanted, per_host, env.host_budget_bytes, per_dev, dev_budget)
    t0 = time.perf_counter()
    pool = env.early_pool
    env.early_pool = None  # from here on this function owns it
    prepare_timeout = work_timeout(PREPARE_TIMEOUT_MIN_S, env.serial_prepare_s, plan.deadline)
    try:
        if pool is not None:
            pool.wait_ready(timeout_s=work_timeout(120.0, None, plan.deadline))
        elif n < wanted and source == "conservative default":
            # Not sure they fit: start one, measure what it really takes, then decide.
            pool = start_pool(1, _worker_init)
            env.pools.append(pool)
            per_host = pool.run_all(_worker_prepare, [(spec, plan.warmup)], timeout_s=prepare_timeout)[0]["rss_bytes"]
            if cuda:
                per_dev = max(1, dev_free - _free_device_bytes())
            source = "measured (one worker)"
            n, limit = fit_workers(wanted, per_host, env.host_budget_bytes, per_dev, dev_budget)
        check.update({"per_worker_host_bytes": per_host, "per_worker_device_bytes": per_dev, "source": source,
                      "fits": n, "limited_by": limit})
        if n < 2:
            per, room = (per_host, env.host_budget_bytes) if limit == "host" else (per_dev, dev_budget)
            raise Skip(f"only {n} worker process(es) fit in memory ({limit}: "
                       f"{fmt_bytes(per or None, missing='unknown')} per worker, "
                       f"{fmt_bytes(room or None, missing='unknown')} available)")
        if pool is None:
            pool = start_pool(n, _worker_init)
        elif pool.size < n:
            pool.grow(n)
        if pool not in env.pools:
            env.pools.append(pool)
        startup_s = time.perf_counter() - t0
        n = min(n, pool.size)
        prep = pool.run_all(_worker_prepare, [(spec, plan.warmup)] * n, timeout_s=prepare_timeout)
    except WorkerTimeout as exc:
        if pool is not None:
            pool.close()
        raise StrategyTimeout(f"the worker processes did not finish starting and preparing the step within "
                              f"{prepare_timeout:.0f} s (building it and {plan.warmup} warm-up cycles"
                              + (f"; the same took {env.serial_prepare_s:.2f} s in the probe" if env.serial_prepare_s
                                 else "") + f"): {exc}") from None
    except BaseException as exc:  # cleanup and re-raise: workers must not outlive any failure, Ctrl-C included
        if pool is not None:
            pool.close()
        if isinstance(exc, Skip):
            exc.memory_check = check  # type: ignore[attr-defined]
        raise
    worker_startup = [dict(s or {}, **(i or {})) for s, i in zip(pool.startup, pool.init_results)]
    counts = [c for c in plan.workers if c <= n] or [n]
    return _process_contestants(pool, counts, env.default_threads, round(startup_s, 4), dict(
        worker_startup=worker_startup, memory_check=check, worker_prepare_rss_bytes=[p["rss_bytes"] for p in prep]))


def _process_contestants(pool: WorkerPool, counts: List[int], default_threads: int, startup_s: float,
                         extra: Dict[str, Any]) -> List[Contestant]:
    """One `processes` contestant per worker count, all sharing the prepared pool (closed with the last of them);
    `extra` goes into every row."""
    out = []
    closers = {"left": len(counts)}

    def close() -> None:  # the pool is shared by the contestants: closed after the last one
        """Close the shared worker pool once the last contestant using it is closed."""
        closers["left"] -= 1
        if closers["left"] <= 0:
            pool.close()

    for k in counts:
        per = max(1, default_threads // k)
        last: Dict[str, list] = {}
        limits: Dict[str, Any] = {}

        def timed(c: int, k=k, per=per, last=last, limits=limits) -> float:
            """Wall seconds of c cycles shared over k worker processes; StrategyTimeout past limits["timeout_s"] (the
            pool stops the workers); keeps the workers' figures for rss() and peak()."""
            limit_s = limits.get("timeout_s")
            try:
                t = pool.run_timed(_worker_run, [(s, cnt, per) for s, cnt in shares(c, k)], timeout_s=limit_s)
            except WorkerTimeout:
                raise StrategyTimeout(f"{k} worker processes did not finish {c} cycles within {limit_s:.0f} s "
                                      "(the step hangs or crawls inside worker processes; they were stopped)") from None
            last["values"] = t.values
            return t.wall_s

        def rss(last=last) -> int:
            """Sum of the workers' RSS in bytes after the last timed run: what this contestant costs in host memory."""
            return sum(v["rss_bytes"] for v in last.get("values", []))

        def peak(last=last) -> Optional[int]:
            """Sum of the workers' peak allocated device bytes in the last timed run, None where none reported one."""
            vals = [v["peak_device_bytes"] for v in last.get("values", []) if v.get("peak_device_bytes")]
            return sum(vals) if vals else None

        out.append(Contestant("processes", k, per, timed, None, lambda: None, close, rss_of=rss, peak_device_of=peak,
                              limits=limits, startup_s=startup_s, **extra))
    return out


PREPARE = {"serial": prepare_serial, "deferred_sync": prepare_deferred_sync, "cuda_graph": prepare_cuda_graph,
           "streams": prepare_streams, "batched": prepare_batched, "threads": prepare_threads,
           "processes": prepare_processes}
# Preparation order: cuda_graph after the other in-process ones (a capture that fails should not
# be the last thing the others' set-up saw), processes last (separate contexts).
PREPARE_ORDER = ("serial", "deferred_sync", "streams", "batched", "threads", "cuda_graph", "processes")
