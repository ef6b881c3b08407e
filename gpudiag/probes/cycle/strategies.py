"""The strategy tournament: each strategy runs the same number of cycles; rows per the contract.

Strategies: serial (the baseline), deferred_sync, cuda_graph, streams (CUDA only), batched,
threads, processes. Each is first *prepared* (model built, warmed up, graph captured, workers
started) into one or more contestants (threads and processes: one per worker count tried); then
the timed repeats run round-robin over all contestants, so a burst of load from elsewhere on the
machine hits every strategy alike instead of whichever ran at that moment. A row reports the
median rate over repeats and its spread. A strategy that cannot run here is a `skipped` row with
the reason; one that breaks is a `failed` row, and the others are still measured.

Processes run in long-lived spawned workers: start-up (spawn + import torch) is paid once,
measured, and excluded from cycles_per_s. The pool is `gpudiag.measure.workers.WorkerPool`,
reached through `start_pool`.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import psutil

from gpudiag.measure import stats
from gpudiag.measure.workers import WorkerPool, run_threads
from gpudiag.probes.cycle import profiling, timeline
from gpudiag.probes.cycle.workload import CustomLoopError, CustomSpec, WorkloadSpec, build, host_work

STRATEGIES = ("serial", "deferred_sync", "cuda_graph", "streams", "batched", "threads", "processes")
CUDA_ONLY = ("deferred_sync", "cuda_graph", "streams")
CUSTOM_STRATEGIES = ("serial", "cuda_graph", "threads", "processes")
# Used only to decide whether N workers can start at once before one has been measured.
CONSERVATIVE_HOST_BYTES_PER_WORKER = 2 * 2**30
CONSERVATIVE_DEVICE_BYTES_PER_WORKER = 1 * 2**30
DEVICE_FREE_FRACTION = 0.8  # of free device memory new worker contexts may take
CPU_REASON = "no CUDA device: the workload ran on the CPU"


@dataclass
class Plan:
    """How much to measure (from --quick/--full and the machine)."""

    cycles: int  # per repeat, the same for every strategy
    warmup: int
    repeats: int
    workers: List[int]  # worker counts tried for threads and processes (best one reported)
    fuse: int  # batched: cycles per fused step
    sync_every: int  # deferred_sync: cycles between host syncs
    streams: int  # streams: cycles in flight
    profile_cycles: int  # cycles under torch.profiler for the idle timeline (CUDA)


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
    timelines: Dict[str, dict] = field(default_factory=dict)  # strategy -> idle timeline (CUDA)
    nvml: Optional[dict] = None  # the sampler's result over the whole tournament (CUDA)


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
    return psutil.Process().memory_info().rss


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    return f"{type(exc).__name__}: {exc}" + (f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "")


# ---------------------------------------------------------------- rows

def empty_row(name: str, status: str, reason: str, workers: Optional[int] = None) -> dict:
    return {"name": name, "status": status, "reason": reason, "workers": workers, "cycles_per_s": None,
            "speedup_vs_serial": None, "spread_fraction": None, "repeats": 0, "cycles": None,
            "torch_threads": None, "gpu_busy_fraction": None, "gpu_busy_reason": reason,
            "nvml_gpu_percent_median": None, "host_rss_bytes": None, "peak_device_bytes": None}


def measured_row(name: str, workers: int, cycles: int, walls: Sequence[float], torch_threads: int, **extra) -> dict:
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
    n cycles untimed (for the profiler). `close()` frees what it holds.
    """

    def __init__(self, name: str, workers: int, torch_threads: int, timed: Callable[[int], float],
                 plain: Optional[Callable[[int], None]] = None, sync: Callable[[], None] = lambda: None,
                 close: Callable[[], None] = lambda: None, events_workload: Any = None,
                 rss_of: Callable[[], int] = _rss, peak_device_of: Optional[Callable[[], Optional[int]]] = None,
                 **extra):
        self.name, self.workers, self.torch_threads = name, workers, torch_threads
        self._timed, self.plain, self.sync, self._close, self._rss_of = timed, plain, sync, close, rss_of
        self._peak_device_of = peak_device_of
        self.events_workload = events_workload  # a built-in Workload: CUDA-event timeline fallback
        self.extra = extra
        self.walls: List[float] = []
        self.intervals: List[Tuple[float, float]] = []  # monotonic start/end of each timed run
        self.error: Optional[str] = None
        self.host_rss_bytes: Optional[int] = None
        self.peak_device_bytes: Optional[int] = None

    def once(self, cycles: int, cuda: bool) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.monotonic()
        self.walls.append(self._timed(cycles))
        self.intervals.append((t0, time.monotonic()))
        if cuda:
            peak = self._peak_device_of() if self._peak_device_of else int(torch.cuda.max_memory_allocated())
            self.peak_device_bytes = max(self.peak_device_bytes or 0, peak or 0) or None
        if self.host_rss_bytes is None:
            self.host_rss_bytes = self._rss_of()

    def rate(self, cycles: int) -> float:
        rates = [cycles / w for w in self.walls if w > 0]
        return stats.median(rates) if rates else 0.0

    def close(self) -> None:
        self._close()


def _loop_timer(run: Callable[[int], None], sync: Callable[[], None]) -> Callable[[int], float]:
    def timed(n: int) -> float:
        t0 = time.perf_counter()
        run(n)
        sync()
        return time.perf_counter() - t0
    return timed


def prepare_serial(spec, plan: Plan, env: Env) -> List[Contestant]:
    w = build(spec)
    w.run_cycles(plan.warmup)
    w.sync()
    return [Contestant("serial", 1, env.default_threads, _loop_timer(w.run_cycles, w.sync), w.run_cycles, w.sync,
                       w.close, events_workload=w if isinstance(spec, WorkloadSpec) else None)]


def prepare_deferred_sync(spec: WorkloadSpec, plan: Plan, env: Env) -> List[Contestant]:
    import torch

    w = build(spec)
    k = plan.sync_every

    def run(n: int) -> None:
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
    import torch

    if spec.train:
        raise Skip("training steps update shared weights: cycles on several streams would race; "
                   "measured for forward-only cycles")
    w = build(spec)
    k = plan.streams
    main = torch.cuda.current_stream()
    streams = [torch.cuda.Stream() for _ in range(k)]

    def run(n: int) -> None:
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
    w = build(spec)
    k = plan.fuse

    def run(n: int) -> None:
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
    except Exception as exc:
        try:
            torch.cuda.synchronize()
        except Exception:
            pass  # the capture's error state; reported through the reason below
        hint = (" (a step that calls .item(), prints a tensor or syncs in another way cannot be captured; "
                "see docs/cycle.md)" if custom else "")
        raise Skip(f"CUDA graph capture failed: {type(exc).__name__}: {exc}{hint}") from None

    if custom:
        def run(n: int) -> None:
            for _ in range(n):
                graph.replay()
    else:
        def run(n: int) -> None:
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


def _threads_once(workloads: list, parts: List[Tuple[int, int]]) -> float:
    """Run each workload's share in its own thread, all released together; wall seconds."""
    return run_threads(lambda w, start, count: w.run_cycles(count, start),
                       [(w, s, c) for w, (s, c) in zip(workloads, parts)], finish=workloads[0].sync)


def prepare_threads(spec, plan: Plan, env: Env) -> List[Contestant]:
    """Per worker count N: N Python threads, each with its own copy of the workload, sharing the cycles."""
    import torch

    out = []
    for n in plan.workers:
        per = max(1, env.default_threads // n)
        torch.set_num_threads(per)
        workloads = [build(spec) for _ in range(n)]
        for w in workloads:
            w.run_cycles(plan.warmup)
        workloads[0].sync()

        def timed(c: int, ws=workloads) -> float:
            return _threads_once(ws, shares(c, len(ws)))

        def close(ws=workloads) -> None:
            for w in ws:
                w.close()

        out.append(Contestant("threads", n, per, timed, lambda c, t=timed: t(c), workloads[0].sync, close))
    torch.set_num_threads(env.default_threads)
    return out


# ---------------------------------------------------------------- worker processes

def start_pool(n: int, initializer: Callable, initargs: Sequence = ()):
    """Start n long-lived spawned workers (the `gil` probe's pool) and wait until each ran `initializer`."""
    return WorkerPool(n, initializer=initializer, initargs=initargs)


# Worker-side functions: module level, so spawned workers can import them.
_STATE: Dict[str, Any] = {}


def _worker_init() -> dict:
    """Paid once per worker: import torch (what start-up costs a ProcessPoolExecutor too)."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    return {"import_torch_s": round(time.perf_counter() - t0, 4), "rss_bytes": _rss()}


def _worker_prepare(spec, warmup: int) -> dict:
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
    import torch

    return int(torch.cuda.mem_get_info()[0])


def _gib(n: Optional[float]) -> str:
    return "unknown" if not n else f"{n / 2**30:.2f} GiB"


def prepare_processes(spec, plan: Plan, env: Env) -> List[Contestant]:
    """Per worker count N: N spawned processes (each its own CUDA context) sharing the cycles.

    Memory is checked before launch: per-worker figures from the gil probe when it ran; else a
    conservative default decides whether all can start at once, or one is started and measured
    first. Start-up is timed on its own and excluded from the rates.
    """
    wanted = max(plan.workers)
    cuda = env.device == "cuda"
    dev_free = _free_device_bytes() if cuda else None
    dev_budget = int(dev_free * DEVICE_FREE_FRACTION) if cuda else None
    work_bytes = spec.estimated_bytes() if isinstance(spec, WorkloadSpec) else 0
    check: Dict[str, Any] = {"wanted": wanted, "budget_host_bytes": env.host_budget_bytes,
                             "budget_host_source": env.host_budget_source, "budget_device_bytes": dev_budget}
    if env.gil_per_worker_host_bytes:
        per_host = env.gil_per_worker_host_bytes + work_bytes
        per_dev = (env.gil_per_worker_device_bytes + work_bytes) if (cuda and env.gil_per_worker_device_bytes) else None
        source = "gil probe"
    else:
        per_host, per_dev = CONSERVATIVE_HOST_BYTES_PER_WORKER, (CONSERVATIVE_DEVICE_BYTES_PER_WORKER if cuda else None)
        source = "conservative default"
    n, limit = fit_workers(wanted, per_host, env.host_budget_bytes, per_dev, dev_budget)
    t0 = time.perf_counter()
    pool = None
    try:
        if n < wanted and source == "conservative default":
            # Not sure they fit: start one, measure what it really takes, then decide.
            pool = start_pool(1, _worker_init)
            per_host = pool.run_all(_worker_prepare, [(spec, plan.warmup)])[0]["rss_bytes"]
            if cuda:
                per_dev = max(1, dev_free - _free_device_bytes())
            source = "measured (one worker)"
            n, limit = fit_workers(wanted, per_host, env.host_budget_bytes, per_dev, dev_budget)
        check.update({"per_worker_host_bytes": per_host, "per_worker_device_bytes": per_dev, "source": source,
                      "fits": n, "limited_by": limit})
        if n < 2:
            raise Skip(f"only {n} worker process(es) fit in memory ({limit}: "
                       f"{_gib(per_host if limit == 'host' else per_dev)} per worker, "
                       f"{_gib(env.host_budget_bytes if limit == 'host' else dev_budget)} available)")
        if pool is None:
            pool = start_pool(n, _worker_init)
        else:
            pool.grow(n)
        startup_s = time.perf_counter() - t0
        prep = pool.run_all(_worker_prepare, [(spec, plan.warmup)] * n)
    except BaseException as exc:
        if pool is not None:
            pool.close()
        if isinstance(exc, Skip):
            exc.memory_check = check  # type: ignore[attr-defined]
        raise
    worker_startup = [dict(s or {}, **(i or {})) for s, i in zip(pool.startup, pool.init_results)]
    counts = [c for c in plan.workers if c <= n] or [n]
    out = []
    closers = {"left": len(counts)}

    def close() -> None:  # the pool is shared by the contestants: closed after the last one
        closers["left"] -= 1
        if closers["left"] <= 0:
            pool.close()

    for k in counts:
        per = max(1, env.default_threads // k)
        last: Dict[str, list] = {}

        def timed(c: int, k=k, per=per, last=last) -> float:
            t = pool.run_timed(_worker_run, [(s, cnt, per) for s, cnt in shares(c, k)])
            last["values"] = t.values
            return t.wall_s

        def rss(last=last) -> int:
            return sum(v["rss_bytes"] for v in last.get("values", []))

        def peak(last=last) -> Optional[int]:
            vals = [v["peak_device_bytes"] for v in last.get("values", []) if v.get("peak_device_bytes")]
            return sum(vals) if vals else None

        out.append(Contestant("processes", k, per, timed, None, lambda: None, close, rss_of=rss, peak_device_of=peak,
                              startup_s=round(startup_s, 4), worker_startup=worker_startup, memory_check=check,
                              worker_prepare_rss_bytes=[p["rss_bytes"] for p in prep]))
    return out


# ---------------------------------------------------------------- GPU timeline of one contestant

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
    except Exception as exc:  # the timeline is an extra: its failure must not lose the measurement
        return timeline.empty_timeline(None, f"profiling failed: {_where(exc)}")


# ---------------------------------------------------------------- the tournament

PREPARE = {"serial": prepare_serial, "deferred_sync": prepare_deferred_sync, "cuda_graph": prepare_cuda_graph,
           "streams": prepare_streams, "batched": prepare_batched, "threads": prepare_threads,
           "processes": prepare_processes}
# Preparation order: cuda_graph after the other in-process ones (a capture that fails should not
# be the last thing the others' set-up saw), processes last (separate contexts).
PREPARE_ORDER = ("serial", "deferred_sync", "streams", "batched", "threads", "cuda_graph", "processes")


def _nvml_median(c: Contestant, samples: Sequence[dict], t0: float) -> Optional[float]:
    inside = [s["gpu_percent"] for s in samples
              if any(a - t0 <= s["t_s"] <= b - t0 for a, b in c.intervals)]
    return stats.median(inside) if inside else None


def _row_for(name: str, group: List[Contestant], plan: Plan, env: Env, samples, t0: float) -> dict:
    ok = [c for c in group if c.error is None and c.walls]
    if not ok:
        return empty_row(name, "failed", next((c.error for c in group if c.error), "no timed run finished"))
    best = max(ok, key=lambda c: c.rate(plan.cycles))
    row = measured_row(name, best.workers, plan.cycles, best.walls, best.torch_threads,
                       host_rss_bytes=best.host_rss_bytes,
                       peak_device_bytes=best.peak_device_bytes if env.device == "cuda" else None, **best.extra)
    if name in ("threads", "processes"):
        row["sweep"] = [{"workers": c.workers, "cycles_per_s": round(c.rate(plan.cycles), 3) if c.walls else None,
                         "torch_threads": c.torch_threads, "status": "ok" if c.error is None else "failed",
                         "reason": c.error or ""} for c in group]
    if env.device != "cuda":
        row.update(gpu_busy_fraction=None, gpu_busy_reason=CPU_REASON, nvml_gpu_percent_median=None)
    else:
        tl = env.timelines.get(name) or {}
        row["gpu_busy_fraction"] = tl.get("busy_fraction")
        row["gpu_busy_reason"] = None if tl.get("busy_fraction") is not None else (tl.get("reason") or "not profiled")
        row["nvml_gpu_percent_median"] = _nvml_median(best, samples, t0)
    return row


def run_tournament(spec, plan: Plan, env: Env) -> List[dict]:
    """Every strategy's row, in STRATEGIES order, with speedup_vs_serial filled in.

    serial failing fails the tournament (nothing to compare against); any other strategy failing
    becomes a `failed` row.
    """
    custom = isinstance(spec, CustomSpec)
    cuda = env.device == "cuda"
    rows: Dict[str, dict] = {}
    groups: Dict[str, List[Contestant]] = {}
    try:
        for name in PREPARE_ORDER:
            if not cuda and name in CUDA_ONLY:
                rows[name] = empty_row(name, "skipped", "needs a CUDA device: this machine ran the workload on the CPU")
                continue
            if custom and name not in CUSTOM_STRATEGIES:
                rows[name] = empty_row(name, "skipped", "needs the built-in workload: gpudiag cannot fuse cycles or "
                                                        "defer the syncs inside your own step")
                continue
            if name == "serial":
                groups[name] = PREPARE[name](spec, plan, env)
                continue
            try:
                groups[name] = PREPARE[name](spec, plan, env)
            except Skip as exc:
                rows[name] = empty_row(name, "skipped", str(exc))
                if hasattr(exc, "memory_check"):
                    rows[name]["memory_check"] = exc.memory_check
            except CustomLoopError:
                raise
            except Exception as exc:  # one strategy breaking must not lose the others' measurements
                rows[name] = empty_row(name, "failed", _where(exc))

        sampler = timeline.UtilizationSampler(env.nvml_locate).start() if (cuda and env.nvml_locate is not None) else None
        t0 = sampler.t0 if sampler is not None else 0.0
        try:
            for _ in range(plan.repeats):  # round-robin: load from elsewhere hits every strategy alike
                for name, group in groups.items():
                    for c in group:
                        if c.error is not None:
                            continue
                        try:
                            c.once(plan.cycles, cuda)
                        except CustomLoopError:
                            raise
                        except Exception as exc:
                            if name == "serial":
                                raise
                            c.error = _where(exc)
        finally:
            env.nvml = sampler.stop() if sampler is not None else None
        samples = (env.nvml or {}).get("samples", [])
        for smp in samples:  # which strategy was running when NVML took each sample
            smp["strategy"] = next((c.name for g in groups.values() for c in g
                                    if any(a - t0 <= smp["t_s"] <= b - t0 for a, b in c.intervals)), None)

        if cuda:
            for name, group in groups.items():
                ok = [c for c in group if c.error is None and c.walls]
                if ok:
                    best = max(ok, key=lambda c: c.rate(plan.cycles))
                    env.timelines[name] = record_timeline(best, env, plan.profile_cycles)
        for name, group in groups.items():
            rows[name] = _row_for(name, group, plan, env, samples, t0)
    finally:
        for group in groups.values():
            for c in group:
                try:
                    c.close()
                except Exception:  # freeing a copy must not hide the measurement or the real error
                    pass
    base = rows["serial"]["cycles_per_s"]
    for r in rows.values():
        if r["cycles_per_s"] and base:
            r["speedup_vs_serial"] = round(r["cycles_per_s"] / base, 3)
    return [rows[n] for n in STRATEGIES]


def winner(rows: Sequence[dict]) -> Optional[dict]:
    ok = [r for r in rows if r["status"] == "ok" and r.get("cycles_per_s")]
    return max(ok, key=lambda r: r["cycles_per_s"]) if ok else None
