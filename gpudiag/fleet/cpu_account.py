"""How much CPU one rank got while it measured, and who had the rest of its cores.

A CPU quota (Docker `--cpus`, a Kubernetes CPU limit, any cgroup cpu.max / cpu.cfs_quota_us) lets a
process run at full speed inside each period (100 ms by default) and then stops it until the next:
timed repeats shorter than a period can all land inside the windows and look healthy. The rank's
figures are therefore timed over sustained windows (gpudiag.fleet.windows), and this account says,
over the same time, what the rank got and why it got no more:

- `share`: the CPU time the rank's timed work got over the CPU time it could have used on its cores
  (1.0 = all it could use; 0.2 = a fifth of it), from the windows' own process CPU time;
- `job_cores`: CPU the job's other ranks on this host used on this rank's cores (pinned to the same
  cores by the launch: sharing by design), `other_cores`: what every other program used there,
  `steal_cores`: what the hypervisor gave to other machines, all in cores' worth over the wall time;
- `fair_share`: the share the rank gets when only the job's ranks run on its cores, each wanting as
  much as this one (1.0 alone, 0.5 for two one-thread ranks on one core);
- `throttling`: the CPU-quota periods in which the rank's cgroup ran out of quota, and `limit`, the
  quota (and cpuset, affinity) it runs under, read once (gpudiag.platform.cpu_limit).

The job's other ranks are recognised by pid *and* start time (exchanged with the host names when the
ranks join), so a rank in another pid namespace is never mistaken for an unrelated local process.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from gpudiag.measure.load import CpuMeter
from gpudiag.platform import ThrottleMeter, cpu_limit

# What cpu_limit says that the analysis and the report need (the rest is in `gpudiag report`).
LIMIT_FIELDS = ("quota_cpus", "quota_period_us", "quota_source", "cgroup_version", "cpuset_cpus", "affinity_cores",
                "usable_cpus", "limited_by")
DEFAULT_PERIOD_US = 100_000  # the kernel's default CFS period (cpu.cfs_period_us, cpu.max)


def cpu_list_text(cpus: List[int]) -> str:
    """CPU numbers as a cpuset list ("0-3,8"), short for a report of many ranks."""
    runs: List[List[int]] = []
    for c in sorted(set(cpus)):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _affinity(psutil: Any, pid: Optional[int] = None) -> Optional[List[int]]:
    """The CPUs a process may run on, or None where the OS keeps no affinity (macOS) or hides it."""
    try:
        return sorted(psutil.Process(pid).cpu_affinity())
    except (AttributeError, OSError, psutil.Error):
        return None


class JobRanks:
    """The job's other ranks on this host, as far as this rank can see them: {rank: psutil.Process},
    only those whose start time matches what they said (same process, not a pid reused or from
    another pid namespace), each with the share of its CPUs that are also this rank's."""

    def __init__(self, psutil: Any, mine: Optional[List[int]], others: Mapping[int, Tuple[int, Optional[float]]]):
        self.procs: Dict[int, Any] = {}
        self.weight: Dict[int, float] = {}
        for rank, (pid, started) in others.items():
            try:
                p = psutil.Process(pid)
                if started is None or abs(p.create_time() - started) > 0.5:
                    continue
                theirs = _affinity(psutil, pid)
            except (OSError, psutil.Error):
                continue
            if mine is None or theirs is None:
                continue
            # Its CPU time lands on this rank's cores in proportion to the CPUs they share (exact for
            # ranks pinned to the same cores or to different ones, the usual launches).
            overlap = len(set(mine) & set(theirs)) / len(theirs) if theirs else 0.0
            if overlap > 0:
                self.procs[rank], self.weight[rank] = p, overlap

    def cpu_s(self, psutil: Any) -> Optional[Dict[int, float]]:
        """{rank: CPU seconds so far}; a rank that ended meanwhile is left out."""
        out = {}
        for rank, p in self.procs.items():
            try:
                t = p.cpu_times()
            except (OSError, psutil.Error):
                continue
            out[rank] = t.user + t.system
        return out


class CpuAccount:
    """Started before the figures and stopped after them: this rank's CPU over that time.

        account = CpuAccount({1: (pid, started)})   # the job's other ranks on this host
        account.start(); ... timed windows ...; entry["cpu"] = account.stop(windows.totals())
    """

    def __init__(self, job_ranks: Mapping[int, Tuple[int, Optional[float]]] = ()):
        import psutil

        self._psutil = psutil
        self.limit = cpu_limit()
        self.cpus = _affinity(psutil)
        self.period_us = self.limit.get("quota_period_us") or DEFAULT_PERIOD_US
        self._job = JobRanks(psutil, self.cpus, dict(job_ranks))
        self._load = CpuMeter(cpus=self.cpus) if self.cpus is not None else CpuMeter()
        self._throttle = ThrottleMeter()
        self._start: Optional[tuple] = None

    @property
    def cores(self) -> int:
        """The cores this rank may run on (its affinity: a quota does not take cores away, it stops them)."""
        return len(self.cpus) if self.cpus else (self.limit.get("affinity_cores") or 1)

    def fair_share(self, demand: Optional[float]) -> Optional[float]:
        """The share of what its work could use that this rank gets on its cores when the job's ranks there
        (weighted by the CPUs they share) each want as much as it does: 1.0 alone, 0.5 with one more."""
        if not demand:
            return None
        return round(min(1.0, self.cores / (demand * (1 + sum(self._job.weight.values())))), 3)

    def _read(self) -> tuple:
        return self._load.read(), self._job.cpu_s(self._psutil), self._throttle.read(), time.perf_counter()

    def start(self) -> None:
        self._start = self._read()

    def stop(self, windows: Mapping[str, Any]) -> Dict[str, Any]:
        """entry["cpu"]: the windows' share with the load on the rank's cores and the throttling meanwhile."""
        end = self._read()
        (load0, job0, thr0, t0), (load1, job1, thr1, t1) = self._start or end, end
        wall = max(t1 - t0, 1e-9)
        out: Dict[str, Any] = {
            "cpus": cpu_list_text(self.cpus) if self.cpus else None, "cores": self.cores,
            "wall_s": round(wall, 3), "limit": {k: self.limit.get(k) for k in LIMIT_FIELDS},
            "throttling": ThrottleMeter.delta(thr0, thr1),
            "job_ranks_sharing": sorted(self._job.procs), "reason": None,
        }
        out.update(windows)
        out["fair_share"] = self.fair_share(windows.get("demand_cores"))
        if load0 is None or load1 is None or self.cpus is None:
            out.update(job_cores=None, other_cores=None, steal_cores=None,
                       reason="the load on this rank's cores is unknown (no per-core CPU times or no affinity here)")
            return out
        busy, own, steal = (load1[i] - load0[i] for i in range(3))
        job = sum(max(0.0, (job1 or {}).get(r, v) - v) * self._job.weight[r] for r, v in (job0 or {}).items())
        out["job_cores"] = round(job / wall, 3)
        out["steal_cores"] = round(max(0.0, steal) / wall, 3)
        # Per-core times count in ticks (10 ms): clamp the small negative a quiet core can show.
        out["other_cores"] = round(max(0.0, busy - own - job - steal) / wall, 3)
        return out
