"""Probe `pcie`: host<->device copy bandwidth against what the PCIe link should carry.

On device 0: host->device, device->host and both at once (two streams), from pinned and pageable
host memory, over a size sweep capped by free memory; each point timed with CUDA events, median
and p10/p90. The link generation and width are read from NVML *while a large copy runs* (idle
links downtrain to save power), the torch device matched to its NVML handle by PCI bus id.
On Linux, the GPU's NUMA node is compared with the CPUs this process may run on.
Analysis (theory table, efficiency, findings) lives in gpudiag.probes.cuda.analysis.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional

from gpudiag.probes.cuda import analysis
from gpudiag.backends import nvml as nvml_backend
from gpudiag.backends.nvml import NA
from gpudiag.platform import nvidia
from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, ProbeSkip
from gpudiag.units import fmt_bytes
from gpudiag.measure.stats import summarize

_SAMPLE_EVERY_S = 0.005


# ----------------------------------------------------------------- device <-> NVML <-> sysfs

def read_link(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """Current link generation and width (ints or "n/a")."""
    return {"gen": n.call("nvmlDeviceGetCurrPcieLinkGeneration", h),
            "width": n.call("nvmlDeviceGetCurrPcieLinkWidth", h)}


def link_limits(n: nvml_backend.Nvml, h: Any) -> Dict[str, Any]:
    """The most the link may train to (ints or "n/a"): gen_max for card and slot together, gen_max_card for
    the card alone, width_max; against the sampled link they tell a slot limit from a degraded link."""
    return {"gen_max": n.call("nvmlDeviceGetMaxPcieLinkGeneration", h),  # device and system
            "gen_max_card": n.call("nvmlDeviceGetGpuMaxPcieLinkGeneration", h),  # device alone
            "width_max": n.call("nvmlDeviceGetMaxPcieLinkWidth", h)}


class LinkSampler:
    """Reads the link in a background thread until stopped (NVML is thread-safe)."""

    def __init__(self, read):
        self._read = read
        self._stop = threading.Event()
        self.samples: List[Dict[str, Any]] = []
        self.error = ""
        self._thread = threading.Thread(target=self._loop, name="gpudiag-link-sampler", daemon=True)

    def _loop(self) -> None:
        """Append a reading every 5 ms until stopped; the first failure ends sampling and is kept in `error`."""
        while not self._stop.is_set():
            try:
                self.samples.append(self._read())
            except Exception as exc:  # broad on purpose: this guards a background sampler
                # NVML's own errors are already "n/a" (Nvml.call), so what lands here is unforeseen: it ends
                # the sampling with a reason instead of a thread traceback, and the copies go on.
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self._stop.wait(_SAMPLE_EVERY_S)

    def __enter__(self) -> "LinkSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)


def numa_facts(bus_id: Optional[str], root: str = "/", process_cpus=None) -> Dict[str, Any]:
    """The GPU's NUMA node vs this process's CPUs (platform.nvidia reads them from sysfs on Linux; `root` is a
    fake tree in tests)."""
    where = nvidia.gpu_numa(bus_id, root)
    if where["reason"]:
        return {"gpu_node": None, "process_nodes": [], "local": None, "reason": where["reason"]}
    if process_cpus is None:
        process_cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
    return analysis.numa_placement(where["gpu_node"], set(process_cpus), where["node_cpus"])


# ----------------------------------------------------------------------- measurement

def _copy_ms(torch, dst, src, stream, pinned: bool, repeats: int, warmup: int, timer) -> List[float]:
    """Event-timed copies of src into dst on `stream` (ms each, warm-up dropped).

    Pinned copies are queued (non_blocking) and timed behind a spin-kernel lead (`timer`, device.DeviceTimer),
    so a small copy's figure is not stretched by the host's time to launch it. A pageable copy is
    synchronous for the host (CUDA stages it through a pinned buffer and waits for the stream first): its
    events frame that whole blocking copy, host staging included, which is what a pageable copy costs.
    """
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            dst.copy_(src, non_blocking=pinned)
    stream.synchronize()
    if pinned:
        return timer.samples(lambda: dst.copy_(src, non_blocking=True), repeats, stream)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    with torch.cuda.stream(stream):
        for _ in range(repeats):
            start.record(stream)
            dst.copy_(src, non_blocking=False)  # pageable: through a staging buffer, blocking anyway
            end.record(stream)
            end.synchronize()
            out.append(start.elapsed_time(end))
    return out


def _bidir_ms(torch, dev_dst, host_src, host_dst, dev_src, s1, s2, repeats: int, warmup: int, timer) -> List[float]:
    """Event-timed H2D on s1 and D2H on s2 started together (behind `timer`'s lead on s1); ms from the common
    start to both done."""
    mid = torch.cuda.Event(enable_timing=True)

    def both() -> None:
        """The two copies, each on its stream, both after the start event and both before the end event."""
        s2.wait_event(timer.start)
        with torch.cuda.stream(s1):
            dev_dst.copy_(host_src, non_blocking=True)
        with torch.cuda.stream(s2):
            host_dst.copy_(dev_src, non_blocking=True)
        mid.record(s2)
        s1.wait_event(mid)

    for _ in range(warmup):
        timer.time(both, s1)
    return timer.samples(both, repeats, s1)


def _point(direction: str, memory: str, size: int, ms: List[float], bytes_factor: int = 1) -> dict:
    """One sweep point: GB/s statistics of the timed copies (`bytes_factor` 2 for bidir, which moves the
    size both ways) with the direction, host memory kind, size and sample count."""
    rates = [r for r in (analysis.gbps(size * bytes_factor, m) for m in ms) if r is not None]
    stats = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summarize(rates).items()}
    return {"direction": direction, "memory": memory, "size_bytes": size, "repeats": len(ms), "gbps": stats}


def _measure_link(torch, dst, src, stream, quick: bool, bus_id: Optional[str],
                  env: Mapping[str, str]) -> Dict[str, Any]:
    """NVML link facts, the current link sampled during a loop of large (pinned) copies."""
    link: Dict[str, Any] = {"gen": None, "width": None, "gen_max": None, "gen_max_card": None,
                            "width_max": None, "gen_idle": None, "width_idle": None,
                            "read_under_load": False, "samples": 0, "matched_by": None, "reason": "",
                            "source": "NVML, sampled every 5 ms during host->device copies"}
    try:
        with nvml_backend.session() as n:
            h, how = nvml_backend.cuda_device_handle(n, bus_id, 0, env)
            if h is None:
                link["reason"] = how
                return link
            link["matched_by"] = how
            link.update({k: (None if v is NA else v) for k, v in link_limits(n, h).items()})
            idle = read_link(n, h)
            link["gen_idle"] = None if idle["gen"] is NA else idle["gen"]
            link["width_idle"] = None if idle["width"] is NA else idle["width"]
            seconds = 0.5 if quick else 1.0
            with LinkSampler(lambda: read_link(n, h)) as sampler:
                t_end = time.perf_counter() + seconds
                copies = 0
                while time.perf_counter() < t_end or copies < 3:
                    with torch.cuda.stream(stream):
                        dst.copy_(src, non_blocking=True)
                    stream.synchronize()
                    copies += 1
            loaded = analysis.link_under_load(sampler.samples)
            link.update(gen=loaded["gen"], width=loaded["width"], samples=loaded["samples"],
                        read_under_load=loaded["samples"] > 0)
            if not loaded["samples"]:
                link["reason"] = sampler.error or "NVML does not report the PCIe link on this system (n/a)"
    except nvml_backend.NvmlUnavailable as exc:
        link["reason"] = str(exc)
    return link


def run(ctx: ProbeContext) -> ProbeOutput:
    """The `pcie` data and findings: the GB/s sweep, the link read under load vs its theoretical rate,
    efficiency and NUMA placement (pinned points left out with a reason where pinning fails)."""
    from gpudiag.probes.cuda.device import out_of_memory_as_skip, require_cuda

    torch = require_cuda(min_free_bytes=256 * 2 ** 20)
    with out_of_memory_as_skip(torch):
        return _run(ctx, torch)


def _run(ctx: ProbeContext, torch) -> ProbeOutput:
    """run()'s measurements, on the torch require_cuda gave (out of memory becomes a skip there)."""
    import psutil

    from gpudiag.probes.cuda.device import DeviceTimer, device_info

    free_dev, _ = torch.cuda.mem_get_info(0)
    free_host = psutil.virtual_memory().available
    sizes = analysis.pcie_sizes(ctx.quick, free_dev, free_host)
    if not sizes:
        raise ProbeSkip(f"too little free memory for a bandwidth sweep ({fmt_bytes(free_dev)} GPU, "
                        f"{fmt_bytes(free_host)} host free): close other programs")
    top = max(sizes)
    u8 = torch.uint8
    dev_a = torch.empty(top, dtype=u8, device="cuda")
    dev_b = torch.empty(top, dtype=u8, device="cuda")
    page_a = torch.ones(top, dtype=u8)  # touched, so first-use page faults are not timed
    page_b = torch.ones(top, dtype=u8)
    pinned_reason = ""
    try:
        pin_a = torch.ones(top, dtype=u8).pin_memory()
        pin_b = torch.ones(top, dtype=u8).pin_memory()
    except RuntimeError as exc:  # WSL2 and locked-down systems limit page-locked memory
        pin_a = pin_b = None
        pinned_reason = f"pinned host memory unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    timer = DeviceTimer(torch)

    points: List[dict] = []
    for size in sizes:
        reps = analysis.pcie_repeats(ctx.quick, size)
        warm = 3 if size < 64 * 2 ** 20 else 2
        da, db = dev_a[:size], dev_b[:size]
        if pin_a is not None:
            pa, pb = pin_a[:size], pin_b[:size]
            points.append(_point("h2d", "pinned", size, _copy_ms(torch, da, pa, s1, True, reps, warm, timer)))
            points.append(_point("d2h", "pinned", size, _copy_ms(torch, pb, db, s1, True, reps, warm, timer)))
            points.append(_point("bidir", "pinned", size,
                                 _bidir_ms(torch, da, pa, pb, db, s1, s2, reps, warm, timer), bytes_factor=2))
        pga, pgb = page_a[:size], page_b[:size]
        points.append(_point("h2d", "pageable", size, _copy_ms(torch, da, pga, s1, False, reps, warm, timer)))
        points.append(_point("d2h", "pageable", size, _copy_ms(torch, pgb, db, s1, False, reps, warm, timer)))

    load_src = pin_a if pin_a is not None else page_a
    bus_id = nvml_backend.pci_bus_id(torch.cuda.get_device_properties(0))
    link = _measure_link(torch, dev_a, load_src, s1, ctx.quick, bus_id, dict(os.environ))
    theory = analysis.theoretical_gbps(link["gen"], link["width"]) if link["read_under_load"] else None
    theory_max = analysis.link_max_gbps(link)  # the slot's (what copies can reach) and the card's alone
    peaks = analysis.pcie_peaks(points)
    numa = numa_facts(bus_id)

    data = {
        "device": device_info(torch),
        "sizes_bytes": sizes,
        "points": points,
        "pinned_reason": pinned_reason,
        "link": link,
        "theoretical_gbps_per_direction": theory,
        "theoretical_reason": "" if theory is not None else
        (link["reason"] or "the link was not read under load"),
        "theoretical_max_gbps_per_direction": theory_max["system"],
        "theoretical_card_max_gbps_per_direction": theory_max["card"],
        "peak": peaks,
        "efficiency": analysis.pcie_efficiency(peaks, theory),
        "numa": numa,
        "device_timing": timer.info(),
    }
    findings = analysis.link_findings(link)
    findings += analysis.pageable_findings(points)
    findings += analysis.efficiency_findings(peaks.get("h2d_pinned_gbps"), theory, link)
    findings += analysis.numa_findings(numa)
    return ProbeOutput(data, findings)


PROBE = Probe(
    name="pcie",
    title="PCIe transfer bandwidth",
    summary="Host<->device copy bandwidth (pinned/pageable, both directions) vs the PCIe link's rate",
    run=run,
    needs=("cuda",),
    isolate=True,
    timeout_s=60.0,
    full_timeout_s=180.0,
)
