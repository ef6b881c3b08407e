"""The NVML sampler: utilisation, memory, PCIe, clock-event reasons and processes on each GPU.

Everything goes through gpudiag.backends.nvml (the one seam to pynvml; tests pass a fake
library). Per tick and device: the utilisation over the driver's last period, the driver's own
ring buffer of utilisation samples since the last read (higher resolution at no extra cost,
research/methods.md section 1.6), used memory, PCIe TX/RX throughput (devices taking turns when there
are many: each read blocks 20 ms), the clock-event reason
mask, and the compute and graphics processes with their memory. A process that is not the job's
and appears on the GPU mid-run (VS Code, a browser) is recorded with the time it appeared.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from gpudiag.backends import nvml as nvml_backend
from gpudiag.watch.sampler import Sampler

MAX_DEVICES = 8
# nvmlDeviceGetPcieThroughput counts bytes over a 20 ms window and returns after it (nvml.h; methods.md 1.2):
# two counters cost a device 40 ms, eight GPUs 320 ms of a 0.5 s tick. At most PCIE_TICK_SHARE of a tick
# goes to them; with more GPUs than that allows, the devices take turns (round-robin), each read every
# few ticks instead of stretching every tick.
PCIE_CALL_S = 0.02
PCIE_TICK_SHARE = 0.2


class GpuSampler(Sampler):
    """Samples every GPU NVML lists (up to MAX_DEVICES) through an open nvml.Nvml session."""

    name = "gpu"

    def __init__(self, n: nvml_backend.Nvml, interval_s: float, clock: Callable[[], float],
                 pcie: bool = True):
        super().__init__(interval_s, clock)
        self.n = n
        self.pcie = pcie
        count = min(n.device_count(), MAX_DEVICES)
        self.devices: List[Dict[str, Any]] = []
        for i in range(count):
            try:
                h = n.handle(i)
            except nvml_backend.NvmlError:  # GpuIsLost, NoPermission...: that GPU is left out, the others sampled
                continue
            name = n.call("nvmlDeviceGetName", h, default=None)
            self.devices.append({"index": i, "handle": h, "name": name if isinstance(name, str) else None,
                                 "driver_model": n.driver_model(h), "samples": [], "ring": [],
                                 "ring_last_us": 0, "ring_anchor": None})
        self.names: Dict[int, Optional[str]] = {}
        self.pcie_per_tick = max(1, int(PCIE_TICK_SHARE * interval_s / (2 * PCIE_CALL_S)))
        self._pcie_next = 0

    def _ring(self, dev: Dict[str, Any], t_s: float) -> None:
        """Moves the driver's utilisation samples newer than the last read into dev["ring"] as
        (watch seconds, %): finer than one reading per tick, at no extra cost to the job."""
        got = nvml_backend.utilization_samples(self.n, dev["handle"], dev["ring_last_us"])
        if got is nvml_backend.NA:
            dev["ring_supported"] = False
            return
        dev["ring_supported"] = True
        if not got:
            return
        newest = got[-1][0]
        if dev["ring_anchor"] is None:
            # The driver's clock is its own: place its newest sample of the first read at this
            # tick's time, and every later sample by its offset from that one.
            dev["ring_anchor"] = (newest, t_s)
        base_us, base_t = dev["ring_anchor"]
        for ts, value in got:
            if ts > dev["ring_last_us"]:
                dev["ring"].append((base_t + (ts - base_us) / 1e6, value))
        dev["ring_last_us"] = newest

    def _pcie_turn(self) -> List[int]:
        """Positions in self.devices whose PCIe counters are read this tick: pcie_per_tick of them, in turn."""
        count = len(self.devices)
        if not self.pcie or not count:
            return []
        k = min(count, self.pcie_per_tick)
        turn = [(self._pcie_next + i) % count for i in range(k)]
        self._pcie_next = (self._pcie_next + k) % count
        return turn

    def tick(self, t_s: float) -> None:
        """One sample of every device: utilisation, memory, reasons, processes, ring buffer, and PCIe for the
        devices whose turn it is (see PCIE_TICK_SHARE)."""
        n = self.n
        pcie_now = set(self._pcie_turn())
        for pos, dev in enumerate(self.devices):
            h = dev["handle"]
            row: Dict[str, Any] = {"t": t_s}
            util = nvml_backend.utilization_rates(n, h)
            if util is not nvml_backend.NA:
                row["util"], row["mem_util"] = util["gpu"], util["memory"]
            mem = nvml_backend.memory_used_bytes(n, h)
            if mem is not nvml_backend.NA:
                row["mem_used"], dev["mem_total"] = mem
            if pos in pcie_now:
                p = nvml_backend.pcie_throughput_kbps(n, h)
                if p is not nvml_backend.NA:
                    row["pcie_tx_kbps"], row["pcie_rx_kbps"] = p["tx"], p["rx"]
            reasons = n.clock_event_reasons(h)
            if isinstance(reasons, int):
                row["reasons"] = reasons
            procs: Dict[int, dict] = {}
            for kind in ("compute", "graphics"):
                rows = n.processes(h, kind)
                if rows is nvml_backend.NA:
                    continue
                row.setdefault("procs_listed", []).append(kind)
                for p in rows:
                    pid = p.get("pid")
                    if pid is None:
                        continue
                    cur = procs.setdefault(pid, {"kinds": [], "used": None})
                    cur["kinds"].append(kind)
                    if p.get("used_memory_bytes") is not None:
                        cur["used"] = max(cur["used"] or 0, p["used_memory_bytes"])
                    if pid not in self.names:
                        self.names[pid] = n.process_name(pid)
            row["procs"] = procs
            self._ring(dev, t_s)
            dev["samples"].append(row)

    def close(self) -> None:
        """Drop the NVML handles (the session owner closes NVML itself)."""
        for dev in self.devices:
            dev.pop("handle", None)
