"""`gpudiag report` and `gpudiag preflight` inside a real cgroup limited to 1 CPU on this machine (root only:
skipped cleanly elsewhere by tests/cgroup_quota.py). They must name the limit and the throttling, recommend at
most one worker's worth of parallelism, and never print the cgroup's path. No timing is asserted: the figures
are whatever this machine gives."""

from __future__ import annotations

import json
import subprocess
import sys

from gpudiag import capabilities
from tests.cgroup_quota import cpu_quota_cgroup

HAS_TORCH = capabilities.detect()["torch"].available
LIMIT = "a CPU limit of 1.0 CPU (cgroup v"


def _private(cg, *texts: str) -> None:
    for text in texts:
        assert cg.path not in text and cg.path.rsplit("/", 1)[-1] not in text


def test_a_quick_report_under_a_one_cpu_limit_names_it_and_recommends_one_worker_at_most(tmp_path):
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    cmd = [sys.executable, "-m", "gpudiag", "report", "--quick", "--only", "system", "--only", "gil",
           "--only", "cycle", "--json", str(out), "-o", str(html)]
    with cpu_quota_cgroup(1.0) as cg:
        r = subprocess.run(cg.wrap(cmd), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    probes = rep["probes"]

    lim = probes["system"]["data"]["cpu"]["limit"]
    assert (lim["quota_cpus"], lim["usable_cores"], lim["limited_by"]) == (1.0, 1, "quota")
    (f,) = [f for f in probes["system"]["findings"] if f["code"] == "CPU_LIMIT"]
    assert LIMIT in f["message"] and "leaves 1 usable core" in f["message"]

    gil = probes["gil"]["data"]
    assert gil["cpu"]["worker_points"] == [1] and gil["cpu"]["limit"]["usable_cores"] == 1
    assert LIMIT in gil["verdict"]["python"]["reason"]
    assert all(set(t) == {"periods", "throttled_periods", "throttled_share", "throttled_s"}
               for t in gil["cpu"]["throttling"].values())

    rec = rep["recommendation"]
    if HAS_TORCH:
        cyc = probes["cycle"]["data"]
        rows = {s["name"]: s for s in cyc["strategies"]}
        for name in ("threads", "processes"):
            assert rows[name]["status"] == "skipped" and LIMIT in rows[name]["reason"]
        assert cyc["workload"]["torch_threads"] == 1 and cyc["load"]["limit"]["usable_cores"] == 1
        thr = cyc["load"]["throttling"]
        assert isinstance(thr["periods"], int) and 0.0 <= thr["throttled_share"] <= 1.0
        assert rec["workers"] in (None, 1)  # at most one worker's worth of parallelism
        assert rec["strategy"] not in ("threads", "processes")
        assert LIMIT in rec["headline"] and "throttled in" in rec["headline"]
        assert LIMIT in r.stdout  # the terminal's recommendation line says it too
    _private(cg, out.read_text(), html.read_text(), r.stdout, r.stderr)


def test_preflight_for_two_workers_under_a_one_cpu_limit_names_the_limit(tmp_path):
    cmd = [sys.executable, "-m", "gpudiag", "preflight", "--workers", "2", "--json"]
    with cpu_quota_cgroup(1.0) as cg:
        r = subprocess.run(cg.wrap(cmd), capture_output=True, text=True, timeout=120, cwd=tmp_path)
        text = subprocess.run(cg.wrap(cmd[:-1]), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr  # 1: not ready for other reasons (no NVIDIA driver here)
    (check,) = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "cpu_limit"]
    assert check["status"] == "warn"
    assert check["message"].startswith("2 worker processes on 1 usable core under " + LIMIT)
    assert check["evidence"]["quota_cpus"] == 1.0 and check["evidence"]["usable_cores"] == 1
    assert "WARN  cpu_limit" in text.stdout and LIMIT in text.stdout
    _private(cg, r.stdout, r.stderr, text.stdout, text.stderr)
