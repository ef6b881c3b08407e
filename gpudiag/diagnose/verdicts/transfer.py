"""Verdicts on moving data and waiting for it: PCIe bandwidth, and host round trips that leave the GPU idle."""

from __future__ import annotations

from gpudiag.diagnose.access import (
    Figures,
    cycle_device,
    link_text,
    not_run_reason,
    strategy_reason,
    strategy_rows,
    verdict_entry,
)
from gpudiag.diagnose.thresholds import (
    DEFERRED_SYNC_GAIN_MIN,
    HOST_IDLE_FRACTION_MIN,
    HOST_SYNC_SHARE_MIN,
    PCIE_EFFICIENCY_LOW,
    PCIE_TRANSFER_SHARE_SUPPORTED,
)
from gpudiag.report.values import as_bool, as_str, probe_data
from gpudiag.units import fmt_pct


def verdict_pcie_bandwidth(report: dict) -> dict:
    """Is the host<->device link slow, and does the loop spend its time in transfers?"""
    cause = "pcie_bandwidth"
    pc = probe_data(report, "pcie")
    fig = Figures()
    # The share of cycle time spent copying is only known when the cycle timeline records it.
    cyc = ("probes", "cycle", "data", "idle", "serial", "transfer_fraction")
    share = fig.read("transfer_fraction_of_cycle", report, *cyc)
    if not pc:
        return verdict_entry(cause, "not_measured", "PCIe bandwidth was not measured.",
                        not_run_reason(report, "pcie") + "; it needs a CUDA device", fig.values, fig.sources)
    b = ("probes", "pcie", "data")
    eff = fig.read("h2d_pinned_efficiency", report, *b, "efficiency", "h2d_pinned")
    peak = fig.read("h2d_pinned_gbps", report, *b, "peak", "h2d_pinned_gbps")
    theo = fig.read("theoretical_gbps_per_direction", report, *b, "theoretical_gbps_per_direction")
    gen = fig.read("link_gen", report, *b, "link", "gen")
    width = fig.read("link_width", report, *b, "link", "width")
    gen_max = fig.read("link_gen_max", report, *b, "link", "gen_max")
    width_max = fig.read("link_width_max", report, *b, "link", "width_max")
    loaded = fig.read("link_read_under_load", report, *b, "link", "read_under_load", kind=as_bool)
    degraded = bool(loaded) and ((gen is not None and gen_max is not None and gen < gen_max) or
                                 (width is not None and width_max is not None and width < width_max))
    fig.put("link_degraded", degraded)
    link = link_text(gen, width)
    if degraded:
        link += f" (capable of {link_text(gen_max, width_max)})"
    speed = (f"pinned host->device copies reach {peak:.1f} GB/s" if peak is not None else "copy speed unknown")
    if theo is not None:
        speed += f" of {theo:.1f} GB/s theoretical for {link}"
    if eff is not None:
        speed += f" ({fmt_pct(eff)})"
    if share is not None:
        rule = f"rule: supported when copies take {fmt_pct(PCIE_TRANSFER_SHARE_SUPPORTED)} or more of a cycle"
        text = f"Host<->device copies take {fmt_pct(share)} of a cycle; {speed}."
        if share >= PCIE_TRANSFER_SHARE_SUPPORTED:
            return verdict_entry(cause, "supported", "Transfer-bound: " + text, rule, fig.values, fig.sources)
        return verdict_entry(cause, "refuted", text + " Transfers are not what limits the loop.", rule,
                        fig.values, fig.sources)
    needed = ("the share of cycle time spent in host<->device copies was not measured; it needs the copy "
              "time per cycle from the cycle probe's GPU timeline (idle.serial.transfer_fraction)")
    if degraded or (eff is not None and eff < PCIE_EFFICIENCY_LOW):
        why = "the link runs below what the card supports" if degraded else \
            f"copies reach less than {fmt_pct(PCIE_EFFICIENCY_LOW)} of the link's rate"
        return verdict_entry(cause, "supported", f"The link underdelivers: {speed}; {why}. How much of each "
                        "cycle waits on it was not measured.",
                        f"rule: supported when the link is degraded or below {fmt_pct(PCIE_EFFICIENCY_LOW)} "
                        f"efficiency; {needed}", fig.values, fig.sources)
    return verdict_entry(cause, "not_measured", f"The link is healthy: {speed}. Whether the loop waits on it is open.",
                    needed, fig.values, fig.sources)


def verdict_host_sync_idle(report: dict) -> dict:
    """Do host syncs (round trips such as .item()) leave the GPU idle in the plain loop? Tells them
    apart from the other reasons a GPU idles: host compute, waiting on copies, launch overhead."""
    cause = "host_sync_idle"
    cyc = probe_data(report, "cycle")
    if not cyc:
        return verdict_entry(cause, "not_measured", "GPU idle gaps were not measured.",
                        not_run_reason(report, "cycle"))
    if cycle_device(report) not in (None, "cuda"):
        return verdict_entry(cause, "not_measured", "The cycle ran on the CPU: there is no GPU to sit idle.",
                        f"the cycle ran on device {cycle_device(report)!r}; idle gaps need a CUDA device")
    fig = Figures()
    t = ("probes", "cycle", "data", "idle", "serial")
    busy = fig.read("serial_busy_fraction", report, *t, "busy_fraction")
    fig.read("timeline_method", report, *t, "method", kind=as_str)
    host = fig.read("host_wait_ms", report, *t, "breakdown_ms", "host_wait")
    sync = fig.read("sync_wait_ms", report, *t, "breakdown_ms", "sync_wait")
    copy = fig.read("copy_wait_ms", report, *t, "breakdown_ms", "copy_wait")
    launch = fig.read("launch_overhead_ms", report, *t, "breakdown_ms", "launch_overhead")
    fig.read("gap_count", report, *t, "gaps", "count")
    fig.read("nvml_median_percent", report, "probes", "cycle", "data", "nvml_utilization", "median_percent")
    idle = fig.put("serial_idle_fraction", round(1 - busy, 4) if busy is not None else None)
    parts = {k: v for k, v in (("host compute", host), ("sync waits", sync), ("copies", copy),
                               ("launch overhead", launch)) if v is not None}
    total = sum(parts.values())
    share = fig.put("sync_share_of_idle", round((sync or 0) / total, 4) if total > 0 else None)
    largest = max(parts, key=parts.get) if total > 0 else None
    fig.put("largest_idle_part", largest)
    rows = {r["name"]: r for r in strategy_rows(report) if r["status"] == "ok"}
    gain = None
    d, s = rows.get("deferred_sync"), rows.get("serial")
    if d:
        gain = fig.read("deferred_sync_speedup", report, "probes", "cycle", "data", "strategies", d["index"],
                        "speedup_vs_serial")
        if gain is None and s and d["cycles_per_s"] and s["cycles_per_s"]:
            gain = fig.put("deferred_sync_speedup", round(d["cycles_per_s"] / s["cycles_per_s"], 3))
    if busy is None and gain is None:
        return verdict_entry(cause, "not_measured", "Neither a GPU timeline of the plain loop nor deferred_sync was "
                        "measured.", "no idle.serial timeline and no deferred_sync row; "
                        + strategy_reason(report, "deferred_sync"), fig.values, fig.sources)
    bits = []
    if busy is not None:
        bits.append(f"the plain loop keeps the GPU busy {fmt_pct(busy)} of the time")
    if total > 0:
        bits.append("its idle time is " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in parts.items()))
    if gain is not None:
        bits.append(f"syncing once every few cycles (deferred_sync) runs {gain:.2f}x the plain loop")
    nv = fig.values.get("nvml_median_percent")
    if nv is not None:
        bits.append(f"NVML showed {nv:.0f} % utilisation (what nvidia-smi would show)")
    text = "; ".join(bits) + "."
    rule = (f"rule: supported when idle >= {fmt_pct(HOST_IDLE_FRACTION_MIN)} and sync waits are its largest part "
            f"and at least {fmt_pct(HOST_SYNC_SHARE_MIN)} of it, or deferred_sync >= {DEFERRED_SYNC_GAIN_MIN}x")
    by_gaps = (idle is not None and idle >= HOST_IDLE_FRACTION_MIN and largest == "sync waits"
               and share is not None and share >= HOST_SYNC_SHARE_MIN)
    by_gain = gain is not None and gain >= DEFERRED_SYNC_GAIN_MIN
    if by_gaps or by_gain:
        return verdict_entry(cause, "supported", "Host round trips leave the GPU idle: " + text, rule,
                        fig.values, fig.sources)
    notes = {"host compute": " The GPU mostly waits for Python to launch the next op (host compute), not for "
                             "syncs: move host work out of the loop, batch cycles, or overlap it (threads/processes).",
             "copies": " The GPU mostly waits on copies, not on round trips: see the pcie_bandwidth verdict "
                       "(pinned memory, non_blocking copies, fewer or larger transfers).",
             "launch overhead": " Most idle time is launch overhead: fewer, larger launches (CUDA graphs, batching) "
                                "address that."}
    note = notes.get(largest, "") if idle is not None and idle >= HOST_IDLE_FRACTION_MIN else ""
    return verdict_entry(cause, "refuted", text[0].upper() + text[1:] + note, rule, fig.values, fig.sources)
