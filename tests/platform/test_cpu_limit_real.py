"""The CPU-limit reader inside a real cgroup with a quota (root only; skipped elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cgroup_quota import cpu_quota_cgroup

CHILD = r"""
import json, time
from gpudiag import platform
lim = platform.cpu_limit()
meter = platform.ThrottleMeter()
t0 = meter.read()
deadline = time.monotonic() + 20
d = None
while time.monotonic() < deadline:  # spin until the quota throttles us once (it must, within a few periods)
    sum(range(20000))
    d = platform.ThrottleMeter.delta(t0, meter.read())
    if d and d["throttled_periods"]:
        break
print(json.dumps({"limit": lim, "delta": d, "usable": platform.usable_cores()}))
"""


def test_a_process_inside_a_quarter_cpu_cgroup_reads_its_quota_and_its_throttling():
    with cpu_quota_cgroup(0.25) as cg:
        out = subprocess.run(cg.wrap([sys.executable, "-c", CHILD]), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    lim = got["limit"]
    assert lim["quota_cpus"] == 0.25 and lim["quota_period_us"] == 100000
    assert lim["quota_source"] == f"cgroup v{cg.version} {'cpu.max' if cg.version == 2 else 'cpu.cfs_quota_us'} (own cgroup)"
    assert lim["usable_cores"] == 1 and got["usable"] == 1 and lim["limited_by"] == "quota"
    assert got["delta"]["throttled_periods"] >= 1 and got["delta"]["throttled_s"] > 0
    assert "gpudiag-test" not in out.stdout  # the cgroup's name never reaches an output
