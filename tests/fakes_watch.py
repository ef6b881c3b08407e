"""Fakes for `gpudiag watch` at its seams, built on tests/fakes.py.

ScriptedNvml: FakeNvml (recorded device values) plus the sampling calls watch makes
(nvmlDeviceGetSamples, nvmlDeviceGetPcieThroughput), driven by a script of ticks so a test can
say "utilisation 0 for three ticks, then 95; VS Code appears on the GPU at tick 4":

    fake = ScriptedNvml.build(FakeNvml.gtx1650_desktop(), ticks=[
        Tick(util=95, procs=[FakeProcess(job_pid, "python", "C", 900 * MiB)]),
        Tick(util=0, ring=[0, 0, 0]),
        Tick(util=90, procs=[..., FakeProcess(5555, "code", "G", 120 * MiB)], reasons=["sw_thermal_slowdown"]),
    ])
    fake.advance()   # the next nvml call sees the next tick

DeniedPsutil: the real psutil, except that the named Process methods raise AccessDenied, as for
another user's process or a container without the right capabilities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import psutil

from tests.fakes import NOT_SUPPORTED, NVMLError_NotFound, FakeNvml, FakeProcess, _as_process, _Struct, encode_clock_event_reasons


@dataclass
class Tick:
    util: Any = NOT_SUPPORTED          # percent, or NOT_SUPPORTED
    mem_util: Any = 0
    mem_used_bytes: Optional[int] = None
    procs: Optional[List[Any]] = None  # FakeProcess rows (None: keep the previous tick's)
    ring: Optional[Sequence[float]] = None  # ring-buffer samples added at this tick (None: one = util)
    pcie_kbps: Any = (0, 0)            # (tx, rx) KB/s or NOT_SUPPORTED
    reasons: Any = ()                  # clock-event reason names or an int mask


class ScriptedNvml(FakeNvml):
    """FakeNvml whose utilisation, memory, processes, PCIe and ring buffer follow `ticks` (GPU 0)."""

    RING_PERIOD_US = 100_000

    @classmethod
    def build(cls, base: FakeNvml, ticks: Sequence[Tick], ring_supported: bool = True) -> "ScriptedNvml":
        fake = cls(gpus=[dataclasses.replace(g) for g in base.gpus], driver_version=base.driver_version,
                   cuda_version=base.cuda_version, nvml_version=base.nvml_version, missing=base.missing)
        fake.ticks = list(ticks)
        fake.index = 0
        fake.ring_supported = ring_supported
        fake.ring: List[tuple] = []
        fake.clock_us = 5_000_000_000  # the driver's own clock: unrelated to the test's
        fake._apply()
        return fake

    def _apply(self) -> None:
        t = self.ticks[min(self.index, len(self.ticks) - 1)]
        g = self.gpus[0]
        g.utilization_gpu = t.util
        g.utilization_memory = t.mem_util
        if t.mem_used_bytes is not None and isinstance(g.memory_total_bytes, int):
            g.memory_used_bytes = t.mem_used_bytes
            g.memory_free_bytes = g.memory_total_bytes - t.mem_used_bytes
        if t.procs is not None:
            g.processes = [_as_process(p) for p in t.procs]
        g.throttle_reasons = t.reasons if isinstance(t.reasons, int) else encode_clock_event_reasons(t.reasons)
        values = t.ring if t.ring is not None else ([t.util] if isinstance(t.util, (int, float)) else [])
        for v in values:
            self.clock_us += self.RING_PERIOD_US
            self.ring.append((self.clock_us, v))
        self.pcie = t.pcie_kbps

    def advance(self) -> None:
        self.index += 1
        if self.index < len(self.ticks):
            self._apply()

    def nvmlDeviceGetSamples(self, device: Any, sampling_type: int, timeStamp: int):
        h, last_seen = device, timeStamp
        self._gpu("nvmlDeviceGetSamples", h)
        if not self.ring_supported:
            raise self.NVMLError_NotSupported()
        new = [(ts, v) for ts, v in self.ring if ts > last_seen]
        if not new:
            raise NVMLError_NotFound()
        return (1, [_Struct(timeStamp=ts, sampleValue=_Struct(uiVal=int(v))) for ts, v in new])

    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        h = device
        self._gpu("nvmlDeviceGetPcieThroughput", h)
        self.blocked_s += self.PCIE_WINDOW_S
        if self.pcie is NOT_SUPPORTED:
            raise self.NVMLError_NotSupported()
        return int(self.pcie[counter])


@dataclass
class DeniedPsutil:
    """A psutil-like module whose Process objects refuse the named methods with AccessDenied."""

    denied: Sequence[str] = ("memory_info", "memory_full_info")
    calls: List[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(psutil, name)

    def Process(self, pid: Optional[int] = None) -> Any:  # noqa: N802 - psutil's name
        return _DeniedProcess(psutil.Process(pid), self.denied)


class _DeniedProcess:
    def __init__(self, proc: Any, denied: Sequence[str]):
        self._proc, self._denied = proc, set(denied)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def children(self, recursive: bool = False) -> List[Any]:
        return [_DeniedProcess(p, self._denied) for p in self._proc.children(recursive=recursive)]

    def __getattr__(self, name: str) -> Any:
        if name in self._denied:
            def refuse(*a: Any, **k: Any) -> Any:
                raise psutil.AccessDenied(self._proc.pid)
            return refuse
        return getattr(self._proc, name)


def job_process(pid: int, used: Optional[int]) -> FakeProcess:
    return FakeProcess(pid, "python", "C", used)
