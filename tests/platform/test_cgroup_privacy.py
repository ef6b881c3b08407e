"""No cgroup path in any output: a Kubernetes pod (its UID) and a Docker container (its 64-hex id) planted in fake
cgroup trees, then every reader and every text built from them read for the ids.

A cgroup path names the container and the pod, and reports go to public issues: the CPU and memory limits say
their source by kind, container detection records only the marker it saw.
"""

from __future__ import annotations

import json

import pytest

from gpudiag import platform
from gpudiag.diagnose import cpu_limit
from gpudiag.diagnose.preflight import Plan
from gpudiag.diagnose.preflight.host_checks import check_cpu_limit
from gpudiag.probes import system
from tests.platform.test_cpu_limit import CONTAINER_ID, POD, mountinfo, tree

SECRETS = (CONTAINER_ID, POD, "/sys/fs/cgroup", "/docker/", "/kubepods/")  # "mentions kubepods" is a marker word

V2_POD = {
    "/proc/self/cgroup": f"0::/kubepods/burstable/{POD}/{CONTAINER_ID}\n",
    "/proc/1/cgroup": f"0::/kubepods/burstable/{POD}/{CONTAINER_ID}\n",
    "/proc/self/mountinfo": mountinfo("cgroup2 / /sys/fs/cgroup rw,nsdelegate"),
    "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/cpu.max": "50000 100000\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/cpu.stat": "nr_periods 90\nnr_throttled 81\nthrottled_usec 4100000\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/{CONTAINER_ID}/cpu.max": "max 100000\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/{CONTAINER_ID}/cpuset.cpus.effective": "0-3\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/{CONTAINER_ID}/memory.max": "1073741824\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/{CONTAINER_ID}/memory.current": "104857600\n",
    f"/sys/fs/cgroup/kubepods/burstable/{POD}/{CONTAINER_ID}/memory.events": "oom_kill 1\n",
    "/proc/meminfo": "MemTotal: 16384000 kB\nMemAvailable: 8192000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
    "/proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
}

V1_DOCKER = {
    "/proc/self/cgroup": f"5:cpuset:/docker/{CONTAINER_ID}\n4:memory:/docker/{CONTAINER_ID}\n"
                         f"3:cpu,cpuacct:/docker/{CONTAINER_ID}\n",
    "/proc/1/cgroup": f"3:cpu,cpuacct:/docker/{CONTAINER_ID}\n",
    "/proc/self/mountinfo": mountinfo(f"cgroup /docker/{CONTAINER_ID} /sys/fs/cgroup/cpu,cpuacct rw,cpu,cpuacct",
                                      f"cgroup /docker/{CONTAINER_ID} /sys/fs/cgroup/cpuset rw,cpuset",
                                      f"cgroup /docker/{CONTAINER_ID} /sys/fs/cgroup/memory rw,memory"),
    "/.dockerenv": "",
    "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
    "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    "/sys/fs/cgroup/cpu,cpuacct/cpu.stat": "nr_periods 10\nnr_throttled 1\nthrottled_time 5000000\n",
    "/sys/fs/cgroup/cpuset/cpuset.effective_cpus": "0-1\n",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648\n",
    "/sys/fs/cgroup/memory/memory.usage_in_bytes": "104857600\n",
    "/proc/meminfo": "MemTotal: 16384000 kB\nMemAvailable: 8192000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
}


def _assert_private(obj) -> str:
    text = json.dumps(obj, default=str)
    for s in SECRETS:
        assert s not in text, f"{s!r} leaked into: {text[:400]}"
    return text


@pytest.mark.parametrize("files", [V2_POD, V1_DOCKER], ids=["v2-kubernetes-pod", "v1-docker"])
def test_no_reader_and_no_text_built_on_it_names_the_cgroup(tmp_path, files):
    root = tree(tmp_path, files)
    limit = platform.cpu_limit(root=root, kind="linux", affinity=8, logical=8)
    assert limit["limited_by"] == "quota" and limit["quota_source"].startswith("cgroup v")  # it was read ...
    mem = platform.memory_facts(root=root, kind="linux", wsl=None)
    assert mem["cgroup_limit_bytes"] and mem["cgroup_limit_source"].startswith("cgroup v")
    os_ = platform.os_facts(root=root, environ={}, kind="linux")
    meter = platform.ThrottleMeter(root=root, kind="linux")
    cpu = {"logical_cores": 8, "limit": limit}
    texts = [limit, mem, os_, platform.cgroup_memory(root=root, kind="linux"), meter.read(),
             system.findings_for({"cpu": cpu, "memory": mem, "os": os_}),
             check_cpu_limit({"cpu_limit": limit, "logical_cpus": 8}, Plan(workers=4)).to_dict(),
             cpu_limit.limit_text(limit), cpu_limit.usable_text(limit), cpu_limit.throttled_text(limit, {"throttled_share": 0.9,
                                                                                    "periods": 40})]
    text = _assert_private(texts)  # ... and named by kind only
    assert "cgroup v" in text and "CPU_LIMIT" in text
