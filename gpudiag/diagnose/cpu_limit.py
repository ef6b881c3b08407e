"""CPU limits in words, and whether a measurement ran throttled: pure functions over recorded facts.

A limit is the dict gpudiag.platform.cpu_limit gives (`system.cpu.limit`, and the copy each
measuring probe and `watch` record); a throttling is gpudiag.platform.ThrottleMeter.delta over one
measurement ({periods, throttled_periods, throttled_share, throttled_s}). Every verdict that reads a
throttled measurement names the limit with these words ("throttled in 95 % of periods by a CPU limit
of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup)") instead of blaming other programs or noise.
Sources are said by kind (the platform layer never records a cgroup path).
"""

from __future__ import annotations

from typing import Any, Optional

from gpudiag.diagnose.thresholds import THROTTLED_MIN_PERIODS, THROTTLED_SHARE_MIN
from gpudiag.report.values import as_dict, as_int, as_str, num
from gpudiag.units import fmt_pct

# The fields a probe records of platform.cpu_limit (throttling_since_start is the cgroup's whole life,
# not the measurement's: only the system probe keeps it).
RECORDED = ("affinity_cores", "cpuset_cpus", "quota_cpus", "quota_period_us", "quota_source", "cgroup_version",
            "usable_cpus", "usable_cores", "limited_by")


def recorded(limit: Any) -> Optional[dict]:
    """The fields of a platform.cpu_limit dict that a measurement records with its figures, or None."""
    limit = as_dict(limit)
    return {k: limit.get(k) for k in RECORDED} if limit else None


def cpus_text(x: float) -> str:
    """A quota in CPUs: 1.0 -> '1.0 CPU', 0.25 -> '0.25 CPU', 1.5 -> '1.5 CPUs'."""
    text = f"{x:.1f}" if round(x, 1) == round(x, 4) else f"{x:.4f}".rstrip("0")
    return f"{text} CPU" + ("s" if x > 1 else "")


def _count(n: int) -> str:
    """A whole number of CPUs: '1 CPU', '2 CPUs'."""
    return f"{n} CPU" + ("s" if n != 1 else "")


def binding(limit: Any) -> Optional[str]:
    """What limits the process below the machine's CPUs: "quota", "cpuset", "affinity", or None."""
    return as_str(as_dict(limit).get("limited_by"))


def quota_binds(limit: Any) -> bool:
    """True when a CPU quota (cgroup cpu.max / cfs_quota_us, a Windows job cap) is the binding limit."""
    return binding(limit) == "quota" and num(as_dict(limit).get("quota_cpus")) is not None


def usable_cores(limit: Any) -> Optional[int]:
    """Whole workers the limit leaves (platform.usable_cores as recorded), or None."""
    return as_int(as_dict(limit).get("usable_cores"))


def run_cores(limit: Any) -> Optional[int]:
    """The CPUs the process may run on (the least of its affinity and cpuset): what other programs compete
    for. Under a quota this is more than its usable cores: other programs' load then takes only what the
    quota leaves idle."""
    lim = as_dict(limit)
    counts = [c for c in (as_int(lim.get("affinity_cores")), as_int(lim.get("cpuset_cpus"))) if c]
    return min(counts) if counts else None


def limit_text(limit: Any) -> str:
    """'a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup)', 'a cpuset of 2 CPUs',
    'a CPU affinity of 1 CPU'; '' when nothing limits the process below the machine's CPUs."""
    lim = as_dict(limit)
    which = binding(lim)
    if which == "quota" and num(lim.get("quota_cpus")) is not None:
        src = as_str(lim.get("quota_source"))
        if src and src.endswith(")") and " (" in src:  # "cgroup v1 cpu.cfs_quota_us (own cgroup)": one level of brackets
            src = src[:-1].replace(" (", ", ", 1)
        return f"a CPU limit of {cpus_text(float(lim['quota_cpus']))}" + (f" ({src})" if src else "")
    if which == "cpuset" and as_int(lim.get("cpuset_cpus")):
        return f"a cpuset of {_count(int(lim['cpuset_cpus']))}"
    if which == "affinity" and as_int(lim.get("affinity_cores")):
        return f"a CPU affinity of {_count(int(lim['affinity_cores']))}"
    return ""


def usable_text(limit: Any) -> str:
    """'1 usable core under a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup)', or '' when
    nothing limits the process."""
    n, why = usable_cores(limit), limit_text(limit)
    if not n or not why:
        return ""
    return f"{n} usable core{'s' if n != 1 else ''} under {why}"


def throttled(throttling: Any) -> bool:
    """True when a measurement ran throttled: THROTTLED_SHARE_MIN of at least THROTTLED_MIN_PERIODS
    periods ended with the quota used up (docs/recommendation.md says why these values)."""
    t = as_dict(throttling)
    share, periods = num(t.get("throttled_share")), as_int(t.get("periods"))
    return share is not None and periods is not None and periods >= THROTTLED_MIN_PERIODS \
        and share >= THROTTLED_SHARE_MIN


def throttled_text(limit: Any, throttling: Any) -> str:
    """'throttled in 95 % of 120 periods by a CPU limit of 1.0 CPU (cgroup v1 cpu.cfs_quota_us, own cgroup)'."""
    t = as_dict(throttling)
    share, periods = num(t.get("throttled_share")) or 0.0, as_int(t.get("periods"))
    of = f"{periods} " if periods else ""
    return f"throttled in {fmt_pct(share)} of {of}periods by {limit_text(limit) or 'a CPU quota'}"


def throttling_text(limit: Any, throttling: Any) -> str:
    """A measurement's throttling for a table cell: 'throttled in 3 % of 40 periods (0.02 s)' or ''."""
    t = as_dict(throttling)
    share = num(t.get("throttled_share"))
    if share is None or not limit_text(limit):
        return ""
    periods, secs = as_int(t.get("periods")), num(t.get("throttled_s"))
    return (f"throttled in {fmt_pct(share)} of {periods if periods is not None else 'n/a'} periods"
            + (f" ({secs:.2f} s stalled)" if secs else ""))
