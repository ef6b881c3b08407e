"""CPU limits from fake cgroup trees (v1, v2, nested, `max`, missing controller, containers) and a
fake Windows job object: the one reader behind usable cores, and what it may say in a public report."""

from __future__ import annotations

import os
import struct
from typing import Dict

import pytest

from gpudiag import platform
from gpudiag.platform import _cgroup, _files, _windows

CONTAINER_ID = "4f1c" * 16  # Docker's 64-hex container id: must never reach an output
POD = "pod8d2b6a41-5c1e-4e9a-9d0b-0f3a2e7c9b11"


def tree(tmp_path, files: Dict[str, str]) -> str:
    """A fake root holding `files` (path -> text)."""
    for path, text in files.items():
        full = tmp_path / path.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)
    return str(tmp_path)


def mountinfo(*mounts: str) -> str:
    """mountinfo lines from 'fstype mount_root mount_point super_options' shorthands."""
    lines = []
    for i, m in enumerate(mounts):
        fstype, mroot, mpoint, opts = m.split()
        lines.append(f"{30 + i} 25 0:{26 + i} {mroot} {mpoint} rw,nosuid,nodev,noexec,relatime shared:{i} - "
                     f"{fstype} {fstype} {opts}")
    return "\n".join(lines) + "\n"


V2_MOUNT = mountinfo("cgroup2 / /sys/fs/cgroup rw,nsdelegate")


def limit(root: str, affinity: int = 8, pid=None) -> dict:
    return platform.cpu_limit(pid=pid, root=root, kind="linux", affinity=affinity, logical=max(8, affinity))


def test_v2_parent_quota_is_stricter_than_the_leaf(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/kubepods/burstable/" + POD + "/" + CONTAINER_ID + "\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
        f"/sys/fs/cgroup/kubepods/burstable/{POD}/{CONTAINER_ID}/cpu.max": "max 100000\n",
        f"/sys/fs/cgroup/kubepods/burstable/{POD}/cpu.max": "150000 100000\n",
        "/sys/fs/cgroup/kubepods/burstable/cpu.max": "max 100000\n",
        f"/sys/fs/cgroup/kubepods/burstable/{POD}/cpu.stat":
            "usage_usec 9\nnr_periods 40\nnr_throttled 10\nthrottled_usec 250000\n",
    })
    out = limit(r)
    assert out["quota_cpus"] == 1.5 and out["quota_period_us"] == 100000
    assert out["quota_source"] == "cgroup v2 cpu.max (parent cgroup)"
    assert out["cgroup_version"] == 2
    assert out["usable_cpus"] == 1.5 and out["usable_cores"] == 2 and out["limited_by"] == "quota"
    assert out["throttling_since_start"] == {"nr_periods": 40, "nr_throttled": 10, "throttled_s": 0.25}
    assert CONTAINER_ID not in repr(out) and POD not in repr(out) and "/sys" not in repr(out)


def test_v2_leaf_stricter_than_ancestors_and_levels_named(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/a/b/c\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        "/sys/fs/cgroup/a/cpu.max": "300000 100000\n",
        "/sys/fs/cgroup/a/b/c/cpu.max": "50000 100000\n",
    })
    out = limit(r, affinity=2)
    assert out["quota_cpus"] == 0.5 and out["quota_source"] == "cgroup v2 cpu.max (own cgroup)"
    assert out["usable_cores"] == 1 and out["limited_by"] == "quota"
    # the grandparent, when it is the strictest
    (tmp_path / "sys/fs/cgroup/a/b/c/cpu.max").write_text("max 100000\n")
    (tmp_path / "sys/fs/cgroup/a/cpu.max").write_text("20000 100000\n")
    assert limit(r)["quota_source"] == "cgroup v2 cpu.max (2 levels up)"
    assert limit(r)["quota_cpus"] == 0.2 and limit(r)["usable_cores"] == 1


def test_v2_max_everywhere_is_no_quota(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/user.slice/session-2.scope\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        "/sys/fs/cgroup/user.slice/session-2.scope/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/user.slice/cpu.max": "max 100000\n",
    })
    out = limit(r, affinity=4)
    assert out["quota_cpus"] is None and out["quota_source"] is None and out["cgroup_version"] == 2
    assert out["usable_cores"] == 4 and out["usable_cpus"] == 4.0
    assert "throttling_since_start" not in out
    assert platform.ThrottleMeter(root=r, kind="linux").read() is None


def test_missing_cpu_controller_reads_nothing(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/x\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "memory pids\n",  # cpu not delegated here
        "/sys/fs/cgroup/x/cpu.max": "50000 100000\n",
    })
    out = limit(r, affinity=1)
    assert out["cgroup_version"] is None and out["quota_cpus"] is None and out["quota_source"] is None
    assert out["usable_cores"] == 1


def test_no_cgroup_file_at_all(tmp_path):
    out = limit(tree(tmp_path, {"/etc/hostname": "x\n"}), affinity=2)
    assert out["cgroup_version"] is None and out["quota_cpus"] is None and out["usable_cores"] == 2


def test_v1_cpu_cpuacct_quota_and_throttled_time_in_ns(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "4:memory:/\n3:cpu,cpuacct:/batch/job7\n0::/\n",
        "/proc/self/mountinfo": mountinfo("cgroup / /sys/fs/cgroup/cpu,cpuacct rw,cpu,cpuacct",
                                          "cgroup2 / /sys/fs/cgroup/unified rw"),
        "/sys/fs/cgroup/unified/cgroup.controllers": "\n",  # hybrid: an empty v2 beside v1
        "/sys/fs/cgroup/cpu,cpuacct/batch/job7/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/batch/job7/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/batch/cpu.stat": "nr_periods 20\nnr_throttled 19\nthrottled_time 1500000000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    out = limit(r, affinity=2)
    assert out["cgroup_version"] == 1 and out["quota_cpus"] == 1.0
    assert out["quota_source"] == "cgroup v1 cpu.cfs_quota_us (parent cgroup)"
    assert out["usable_cores"] == 1 and out["limited_by"] == "quota"
    assert out["throttling_since_start"] == {"nr_periods": 20, "nr_throttled": 19, "throttled_s": 1.5}


def test_v1_container_without_cgroup_namespace_strips_the_mount_root(tmp_path):
    # /proc/self/cgroup names /docker/<id>, but the container's mount shows only its own cgroup.
    r = tree(tmp_path, {
        "/proc/self/cgroup": f"5:cpuset:/docker/{CONTAINER_ID}\n3:cpu,cpuacct:/docker/{CONTAINER_ID}\n",
        "/proc/self/mountinfo": mountinfo(f"cgroup /docker/{CONTAINER_ID} /sys/fs/cgroup/cpu,cpuacct rw,cpu,cpuacct",
                                          f"cgroup /docker/{CONTAINER_ID} /sys/fs/cgroup/cpuset rw,cpuset"),
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpuset/cpuset.effective_cpus": "0-3\n",
    })
    out = limit(r, affinity=16)
    assert out["quota_cpus"] == 1.5 and out["quota_source"] == "cgroup v1 cpu.cfs_quota_us (own cgroup)"
    assert out["cpuset_cpus"] == 4 and out["usable_cores"] == 2
    assert CONTAINER_ID not in repr(out)


def test_v2_cgroup_namespace_sees_its_own_cgroup_at_the_top(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu memory\n",
        "/sys/fs/cgroup/cpu.max": "200000 100000\n",
        "/sys/fs/cgroup/cpuset.cpus.effective": "0-1,4\n",
    })
    out = limit(r, affinity=8)
    assert out["quota_cpus"] == 2.0 and out["cpuset_cpus"] == 3
    assert out["usable_cores"] == 2 and out["limited_by"] == "quota"


def test_cpuset_narrower_than_quota_binds(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu memory\n",
        "/sys/fs/cgroup/cpu.max": "400000 100000\n",
        "/sys/fs/cgroup/cpuset.cpus.effective": "2,5-6\n",
    })
    out = limit(r, affinity=8)
    assert (out["usable_cores"], out["usable_cpus"], out["limited_by"]) == (3, 3.0, "cpuset")


def test_another_process_is_read_through_its_own_pid(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/gpudiag\n",
        "/proc/4242/cgroup": "0::/job\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpu\n",
        "/sys/fs/cgroup/job/cpu.max": "25000 100000\n",
    })
    assert limit(r, pid=4242)["quota_cpus"] == 0.25
    assert limit(r)["quota_cpus"] is None


def test_no_mountinfo_falls_back_to_the_conventional_places(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "2:cpu,cpuacct:/lim\n",
        "/sys/fs/cgroup/cpu,cpuacct/lim/cpu.cfs_quota_us": "50000\n",
        "/sys/fs/cgroup/cpu,cpuacct/lim/cpu.cfs_period_us": "100000\n",
    })
    assert limit(r)["quota_cpus"] == 0.5


def test_throttle_meter_deltas(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/c\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpu\n",
        "/sys/fs/cgroup/c/cpu.max": "100000 100000\n",
        "/sys/fs/cgroup/c/cpu.stat": "nr_periods 100\nnr_throttled 5\nthrottled_usec 1000\n",
    })
    meter = platform.ThrottleMeter(root=r, kind="linux")
    before = meter.read()
    (tmp_path / "sys/fs/cgroup/c/cpu.stat").write_text("nr_periods 120\nnr_throttled 24\nthrottled_usec 951000\n")
    d = platform.ThrottleMeter.delta(before, meter.read())
    assert d == {"periods": 20, "throttled_periods": 19, "throttled_share": 0.95, "throttled_s": 0.95}
    assert platform.ThrottleMeter.delta(None, before) is None
    (tmp_path / "sys/fs/cgroup/c/cpu.stat").write_text("usage_usec 5\n")  # no bandwidth counters
    assert meter.read() is None
    assert platform.ThrottleMeter(root=r, kind="windows").read() is None


def test_memory_limit_is_the_least_of_the_ancestry_and_named_by_kind(tmp_path):
    r = tree(tmp_path, {
        "/proc/self/cgroup": f"0::/kubepods/{POD}/{CONTAINER_ID}\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        f"/sys/fs/cgroup/kubepods/{POD}/{CONTAINER_ID}/memory.max": "max\n",
        f"/sys/fs/cgroup/kubepods/{POD}/{CONTAINER_ID}/memory.current": "1048576\n",
        f"/sys/fs/cgroup/kubepods/{POD}/{CONTAINER_ID}/memory.events": "oom 0\noom_kill 2\n",
        f"/sys/fs/cgroup/kubepods/{POD}/memory.max": "2147483648\n",
    })
    m = _cgroup.cgroup_memory(r)
    assert m == {"version": 2, "limit_bytes": 2 ** 31, "usage_bytes": 2 ** 20, "oom_kills": 2,
                 "limit_source": "cgroup v2 memory.max (parent cgroup)"}


@pytest.mark.parametrize("cpus, workers", [(0.2, 1), (1.0, 1), (1.5, 2), (2.0, 2), (None, None)])
def test_quota_rounds_up_to_whole_workers(cpus, workers):
    assert _cgroup.quota_cores(cpus) == workers


@pytest.mark.parametrize("text, cpus", [("0-3", [0, 1, 2, 3]), ("0,2,4-5\n", [0, 2, 4, 5]), ("", []),
                                        (None, []), ("x-1", []), ("3,0-1,1", [0, 1, 3])])
def test_parse_cpulist(text, cpus):
    assert _files.parse_cpulist(text) == cpus


class FakeJob:
    def __init__(self, flags=None, value=0):
        self.raw = None if flags is None else struct.pack("<II", flags, value)

    def cpu_rate_control(self):
        return self.raw


@pytest.mark.parametrize("job, expected", [
    (FakeJob(0x1 | 0x4, 2500), 2.0),                 # hard cap: 25 % of 8 CPUs
    (FakeJob(0x1 | 0x10, (5000 << 16) | 1000), 4.0),  # min-max: the max rate caps (50 %)
    (FakeJob(0x1, 2500), None),                      # a soft target: only under contention
    (FakeJob(0x1 | 0x2, 5), None),                   # a weight, not a cap
    (FakeJob(0x4, 2500), None),                      # not enabled
    (FakeJob(None), None),                           # not in a job
])
def test_windows_job_object_cpu_rate(job, expected):
    out = _windows.job_cpu_limit(job, 8)  # the rate is a share of all 8 CPUs
    assert out.get("quota_cpus") == expected
    if expected is not None:
        assert out["quota_source"] == "Windows job object CPU rate (hard cap)"


def test_windows_job_cap_binds_usable_cores():
    n = os.cpu_count() or 1
    out = platform.cpu_limit(kind="windows", job_api=FakeJob(0x1 | 0x4, 5000), affinity=n)
    assert out["quota_cpus"] == n / 2 and out["usable_cores"] == max(1, -(-n // 2))
    assert out["limited_by"] == "quota" and out["cgroup_version"] is None
    assert platform.cpu_limit(kind="windows", job_api=None, affinity=n)["quota_cpus"] is None
    assert _windows.job_cpu_limit(None, 8) == {}


def test_this_machine_answers_without_raising():
    out = platform.cpu_limit()
    assert out["usable_cores"] >= 1 and out["usable_cores"] == platform.usable_cores()
    assert out["usable_cores"] <= (os.cpu_count() or 1)


def test_the_throttle_meter_of_another_process_reads_its_cgroup_not_ours(tmp_path):
    # watch --pid: the job's cgroup (limited, throttled), not gpudiag's (no quota).
    r = tree(tmp_path, {
        "/proc/self/cgroup": "0::/gpudiag\n",
        "/proc/4242/cgroup": f"0::/job/{CONTAINER_ID}\n",
        "/proc/self/mountinfo": V2_MOUNT,
        "/sys/fs/cgroup/cgroup.controllers": "cpu\n",
        "/sys/fs/cgroup/gpudiag/cpu.max": "max 100000\n",
        f"/sys/fs/cgroup/job/{CONTAINER_ID}/cpu.max": "50000 100000\n",
        f"/sys/fs/cgroup/job/{CONTAINER_ID}/cpu.stat": "nr_periods 10\nnr_throttled 9\nthrottled_usec 400000\n",
    })
    assert platform.ThrottleMeter(root=r, kind="linux").read() is None
    job = platform.ThrottleMeter(pid=4242, root=r, kind="linux")
    t0 = job.read()
    (tmp_path / f"sys/fs/cgroup/job/{CONTAINER_ID}/cpu.stat").write_text(
        "nr_periods 30\nnr_throttled 28\nthrottled_usec 1400000\n")
    assert platform.ThrottleMeter.delta(t0, job.read()) == {"periods": 20, "throttled_periods": 19,
                                                            "throttled_share": 0.95, "throttled_s": 1.0}


def test_cgroup_memory_is_the_platform_reader_and_empty_outside_linux(tmp_path):
    none = {"version": None, "limit_bytes": None, "usage_bytes": None, "oom_kills": None, "limit_source": None}
    assert platform.cgroup_memory(kind="windows") == none and platform.cgroup_memory(kind="macos") == none
    r = tree(tmp_path, {
        "/proc/self/cgroup": "4:memory:/docker/x\n",
        "/proc/self/mountinfo": mountinfo("cgroup /docker/x /sys/fs/cgroup/memory rw,memory"),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        "/sys/fs/cgroup/memory/memory.usage_in_bytes": "1048576\n",
    })
    m = platform.cgroup_memory(root=r, kind="linux")
    assert (m["version"], m["limit_bytes"], m["usage_bytes"], m["limit_source"]) == (1, None, 2 ** 20, None)
