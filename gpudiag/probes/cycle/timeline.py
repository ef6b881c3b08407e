"""The GPU timeline of a run: busy intervals, idle gaps, and why the GPU was idle.

Pure analysis of kineto-like trace events (the `traceEvents` of `torch.profiler`'s Chrome trace:
dicts with `cat`, `name`, `ts` and `dur` in microseconds, `args.correlation` linking a kernel to
the runtime call that launched it), plus the same figures from per-step CUDA-event timings when
the torch build has no CUDA profiler activity. Also the NVML utilisation sampler: what
`nvidia-smi dmon` would have shown during the run.

Idle attribution follows HolisticTraceAnalysis's idle-time breakdown (methods.md section 6), on
the device-wide timeline (all streams merged) rather than per stream, split three ways:
- host wait: the GPU had nothing queued because Python had not launched the next op yet;
- sync wait: the part of that time the host spent blocked in a synchronising call (`.item()`,
  `cudaStreamSynchronize`, a small blocking `cudaMemcpy`): the GPU drained its queue for a round trip;
- copy wait: the part the host spent blocked in a copy that moved at least COPY_WAIT_MIN_BYTES
  (a batch to the device, results back): waiting on the transfer, not on a round trip;
- launch overhead: the next op had been launched (its runtime call had started) and the GPU was
  still idle: launch latency that CUDA graphs remove.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from gpudiag.measure.stats import median

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
RUNTIME_CATEGORIES = ("cuda_runtime", "cuda_driver")
# Runtime calls that may block the host until the device has caught up. "cudaMemcpy" also matches
# cudaMemcpyAsync, which blocks only when the host side is pageable memory (what `.item()` does): an
# asynchronous copy counts as blocking unless its device copy is known to use pinned memory (kineto names
# it "Memcpy DtoH (Device -> Pinned)"; "-> Pageable", an older bare "Memcpy DtoH" or no record: blocking).
SYNC_CALL_MARKERS = ("Synchronize", "cudaMemcpy", "cuMemcpyDtoH")
COPY_CALL_MARKERS = ("Memcpy",)
# A blocking copy this large is a wait on the transfer itself (1 MiB takes ~80 us even at 12 GB/s,
# tens of times a round trip's latency); `.item()` and other scalar reads move a few bytes.
COPY_WAIT_MIN_BYTES = 1 << 20
# Gap histogram bin edges in milliseconds; the last bin is open-ended (hi_ms null).
GAP_EDGES_MS = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)
LONGEST_GAPS = 5

Interval = Tuple[float, float]


def _is_category(ev: dict, cats: Sequence[str]) -> bool:
    """Whether a trace event's category is one of `cats` (case-insensitive): kineto spells them in varying case."""
    return str(ev.get("cat", "")).lower() in cats


def _correlation(ev: dict) -> Optional[int]:
    """The event's correlation id (int) or None: the link from a kernel to the runtime call that launched it,
    spelled "correlation" or "correlation id" depending on the torch version."""
    args = ev.get("args") or {}
    c = args.get("correlation", args.get("correlation id"))
    return c if isinstance(c, int) else None


def gpu_ops(events: Iterable[dict]) -> List[dict]:
    """Device-side ops (kernels, memcpys, memsets) with start/end in µs, sorted by start."""
    out = []
    for ev in events:
        if _is_category(ev, GPU_CATEGORIES) and "ts" in ev:
            ts, dur = float(ev["ts"]), float(ev.get("dur", 0.0))
            nbytes = (ev.get("args") or {}).get("bytes")
            out.append({"start": ts, "end": ts + max(dur, 0.0), "correlation": _correlation(ev),
                        "name": ev.get("name", ""), "bytes": nbytes if isinstance(nbytes, (int, float)) else None})
    return sorted(out, key=lambda o: (o["start"], o["end"]))


def runtime_calls(events: Iterable[dict]) -> List[dict]:
    """Host-side CUDA runtime/driver calls with start/end in µs, sorted by start."""
    out = []
    for ev in events:
        if _is_category(ev, RUNTIME_CATEGORIES) and "ts" in ev:
            ts, dur = float(ev["ts"]), float(ev.get("dur", 0.0))
            out.append({"start": ts, "end": ts + max(dur, 0.0), "correlation": _correlation(ev),
                        "name": str(ev.get("name", ""))})
    return sorted(out, key=lambda o: o["start"])


def is_sync_call(name: str) -> bool:
    """Whether a runtime call blocks the host until the device caught up (SYNC_CALL_MARKERS): its time inside a
    gap is sync wait, not host work."""
    return any(m in name for m in SYNC_CALL_MARKERS)


def merge_intervals(intervals: Iterable[Interval]) -> List[Interval]:
    """Union of possibly overlapping intervals (several streams run at once), sorted."""
    merged: List[List[float]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def find_gaps(busy: Sequence[Interval], window: Optional[Interval] = None) -> List[Interval]:
    """Idle intervals between merged busy intervals; with a window, its idle edges too."""
    gaps: List[Interval] = []
    if window is not None:
        lo, hi = window
        if not busy:
            return [(lo, hi)] if hi > lo else []
        if busy[0][0] > lo:
            gaps.append((lo, busy[0][0]))
    for (_, e0), (s1, _) in zip(busy, busy[1:]):
        if s1 > e0:
            gaps.append((e0, s1))
    if window is not None and busy and window[1] > busy[-1][1]:
        gaps.append((busy[-1][1], window[1]))
    return gaps


def histogram(gaps_ms: Iterable[float], edges_ms: Sequence[float] = GAP_EDGES_MS) -> List[dict]:
    """Counts per [lo, hi) bin in ms; the last bin has hi_ms None (open-ended)."""
    bins = [{"lo_ms": lo, "hi_ms": hi, "count": 0} for lo, hi in zip(edges_ms, list(edges_ms[1:]) + [None])]
    for g in gaps_ms:
        for b in reversed(bins):
            if g >= b["lo_ms"]:
                b["count"] += 1
                break
    return bins


def _overlap(a0: float, a1: float, intervals: Sequence[Interval]) -> float:
    """Microseconds of [a0, a1] covered by the sorted, merged `intervals`: how much of a gap the host spent in
    sync or copy calls."""
    total = 0.0
    for s, e in intervals:
        if e <= a0:
            continue
        if s >= a1:
            break
        total += min(a1, e) - max(a0, s)
    return total


def idle_breakdown(gaps: Sequence[Interval], ops: Sequence[dict], calls: Sequence[dict]) -> Dict[str, float]:
    """Split idle time (µs) into host_wait / sync_wait / copy_wait / launch_overhead / unattributed.

    For a gap [g0, g1] ended by the op starting at g1, find the runtime call that launched that op
    (same correlation id). If that call started before g0, the work was already on its way and
    the whole gap is launch overhead. Otherwise [g0, launch) is host time, of which the part the
    host spent inside synchronising calls is sync wait (copy wait inside a large copy), and
    [launch, g1) is launch overhead (copy wait when the op is a large copy).
    A gap with no op after it (the window's tail) or whose launch call was not recorded is
    unattributed.
    """
    launch_by_corr = {c["correlation"]: c for c in calls if c["correlation"] is not None}
    op_bytes = {o["correlation"]: o.get("bytes") for o in ops if o.get("correlation") is not None}

    def big_copy(c: dict) -> bool:
        """Whether a launch call is a copy that moved at least COPY_WAIT_MIN_BYTES: waiting on it is a transfer
        (copy wait), not a round trip (sync wait)."""
        moved = op_bytes.get(c["correlation"])
        return any(m in c["name"] for m in COPY_CALL_MARKERS) and moved is not None and moved >= COPY_WAIT_MIN_BYTES

    op_names = {o["correlation"]: str(o.get("name", "")) for o in ops if o.get("correlation") is not None}

    def blocks(c: dict) -> bool:
        """Whether a runtime call held the host: a synchronising call, or a copy that is not an asynchronous one
        known to use pinned memory."""
        if not is_sync_call(c["name"]):
            return False
        if "Memcpy" in c["name"] and "Async" in c["name"]:
            return "Pinned" not in op_names.get(c["correlation"], "")
        return True

    blocking = [c for c in calls if blocks(c)]
    copies = merge_intervals((c["start"], c["end"]) for c in blocking if big_copy(c))
    syncs = merge_intervals((c["start"], c["end"]) for c in blocking if not big_copy(c))
    starts = sorted((o["start"], i) for i, o in enumerate(ops))
    out = {"host_wait": 0.0, "sync_wait": 0.0, "copy_wait": 0.0, "launch_overhead": 0.0, "unattributed": 0.0}
    j = 0
    for g0, g1 in gaps:
        while j < len(starts) and starts[j][0] < g1:
            j += 1
        nxt = ops[starts[j][1]] if j < len(starts) and starts[j][0] == g1 else None
        launch = launch_by_corr.get(nxt["correlation"]) if nxt is not None else None
        if launch is None:
            out["unattributed"] += g1 - g0
            continue
        # Between the call and the op starting: launch latency, or - for a large copy - the copy itself
        # getting under way (a pageable buffer staged by the host first).
        tail = "copy_wait" if big_copy(launch) else "launch_overhead"
        if launch["start"] <= g0:
            out[tail] += g1 - g0
            continue
        host_end = min(launch["start"], g1)
        sync = _overlap(g0, host_end, syncs)
        copy = max(0.0, min(_overlap(g0, host_end, copies), (host_end - g0) - sync))
        out["sync_wait"] += sync
        out["copy_wait"] += copy
        out["host_wait"] += (host_end - g0) - sync - copy
        out[tail] += g1 - host_end
    return out


def _gap_summary(gaps_us: Sequence[float]) -> dict:
    """The report's gap block from gap lengths in µs: count, total and median in ms, histogram and the longest
    few, so a reader sees whether idle time is many tiny gaps or a few long stalls."""
    gaps_ms = [g / 1000.0 for g in gaps_us]
    return {
        "count": len(gaps_ms),
        "total_ms": round(sum(gaps_ms), 4),
        "median_ms": None if not gaps_ms else round(median(gaps_ms), 5),
        "histogram": histogram(gaps_ms),
        "longest_ms": [round(g, 4) for g in sorted(gaps_ms, reverse=True)[:LONGEST_GAPS]],
    }


def analyze_trace(events: Iterable[dict], window_us: Optional[Interval] = None, cycles: Optional[int] = None) -> dict:
    """Timeline figures from kineto-like events.

    `window_us` is the measured region on the trace clock (e.g. a `record_function` range around
    the profiled cycles); without it the window is the span of the device ops.
    """
    events = list(events)
    ops = gpu_ops(events)
    calls = runtime_calls(events)
    if not ops:
        return empty_timeline("profiler", "the profiler recorded no GPU kernel in the window "
                                          "(the build may lack CUPTI, or the GPU ran nothing)")
    if window_us is None:
        window_us = (ops[0]["start"], max(o["end"] for o in ops))
    lo, hi = window_us
    # Clip ops to the window: an op straddling an edge counts only inside it.
    busy = merge_intervals((max(o["start"], lo), min(o["end"], hi)) for o in ops if o["end"] > lo and o["start"] < hi)
    window = hi - lo
    busy_us = sum(e - s for s, e in busy)
    gaps = find_gaps(busy, (lo, hi))
    split = idle_breakdown(gaps, ops, calls)
    return {
        "method": "profiler",
        "reason": None,
        "cycles": cycles,
        "window_ms": round(window / 1000.0, 4),
        "busy_ms": round(busy_us / 1000.0, 4),
        "busy_fraction": round(busy_us / window, 4) if window > 0 else None,
        "device_ops": len(ops),
        "gaps": _gap_summary([e - s for s, e in gaps]),
        "breakdown_ms": {k: round(v / 1000.0, 4) for k, v in split.items()},
        "breakdown_reason": None,
    }


def analyze_step_events(steps_ms: Sequence[Tuple[float, float]], wall_ms: float, cycles: Optional[int] = None) -> dict:
    """Timeline figures from per-step CUDA-event timings, when the profiler cannot see kernels.

    `steps_ms` are (start, end) per step on one stream, in ms relative to the first step's start
    event (from `Event.elapsed_time`); `wall_ms` is the host-measured wall time of the same steps.
    A step counts as busy from its first to its last op, so gaps inside a step are not seen and
    the busy fraction is an upper bound; the idle split needs the profiler's runtime calls.
    """
    if not steps_ms:
        return empty_timeline("cuda_events", "no step was timed")
    busy = merge_intervals(steps_ms)
    busy_ms = sum(e - s for s, e in busy)
    window = max(wall_ms, busy[-1][1] - busy[0][0])
    gaps = find_gaps(busy)
    return {
        "method": "cuda_events",
        "reason": None,
        "cycles": cycles,
        "window_ms": round(window, 4),
        "busy_ms": round(busy_ms, 4),
        "busy_fraction": round(busy_ms / window, 4) if window > 0 else None,
        "busy_fraction_is_upper_bound": True,
        "device_ops": None,
        "gaps": _gap_summary([(e - s) * 1000.0 for s, e in gaps]),
        "breakdown_ms": None,
        "breakdown_reason": "CUDA events time whole steps; splitting idle time into host/sync/launch "
                            "needs torch.profiler with CUDA activity",
    }


def empty_timeline(method: Optional[str], reason: str) -> dict:
    """A timeline that could not be measured: every figure null, with the reason."""
    return {"method": method, "reason": reason, "cycles": None, "window_ms": None, "busy_ms": None,
            "busy_fraction": None, "device_ops": None, "gaps": None, "breakdown_ms": None,
            "breakdown_reason": reason}


# ---------------------------------------------------------------- NVML utilisation sampler

# NVML's utilisation is an average over the driver's sample period, between 1/6 s and 1 s depending on the
# GPU: a reading describes that much time before it. Without a better estimate the longest is assumed.
NVML_PERIOD_MIN_S, NVML_PERIOD_MAX_S = 1 / 6, 1.0


def ring_period_s(samples: Sequence[Tuple[int, float]]) -> Optional[float]:
    """The driver's sample period from the spacing of its ring-buffer timestamps (µs), clamped to NVML's
    1/6-1 s; None with fewer than three samples. Only differences are used: the driver's clock is its own."""
    stamps = sorted(ts for ts, _ in samples)
    gaps = [(b - a) / 1e6 for a, b in zip(stamps, stamps[1:]) if b > a]
    typical = median(gaps) if len(gaps) >= 2 else None
    if typical is None:
        return None
    return min(NVML_PERIOD_MAX_S, max(NVML_PERIOD_MIN_S, typical))


def reading_within(t_s: float, window_s: float, intervals: Iterable[Interval]) -> bool:
    """Whether a reading taken at t_s, which averages the window_s before it, describes only one of
    `intervals` (the whole window inside it): a reading straddling two runs describes neither."""
    return any(a <= t_s - window_s and t_s <= b for a, b in intervals)


class UtilizationSampler:
    """Samples NVML GPU utilisation in a background thread, as `nvidia-smi dmon` would show it.

    NVML's figure is a duty cycle over the driver's sample period (1/6 s to 1 s): the percentage
    of time at least one kernel ran, not how much of the GPU it used, over that period *before* the
    reading. Use as a context manager; `result()` gives `{samples: [{t_s, gpu_percent}], median_percent,
    n, interval_s, window_s, window_source, reason}`: window_s is the period each reading averages,
    from the driver's ring buffer where it keeps one, else NVML's longest (1 s).
    `locate` is a PCI bus id string (as torch reports it) or an NVML index.
    """

    def __init__(self, locate: Any = 0, interval_s: float = 0.1, lib: Any = None,
                 clock=time.monotonic, max_samples: int = 2000):
        self.locate, self.interval_s, self.lib, self.clock = locate, interval_s, lib, clock
        self.max_samples = max_samples
        self.samples: List[dict] = []
        self.reason: Optional[str] = None
        self.window_s = NVML_PERIOD_MAX_S
        self.window_source = "NVML's longest sample period"
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.t0 = 0.0

    def _handle(self, nv):
        """(NVML handle or None, why not) for the GPU this sampler watches."""
        import os

        from gpudiag.backends.nvml import cuda_device_handle

        if isinstance(self.locate, str):
            return cuda_device_handle(nv, self.locate, 0, os.environ)
        return cuda_device_handle(nv, None, int(self.locate), os.environ)

    def _loop(self) -> None:
        """Background thread body: one utilisation sample per interval_s until stop(); any NVML failure ends sampling
        with a reason instead of reaching the measurement."""
        from gpudiag.backends.nvml import NA, NvmlUnavailable, session, utilization_samples

        try:
            with session(self.lib) as nv:
                h, how = self._handle(nv)
                if h is None:
                    self.reason = how
                    return
                ring = utilization_samples(nv, h, 0)
                period = ring_period_s(ring) if isinstance(ring, list) else None
                if period is not None:
                    self.window_s, self.window_source = period, "the spacing of the driver's utilisation samples"
                self._ready.set()
                while True:
                    rates = nv.call("nvmlDeviceGetUtilizationRates", h)
                    if rates is NA:
                        self.reason = "NVML gives no utilisation for this GPU (NotSupported, e.g. MIG or WSL)"
                        return
                    if len(self.samples) < self.max_samples:
                        self.samples.append({"t_s": round(self.clock() - self.t0, 4), "gpu_percent": int(rates.gpu)})
                    if self._stop.wait(self.interval_s):
                        return
        except NvmlUnavailable as exc:
            self.reason = str(exc)
        except Exception as exc:  # a sampler must never break the measurement it watches
            self.reason = f"NVML sampling stopped: {type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    def start(self) -> "UtilizationSampler":
        """Start sampling in a daemon thread and wait (up to 5 s) for NVML to be ready: returns self, so the first
        sample is not lost to NVML's start-up."""
        self.t0 = self.clock()
        self._thread = threading.Thread(target=self._loop, name="gpudiag-nvml-sampler", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)  # NVML init happens before the measured run starts
        return self

    def stop(self) -> dict:
        """Stop the sampler thread (waiting up to 5 s) and return result()."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        return self.result()

    def result(self) -> dict:
        """The samples, their count and median GPU percent, the interval in s, and a reason when there is no sample
        (why NVML gave none), so an empty figure is never silent."""
        values = [s["gpu_percent"] for s in self.samples]
        reason = self.reason if not values else None
        if not values and reason is None:
            reason = "the run ended before NVML gave a sample"
        return {"samples": list(self.samples), "n": len(values),
                "median_percent": median(values) if values else None,
                "interval_s": self.interval_s, "window_s": round(self.window_s, 4),
                "window_source": self.window_source, "reason": reason}

    def __enter__(self) -> "UtilizationSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
