"""How busy the machine was with *other* work while gpudiag measured: cores' worth of CPU used by others.

A timed comparison of parallel strategies is only fair when the cores it runs on are free. The
machine's busy CPU time (all processes, from the OS) minus the CPU time of gpudiag's own process
and everything it started, divided by the wall time, is the number of cores other programs kept
busy meanwhile (steal time of a virtual machine counts: the hypervisor gave the core to someone
else). gpudiag's own, for the probes that start workers (`CpuMeter(family=True)`): this process, its
descendants (worker processes and whatever a user's step started in them), the ones it has reaped
(their CPU time moves into this process's children times when it waits for them) and descendants
orphaned by a worker that was stopped (still tracked by pid): a hung worker, or its child spinning
on, is never "other programs". Other programs may be invisible to us (another container or VM on the same cores): the
figure still counts them, and `busiest_others` says which ones are visible.

Under a CPU quota the figure is still other programs' use: time the quota throttled gpudiag is no
one's CPU time, so it is in neither the machine's busy time nor gpudiag's own. What changes is the
rule: the workers then need only the quota's share of the cores they run on, and other programs
take from the rest first (`machine_busy`'s run_cores). This module sits below the platform layer:
the cores come in as numbers (gpudiag.platform.usable_cores and cpu_limit give them).

    meter = CpuMeter(lambda: pool.pids)
    t0 = meter.read()
    ... measure ...
    other_cores = meter.other_cores(t0, meter.read())
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal", "interrupt", "dpc")

Reading = Tuple[float, float, float, float]  # (machine busy CPU s, own CPU s, steal s, monotonic s)

# Half a core: below it, other programs' CPU use is background noise (a shell, a monitor) that the
# interleaved rounds absorb; from it on, N workers on a machine with N free cores lose a whole
# share of a core in some rounds.
BUSY_MARGIN_CORES = 0.5


def machine_busy(other_cores: Optional[float], usable_cores: Optional[int], workers: Optional[int],
                 run_cores: Optional[int] = None) -> bool:
    """True when other programs left fewer than `workers - 0.5` of the cores the workers can use free.

    A comparison of N parallel workers against one is only fair when N cores are free: on 2 cores
    with 2 workers, half a core of other load is enough; on 16 cores with 4 workers, 12.5 are.
    `usable_cores` is what gpudiag may use (the least of affinity, cpuset and a CPU quota); where a
    quota makes it smaller than the cores the process may run on (`run_cores`), other programs
    compete for run_cores and the workers need only the usable ones: under a 1-CPU quota on 2 cores,
    1.5 cores of other load are needed before the quota's one core is short. More workers than
    usable cores need no more than the usable cores. Unknown core count: half a core of other load
    counts as busy.
    """
    if other_cores is None:
        return False
    n = max(1, int(workers or 1))
    if not usable_cores:
        return other_cores >= BUSY_MARGIN_CORES
    n = min(n, usable_cores)
    cores = max(usable_cores, run_cores or usable_cores)
    return other_cores >= max(BUSY_MARGIN_CORES, cores - n + BUSY_MARGIN_CORES)


# CPU seconds of gpudiag's own processes that ended where this process could not reap them (a stopped worker's
# children, re-parented to init): read just before they were stopped (gpudiag.measure.workers), and counted as
# own by every CpuMeter, since neither this process's children times nor a live pid holds them any more.
_ended_elsewhere_cpu_s = [0.0]


def add_ended_elsewhere(cpu_s: float) -> None:
    """Count `cpu_s` CPU seconds of an own process stopped outside this process's reach as own (see above)."""
    _ended_elsewhere_cpu_s[0] += max(0.0, float(cpu_s))


def _with_reaped(c) -> float:
    """A process's CPU seconds with those of the children it has waited for (Linux adds a reaped child's time,
    its own reaped children's included, to the parent's children times): so a worker's or its child's time is
    counted once, before and after it ends."""
    return c.user + c.system + getattr(c, "children_user", 0.0) + getattr(c, "children_system", 0.0)


class CpuMeter:
    """Reads machine-wide and own CPU time; `own_pids()` names gpudiag's worker processes of the moment.

    With `family=True` (the probes that start worker processes), own CPU time is this process's
    (with the children it has reaped) plus that of every descendant seen alive at a reading, of
    descendants seen earlier that were orphaned since (a worker stopped while its own child ran on),
    and of those stopped where this process could not reap them: see the module docstring. Without
    it, this process's own time and `own_pids()`'s (a fleet rank, whose test stands in for other
    programs with processes of its own). `own_pids()` adds processes that are gpudiag's without being
    its descendants. `cpus` (CPU numbers) counts the busy time of those cores only instead of the
    whole machine's: the load of other programs on the cores a process is pinned to (a fleet rank
    under taskset or a cpuset).
    """

    def __init__(self, own_pids: Callable[[], Iterable[int]] = lambda: (), cpus: Optional[Iterable[int]] = None,
                 family: bool = False, descendants: Optional[Callable[[int], Optional[List[int]]]] = None):
        import psutil

        self._psutil = psutil
        self._family = family
        # family: how the descendants are found at each reading - `descendants(pid)` when given and it answers
        # (gpudiag.platform.descendant_pids reads only this process's own tree: a fraction of a millisecond, where
        # psutil reads every process on the machine, ~10 ms on a busy 2-core VM around every timed run), else psutil.
        self._descendants = descendants
        self._own_pids = own_pids
        self._cpus = None if cpus is None else sorted(set(cpus))
        self._procs: Dict[int, Any] = {}  # psutil.Process of every own process seen, by pid (built once: see _proc)
        self._self = psutil.Process()

    def _proc(self, pid: int):
        """The psutil.Process of `pid`, built once and reused: read() runs around every timed run, and building a
        Process each time costs a /proc lookup per worker inside the measurement."""
        p = self._procs.get(pid)
        if p is None:
            p = self._procs[pid] = self._psutil.Process(pid)
        return p

    def seen_pids(self) -> List[int]:
        """Every process counted as gpudiag's own so far (descendants included): never named as another program."""
        return [self._self.pid, *self._procs]

    def _own_cpu(self) -> float:
        """CPU seconds of this process and every own process alive now (family: with the children it reaped)."""
        psutil = self._psutil
        if not self._family:
            c = self._self.cpu_times()
            own = c.user + c.system
            for pid in list(self._own_pids()):
                try:
                    c = self._proc(pid).cpu_times()
                except psutil.NoSuchProcess:  # a worker that ended: its last CPU time is lost, a tick or two
                    continue
                own += c.user + c.system
            return own
        own = _with_reaped(self._self.cpu_times()) + _ended_elsewhere_cpu_s[0]
        pids = self._descendants(self._self.pid) if self._descendants is not None else None
        if pids is not None:
            for pid in pids:
                try:
                    self._proc(pid)
                except psutil.NoSuchProcess:  # ended since the walk: reaped by us its time is in children_*
                    continue
        else:
            try:
                for child in self._self.children(recursive=True):
                    self._procs.setdefault(child.pid, child)
            except psutil.Error:  # a child ending during the walk: the ones still known are read below
                pass
        for pid in list(self._own_pids()):
            try:
                self._proc(pid)
            except psutil.NoSuchProcess:
                continue
        for pid, p in list(self._procs.items()):
            try:
                if not p.is_running():  # gone, or its pid reused by an unrelated process
                    del self._procs[pid]
                    continue
                c = p.cpu_times()
            except psutil.NoSuchProcess:  # ended: reaped by us its time is in children_*, else lost (a tick or two)
                del self._procs[pid]
                continue
            own += _with_reaped(c)
        return own

    def _machine_cpu(self) -> Tuple[float, float]:
        """(busy CPU seconds, steal seconds) of the machine, or of the cores in `cpus`."""
        psutil = self._psutil
        if self._cpus is None:
            times = [psutil.cpu_times()]
        else:  # psutil lists the online CPUs in order: index i is CPU i unless some are offline
            per = psutil.cpu_times(percpu=True)
            times = [per[i] for i in self._cpus if i < len(per)]
        busy = sum(getattr(t, f, 0.0) for t in times for f in _BUSY_FIELDS)
        return busy, sum(float(getattr(t, "steal", 0.0)) for t in times)

    def read(self) -> Optional[Reading]:
        """A reading, or None when the OS does not give the figures (then no load is reported)."""
        try:
            busy, steal = self._machine_cpu()
            return busy, self._own_cpu(), steal, time.monotonic()
        except (self._psutil.Error, OSError):
            return None

    @staticmethod
    def other_cores(before: Optional[Reading], after: Optional[Reading]) -> Optional[float]:
        """Cores' worth of CPU that other programs used between two readings (>= 0); None if unknown."""
        if before is None or after is None or after[3] <= before[3]:
            return None
        other = (after[0] - before[0]) - (after[1] - before[1])
        return max(0.0, other) / (after[3] - before[3])

    @staticmethod
    def steal_cores(before: Optional[Reading], after: Optional[Reading]) -> Optional[float]:
        """Cores' worth of time the hypervisor gave to other virtual machines (Linux steal time)."""
        if before is None or after is None or after[3] <= before[3]:
            return None
        return max(0.0, after[2] - before[2]) / (after[3] - before[3])


def process_cpu_snapshot() -> Dict[int, Tuple[str, float]]:
    """{pid: (name, CPU seconds)} of every process this user may see; {} when unreadable."""
    import psutil

    out: Dict[int, Tuple[str, float]] = {}
    try:
        for p in psutil.process_iter(["name", "cpu_times"]):
            ct = p.info.get("cpu_times")
            if ct is not None:
                out[p.pid] = (str(p.info.get("name") or "?"), ct.user + ct.system)
    except (psutil.Error, OSError):
        return out
    return out


def busiest_others(before: Dict[int, Tuple[str, float]], after: Dict[int, Tuple[str, float]], wall_s: float,
                   own: Iterable[int] = (), top: int = 3, min_cores: float = 0.1) -> List[dict]:
    """The visible processes (not gpudiag's own) that used the most CPU between two snapshots.

    [{name, cores}] with cores = CPU seconds / wall seconds, at most `top`, each >= min_cores.
    Names only (never command lines): they pass the report's redactor like every other string.
    """
    if wall_s <= 0:
        return []
    mine = set(own)
    by_name: Dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        if pid in mine:
            continue
        start = before[pid][1] if pid in before else 0.0  # started meanwhile: all its CPU time is in the window
        by_name[name] = by_name.get(name, 0.0) + max(0.0, cpu - start)
    rows = [{"name": n, "cores": round(c / wall_s, 2)} for n, c in by_name.items() if c / wall_s >= min_cores]
    rows.sort(key=lambda r: -r["cores"])
    return rows[:top]
