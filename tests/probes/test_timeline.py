"""Timeline analysis on synthetic kineto-like events (no GPU needed)."""

import time

import pytest

from gpudiag.measure.stats import median
from gpudiag.probes.cycle import timeline
from tests.fakes import NOT_SUPPORTED, FakeNvml


def _k(ts, dur, corr, cat="kernel", name="k"):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": {"correlation": corr}}


def _rt(ts, dur, corr=None, name="cudaLaunchKernel"):
    args = {"correlation": corr} if corr is not None else {}
    return {"cat": "cuda_runtime", "name": name, "ts": ts, "dur": dur, "args": args}


# Two overlapping kernels on two streams, a memcpy whose launch was queued early, then a kernel
# launched late after the host sat in cudaStreamSynchronize; window wider than the ops.
TRACE = [
    {"cat": "cpu_op", "name": "aten::mm", "ts": -9, "dur": 100},  # host op: ignored
    _rt(-5, 3, 1), _k(0, 10, 1),
    _rt(-2, 1, 2), _k(5, 10, 2),                     # overlaps the first: merged busy [0, 15]
    _rt(12, 2, 3, "cudaMemcpyAsync"), _k(20, 2, 3, cat="gpu_memcpy"),  # launched before the GPU idled
    _rt(22, 8, None, "cudaStreamSynchronize"),       # host blocked 22..30
    _rt(45, 4, 4), _k(50, 10, 4),
]
WINDOW = (-10.0, 70.0)


def test_merge_intervals_unions_overlaps_and_keeps_disjoint():
    assert timeline.merge_intervals([(5, 15), (0, 10), (20, 22), (22, 23), (30, 31)]) == [(0, 15), (20, 23), (30, 31)]
    assert timeline.merge_intervals([]) == []


def test_find_gaps_between_and_at_window_edges():
    busy = [(0, 15), (20, 22), (50, 60)]
    assert timeline.find_gaps(busy) == [(15, 20), (22, 50)]
    assert timeline.find_gaps(busy, (-10, 70)) == [(-10, 0), (15, 20), (22, 50), (60, 70)]
    assert timeline.find_gaps([], (0, 5)) == [(0, 5)]


def test_histogram_bins_are_half_open_and_last_is_open_ended():
    bins = timeline.histogram([0.0, 0.005, 0.01, 0.5, 1.0, 250.0])
    assert [b["count"] for b in bins] == [2, 1, 1, 1, 0, 1]
    assert bins[0]["lo_ms"] == 0.0 and bins[-1]["hi_ms"] is None and bins[-1]["lo_ms"] == 100.0


def test_idle_breakdown_splits_host_sync_and_launch():
    ops, calls = timeline.gpu_ops(TRACE), timeline.runtime_calls(TRACE)
    gaps = timeline.find_gaps(timeline.merge_intervals((o["start"], o["end"]) for o in ops), WINDOW)
    split = timeline.idle_breakdown(gaps, ops, calls)
    # [-10,0]: launch at -5 -> host 5, launch 5. [15,20]: launched at 12 -> launch 5.
    # [22,50]: launch at 45 -> host 23 of which 8 in sync, launch 5. [60,70]: no next op.
    assert split == {"host_wait": 20.0, "sync_wait": 8.0, "copy_wait": 0.0, "launch_overhead": 15.0,
                     "unattributed": 10.0}
    assert sum(split.values()) == sum(e - s for s, e in gaps)


def test_analyze_trace_busy_fraction_gaps_and_breakdown_in_ms():
    t = timeline.analyze_trace(TRACE, window_us=WINDOW, cycles=3)
    assert t["method"] == "profiler" and t["cycles"] == 3 and t["device_ops"] == 4
    assert t["busy_ms"] == pytest.approx(0.027)
    assert t["window_ms"] == pytest.approx(0.080)
    assert t["busy_fraction"] == pytest.approx(27 / 80, abs=1e-4)
    g = t["gaps"]
    assert g["count"] == 4 and g["longest_ms"] == [0.028, 0.01, 0.01, 0.005]
    assert [b["count"] for b in g["histogram"]][:2] == [1, 3]
    assert t["breakdown_ms"] == {"host_wait": 0.02, "sync_wait": 0.008, "copy_wait": 0.0, "launch_overhead": 0.015,
                                 "unattributed": 0.01}


def test_analyze_trace_without_window_uses_the_span_of_device_ops():
    t = timeline.analyze_trace(TRACE)
    assert t["window_ms"] == pytest.approx(0.060)
    assert t["gaps"]["count"] == 2  # no edges


def test_analyze_trace_with_no_kernels_is_null_with_a_reason():
    t = timeline.analyze_trace([{"cat": "cpu_op", "name": "x", "ts": 0, "dur": 1}])
    assert t["busy_fraction"] is None and "no GPU kernel" in t["reason"]


def test_clipping_to_the_window():
    t = timeline.analyze_trace([_rt(-20, 1, 1), _k(-10, 20, 1)], window_us=(0, 20))
    assert t["busy_ms"] == pytest.approx(0.010) and t["busy_fraction"] == pytest.approx(0.5)


def test_step_events_fallback_upper_bound_and_no_breakdown():
    steps = [(0.0, 2.0), (3.0, 5.0), (9.0, 10.0)]
    t = timeline.analyze_step_events(steps, wall_ms=12.0, cycles=3)
    assert t["method"] == "cuda_events" and t["busy_fraction"] == pytest.approx(5 / 12, abs=1e-4)
    assert t["gaps"]["count"] == 2 and t["gaps"]["longest_ms"] == [4.0, 1.0]
    assert t["breakdown_ms"] is None and "profiler" in t["breakdown_reason"]
    assert t["busy_fraction_is_upper_bound"] is True


def test_sync_call_names():
    assert timeline.is_sync_call("cudaStreamSynchronize") and timeline.is_sync_call("cudaDeviceSynchronize")
    assert timeline.is_sync_call("cudaMemcpyAsync") and not timeline.is_sync_call("cudaLaunchKernel")


# ---------------------------------------------------------------- NVML sampler through a fake lib

class _ScriptedUtil(FakeNvml):
    """The H100 fake whose utilisation readings follow `values` (then repeat the last), and whose driver ring buffer
    holds samples `period_us` apart (none: the GPU keeps no ring buffer)."""

    def __init__(self, values, supported=True, period_us=None):
        base = FakeNvml.h100()
        super().__init__(base.gpus, base.driver_version, base.cuda_version, base.nvml_version)
        self.values, self.i = list(values), 0
        self.gpus[0].utilization_gpu = 0 if supported else NOT_SUPPORTED
        self.gpus[0].utilization_memory = 0
        if period_us:
            self.gpus[0].utilization_samples = [(7_000_000 + k * period_us, 50) for k in range(10)]

    def nvmlDeviceGetUtilizationRates(self, handle):
        rates = super().nvmlDeviceGetUtilizationRates(handle)
        rates.gpu = self.values[min(self.i, len(self.values) - 1)]
        self.i += 1
        return rates


def test_sampler_collects_samples_and_median():
    lib = _ScriptedUtil([40, 50, 60])
    s = timeline.UtilizationSampler(0, interval_s=0.005, lib=lib).start()
    deadline = time.monotonic() + 5
    while len(s.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    r = s.stop()
    assert r["n"] >= 3 and r["reason"] is None
    assert [x["gpu_percent"] for x in r["samples"]][:3] == [40, 50, 60]
    values = [x["gpu_percent"] for x in r["samples"]]
    assert r["median_percent"] == median(values) and 50 <= r["median_percent"] <= 60
    assert not lib.initialised  # shut down
    # The H100 fake keeps no ring buffer: each reading is taken to average NVML's longest period, 1 s.
    assert (r["window_s"], r["window_source"]) == (1.0, "NVML's longest sample period")


def test_sampler_learns_the_averaging_window_from_the_ring_buffer():
    r = timeline.UtilizationSampler(0, interval_s=0.005, lib=_ScriptedUtil([10], period_us=166_667)).start().stop()
    assert r["window_s"] == pytest.approx(1 / 6, rel=1e-3) and "spacing" in r["window_source"]
    assert timeline.ring_period_s([(0, 1), (5_000_000, 1), (10_000_000, 1)]) == 1.0  # clamped to NVML's 1 s
    assert timeline.ring_period_s([(0, 1), (100, 1)]) is None  # too few to tell


def test_sampler_by_pci_bus_id_and_not_supported_reason():
    lib = _ScriptedUtil([10], supported=False)
    with timeline.UtilizationSampler("0000:19:00.0", interval_s=0.005, lib=lib) as s:  # the capture's bus id
        pass
    r = s.result()
    assert r["n"] == 0 and r["median_percent"] is None and "NotSupported" in r["reason"]
    assert "nvmlDeviceGetHandleByPciBusId" in lib.calls


def test_sampler_without_nvml_gives_a_reason():
    r = timeline.UtilizationSampler(0, lib=FakeNvml.no_driver("LibraryNotFound")).start().stop()
    assert r["n"] == 0 and "not found" in r["reason"]


def test_a_large_blocking_copy_is_a_copy_wait_and_a_scalar_read_a_sync_wait():
    # The host blocks in two memcpys before launching the next kernel: a 64 MiB pageable batch (the
    # host stages it for 30 us while the DMA of the last chunk takes 5: a wait on the transfer) and a
    # 4-byte .item() (a round trip). Only the big one is copy time.
    ev = [
        {"cat": "kernel", "name": "k0", "ts": 0.0, "dur": 10.0, "args": {"correlation": 1}},
        {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": -2.0, "dur": 1.0, "args": {"correlation": 1}},
        {"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 12.0, "dur": 30.0, "args": {"correlation": 2}},
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 37.0, "dur": 5.0,
         "args": {"correlation": 2, "bytes": 64 << 20}},
        {"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 45.0, "dur": 5.0, "args": {"correlation": 3}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoH", "ts": 45.0, "dur": 0.0, "args": {"correlation": 3, "bytes": 4}},
        {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 55.0, "dur": 1.0, "args": {"correlation": 4}},
        {"cat": "kernel", "name": "k1", "ts": 60.0, "dur": 10.0, "args": {"correlation": 4}},
    ]
    ops, calls = timeline.gpu_ops(ev), timeline.runtime_calls(ev)
    gaps = timeline.find_gaps(timeline.merge_intervals((o["start"], o["end"]) for o in ops))
    split = timeline.idle_breakdown(gaps, ops, calls)
    assert split["copy_wait"] == 25.0 and split["sync_wait"] == 5.0
    assert split["host_wait"] == 10.0 and split["launch_overhead"] == 5.0
    assert sum(split.values()) == sum(e - s for s, e in gaps)


def test_an_async_copy_to_pinned_memory_is_host_time_and_to_pageable_memory_a_sync_wait():
    # The host spends 10 us in cudaMemcpyAsync before launching the next kernel. To pinned memory the call
    # returns as soon as the copy is queued: that time is the host's own work, not a wait on the device.
    def events(target):
        return [
            {"cat": "kernel", "name": "k0", "ts": 0.0, "dur": 20.0, "args": {"correlation": 1}},
            {"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 25.0, "dur": 10.0, "args": {"correlation": 2}},
            {"cat": "gpu_memcpy", "name": f"Memcpy DtoH (Device -> {target})", "ts": 25.0, "dur": 1.0,
             "args": {"correlation": 2, "bytes": 4}},
            {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 40.0, "dur": 1.0, "args": {"correlation": 3}},
            {"cat": "kernel", "name": "k1", "ts": 45.0, "dur": 10.0, "args": {"correlation": 3}},
        ]

    def split(target):
        ev = events(target)
        ops, calls = timeline.gpu_ops(ev), timeline.runtime_calls(ev)
        gaps = timeline.find_gaps(timeline.merge_intervals((o["start"], o["end"]) for o in ops))
        return timeline.idle_breakdown(gaps, ops, calls)

    pinned, pageable = split("Pinned"), split("Pageable")
    # Idle: [20, 25] before the copy and [26, 45] before k1 (launched at 40: 5 us of launch overhead).
    assert pinned["sync_wait"] == 0.0 and pinned["host_wait"] == 19.0
    assert pageable["sync_wait"] == 9.0 and pageable["host_wait"] == 10.0  # the call's [26, 35] inside the gap
    assert pinned["launch_overhead"] == pageable["launch_overhead"] == 5.0
