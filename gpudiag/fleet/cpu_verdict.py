"""Why a rank got only a fraction of the CPU it could use: a quota, other programs, or the job itself.

Pure rules over each rank's `cpu` account (gpudiag.fleet.cpu_account), used by the fleet analysis:

- a rank is *short* when its timed windows got less than FLEET_CPU_SHORT_SHARE of the CPU their work
  could use on its cores (`share`);
- the causes, each from its own measurement over the same time: a **quota** when its cgroup was
  throttled in at least FLEET_CPU_THROTTLED_SHARE of the periods; **other programs** when processes
  that are not this job's ranks (or the hypervisor, as steal) used at least FLEET_CPU_LOAD_SHARE of
  its cores and the rank got less than FLEET_CPU_SHORT_SHARE of both its fair share (what the launch's
  own pinning leaves it) and its quota (under a binding quota the others only fill the time the quota
  leaves idle: they take nothing from the rank); the **job's own ranks** when this job's other ranks
  on the host, pinned to the same cores, used that much;
- `starved`: short, with a quota or other programs among the causes: the node (its container's limit,
  its other jobs) holds the rank back, and it is named with the cause;
- `shared_by_job`: short only because the job's own ranks share its cores: the launch put them there,
  each gets its fair share, and excluding the node would not help;
- `unexplained`: short with no cause visible from inside the rank; `ok`: not short.

A slow rank (or a node of slow ranks) is the launch's doing, never a straggler (`by_launch`), when it
is `shared_by_job` (it got most of its fair share, and only the job's own ranks had the rest: the
time-slicing between them also costs each some speed per CPU second, caches and switches, which is the
launch's doing too), or when its speed relative to its peers is what its lower fair share accounts for
(`launch_explains`: on a busy machine other programs may take every node's cores alike).
"""

from __future__ import annotations

import bisect
from typing import Any, Dict, List, Mapping, Optional, Sequence

from gpudiag.diagnose.thresholds import FLEET_CPU_LOAD_SHARE, FLEET_CPU_SHORT_SHARE, FLEET_CPU_THROTTLED_SHARE
from gpudiag.fleet.consistency import where
from gpudiag.fleet.scores import MIN_EFFECT
from gpudiag.measure.stats import median
from gpudiag.probes.base import finding
from gpudiag.report.values import as_dict, is_num
from gpudiag.units import fmt_pct

STARVED, SHARED_BY_JOB, UNEXPLAINED, OK = "starved", "shared_by_job", "unexplained", "ok"

SHARED_FIX = ("give each rank its own core(s): fewer ranks per node (--nproc-per-node, --ntasks-per-node) or one "
              "CPU binding per rank (srun --cpu-bind=cores, taskset)")


def _f(x: Any) -> float:
    """A number of the account, 0.0 where it is missing."""
    return float(x) if is_num(x) else 0.0


def cpu_state(entry: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """{state, share, cores_got, fair_share, causes, quota_cpus, quota_source, throttled_share, other_cores,
    steal_cores, job_cores, job_ranks, cores, cpus} for a rank with a CPU account, None without one (a
    merged plain report, an older fleet report)."""
    cpu = as_dict(entry.get("cpu"))
    if not is_num(cpu.get("share")):
        return None
    cores = cpu.get("cores") if is_num(cpu.get("cores")) and cpu["cores"] > 0 else 1
    thr, limit = as_dict(cpu.get("throttling")), as_dict(cpu.get("limit"))
    throttled = thr.get("throttled_share") if is_num(thr.get("periods")) and thr["periods"] > 0 else None
    others = _f(cpu.get("other_cores")) + _f(cpu.get("steal_cores"))
    fair = cpu.get("fair_share") if is_num(cpu.get("fair_share")) else 1.0
    short = cpu["share"] < FLEET_CPU_SHORT_SHARE
    quota = short and is_num(throttled) and throttled >= FLEET_CPU_THROTTLED_SHARE
    # Others take from the rank only what it lacks of its fair share, and, under a binding quota, of the
    # quota: a rank that got (nearly) all of those lost nothing to them.
    below_quota = not quota or not is_num(limit.get("quota_cpus")) or not is_num(cpu.get("cores_got")) \
        or cpu["cores_got"] < FLEET_CPU_SHORT_SHARE * limit["quota_cpus"]
    below_fair = cpu["share"] < FLEET_CPU_SHORT_SHARE * fair
    causes: List[str] = []
    if quota:
        causes.append("quota")
    if below_fair and below_quota and others >= FLEET_CPU_LOAD_SHARE * cores:
        causes.append("other_processes")
    job = short and _f(cpu.get("job_cores")) >= FLEET_CPU_LOAD_SHARE * cores
    state = OK if not short else STARVED if causes else SHARED_BY_JOB if job else UNEXPLAINED
    return {"state": state, "share": cpu["share"], "cores_got": cpu.get("cores_got"), "fair_share": fair,
            "causes": causes,
            "quota_cpus": limit.get("quota_cpus"), "quota_source": limit.get("quota_source"),
            "throttled_share": throttled, "other_cores": round(others, 3), "steal_cores": cpu.get("steal_cores"),
            "job_cores": cpu.get("job_cores"), "job_ranks": list(cpu.get("job_ranks_sharing") or []),
            "cores": cores, "cpus": cpu.get("cpus")}


def states(ranks: Sequence[Mapping[str, Any]]) -> Dict[int, Dict[str, Any]]:
    """{rank: cpu_state} for every rank that has a CPU account."""
    out = {}
    for e in ranks:
        st = cpu_state(e)
        if st is not None:
            out[e["rank"]] = st
    return out


def fair_of(ranks: Sequence[int], by_state: Mapping[int, Mapping[str, Any]]) -> float:
    """The median fair share of some ranks (1.0 for a rank without an account: nothing shared that we know of)."""
    return median([_fair(r, by_state) for r in ranks] or [1.0]) or 1.0


def _fair(rank: int, by_state: Mapping[int, Mapping[str, Any]]) -> float:
    """One rank's fair share, 1.0 without an account."""
    return as_dict(by_state.get(rank)).get("fair_share", 1.0)


class PeerFair:
    """fair_of(every rank of `ranks` but some) for many leave-out sets, from one sorted list: a rank's (or a
    node's) peers are all the others, and a fleet of 10,000 ranks must not walk them once per rank."""

    def __init__(self, ranks: Sequence[int], by_state: Mapping[int, Mapping[str, Any]]):
        self.by_state = by_state
        self.sorted = sorted(_fair(r, by_state) for r in ranks)

    def without(self, ranks: Sequence[int]) -> float:
        """fair_of(the ranks given at construction, less these), which must be among them."""
        gone = sorted(_fair(r, self.by_state) for r in ranks)
        positions, last, dup = [], None, 0
        for v in gone:  # distinct positions for equal values
            dup = dup + 1 if v == last else 0
            positions.append(bisect.bisect_left(self.sorted, v) + dup)
            last = v
        m = len(self.sorted) - len(positions)
        if m <= 0:
            return 1.0

        def nth(t: int) -> float:
            for p in positions:
                if p <= t:
                    t += 1
                else:
                    break
            return self.sorted[t]

        mid = nth(m // 2) if m % 2 else (lambda a, b: a + (b - a) * 0.5)(nth(m // 2 - 1), nth(m // 2))
        return mid or 1.0


def by_launch(ranks: Sequence[int], relative: Any, peer_ranks: Sequence[int],
              by_state: Mapping[int, Mapping[str, Any]], peer_fair: Optional[float] = None) -> bool:
    """True when the slowness of `ranks` (one rank, or a node's) against `peer_ranks` (for a node: the other
    nodes' ranks, as lists) is the launch's own sharing of cores: every one of them is shared_by_job, or
    their fair share accounts for their speed relative to their peers. peer_fair: fair_of(peer_ranks) when
    the caller has it already (PeerFair), so peer_ranks is not walked."""
    if ranks and all(as_dict(by_state.get(r)).get("state") == SHARED_BY_JOB for r in ranks):
        return True
    return launch_explains(relative, fair_of(ranks, by_state),
                           peer_fair if peer_fair is not None else fair_of(peer_ranks, by_state))


def launch_explains(relative: Any, own_fair: float, peer_fair: float) -> bool:
    """True when a rank's (or node's) speed relative to its peers is what its lower fair share of its cores
    accounts for: its fair share is MIN_EFFECT or more below theirs, and once that ratio is taken out it is
    less than MIN_EFFECT slower than they are."""
    if not is_num(relative) or peer_fair <= 0:
        return False
    ratio = own_fair / peer_fair
    return ratio <= 1 - MIN_EFFECT and relative >= ratio * (1 - MIN_EFFECT)


def _got(st: Mapping[str, Any]) -> str:
    """"it got 0.20 of a core (20 % of what its work could use)"."""
    got = f"{st['cores_got']:.2f} of a core" if is_num(st.get("cores_got")) else "less CPU"
    return f"it got {got} ({fmt_pct(st['share'])} of what its work could use)"


def cause_text(st: Mapping[str, Any]) -> str:
    """What held the rank back, with the numbers: for findings and outlier notes."""
    parts = []
    if "quota" in st["causes"]:
        limit = f"a CPU limit of {st['quota_cpus']:g} CPU" if is_num(st.get("quota_cpus")) else "a CPU limit"
        src = f", from {st['quota_source']}" if st.get("quota_source") else ""
        parts.append(f"throttled in {fmt_pct(st['throttled_share'])} of periods by {limit}{src}")
    if "other_processes" in st["causes"]:
        steal = f", {st['steal_cores']:.2f} of it the hypervisor's steal" if _f(st.get("steal_cores")) >= 0.05 else ""
        parts.append(f"other programs used {st['other_cores']:.2f} of its {st['cores']} core(s){steal}")
    if st["state"] == SHARED_BY_JOB:
        ranks = ", ".join(map(str, st["job_ranks"])) or "others"
        parts.append(f"it shares core(s) {st.get('cpus') or '?'} with rank(s) {ranks} of this job, pinned there by "
                     f"the launch ({_f(st.get('job_cores')):.2f} of a core went to them)")
    if st["state"] == UNEXPLAINED:
        parts.append("no cause is visible from inside the rank (no quota throttling, no other load on its cores)")
    return f"{_got(st)}: " + " and ".join(parts)


def cause_fix(st: Mapping[str, Any]) -> str:
    """What to do about a rank's CPU, by cause."""
    fixes = []
    if "quota" in st["causes"]:
        fixes.append("raise the CPU limit of that rank's container or cgroup (Docker --cpus, the pod's CPU limit) "
                     "to the cores its work uses, or exclude the node")
    if "other_processes" in st["causes"]:
        fixes.append("find what else runs on its cores (top, other jobs) and stop it, or exclude the node")
    if st["state"] == SHARED_BY_JOB:
        fixes.append(SHARED_FIX)
    return "; ".join(fixes) or "run `gpudiag report` on that node to see what holds it back"


def _sharing_text(st: Mapping[str, Any]) -> str:
    """"shares core(s) 0 with rank(s) 1 of this job: its fair share is 50 % of what its work could use, it got
    0.48 of a core"."""
    ranks = ", ".join(map(str, st["job_ranks"])) or "others"
    got = f", it got {st['cores_got']:.2f} of a core" if is_num(st.get("cores_got")) else ""
    return (f"shares core(s) {st.get('cpus') or '?'} with rank(s) {ranks} of this job: its fair share is "
            f"{fmt_pct(st['fair_share'])} of what its work could use{got}")


def cpu_findings(ranks: Sequence[Mapping[str, Any]], by_state: Mapping[int, Mapping[str, Any]],
                 named: Sequence[int], shared_outliers: Sequence[int]) -> List[dict]:
    """Findings for the ranks short of CPU that no straggler finding names already (`named`).

    FLEET_CPU_QUOTA and FLEET_CPU_CONTENDED (warnings): starved ranks whose figures are still not
    outliers (every rank alike, or one throttled less than its peers are slow). FLEET_CORES_SHARED:
    ranks whose fair share of their cores is short because the launch pinned several of the job's ranks
    there; a warning when that made them outliers (`shared_outliers`), else information.
    """
    by_rank = {e["rank"]: e for e in ranks}
    out: List[dict] = []
    groups = {"FLEET_CPU_QUOTA": ("quota", "held back by a CPU quota"),
              "FLEET_CPU_CONTENDED": ("other_processes", "sharing their cores with other programs")}
    for code, (cause, words) in groups.items():
        hit = [r for r, st in sorted(by_state.items())
               if st["state"] == STARVED and cause in st["causes"] and r not in named and r in by_rank]
        if hit:
            out.append(finding(code, "warning", f"{len(hit)} rank(s) {words}: " + "; ".join(
                f"{where(by_rank[r])}: {cause_text(by_state[r])}" for r in hit[:6])
                + (f"; and {len(hit) - 6} more" if len(hit) > 6 else ""),
                evidence={r: dict(by_state[r]) for r in hit}, fix=cause_fix(by_state[hit[0]])))
    shared = [r for r, st in sorted(by_state.items()) if st["fair_share"] < FLEET_CPU_SHORT_SHARE and r in by_rank]
    if shared:
        slowed = any(r in shared_outliers for r in shared)
        msg = (f"{len(shared)} rank(s) share their cores with other ranks of this job, as the launch pinned them: "
               + "; ".join(f"{where(by_rank[r])} {_sharing_text(by_state[r])}" for r in shared[:6])
               + (f"; and {len(shared) - 6} more" if len(shared) > 6 else "")
               + (". That makes them slower than the other ranks and the job runs at their pace; it is the launch's "
                  "doing, not the node's, so no node is excluded for it" if slowed else ""))
        out.append(finding("FLEET_CORES_SHARED", "warning" if slowed else "info", msg,
                           evidence={r: dict(by_state[r]) for r in shared}, fix=SHARED_FIX))
    return out
