"""Linux cgroups (v1 and v2): which cgroup a process is in, and its CPU and memory limits.

One reader for every controller: `/proc/<pid>/cgroup` names the process's cgroup in each hierarchy,
`/proc/self/mountinfo` says where each hierarchy is mounted (and which part of it, inside a container
without a cgroup namespace), and each limit is the least along the way from that cgroup up to the
mount's root, since an ancestor can be stricter than the leaf (a Kubernetes pod's limit sits on the
pod, the container's on the leaf).

Reports go to public issues, and a cgroup path names the container (Docker's 64-hex id) and the pod
(its UID): nothing here returns a path. A limit's source is said by kind: the cgroup version, the
file's name and how far up it was set ("own cgroup", "parent cgroup", "3 levels up").

Every reader takes `root` so tests can point it at a fake tree; missing or unreadable files give
None, never an exception.
"""

from __future__ import annotations

import math
import os
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from gpudiag.platform._files import exists, parse_cpulist, parse_kv_numbers, read_text

# cgroup v1 reports "no memory limit" as PAGE_COUNTER_MAX * page size (9223372036854771712 on x86_64).
_V1_UNLIMITED_BYTES = 2 ** 62


class Hierarchy(NamedTuple):
    """Where one controller's cgroup of a process lives on disk: `leaf` is its folder, `top` the
    folder of the mount's root (as far up as this process can see), both under `root`."""
    version: int  # 1 or 2
    leaf: str
    top: str


def _unescape_mount(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _cgroup_mounts(root: str) -> List[Tuple[str, str, str, List[str]]]:
    """[(fstype, mount root inside the hierarchy, mount point, super options)] of cgroup mounts."""
    out = []
    for line in (read_text(root, "/proc/self/mountinfo") or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((rf[0], _unescape_mount(lf[3]), _unescape_mount(lf[4]), rf[2].split(",")))
    return out


def _membership(root: str, pid: Optional[int]) -> Tuple[Optional[str], Dict[str, str]]:
    """(v2 path or None, {v1 controller: path}) from /proc/<pid>/cgroup."""
    text = read_text(root, f"/proc/{'self' if pid is None else int(pid)}/cgroup") or ""
    v2: Optional[str] = None
    v1: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        else:
            for controller in parts[1].split(","):
                if controller:
                    v1[controller] = parts[2]
    return v2, v1


def _join(mount_point: str, mount_root: str, path: str) -> str:
    """The folder of cgroup `path` under a mount of the hierarchy's `mount_root` at `mount_point`.

    Inside a container without a cgroup namespace, /proc/self/cgroup still says /docker/<id> while the
    container's mount shows only that cgroup: the mount root is stripped from the path first.
    """
    path = path or "/"
    if mount_root not in ("", "/"):
        if path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
            path = path[len(mount_root.rstrip("/")):] or "/"
    return mount_point.rstrip("/") + ("" if path == "/" else "/" + path.strip("/"))


def _place(root: str, mount_point: str, mount_root: str, path: str) -> Tuple[str, str]:
    """(leaf, top) folders for cgroup `path` under one mount.

    Where the named folder does not exist (a cgroup namespace whose paths are relative to another
    root), the mount's root is this process's cgroup: the container sees its own cgroup at the top.
    """
    top = mount_point.rstrip("/") or "/"
    leaf = _join(mount_point, mount_root, path)
    return (leaf if exists(root, leaf) else top), top


def hierarchy(controller: str, root: str = "/", pid: Optional[int] = None) -> Optional[Hierarchy]:
    """Where `controller` ("cpu", "memory", "cpuset") keeps the process's cgroup, or None.

    A controller is bound to one hierarchy at a time: a v1 line naming it wins (hybrid systems mount
    an empty v2 hierarchy beside the v1 controllers); otherwise the v2 cgroup, if the controller is
    enabled there.
    """
    v2_path, v1 = _membership(root, pid)
    mounts = _cgroup_mounts(root)
    if controller in v1:
        places = [(mpoint, mroot) for fstype, mroot, mpoint, opts in mounts if fstype == "cgroup" and controller in opts]
        if not mounts:  # no mountinfo (a fake root, a restricted /proc): the conventional places
            places = [(p, "/") for p in (f"/sys/fs/cgroup/{controller}", "/sys/fs/cgroup/cpu,cpuacct")
                      if exists(root, p) and (p.endswith(controller) or controller == "cpu")]
        if places:
            return Hierarchy(1, *_place(root, places[0][0], places[0][1], v1[controller]))
        return None
    if v2_path is None:
        return None
    candidates = [(mroot, mpoint) for fstype, mroot, mpoint, _ in mounts if fstype == "cgroup2"]
    if not mounts:
        candidates = [("/", p) for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
                      if exists(root, p + "/cgroup.controllers")]
    for mroot, mpoint in candidates:
        controllers = (read_text(root, mpoint.rstrip("/") + "/cgroup.controllers") or "").split()
        if controller in controllers:
            return Hierarchy(2, *_place(root, mpoint, mroot, v2_path))
    return None


def _levels(h: Hierarchy) -> List[str]:
    """The folders from the leaf up to the top, leaf first."""
    out, path = [h.leaf], h.leaf
    while path != h.top and path.startswith(h.top.rstrip("/") + "/"):
        path = os.path.dirname(path)
        out.append(path)
    return out


def level_name(up: int) -> str:
    """How far above the process's own cgroup a limit was set, in words (never the path)."""
    return {0: "own cgroup", 1: "parent cgroup"}.get(up, f"{up} levels up")


def _int(text: Optional[str]) -> Optional[int]:
    """A cgroup file's number, None for "max", empty or unreadable."""
    try:
        return int((text or "").strip())
    except ValueError:
        return None


# ------------------------------------------------------------------ CPU

def _quota_at(root: str, version: int, folder: str) -> Optional[Tuple[int, int]]:
    """(quota_us, period_us) set on one cgroup folder, None when it sets none."""
    if version == 2:
        parts = (read_text(root, folder + "/cpu.max") or "").split()
        if len(parts) == 2 and parts[0] != "max":
            quota, period = _int(parts[0]), _int(parts[1])
            if quota and period and quota > 0 and period > 0:
                return quota, period
        return None
    quota = _int(read_text(root, folder + "/cpu.cfs_quota_us"))
    period = _int(read_text(root, folder + "/cpu.cfs_period_us"))
    if quota is not None and quota > 0 and period:  # -1 means none
        return quota, period
    return None


def _cpuset_cpus(root: str, pid: Optional[int]) -> Optional[int]:
    """How many CPUs the process's cpuset allows (the effective list, which already holds its
    ancestors'), or None where no cpuset controller is mounted."""
    h = hierarchy("cpuset", root, pid)
    if h is None:
        return None
    names = ("cpuset.cpus.effective", "cpuset.cpus") if h.version == 2 else ("cpuset.effective_cpus", "cpuset.cpus")
    for name in names:
        cpus = parse_cpulist(read_text(root, h.leaf + "/" + name))
        if cpus:
            return len(cpus)
    return None


class CpuQuota(NamedTuple):
    """The binding CPU quota of a process's cgroup: the least quota/period along its ancestry."""
    cpus: float          # e.g. 1.5 for "150000 100000"
    quota_us: int
    period_us: int
    version: int
    file: str            # "cpu.max" (v2) or "cpu.cfs_quota_us" (v1)
    level: str           # level_name(...): where it was set, never the path
    stat_folder: str     # where the throttling of that quota is counted (internal: a path, never reported)


def cpu_quota(root: str = "/", pid: Optional[int] = None) -> Tuple[Optional[CpuQuota], Optional[int]]:
    """(the binding quota or None, the cgroup version of the cpu controller or None)."""
    h = hierarchy("cpu", root, pid)
    if h is None:
        return None, None
    best: Optional[CpuQuota] = None
    for up, folder in enumerate(_levels(h)):
        q = _quota_at(root, h.version, folder)
        if q is None:
            continue
        cpus = q[0] / q[1]
        if best is None or cpus < best.cpus:
            best = CpuQuota(cpus, q[0], q[1], h.version, "cpu.max" if h.version == 2 else "cpu.cfs_quota_us",
                            level_name(up), folder)
    return best, h.version


class Throttling(NamedTuple):
    """Cumulative throttling counters of the cgroup that holds the binding quota."""
    nr_periods: int
    nr_throttled: int
    throttled_s: float


def read_throttling(root: str, quota: CpuQuota) -> Optional[Throttling]:
    """cpu.stat of the cgroup that enforces `quota` (v2 throttled_usec, v1 throttled_time in ns)."""
    text = read_text(root, quota.stat_folder + "/cpu.stat")
    if text is None:
        return None
    stat = parse_kv_numbers(text)
    if "nr_periods" not in stat or "nr_throttled" not in stat:
        return None
    if "throttled_usec" in stat:
        throttled = stat["throttled_usec"] / 1e6
    elif "throttled_time" in stat:
        throttled = stat["throttled_time"] / 1e9
    else:
        return None
    return Throttling(stat["nr_periods"], stat["nr_throttled"], throttled)


def cpu_limit(root: str = "/", pid: Optional[int] = None) -> dict:
    """The CPU quota and cpuset of a process's cgroup, by kind (no paths), for system.cpu.limit."""
    quota, version = cpu_quota(root, pid)
    out: dict = {"cgroup_version": version, "quota_cpus": None, "quota_period_us": None, "quota_source": None,
                 "cpuset_cpus": _cpuset_cpus(root, pid)}
    if quota is not None:
        out.update(quota_cpus=round(quota.cpus, 4), quota_period_us=quota.period_us,
                   quota_source=f"cgroup v{quota.version} {quota.file} ({quota.level})")
        t = read_throttling(root, quota)
        if t is not None:
            out["throttling_since_start"] = {"nr_periods": t.nr_periods, "nr_throttled": t.nr_throttled,
                                             "throttled_s": round(t.throttled_s, 3)}
    return out


def quota_cores(cpus: Optional[float]) -> Optional[int]:
    """Whole workers a quota keeps busy: rounded up, as loky's cpu_count does (1.5 CPUs -> 2 workers,
    each getting 0.75 of a core, still more than one worker's 1.0), at least 1."""
    if cpus is None:
        return None
    return max(1, math.ceil(cpus - 1e-9))


# ------------------------------------------------------------------ memory

def cgroup_memory(root: str = "/", pid: Optional[int] = None) -> dict:
    """The memory limit (the least along the ancestry), usage and OOM kills of a process's cgroup.

    {version, limit_bytes, usage_bytes, oom_kills, limit_source}; limit_source is by kind, e.g.
    "cgroup v2 memory.max (parent cgroup)", never a path.
    """
    out: dict = {"version": None, "limit_bytes": None, "usage_bytes": None, "oom_kills": None, "limit_source": None}
    h = hierarchy("memory", root, pid)
    if h is None:
        return out
    limit_file, usage_file = ("memory.max", "memory.current") if h.version == 2 else \
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    if not exists(root, h.leaf + "/" + usage_file) and not exists(root, h.leaf + "/" + limit_file):
        return out
    out["version"] = h.version
    for up, folder in enumerate(_levels(h)):
        value = _int(read_text(root, folder + "/" + limit_file))
        if value is None or (h.version == 1 and value >= _V1_UNLIMITED_BYTES):
            continue
        if out["limit_bytes"] is None or value < out["limit_bytes"]:
            out["limit_bytes"] = value
            out["limit_source"] = f"cgroup v{h.version} {limit_file} ({level_name(up)})"
    out["usage_bytes"] = _int(read_text(root, h.leaf + "/" + usage_file))
    events = read_text(root, h.leaf + ("/memory.events" if h.version == 2 else "/memory.oom_control"))
    if events is not None:
        out["oom_kills"] = parse_kv_numbers(events).get("oom_kill")  # v1: kernels >= 4.13
    return out
