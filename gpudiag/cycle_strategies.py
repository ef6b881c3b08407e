"""The strategy tournament: each strategy runs the same number of cycles; rows per the contract.

Strategies: serial (the baseline), deferred_sync, cuda_graph, streams (CUDA only), batched,
threads, processes. Each measurement is warmed up, repeated, and reported as the median rate with
its spread. A strategy that cannot run here is a `skipped` row with the reason; one that breaks
is a `failed` row, and the others are still measured.

Processes run in long-lived spawned workers (start-up, i.e. spawn + import torch, is paid once,
measured, and excluded from cycles_per_s). The pool is reached through one seam, `start_pool`:
`_LocalPool` mirrors the subset of `gpudiag.workers.WorkerPool` used here (grow, startup,
run_all, run_timed, close), so swapping it in is a one-line change.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import psutil

from gpudiag import stats, timeline
from gpudiag.cycle_workload import CustomLoopError, CustomSpec, WorkloadSpec, build, host_work

STRATEGIES = ("serial", "deferred_sync", "cuda_graph", "streams", "batched", "threads", "processes")
CUDA_ONLY = ("deferred_sync", "cuda_graph", "streams")
CUSTOM_STRATEGIES = ("serial", "cuda_graph", "threads", "processes")
# Used only to decide whether N workers can start at once before one has been measured.
CONSERVATIVE_HOST_BYTES_PER_WORKER = 2 * 2**30
CONSERVATIVE_DEVICE_BYTES_PER_WORKER = 1 * 2**30
DEVICE_FREE_FRACTION = 0.8  # of free device memory new worker contexts may take


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
    """Facts about this machine the strategies need."""

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
    nvml: Dict[str, dict] = field(default_factory=dict)  # strategy -> sampler result (CUDA)


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


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _timed(fn: Callable[[], None], sync: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


class _Measure:
    """Repeats a run of plan.cycles cycles, with NVML sampling around it on CUDA."""

    def __init__(self, name: str, plan: Plan, env: Env):
        self.name, self.plan, self.env = name, plan, env

    def repeat(self, run_once: Callable[[], float]) -> List[float]:
        sampler = None
        if self.env.device == "cuda" and self.env.nvml_locate is not None:
            sampler = timeline.UtilizationSampler(self.env.nvml_locate).start()
        try:
            return [run_once() for _ in range(self.plan.repeats)]
        finally:
            if sampler is not None:
                self.env.nvml[self.name] = sampler.stop()


def _gpu_extras(name: str, env: Env) -> dict:
    """gpu_busy_fraction and the NVML median for a row, from what was recorded for it."""
    if env.device != "cuda":
        return {"gpu_busy_fraction": None, "gpu_busy_reason": "no CUDA device: the workload ran on the CPU",
                "nvml_gpu_percent_median": None}
    tl = env.timelines.get(name)
    nv = env.nvml.get(name) or {}
    busy = tl.get("busy_fraction") if tl else None
    why = None if busy is not None else ((tl or {}).get("reason") or "not profiled")
    return {"gpu_busy_fraction": busy, "gpu_busy_reason": why, "nvml_gpu_percent_median": nv.get("median_percent")}


def _peak_device(env: Env) -> Optional[int]:
    if env.device != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


def _reset_peak(env: Env) -> None:
    if env.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------- GPU timeline of one strategy

def profile_timeline(run: Callable[[], None], sync: Callable[[], None], env: Env, cycles: int) -> dict:
    """The idle timeline of `run` (which runs `cycles` cycles), with torch.profiler kernel events."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    if not env.profiler_cuda:
        return timeline.empty_timeline(None, env.profiler_reason or "torch.profiler has no CUDA activity here")
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("gpudiag_window"):
            run()
            sync()
    fd, path = tempfile.mkstemp(prefix="gpudiag-trace-", suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as fh:
            events = json.load(fh).get("traceEvents", [])
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    window = None
    for ev in events:
        if ev.get("name") == "gpudiag_window" and str(ev.get("cat", "")).lower() == "user_annotation":
            window = (float(ev["ts"]), float(ev["ts"]) + float(ev.get("dur", 0.0)))
            break
    del torch
    return timeline.analyze_trace(events, window_us=window, cycles=cycles)


def events_timeline(w, cycles: int) -> dict:
    """Serial cycles timed with CUDA events around each cycle's device work (profiler fallback)."""
    import torch

    starts, ends = [], []
    w.sync()
    t0 = time.perf_counter()
    for i in range(cycles):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        loss, acc, norm = w.forward_metrics(*w.batch(i))
        e.record()
        w.metrics.append((loss.item(), acc.item(), norm.item()))
        host_work(w.spec.host_work_iters)
        starts.append(s)
        ends.append(e)
    w.sync()
    wall_ms = (time.perf_counter() - t0) * 1000.0
    steps = [(starts[0].elapsed_time(s), starts[0].elapsed_time(e)) for s, e in zip(starts, ends)]
    return timeline.analyze_step_events(steps, wall_ms, cycles=cycles)


def _record_timeline(name: str, env: Env, w, run: Callable[[], None], sync: Callable[[], None], cycles: int) -> None:
    """Profile one more run of a strategy, after its timed repeats (profiling slows it down)."""
    if env.device != "cuda":
        return
    try:
        if env.profiler_cuda:
            env.timelines[name] = profile_timeline(run, sync, env, cycles)
        elif name == "serial" and hasattr(w, "forward_metrics"):
            env.timelines[name] = events_timeline(w, cycles)
        else:
            env.timelines[name] = timeline.empty_timeline(
                None, f"{env.profiler_reason}; CUDA-event timing is done for serial only")
    except Exception as exc:  # the timeline is an extra: its failure must not lose the measurement
        env.timelines[name] = timeline.empty_timeline(None, f"profiling failed: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- in-process strategies

def run_serial(spec, plan: Plan, env: Env) -> dict:
    import torch

    torch.set_num_threads(env.default_threads)
    w = build(spec)
    w.run_cycles(plan.warmup)
    w.sync()
    _reset_peak(env)
    walls = _Measure("serial", plan, env).repeat(lambda: _timed(lambda: w.run_cycles(plan.cycles), w.sync))
    peak = _peak_device(env)
    _record_timeline("serial", env, w, lambda: w.run_cycles(plan.profile_cycles), w.sync, plan.profile_cycles)
    w.close()
    return measured_row("serial", 1, plan.cycles, walls, env.default_threads, host_rss_bytes=_rss(),
                        peak_device_bytes=peak, **_gpu_extras("serial", env))


def run_deferred_sync(spec: WorkloadSpec, plan: Plan, env: Env) -> dict:
    import torch

    torch.set_num_threads(env.default_threads)
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
    _reset_peak(env)
    walls = _Measure("deferred_sync", plan, env).repeat(lambda: _timed(lambda: run(plan.cycles), w.sync))
    peak = _peak_device(env)
    _record_timeline("deferred_sync", env, w, lambda: run(plan.profile_cycles), w.sync, plan.profile_cycles)
    return measured_row("deferred_sync", 1, plan.cycles, walls, env.default_threads, sync_every=k,
                        host_rss_bytes=_rss(), peak_device_bytes=peak, **_gpu_extras("deferred_sync", env))


def run_streams(spec: WorkloadSpec, plan: Plan, env: Env) -> dict:
    import torch

    if spec.train:
        return empty_row("streams", "skipped", "training steps update shared weights: cycles on several "
                                               "streams would race; measured for forward-only cycles")
    torch.set_num_threads(env.default_threads)
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
    _reset_peak(env)
    walls = _Measure("streams", plan, env).repeat(lambda: _timed(lambda: run(plan.cycles), w.sync))
    peak = _peak_device(env)
    _record_timeline("streams", env, w, lambda: run(plan.profile_cycles), w.sync, plan.profile_cycles)
    return measured_row("streams", k, plan.cycles, walls, env.default_threads, streams=k,
                        host_rss_bytes=_rss(), peak_device_bytes=peak, **_gpu_extras("streams", env))


def run_batched(spec: WorkloadSpec, plan: Plan, env: Env) -> dict:
    import torch

    torch.set_num_threads(env.default_threads)
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
    _reset_peak(env)
    walls = _Measure("batched", plan, env).repeat(lambda: _timed(lambda: run(plan.cycles), w.sync))
    peak = _peak_device(env)
    _record_timeline("batched", env, w, lambda: run(plan.profile_cycles), w.sync, plan.profile_cycles)
    return measured_row("batched", 1, plan.cycles, walls, env.default_threads, cycles_per_step=k,
                        host_rss_bytes=_rss(), peak_device_bytes=peak, **_gpu_extras("batched", env))


def run_cuda_graph(spec, plan: Plan, env: Env) -> dict:
    """Capture one cycle's device work once, replay it per cycle; skipped when capture fails."""
    import torch

    torch.set_num_threads(env.default_threads)
    w = build(spec)
    custom = isinstance(spec, CustomSpec)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    try:
        if custom:
            with torch.cuda.stream(side):  # warm-up off the capture stream, as the CUDA graphs docs ask
                for _ in range(3):
                    w.step()
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(graph):
                w.step()
        else:
            x0, y0 = w.batch(0)
            static_x, static_y = x0.clone(), y0.clone()
            with torch.cuda.stream(side):
                for _ in range(3):
                    w.forward_metrics(static_x, static_y)
            torch.cuda.current_stream().wait_stream(side)
            if spec.train:
                w.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                static_out = w.forward_metrics(static_x, static_y)
    except Exception as exc:
        hint = (" (a step that calls .item(), prints a tensor or syncs in another way cannot be captured; "
                "see docs/cycle.md)" if custom else "")
        return empty_row("cuda_graph", "skipped", f"CUDA graph capture failed: {type(exc).__name__}: {exc}{hint}")
    torch.cuda.synchronize()

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
    _reset_peak(env)
    walls = _Measure("cuda_graph", plan, env).repeat(lambda: _timed(lambda: run(plan.cycles), w.sync))
    peak = _peak_device(env)
    _record_timeline("cuda_graph", env, w, lambda: run(plan.profile_cycles), w.sync, plan.profile_cycles)
    extra = {"replays_python_side_effects": False} if custom else {}
    return measured_row("cuda_graph", 1, plan.cycles, walls, env.default_threads, host_rss_bytes=_rss(),
                        peak_device_bytes=peak, **extra, **_gpu_extras("cuda_graph", env))


def _threads_once(workloads: list, parts: List[Tuple[int, int]]) -> float:
    """Run each workload's share in its own thread, all released together; wall seconds."""
    n = len(workloads)
    barrier = threading.Barrier(n + 1)
    errors: List[BaseException] = []

    def body(w, start: int, count: int) -> None:
        barrier.wait()
        try:
            w.run_cycles(count, start)
        except BaseException as exc:  # re-raised in the measuring thread below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w, s, c), name=f"gpudiag-cycle-{i}")
               for i, (w, (s, c)) in enumerate(zip(workloads, parts))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    workloads[0].sync()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall


def run_threads(spec, plan: Plan, env: Env) -> dict:
    """N Python threads, each with its own copy of the workload, sharing the cycles."""
    import torch

    sweep = []
    best = None
    for n in plan.workers:
        per = max(1, env.default_threads // n)
        torch.set_num_threads(per)
        workloads = [build(spec) for _ in range(n)]
        for w in workloads:
            w.run_cycles(plan.warmup)
        workloads[0].sync()
        parts = shares(plan.cycles, n)
        _reset_peak(env)
        walls = _Measure("threads", plan, env).repeat(lambda: _threads_once(workloads, parts))
        row = measured_row("threads", n, plan.cycles, walls, per, host_rss_bytes=_rss(),
                           peak_device_bytes=_peak_device(env))
        sweep.append({"workers": n, "cycles_per_s": row["cycles_per_s"], "spread_fraction": row["spread_fraction"],
                      "torch_threads": per})
        if best is None or (row["cycles_per_s"] or 0) > (best[0]["cycles_per_s"] or 0):
            best = (row, workloads, parts)
        else:
            for w in workloads:
                w.close()
    torch.set_num_threads(env.default_threads)
    row, workloads, parts = best
    if env.device == "cuda":
        per_share = shares(plan.profile_cycles, len(workloads))
        _record_timeline("threads", env, workloads[0], lambda: _threads_once(workloads, per_share),
                         lambda: None, plan.profile_cycles)
    for w in workloads:
        w.close()
    row.update(_gpu_extras("threads", env))
    row["sweep"] = sweep
    return row


# ---------------------------------------------------------------- worker processes

@dataclass
class Timed:
    values: List[Any]
    wall_s: float
    task_s: List[float]


def _local_worker_main(index: int, conn, go, initializer, initargs) -> None:
    entered = time.time()
    t0 = time.perf_counter()
    try:
        init = initializer(*initargs) if initializer else None
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    conn.send(("ready", {"entered_at": entered, "init_s": time.perf_counter() - t0}, init))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        conn.send(("armed",))
        go.wait()
        start = time.perf_counter()
        try:
            value = fn(*args)
            conn.send(("done", value, time.perf_counter() - start))
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


class WorkerFailed(RuntimeError):
    pass


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by signal {-code}" + (" (SIGKILL - likely the out-of-memory killer)" if code == -9 else "")
    return f"exited with code {code}"


class _LocalPool:
    """Long-lived spawned workers with a common start line (stand-in for gpudiag.workers.WorkerPool)."""

    def __init__(self, n: int, initializer: Callable, initargs: Sequence = (), timeout_s: float = 120.0):
        self._ctx = multiprocessing.get_context("spawn")
        self._go = self._ctx.Event()
        self._init, self._initargs, self._timeout = initializer, tuple(initargs), timeout_s
        self._workers: List[dict] = []
        self.grow(n)

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def startup(self) -> List[dict]:
        return [w["startup"] for w in self._workers]

    @property
    def init_results(self) -> List[Any]:
        return [w["init"] for w in self._workers]

    @property
    def pids(self) -> List[int]:
        return [w["proc"].pid for w in self._workers]

    def grow(self, n: int) -> None:
        new = []
        try:
            while len(self._workers) < n:
                parent, child = self._ctx.Pipe()
                proc = self._ctx.Process(target=_local_worker_main, daemon=True, name=f"gpudiag-cycle-{len(self._workers)}",
                                         args=(len(self._workers), child, self._go, self._init, self._initargs))
                w = {"proc": proc, "conn": parent, "t0": (time.time(), time.perf_counter()), "init": None, "startup": None}
                proc.start()
                child.close()
                self._workers.append(w)
                new.append(w)
            deadline = time.monotonic() + self._timeout
            for w in new:
                msg = self._recv(w, deadline, "starting")
                if msg[0] != "ready":
                    raise WorkerFailed(f"a worker failed to start: {msg[1]}")
                info, w["init"] = msg[1], msg[2]
                w["startup"] = {"spawn_s": round(max(0.0, info["entered_at"] - w["t0"][0]), 4),
                                "init_s": round(info["init_s"], 4),
                                "ready_s": round(time.perf_counter() - w["t0"][1], 4)}
        except BaseException:
            self.close()
            raise

    def _recv(self, w: dict, deadline: float, phase: str):
        ready = multiprocessing.connection.wait([w["conn"], w["proc"].sentinel], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise WorkerFailed(f"a worker timed out while {phase}")
        if w["conn"].poll(0):
            try:
                return w["conn"].recv()
            except (EOFError, OSError):
                pass
        w["proc"].join(1.0)
        raise WorkerFailed(f"a worker {_describe_exit(w['proc'].exitcode)} while {phase}")

    def run_timed(self, fn: Callable, args_per_worker: Sequence[Sequence[Any]]) -> Timed:
        workers = self._workers[:len(args_per_worker)]
        deadline = time.monotonic() + self._timeout
        try:
            self._go.clear()
            for w, args in zip(workers, args_per_worker):
                w["conn"].send((fn, tuple(args)))
            for w in workers:
                msg = self._recv(w, deadline, "arming")
                if msg[0] != "armed":
                    raise WorkerFailed(f"a worker raised {msg[1]}")
            t0 = time.perf_counter()
            self._go.set()
            msgs = [self._recv(w, deadline, "running") for w in workers]
            wall = time.perf_counter() - t0
        except BaseException:
            self.close()
            raise
        for m in msgs:
            if m[0] != "done":
                raise WorkerFailed(f"a worker raised {m[1]}")
        return Timed([m[1] for m in msgs], wall, [m[2] for m in msgs])

    def run_all(self, fn: Callable, args_per_worker: Sequence[Sequence[Any]]) -> List[Any]:
        return self.run_timed(fn, args_per_worker).values

    def close(self) -> None:
        for w in self._workers:
            try:
                w["conn"].send(None)
            except (OSError, ValueError):
                pass
        for w in self._workers:
            w["proc"].join(2.0)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join(2.0)
            try:
                w["conn"].close()
            except OSError:
                pass
        self._workers = []

    def __enter__(self) -> "_LocalPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_pool(n: int, initializer: Callable, initargs: Sequence = ()):
    """THE seam: start n long-lived spawned workers and wait until each ran `initializer`.

    The pool must offer grow(n), startup, init_results, run_timed(fn, args) -> Timed(values,
    wall_s, task_s) with all workers released together, run_all and close: the API of
    gpudiag.workers.WorkerPool, which can replace _LocalPool here.
    """
    return _LocalPool(n, initializer, initargs)


# Worker-side functions: module level, so spawned workers can import them.
_STATE: Dict[str, Any] = {}


def _worker_init() -> dict:
    """Paid once per worker: import torch (what start-up costs a ProcessPoolExecutor too)."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    return {"import_torch_s": round(time.perf_counter() - t0, 4), "rss_bytes": _rss()}


def _worker_prepare(spec, torch_threads: int, warmup: int) -> dict:
    import torch

    old = _STATE.pop("w", None)
    if old is not None:
        old.close()
    torch.set_num_threads(torch_threads)
    w = build(spec)
    w.run_cycles(warmup)
    w.sync()
    _STATE["w"] = w
    dev = None
    if getattr(spec, "device", "cpu") == "cuda":
        torch.cuda.reset_peak_memory_stats()
        dev = int(torch.cuda.memory_reserved())
    return {"rss_bytes": _rss(), "device_reserved_bytes": dev}


def _worker_run(start: int, count: int) -> dict:
    w = _STATE["w"]
    w.run_cycles(count, start)
    w.sync()
    dev = None
    if str(getattr(w, "device", "cpu")).startswith("cuda"):
        import torch

        dev = int(torch.cuda.max_memory_allocated())
    return {"rss_bytes": _rss(), "peak_device_bytes": dev}


def _free_device_bytes() -> Optional[int]:
    import torch

    return int(torch.cuda.mem_get_info()[0])


def run_processes(spec, plan: Plan, env: Env) -> dict:
    """N spawned processes, each with its own copy (and on CUDA its own context), sharing the cycles."""
    wanted = max(plan.workers)
    host_budget = env.host_budget_bytes
    cuda = env.device == "cuda"
    dev_free = _free_device_bytes() if cuda else None
    dev_budget = int(dev_free * DEVICE_FREE_FRACTION) if cuda else None
    work_bytes = spec.estimated_bytes() if isinstance(spec, WorkloadSpec) else 0
    check: Dict[str, Any] = {"wanted": wanted, "budget_host_bytes": host_budget,
                             "budget_host_source": env.host_budget_source, "budget_device_bytes": dev_budget}
    if env.gil_per_worker_host_bytes:
        per_host = env.gil_per_worker_host_bytes + work_bytes
        per_dev = (env.gil_per_worker_device_bytes + work_bytes) if (cuda and env.gil_per_worker_device_bytes) else None
        source = "gil probe"
    else:
        per_host, per_dev = CONSERVATIVE_HOST_BYTES_PER_WORKER, (CONSERVATIVE_DEVICE_BYTES_PER_WORKER if cuda else None)
        source = "conservative default"
    n, limit = fit_workers(wanted, per_host, host_budget, per_dev, dev_budget)
    t0 = time.perf_counter()
    pool = None
    try:
        if n < wanted and source == "conservative default":
            # Not sure they fit: start one, measure what it really takes, then decide.
            pool = start_pool(1, _worker_init)
            info = pool.run_all(_worker_prepare, [(spec, max(1, env.default_threads), plan.warmup)])[0]
            per_host = info["rss_bytes"]
            if cuda:
                per_dev = max(1, dev_free - _free_device_bytes())
            source = "measured (one worker)"
            n, limit = fit_workers(wanted, per_host, host_budget, per_dev, dev_budget)
        check.update({"per_worker_host_bytes": per_host, "per_worker_device_bytes": per_dev, "source": source,
                      "fits": n, "limited_by": limit})
        if n < 2:
            why = (f"only {n} worker process(es) fit in memory ({limit}: "
                   f"{_gib(per_host if limit == 'host' else per_dev)} per worker, "
                   f"{_gib(host_budget if limit == 'host' else dev_budget)} available)")
            row = empty_row("processes", "skipped", why)
            row["memory_check"] = check
            return row
        if pool is None:
            pool = start_pool(n, _worker_init)
        else:
            pool.grow(n)
        startup_s = time.perf_counter() - t0
        counts = [c for c in plan.workers if c <= n] or [n]
        sweep, best = [], None
        for k in counts:
            per = max(1, env.default_threads // k)
            prep = pool.run_all(_worker_prepare, [(spec, per, plan.warmup)] * k)
            parts = shares(plan.cycles, k)
            results: List[list] = []

            def once() -> float:
                timed = pool.run_timed(_worker_run, parts)
                results.append(timed.values)
                return timed.wall_s

            walls = _Measure("processes", plan, env).repeat(once)
            last = results[-1]
            row = measured_row("processes", k, plan.cycles, walls, per,
                               host_rss_bytes=sum(r["rss_bytes"] for r in last),
                               peak_device_bytes=(sum(r["peak_device_bytes"] for r in last) if cuda else None),
                               worker_prepare_rss_bytes=[p["rss_bytes"] for p in prep])
            sweep.append({"workers": k, "cycles_per_s": row["cycles_per_s"], "spread_fraction": row["spread_fraction"],
                          "torch_threads": per})
            if best is None or (row["cycles_per_s"] or 0) > (best["cycles_per_s"] or 0):
                best = row
        best["sweep"] = sweep
        best["startup_s"] = round(startup_s, 4)
        best["worker_startup"] = [dict(s, **(i or {})) for s, i in zip(pool.startup, pool.init_results)]
        best["memory_check"] = check
        best["gpu_busy_fraction"] = None
        best["gpu_busy_reason"] = ("no CUDA device: the workload ran on the CPU" if not cuda else
                                   "each process has its own CUDA context; one profiler cannot see the "
                                   "others' kernels (see nvml_gpu_percent_median)")
        best["nvml_gpu_percent_median"] = (env.nvml.get("processes") or {}).get("median_percent") if cuda else None
        return best
    finally:
        if pool is not None:
            pool.close()


def _gib(n: Optional[float]) -> str:
    return "unknown" if not n else f"{n / 2**30:.2f} GiB"


# ---------------------------------------------------------------- the tournament

RUNNERS = {"serial": run_serial, "deferred_sync": run_deferred_sync, "cuda_graph": run_cuda_graph,
           "streams": run_streams, "batched": run_batched, "threads": run_threads, "processes": run_processes}
# Order of execution: cuda_graph late (a failed capture can leave the context unusable for the
# in-process strategies after it), processes last (separate contexts).
RUN_ORDER = ("serial", "deferred_sync", "streams", "batched", "threads", "cuda_graph", "processes")


def run_tournament(spec, plan: Plan, env: Env, on_strategy: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Every strategy's row, in STRATEGIES order, with speedup_vs_serial filled in.

    serial failing fails the tournament (nothing to compare against); any other strategy failing
    becomes a `failed` row.
    """
    custom = isinstance(spec, CustomSpec)
    rows: Dict[str, dict] = {}
    for name in RUN_ORDER:
        if on_strategy:
            on_strategy(name)
        if env.device != "cuda" and name in CUDA_ONLY:
            rows[name] = empty_row(name, "skipped", "needs a CUDA device: this machine ran the workload on the CPU")
            continue
        if custom and name not in CUSTOM_STRATEGIES:
            rows[name] = empty_row(name, "skipped", "needs the built-in workload: gpudiag cannot fuse cycles or "
                                                    "defer the syncs inside your own step")
            continue
        if name == "serial":
            rows[name] = RUNNERS[name](spec, plan, env)
            continue
        try:
            rows[name] = RUNNERS[name](spec, plan, env)
        except CustomLoopError:
            raise
        except Exception as exc:  # one strategy breaking must not lose the others' measurements
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
            rows[name] = empty_row(name, "failed", f"{type(exc).__name__}: {exc}{where}")
    base = rows["serial"]["cycles_per_s"]
    for r in rows.values():
        if r["cycles_per_s"] and base:
            r["speedup_vs_serial"] = round(r["cycles_per_s"] / base, 3)
    return [rows[n] for n in STRATEGIES]


def winner(rows: Sequence[dict]) -> Optional[dict]:
    ok = [r for r in rows if r["status"] == "ok" and r.get("cycles_per_s")]
    return max(ok, key=lambda r: r["cycles_per_s"]) if ok else None
