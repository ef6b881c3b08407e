"""Pure analysis for the CUDA probes `launch`, `contention` and `pcie`.

Everything here works on numbers the probes measured (or on synthetic timings in tests): no torch,
no NVML, no files. The probes measure, these functions decide what the numbers mean.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set

from gpudiag.probes.base import finding
from gpudiag.units import fmt_bytes, fmt_pct
from gpudiag.measure.stats import median

GB = 1e9

# ----------------------------------------------------------------------------- PCIe

# Per-lane, per-direction payload rate in GB/s: GT/s x encoding / 8 (8b/10b up to Gen2,
# 128b/130b for Gen3-5). Gen6 (PAM4 + FLIT) is given at its nominal 2x Gen5 rate.
PCIE_LANE_GBPS = {
    1: 2.5 * 8 / 10 / 8,
    2: 5.0 * 8 / 10 / 8,
    3: 8.0 * 128 / 130 / 8,
    4: 16.0 * 128 / 130 / 8,
    5: 32.0 * 128 / 130 / 8,
    6: 2 * 32.0 * 128 / 130 / 8,
}

# Below this share of the link's theoretical rate a pinned copy counts as slow (good systems reach
# ~75-90 %; the rest is TLP headers and flow control).
PCIE_EFFICIENCY_LOW_FRACTION = 0.6
# Pageable beating pinned by more than this factor is the WDDM/WSL pattern worth a finding.
PAGEABLE_FASTER_FACTOR = 1.1


def _is_int(v: Any) -> bool:
    """An int that is not a bool: NVML answers ints or "n/a", and True must not pass for Gen1 or x1."""
    return isinstance(v, int) and not isinstance(v, bool)


def theoretical_gbps(gen: Any, width: Any) -> Optional[float]:
    """Theoretical payload bandwidth per direction of a Gen`gen` x`width` link; None if unknown."""
    if not (_is_int(gen) and _is_int(width)) or gen not in PCIE_LANE_GBPS or width <= 0:
        return None
    return round(PCIE_LANE_GBPS[gen] * width, 3)


def efficiency(measured_gbps: Optional[float], theoretical: Optional[float]) -> Optional[float]:
    """measured / theoretical as a fraction, or None when either is missing."""
    if measured_gbps is None or not theoretical:
        return None
    return round(measured_gbps / theoretical, 4)


def gbps(size_bytes: int, ms: float) -> Optional[float]:
    """Bytes moved in `ms` milliseconds as GB/s (1e9 bytes/s); None for a non-positive time."""
    if ms is None or ms <= 0:
        return None
    return size_bytes / GB / (ms / 1e3)


def pcie_sizes(quick: bool, free_device_bytes: int, free_host_bytes: int) -> List[int]:
    """The transfer sizes to sweep, largest capped so all buffers stay a small share of what is free.

    A point needs two device buffers and up to four host buffers of its size (pinned + pageable,
    source + destination), so the largest size is at most 1/8 of free device memory and 1/16 of
    available host memory.
    """
    KiB, MiB = 1024, 1024 * 1024
    if quick:
        sizes = [64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB]
    else:
        sizes = [4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB]
    cap = min(free_device_bytes // 8, free_host_bytes // 16)
    kept = [s for s in sizes if s <= cap]
    return kept


def pcie_repeats(quick: bool, size_bytes: int) -> int:
    """Copies per point: many for small sizes (latency-bound, noisy), few for large ones."""
    budget, lo, hi = (256 * 2 ** 20, 5, 30) if quick else (2 * 2 ** 30, 10, 100)
    return int(max(lo, min(hi, budget // max(1, size_bytes))))


def link_under_load(samples: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """The link as the copy saw it: the highest generation and width sampled while copying.

    Idle links downtrain (Gen1 at idle is normal), so the maximum over samples taken during a
    copy is the trained link. Samples are {gen, width} with ints or "n/a".
    """
    gens = [s.get("gen") for s in samples if _is_int(s.get("gen"))]
    widths = [s.get("width") for s in samples if _is_int(s.get("width"))]
    return {"gen": max(gens) if gens else None, "width": max(widths) if widths else None,
            "samples": len(gens)}


def link_max_gbps(link: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """{system, card}: the per-direction rate of the widest, fastest link this card can train to in this slot
    (NVML's device-and-system maximum generation), and of the card alone (its own maximum generation) - the
    system's is what copies can reach; the card's is what a better slot would give."""
    width_max = link.get("width_max") if _is_int(link.get("width_max")) else link.get("width")
    return {"system": theoretical_gbps(link.get("gen_max"), width_max),
            "card": theoretical_gbps(link.get("gen_max_card"), width_max)}


def link_findings(link: Mapping[str, Any]) -> List[dict]:
    """PCIE_LINK_DEGRADED when the link under load runs below what the card and slot together allow;
    PCIE_SLOT_LIMITS_CARD (info) when the slot or CPU allows an older generation than the card's.

    link: {gen, width, gen_max (device and system), gen_max_card (device alone), width_max,
    read_under_load}. A reading not taken under load says nothing (idle links downtrain). The rate a
    degraded link falls short of is the slot's (gen_max), never the card's: a slot that caps the card is
    a limit of the system, not a fault of the link.
    """
    gen, width = link.get("gen"), link.get("width")
    if not link.get("read_under_load") or not (_is_int(gen) and _is_int(width)):
        return []
    gen_max, gen_card, width_max = link.get("gen_max"), link.get("gen_max_card"), link.get("width_max")
    best = link_max_gbps(link)
    now = theoretical_gbps(gen, width)
    out = []
    problems = []
    if _is_int(width_max) and width < width_max:
        problems.append(f"running x{width} of x{width_max} lanes")
    if _is_int(gen_max) and gen < gen_max:
        problems.append(f"running Gen{gen} although card and slot allow Gen{gen_max}")
    if problems:
        best_w = width_max if _is_int(width_max) else width
        best_gen = gen_max if _is_int(gen_max) else gen
        out.append(finding(
            "PCIE_LINK_DEGRADED", "warning",
            f"PCIe link is x{width} Gen{gen} where card and slot allow x{best_w} Gen{best_gen} "
            f"({'; '.join(problems)}): {now} GB/s per direction instead of {best['system']}.",
            {"gen": gen, "width": width, "gen_max": gen_max, "gen_max_card": gen_card,
             "width_max": width_max, "theoretical_gbps": now, "theoretical_max_gbps": best["system"],
             "source": "NVML, read during a copy"},
            "Seat the card in a full-width x16 slot wired to the CPU (not the chipset), check "
            "risers/extension cables and the BIOS PCIe speed setting; a laptop or eGPU link "
            "is fixed by its design."))
    if _is_int(gen_card) and _is_int(gen_max) and gen_max < gen_card:
        out.append(finding(
            "PCIE_SLOT_LIMITS_CARD", "info",
            f"A Gen{gen_card} card limited to Gen{gen_max} by the slot or CPU: copies top out at "
            f"{best['system']} GB/s per direction here; the card alone could carry {best['card']}.",
            {"gen_max": gen_max, "gen_max_card": gen_card, "width_max": width_max,
             "theoretical_max_gbps": best["system"], "theoretical_card_max_gbps": best["card"],
             "source": "NVML, read during a copy"},
            "Use a slot of the card's generation if the board has one; otherwise keep transfers few and large."))
    return out


def point_median(points: Iterable[Mapping[str, Any]], direction: str, memory: str,
                 size_bytes: Optional[int] = None) -> Optional[float]:
    """Median GB/s of the (largest, or given) size point for a direction and memory kind."""
    rows = [p for p in points if p["direction"] == direction and p["memory"] == memory
            and p["gbps"].get("median") is not None]
    if size_bytes is not None:
        rows = [p for p in rows if p["size_bytes"] == size_bytes]
    if not rows:
        return None
    return max(rows, key=lambda p: p["size_bytes"])["gbps"]["median"]


def pcie_peaks(points: Sequence[Mapping[str, Any]]) -> Dict[str, Optional[float]]:
    """The best median over sizes for each direction x memory: {h2d_pinned_gbps, ...}."""
    out: Dict[str, Optional[float]] = {}
    for direction in ("h2d", "d2h", "bidir"):
        for memory in ("pinned", "pageable"):
            meds = [p["gbps"]["median"] for p in points if p["direction"] == direction
                    and p["memory"] == memory and p["gbps"].get("median") is not None]
            if meds or direction != "bidir" or memory == "pinned":
                out[f"{direction}_{memory}_gbps"] = round(max(meds), 3) if meds else None
    return out


def pcie_efficiency(peaks: Mapping[str, Optional[float]], theoretical: Optional[float]) -> Dict[str, Optional[float]]:
    """Share of the link's per-direction rate reached; bidir counts both directions (2x theory)."""
    out = {}
    for key, val in peaks.items():
        name = key[:-len("_gbps")]
        theo = theoretical * 2 if (theoretical and name.startswith("bidir")) else theoretical
        out[name] = efficiency(val, theo)
    return out


def pageable_findings(points: Sequence[Mapping[str, Any]]) -> List[dict]:
    """PAGEABLE_FASTER_THAN_PINNED: at the largest size both were measured, pageable won clearly."""
    out = []
    for direction in ("h2d", "d2h"):
        sizes = sorted({p["size_bytes"] for p in points if p["direction"] == direction})
        for size in reversed(sizes):
            pinned = point_median(points, direction, "pinned", size)
            pageable = point_median(points, direction, "pageable", size)
            if pinned is None or pageable is None:
                continue
            if pageable > pinned * PAGEABLE_FASTER_FACTOR:
                out.append(finding(
                    "PAGEABLE_FASTER_THAN_PINNED", "warning",
                    f"{direction.upper()} copies of {fmt_bytes(size)} "
                    f"from pageable memory ran at {pageable:.2f} GB/s, faster than pinned ({pinned:.2f} GB/s). "
                    "Pinned memory should be the fast path; this pattern is seen under Windows WDDM and WSL2.",
                    {"direction": direction, "size_bytes": size, "pinned_gbps": round(pinned, 3),
                     "pageable_gbps": round(pageable, 3)},
                    "Do not rely on pin_memory=True here: measure your DataLoader with and without it; "
                    "on Windows a TCC/MCDM-capable card, or Linux, avoids the WDDM copy path."))
            break
    return out


def efficiency_findings(h2d_pinned_gbps: Optional[float], theoretical: Optional[float],
                        link: Mapping[str, Any]) -> List[dict]:
    """PCIE_EFFICIENCY_LOW: the best pinned host->device copy reached under 60 % of the link's rate."""
    eff = efficiency(h2d_pinned_gbps, theoretical)
    if eff is None or eff >= PCIE_EFFICIENCY_LOW_FRACTION:
        return []
    return [finding(
        "PCIE_EFFICIENCY_LOW", "warning",
        f"Pinned host->device copies reached {h2d_pinned_gbps:.2f} GB/s, {fmt_pct(eff)} of the "
        f"x{link.get('width')} Gen{link.get('gen')} link's {theoretical} GB/s (healthy systems reach 75-90 %).",
        {"h2d_pinned_gbps": round(h2d_pinned_gbps, 3), "theoretical_gbps": theoretical,
         "efficiency_fraction": eff},
        "Check that this process runs on the CPU socket the GPU hangs off (NUMA), that nothing else "
        "copies at the same time, and under Windows the WDDM copy path; an eGPU/Thunderbolt link is "
        "slower than its lane count says.")]


def numa_placement(gpu_node: Optional[int], process_cpus: Set[int],
                   node_cpus: Mapping[int, Set[int]]) -> Dict[str, Any]:
    """Where this process may run relative to the GPU's NUMA node.

    gpu_node: /sys/bus/pci/devices/<bus>/numa_node (-1 or None: the OS does not tell, or one node).
    Returns {gpu_node, process_nodes, local: bool|None, reason}.
    """
    nodes = sorted(n for n, cpus in node_cpus.items() if cpus & process_cpus)
    if gpu_node is None or gpu_node < 0:
        return {"gpu_node": None, "process_nodes": nodes, "local": None,
                "reason": "the OS reports no NUMA node for the GPU (single-node machine or not Linux)"}
    if len(node_cpus) <= 1:
        return {"gpu_node": gpu_node, "process_nodes": nodes, "local": True,
                "reason": "one NUMA node"}
    return {"gpu_node": gpu_node, "process_nodes": nodes, "local": gpu_node in nodes, "reason": ""}


def numa_findings(placement: Mapping[str, Any]) -> List[dict]:
    """PCIE_NUMA_REMOTE: this process may only run on CPUs of other NUMA nodes than the GPU's."""
    if placement.get("local") is not False:
        return []
    node = placement["gpu_node"]
    return [finding(
        "PCIE_NUMA_REMOTE", "warning",
        f"The GPU hangs off NUMA node {node}, but this process runs on node(s) "
        f"{', '.join(map(str, placement['process_nodes']))}: every copy crosses the CPU interconnect "
        "(published cases lose 3-5x host<->device bandwidth).",
        {"gpu_numa_node": node, "process_numa_nodes": list(placement["process_nodes"]),
         "source": "/sys/bus/pci/devices/<bus>/numa_node, sched_getaffinity"},
        f"Run the job on node {node}'s CPUs and memory: `numactl --cpunodebind={node} --membind={node} "
        "python ...` (or set the DataLoader workers' affinity).")]


# --------------------------------------------------------------------------- launch

LAUNCH_OVERHEAD_HIGH_US = 20.0  # CPU-side launch is usually 5-20 us (HTA docs)
GRAPH_SPEEDUP_WORTH = 1.5


def graph_speedup(eager_per_op_us: Optional[float], graph_per_op_us: Optional[float]) -> Optional[float]:
    """How many times faster the graph replay ran the same ops than eager launches."""
    if not eager_per_op_us or not graph_per_op_us or graph_per_op_us <= 0:
        return None
    return round(eager_per_op_us / graph_per_op_us, 3)


def per_op_us(wall_s_samples: Iterable[float], ops: int) -> List[float]:
    """Wall-clock samples of `ops` operations as microseconds per operation."""
    return [s / ops * 1e6 for s in wall_s_samples]


def launch_findings(data: Mapping[str, Any]) -> List[dict]:
    """LAUNCH_OVERHEAD_HIGH, GRAPH_SPEEDUP and LAUNCH_MEASURED_BLOCKING from `launch` data."""
    out = []
    blocking = bool(data.get("cuda_launch_blocking"))
    over = (data.get("launch_overhead_us") or {}).get("median")
    if over is not None and over > LAUNCH_OVERHEAD_HIGH_US:
        extra = (" CUDA_LAUNCH_BLOCKING is set, so each launch also waited for the kernel to finish."
                 if blocking else "")
        out.append(finding(
            "LAUNCH_OVERHEAD_HIGH", "warning",
            f"Launching one tiny kernel costs {over:.1f} us of CPU time (median; usually 5-20 us). "
            f"A loop of small ops is bound by launches, not by the GPU.{extra}",
            {"launch_overhead_us": data.get("launch_overhead_us"), "cuda_launch_blocking": blocking},
            "Launch fewer, larger ops (batch, fuse, torch.compile) or capture the loop in a CUDA graph; "
            "under Windows WDDM launches cost more than under Linux."))
    graph = data.get("graph") or {}
    sp = graph.get("speedup")
    if sp is not None and sp >= GRAPH_SPEEDUP_WORTH:
        out.append(finding(
            "GRAPH_SPEEDUP", "info",
            f"Replaying {graph.get('ops_per_graph')} tiny ops as a CUDA graph ran {sp:.1f}x faster than "
            f"launching them one by one ({graph.get('eager_per_op_us'):.1f} -> "
            f"{graph.get('graph_per_op_us'):.1f} us per op).",
            {"graph": dict(graph)},
            "Workloads of many small kernels with static shapes gain from torch.cuda.graphs "
            "(or torch.compile(mode='reduce-overhead'))."))
    if blocking:
        out.append(finding(
            "LAUNCH_MEASURED_BLOCKING", "warning",
            "CUDA_LAUNCH_BLOCKING is set: the launch figures include waiting for each kernel, and so "
            "does every program started from this environment.",
            {"cuda_launch_blocking": True, "source": "environment"},
            "Unset CUDA_LAUNCH_BLOCKING (a debugging aid) and measure again."))
    return out


# ----------------------------------------------------------------------- contention

def sleep_cycles_for(target_ms: float, cycles: int, measured_ms: float) -> int:
    """Spin-kernel cycles for `target_ms`, scaled from one calibration run (cycles took measured_ms)."""
    if measured_ms <= 0:
        raise ValueError("calibration kernel took no time")
    return max(1000, int(cycles * target_ms / measured_ms))


def matmul_n_for(target_ms: float, n: int, measured_ms: float, lo: int = 128, hi: int = 4096) -> int:
    """The matrix size whose n x n matmul takes about target_ms, scaled from one run of size n (work grows as
    n^3), a multiple of 64 within [lo, hi]."""
    if measured_ms <= 0:
        raise ValueError("calibration matmul took no time")
    scaled = n * (target_ms / measured_ms) ** (1 / 3)
    return int(min(hi, max(lo, 64 * round(scaled / 64))))


def thread_rows(one_wall_s: float, kernels: int, solo_ms: float,
                runs: Mapping[int, float]) -> List[dict]:
    """Rows {workers, wall_s, ideal_s, throughput_vs_one} for threads each launching `kernels` spin kernels.

    ideal_s is strict time-sharing (workers x kernels x solo); threads in one context may run
    kernels on their streams concurrently, so they can beat it (throughput_vs_one > 1).
    """
    rows = []
    for workers, wall in sorted({1: one_wall_s, **dict(runs)}.items()):
        rows.append({"workers": workers, "wall_s": round(wall, 6),
                     "ideal_s": round(workers * kernels * solo_ms / 1e3, 6),
                     "throughput_vs_one": round((workers / wall) / (1 / one_wall_s), 3) if wall > 0 else None})
    return rows


def contention_estimate(workers: int, kernels: int, solo_ms: float, wall_s: float,
                        elapsed_ms: Sequence[float]) -> Dict[str, Any]:
    """What time-slicing between `workers` processes cost, from per-kernel event times.

    Model (methods.md 4.3): every process queues `kernels` kernels of fixed work (matmuls) of `solo_ms` each,
    which resume their remaining work when switched back in (spin kernels do not: see
    device.work_kernels). Under
    round-robin time-slicing a kernel that is switched out waits while the other N-1 processes each
    run one slice T and the GPU switches N times: its event time grows by (N-1)*T + N*c (c = cost of
    one switch). Kernels shorter than the slice are switched out at most once, so:
      - ideal_s = N * kernels * solo_ms (perfect sharing), overhead = 1 - ideal/wall;
      - switches ~ the number of switched-out kernels; c ~ (wall - ideal) / switches;
      - T ~ (median extra of switched kernels - N*c) / (N-1).
    Returns {workers, wall_s, ideal_s, stretch, overhead_fraction, switched_fraction,
    switch_cost_us_est, timeslice_ms_est, reason}.
    """
    ideal_s = workers * kernels * solo_ms / 1e3
    row: Dict[str, Any] = {"workers": workers, "wall_s": round(wall_s, 6), "ideal_s": round(ideal_s, 6),
                           "stretch": None, "overhead_fraction": None, "switched_fraction": None,
                           "switch_cost_us_est": None, "timeslice_ms_est": None, "reason": ""}
    if not elapsed_ms or solo_ms <= 0 or wall_s <= 0:
        row["reason"] = "no kernel timings"
        return row
    row["stretch"] = round(median(elapsed_ms) / solo_ms, 3)
    lost_s = wall_s - ideal_s
    row["overhead_fraction"] = round(max(0.0, lost_s / wall_s), 4)
    tol = 0.5 * solo_ms
    extras = [e - solo_ms for e in elapsed_ms if e - solo_ms > tol]
    row["switched_fraction"] = round(len(extras) / len(elapsed_ms), 4)
    if workers < 2 or len(extras) < 3:
        row["reason"] = ("no kernel was held back by another process: no time-slicing seen "
                         "(MPS active, or the kernels ran concurrently)")
        return row
    cost_s = max(0.0, lost_s) / len(extras)
    row["switch_cost_us_est"] = round(cost_s * 1e6, 2)
    slice_ms = (median(extras) - workers * cost_s * 1e3) / (workers - 1)
    row["timeslice_ms_est"] = round(slice_ms, 4) if slice_ms > 0 else None
    if row["switched_fraction"] > 0.9:
        row["reason"] = ("nearly every kernel was switched out: the time slice is shorter than one "
                         f"{solo_ms:.2f} ms kernel, so the slice estimate is an upper bound")
    return row


def contention_findings(data: Mapping[str, Any]) -> List[dict]:
    """PROCESS_TIMESLICING (info), PROCESS_SHARING_OVERHEAD_HIGH, STREAMS_RUN_CONCURRENTLY, CONTEXT_MEMORY."""
    out = []
    procs = [r for r in data.get("processes") or [] if r.get("stretch") is not None]
    for r in procs:
        if r.get("timeslice_ms_est") is None and r.get("switch_cost_us_est") is None:
            continue
        slice_txt = (f"a time slice of ~{r['timeslice_ms_est']:.2f} ms" if r.get("timeslice_ms_est")
                     else "an unknown slice")
        out.append(finding(
            "PROCESS_TIMESLICING", "info",
            f"{r['workers']} processes on one GPU take turns: each kernel took {r['stretch']:.1f}x its solo "
            f"time, {slice_txt}, ~{r['switch_cost_us_est']:.0f} us per switch, "
            f"{fmt_pct(r['overhead_fraction'], 1)} of the time lost versus ideal sharing.",
            {k: r.get(k) for k in ("workers", "stretch", "overhead_fraction", "switch_cost_us_est",
                                   "timeslice_ms_est", "switched_fraction", "wall_s", "ideal_s")},
            None))
        break
    worst = max(procs, key=lambda r: r.get("overhead_fraction") or 0, default=None)
    if worst and (worst.get("overhead_fraction") or 0) > 0.15:
        out.append(finding(
            "PROCESS_SHARING_OVERHEAD_HIGH", "warning",
            f"With {worst['workers']} processes sharing the GPU, {fmt_pct(worst['overhead_fraction'])} of "
            "the time went to switching between them rather than to work.",
            {"workers": worst["workers"], "overhead_fraction": worst["overhead_fraction"],
             "wall_s": worst["wall_s"], "ideal_s": worst["ideal_s"]},
            "Prefer one process feeding the GPU (threads + streams, batching), or the MPS daemon on Linux "
            "(`nvidia-cuda-mps-control -d`) when several processes must share it."))
    threads = [r for r in data.get("threads") or [] if r.get("workers", 1) > 1]
    best = max(threads, key=lambda r: r.get("throughput_vs_one") or 0, default=None)
    if best and (best.get("throughput_vs_one") or 0) >= 1.5:
        out.append(finding(
            "STREAMS_RUN_CONCURRENTLY", "info",
            f"{best['workers']} threads on their own streams in one process ran {best['throughput_vs_one']:.1f}x "
            "the kernels of one thread: kernels of one context overlap, kernels of separate processes "
            "only take turns.",
            {"threads": list(data.get("threads") or [])}, None))
    ctx = data.get("context") or {}
    if ctx.get("device_bytes"):
        out.append(finding(
            "CONTEXT_MEMORY", "info",
            f"Every extra process with CUDA costs ~{fmt_bytes(ctx['device_bytes'])} of GPU memory for its "
            f"context and ~{ctx.get('create_s') or 0:.2f} s to create it.",
            dict(ctx), "Count this per DataLoader/worker process that touches CUDA."))
    return out
