"""The pure analysis behind `launch`, `contention` and `pcie`, on synthetic timings."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from gpudiag.measure.stats import summarize
from gpudiag.probes.cuda import analysis as cuda_analysis

MiB = 2 ** 20


def codes(findings):
    return [f["code"] for f in findings]


# ----------------------------------------------------------------------------- PCIe table

@pytest.mark.parametrize("gen,width,expected", [
    (1, 16, 4.0), (2, 16, 8.0), (3, 16, 15.75), (4, 16, 31.5), (5, 16, 63.0), (6, 16, 126.0),
    (3, 8, 7.88), (4, 4, 7.88), (3, 1, 0.985), (4, 1, 1.969), (5, 1, 3.938), (6, 1, 7.88),
])
def test_theoretical_bandwidth_per_direction(gen, width, expected):
    assert cuda_analysis.theoretical_gbps(gen, width) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("gen,width", [("n/a", 16), (3, "n/a"), (None, 16), (7, 16), (3, 0), (True, 16)])
def test_theoretical_bandwidth_unknown_is_none(gen, width):
    assert cuda_analysis.theoretical_gbps(gen, width) is None


def test_efficiency_and_gbps():
    assert cuda_analysis.efficiency(12.6, 15.75) == pytest.approx(0.8)
    assert cuda_analysis.efficiency(None, 15.75) is None and cuda_analysis.efficiency(10.0, None) is None
    assert cuda_analysis.gbps(1_000_000_000, 100.0) == pytest.approx(10.0)
    assert cuda_analysis.gbps(1000, 0) is None


def test_sizes_capped_by_free_memory():
    assert cuda_analysis.pcie_sizes(True, 24 * 2 ** 30, 64 * 2 ** 30) == [64 * 1024, MiB, 16 * MiB, 64 * MiB]
    full = cuda_analysis.pcie_sizes(False, 24 * 2 ** 30, 64 * 2 ** 30)
    assert full[0] == 4096 and full[-1] == 256 * MiB
    # A 4 GB GTX 1650 with 3.4 GiB free: two 256 MiB device buffers are 15 % of it.
    gtx1650 = cuda_analysis.pcie_sizes(False, int(3.4 * 2 ** 30), 8 * 2 ** 30)
    assert max(gtx1650) == 256 * MiB and 2 * max(gtx1650) <= 0.25 * 3.4 * 2 ** 30
    # The same card with a desktop holding most of it: 1.5 GiB free caps the sweep at 64 MiB.
    assert max(cuda_analysis.pcie_sizes(False, int(1.5 * 2 ** 30), 8 * 2 ** 30)) == 64 * MiB
    # Little host RAM available caps it too.
    assert max(cuda_analysis.pcie_sizes(False, 24 * 2 ** 30, 2 * 2 ** 30)) == 64 * MiB
    assert cuda_analysis.pcie_sizes(True, 100 * MiB, 64 * 2 ** 30) == [64 * 1024, MiB]


def test_repeats_more_for_small_sizes():
    assert cuda_analysis.pcie_repeats(True, 64 * 1024) == 30 and cuda_analysis.pcie_repeats(True, 64 * MiB) == 5
    assert cuda_analysis.pcie_repeats(False, 4096) == 100 and cuda_analysis.pcie_repeats(False, 256 * MiB) == 10


def test_link_under_load_takes_the_trained_maximum():
    samples = [{"gen": 1, "width": 16}, {"gen": 3, "width": 16}, {"gen": "n/a", "width": 8}]
    assert cuda_analysis.link_under_load(samples) == {"gen": 3, "width": 16, "samples": 2}
    assert cuda_analysis.link_under_load([{"gen": "n/a", "width": "n/a"}]) == {"gen": None, "width": None, "samples": 0}


def link(**kw):
    base = {"gen": 4, "width": 16, "gen_max": 4, "gen_max_card": 4, "width_max": 16, "read_under_load": True}
    base.update(kw)
    return base


def test_link_at_its_maximum_is_fine():
    assert cuda_analysis.link_findings(link()) == []


def test_link_downgrade_is_found_with_numbers():
    f = cuda_analysis.link_findings(link(gen=3, width=8))
    assert codes(f) == ["PCIE_LINK_DEGRADED"]
    assert "x8 Gen3 where card and slot allow x16 Gen4" in f[0]["message"]
    assert f[0]["evidence"]["theoretical_gbps"] == pytest.approx(7.88, rel=2e-3)
    assert f[0]["evidence"]["theoretical_max_gbps"] == pytest.approx(31.5, rel=2e-3)


def test_card_limited_by_slot_generation():
    # A Gen4 card in a Gen3 slot, trained to Gen3 x16: nothing is degraded, the slot is the limit.
    f = cuda_analysis.link_findings(link(gen=3, gen_max=3, gen_max_card=4))
    assert codes(f) == ["PCIE_SLOT_LIMITS_CARD"]
    assert "Gen4 card limited to Gen3" in f[0]["message"]
    assert f[0]["evidence"]["theoretical_max_gbps"] == pytest.approx(15.75, rel=2e-3)  # Gen3 x16
    assert f[0]["evidence"]["theoretical_card_max_gbps"] == pytest.approx(31.5, rel=2e-3)  # Gen4 x16


def test_a_degraded_link_in_a_limiting_slot_is_measured_against_the_slot_not_the_card():
    # Issue 25 item 4: the rate a x8 link falls short of is Gen3 x16 (what this slot carries), not Gen4 x16.
    f = cuda_analysis.link_findings(link(gen=3, width=8, gen_max=3, gen_max_card=4))
    assert codes(f) == ["PCIE_LINK_DEGRADED", "PCIE_SLOT_LIMITS_CARD"]
    assert f[0]["evidence"]["theoretical_max_gbps"] == pytest.approx(15.75, rel=2e-3)
    assert "instead of 15.754" in f[0]["message"] and "Gen4 x16" not in f[0]["message"]
    assert cuda_analysis.link_max_gbps(link(gen_max=3, gen_max_card=4)) == {"system": pytest.approx(15.754),
                                                                  "card": pytest.approx(31.508)}


def test_idle_link_reading_says_nothing():
    assert cuda_analysis.link_findings(link(gen=1, width=8, read_under_load=False)) == []
    assert cuda_analysis.link_findings(link(gen="n/a")) == []


def pt(direction, memory, size, med):
    return {"direction": direction, "memory": memory, "size_bytes": size,
            "gbps": summarize([med * 0.95, med, med * 1.02])}


def test_peaks_efficiency_and_pageable_finding():
    points = [pt("h2d", "pinned", MiB, 6.0), pt("h2d", "pinned", 64 * MiB, 12.5),
              pt("h2d", "pageable", 64 * MiB, 15.0), pt("d2h", "pinned", 64 * MiB, 13.0),
              pt("d2h", "pageable", 64 * MiB, 8.0), pt("bidir", "pinned", 64 * MiB, 20.0)]
    peaks = cuda_analysis.pcie_peaks(points)
    assert peaks == {"h2d_pinned_gbps": 12.5, "h2d_pageable_gbps": 15.0, "d2h_pinned_gbps": 13.0,
                     "d2h_pageable_gbps": 8.0, "bidir_pinned_gbps": 20.0}
    eff = cuda_analysis.pcie_efficiency(peaks, 15.754)
    assert eff["h2d_pinned"] == pytest.approx(12.5 / 15.754, abs=1e-4)
    assert eff["bidir_pinned"] == pytest.approx(20.0 / (2 * 15.754), abs=1e-4)
    f = cuda_analysis.pageable_findings(points)
    assert codes(f) == ["PAGEABLE_FASTER_THAN_PINNED"]
    assert f[0]["evidence"]["direction"] == "h2d" and f[0]["evidence"]["size_bytes"] == 64 * MiB
    assert cuda_analysis.pageable_findings([pt("h2d", "pinned", MiB, 10), pt("h2d", "pageable", MiB, 10.5)]) == []


def test_efficiency_low_finding():
    assert codes(cuda_analysis.efficiency_findings(7.0, 15.75, link(gen=3))) == ["PCIE_EFFICIENCY_LOW"]
    assert cuda_analysis.efficiency_findings(12.6, 15.75, link(gen=3)) == []
    assert cuda_analysis.efficiency_findings(None, 15.75, link()) == []
    assert cuda_analysis.efficiency_findings(3.0, None, link()) == []


def test_numa():  # the cpulists themselves: platform._files.parse_cpulist (tests/platform/test_cpu_limit.py)
    nodes = {0: set(range(8)), 1: set(range(8, 16))}
    remote = cuda_analysis.numa_placement(1, {0, 1, 2}, nodes)
    assert remote["local"] is False and remote["process_nodes"] == [0]
    f = cuda_analysis.numa_findings(remote)
    assert codes(f) == ["PCIE_NUMA_REMOTE"] and "--cpunodebind=1" in f[0]["fix"]
    assert cuda_analysis.numa_placement(1, set(range(16)), nodes)["local"] is True
    unknown = cuda_analysis.numa_placement(-1, {0}, nodes)
    assert unknown["local"] is None and unknown["reason"]
    assert cuda_analysis.numa_findings(unknown) == []
    assert cuda_analysis.numa_placement(0, {0}, {0: {0, 1}})["local"] is True


# --------------------------------------------------------------------------- launch

def test_graph_speedup_and_per_op():
    assert cuda_analysis.graph_speedup(10.0, 2.5) == 4.0
    assert cuda_analysis.graph_speedup(None, 2.5) is None and cuda_analysis.graph_speedup(10.0, 0) is None
    assert cuda_analysis.per_op_us([0.001, 0.002], 100) == pytest.approx([10.0, 20.0])


def test_launch_findings():
    data = {"launch_overhead_us": summarize([25, 30, 35]), "cuda_launch_blocking": False,
            "graph": {"ops_per_graph": 100, "eager_per_op_us": 9.0, "graph_per_op_us": 2.0, "speedup": 4.5}}
    f = cuda_analysis.launch_findings(data)
    assert codes(f) == ["LAUNCH_OVERHEAD_HIGH", "GRAPH_SPEEDUP"]
    assert "30.0 us" in f[0]["message"] and "4.5x" in f[1]["message"]
    quiet = {"launch_overhead_us": summarize([5, 6, 7]), "graph": {"speedup": 1.1}}
    assert cuda_analysis.launch_findings(quiet) == []
    blocking = cuda_analysis.launch_findings(dict(data, cuda_launch_blocking=True))
    assert "CUDA_LAUNCH_BLOCKING" in blocking[0]["message"] and "LAUNCH_MEASURED_BLOCKING" in codes(blocking)


# ----------------------------------------------------------------------- contention

def simulate_time_slicing(workers: int, kernels: int, kernel_ms: float, slice_ms: float,
                          switch_ms: float) -> Tuple[float, List[float]]:
    """Round-robin time-slicing of `workers` queues of spin kernels; (wall_s, per-kernel event ms).

    A kernel's event time runs from when its process's previous kernel ended to its own end, so it
    includes the slices of other processes it waited through, as CUDA events do.
    """
    remaining = [kernels] * workers
    left = [kernel_ms] * workers        # work left in each process's current kernel
    started = [0.0] * workers          # when each current kernel's start event completed
    elapsed: List[float] = []
    t, p = 0.0, 0
    while any(remaining):
        budget = slice_ms
        while remaining[p] and budget > 1e-12:
            run = min(budget, left[p])
            t += run
            budget -= run
            left[p] -= run
            if left[p] <= 1e-12:
                elapsed.append(t - started[p])
                remaining[p] -= 1
                left[p], started[p] = kernel_ms, t
        others = [q for q in range(workers) if q != p and remaining[q]]
        if not others:
            continue  # nothing else runnable: no switch, keep running
        t += switch_ms
        p = next(q for q in list(range(p + 1, workers)) + list(range(p)) if remaining[q])
    return t / 1e3, elapsed


@pytest.mark.parametrize("workers", [2, 4])
def test_contention_estimate_recovers_slice_and_switch_cost(workers):
    kernel_ms, slice_ms, switch_ms, kernels = 0.3, 1.024, 0.05, 400
    wall_s, elapsed = simulate_time_slicing(workers, kernels, kernel_ms, slice_ms, switch_ms)
    row = cuda_analysis.contention_estimate(workers, kernels, kernel_ms, wall_s, elapsed)
    assert row["ideal_s"] == pytest.approx(workers * kernels * kernel_ms / 1e3)
    assert row["wall_s"] > row["ideal_s"]
    assert row["switch_cost_us_est"] == pytest.approx(switch_ms * 1e3, rel=0.15)
    assert row["timeslice_ms_est"] == pytest.approx(slice_ms, rel=0.1)
    assert row["overhead_fraction"] == pytest.approx(1 - row["ideal_s"] / wall_s, abs=1e-3)
    assert 0.1 < row["switched_fraction"] < 0.6 and row["reason"] == ""
    assert row["stretch"] >= 1.0


def test_contention_without_time_slicing_gives_no_estimate():
    # MPS: the kernels of both processes run side by side, each at its solo time.
    row = cuda_analysis.contention_estimate(2, 100, 0.5, 0.05, [0.5] * 200)
    assert row["stretch"] == 1.0 and row["overhead_fraction"] == 0.0
    assert row["switch_cost_us_est"] is None and row["timeslice_ms_est"] is None
    assert "no time-slicing" in row["reason"]
    assert cuda_analysis.contention_estimate(2, 100, 0.5, 1.0, [])["reason"] == "no kernel timings"


def test_contention_slice_shorter_than_kernel_is_flagged():
    wall_s, elapsed = simulate_time_slicing(2, 100, 3.0, 1.0, 0.02)
    row = cuda_analysis.contention_estimate(2, 100, 3.0, wall_s, elapsed)
    assert row["switched_fraction"] > 0.9 and "upper bound" in row["reason"]


def test_sleep_cycles_scale_linearly():
    assert cuda_analysis.sleep_cycles_for(0.5, 1_000_000, 1.0) == 500_000
    assert cuda_analysis.sleep_cycles_for(0.5, 10, 100.0) == 1000
    with pytest.raises(ValueError):
        cuda_analysis.sleep_cycles_for(1.0, 1000, 0.0)


def test_thread_rows_and_contention_findings():
    rows = cuda_analysis.thread_rows(0.5, 1000, 0.5, {2: 0.52, 4: 0.6})
    assert [r["workers"] for r in rows] == [1, 2, 4]
    assert rows[0]["throughput_vs_one"] == 1.0
    assert rows[1]["throughput_vs_one"] == pytest.approx(2 * 0.5 / 0.52, abs=1e-3)
    assert rows[2]["ideal_s"] == pytest.approx(2.0)
    wall_s, elapsed = simulate_time_slicing(2, 400, 0.3, 1.024, 0.05)
    procs = [cuda_analysis.contention_estimate(2, 400, 0.3, wall_s, elapsed)]
    data = {"threads": rows, "processes": procs, "context": {"create_s": 0.4, "device_bytes": 300 * MiB}}
    f = cuda_analysis.contention_findings(data)
    assert codes(f) == ["PROCESS_TIMESLICING", "STREAMS_RUN_CONCURRENTLY", "CONTEXT_MEMORY"]
    assert "300 MiB" in f[-1]["message"]
    heavy = dict(data, processes=[dict(procs[0], overhead_fraction=0.3)])
    assert "PROCESS_SHARING_OVERHEAD_HIGH" in codes(cuda_analysis.contention_findings(heavy))
    assert cuda_analysis.contention_findings({"threads": [], "processes": [], "context": {}}) == []


# ------------------------------------------------------- time-slicing model (issue 25 item 8)

@pytest.mark.parametrize("slice_ms", [1.3, 2.2, 3.7])  # not multiples of the kernel: kernels are cut mid-way
def test_fixed_work_kernels_give_back_the_slice_and_the_switch_cost(slice_ms):
    from tests.fake_torch import simulate_time_slicing

    wall_ms, elapsed = simulate_time_slicing(2, 2000, 0.5, slice_ms, 0.025, resumes_work=True)
    row = cuda_analysis.contention_estimate(2, 2000, 0.5, wall_ms / 1e3, elapsed)
    assert row["timeslice_ms_est"] == pytest.approx(slice_ms, rel=1e-3)
    assert row["switch_cost_us_est"] == pytest.approx(25.0, rel=5e-3)


def test_spin_kernels_would_hide_the_switch_cost_and_shorten_the_slice():
    # Why the probe's processes run matmuls: a switched-out torch.cuda._sleep kernel ends on resuming (its
    # clock ran on), so the time lost to switching disappears and the slice reads short by up to a kernel.
    from tests.fake_torch import simulate_time_slicing

    wall_ms, elapsed = simulate_time_slicing(2, 2000, 0.5, 2.2, 0.025, resumes_work=False)
    row = cuda_analysis.contention_estimate(2, 2000, 0.5, wall_ms / 1e3, elapsed)
    assert row["switch_cost_us_est"] == 0.0 and row["overhead_fraction"] == 0.0
    assert 2.2 - 0.5 <= row["timeslice_ms_est"] < 2.2 - 0.1


def test_matmul_size_for_a_target_time_scales_with_the_cube_root():
    assert cuda_analysis.matmul_n_for(0.5, 1024, 0.0625) == 2048  # 8x the time needs 2x the size
    assert cuda_analysis.matmul_n_for(0.5, 1024, 1000.0) == 128 and cuda_analysis.matmul_n_for(50.0, 4096, 0.001) == 4096  # clamped
    with pytest.raises(ValueError):
        cuda_analysis.matmul_n_for(0.5, 1024, 0.0)
