"""`watch` under a CPU limit: the job's own limit and its cgroup's throttled share, the finding, and a
recommendation that adds no workers the limit cannot run. Pure rules on literal data, then a real job in a real
0.1-CPU cgroup (root only; skipped elsewhere; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


from gpudiag.watch import analysis
from gpudiag.watch import diagnose as dg
from gpudiag.watch import recommend as wr
from tests.cgroup_quota import cpu_quota_cgroup
from tests.diagnose.test_cpu_limit_rules import CALM, QUOTA_1, QUOTA_HALF, THROTTLED
from tests.watch.test_watch_units import _data, _gil_samples, _three_spinners


def _limited(data, limit, throttling, background=0.1):
    data["cpu"].update(limit=limit, throttling=throttling, logical_cores=2, background_cpu_cores=background)
    data["machine"] = {"logical_cores": 2, "usable_cores": limit["usable_cores"]}
    return data


def _gil_bound():
    return analysis.gil_section(_gil_samples(60, _three_spinners), {"pid": 1}, {})


def test_a_throttled_job_gets_the_finding_and_no_more_workers():
    data = _limited(_data(gil=_gil_bound()), QUOTA_HALF, THROTTLED)
    vs = dg.verdicts(data)
    codes = {f["code"]: f for f in wr.findings(data, vs)}
    f = codes["WATCH_CPU_THROTTLED"]
    assert f["severity"] == "warning"
    assert f["message"].startswith("The job was throttled in 95 % of 40 periods by a CPU limit of 0.5 CPU "
                                   "(cgroup v2 cpu.max, parent cgroup) (2.1 s stalled in all)")
    assert "more threads or workers cannot help" in f["message"] and "docker --cpus" in f["fix"]
    rec = wr.recommend(data, vs)
    assert rec["strategy"] == "unchanged" and rec["workers"] is None  # not "run them as 1 processes"
    assert "No change that adds workers can help under this CPU limit" in rec["headline"]
    assert "processes would not run side by side either: the job was throttled in 95 %" in rec["headline"]
    ev = {e["source"]: e["value"] for e in rec["evidence"]}
    assert ev["probes.watch.data.cpu.throttling.throttled_share"] == 0.95


def test_one_usable_core_withholds_processes_even_unthrottled():
    data = _limited(_data(gil=_gil_bound()), QUOTA_1, CALM)
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["strategy"] == "unchanged"
    assert "the job has 1 usable core under a CPU limit of 1.0 CPU" in rec["headline"]
    assert "WATCH_CPU_THROTTLED" not in [f["code"] for f in wr.findings(data, dg.verdicts(data))]


def test_a_throttled_job_gets_no_more_loader_workers_but_keeps_other_changes():
    inp = {"status": "ok", "loader_seen": True, "fraction": 0.5, "samples": 60, "ci95": [0.4, 0.6]}
    data = _limited(_data(inp=inp), QUOTA_HALF, THROTTLED)
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["strategy"] != "loader_workers"
    assert "more loader workers cannot help: the job was throttled in 95 %" in rec["headline"]
    data = _limited(_data(inp=inp), QUOTA_HALF, CALM)  # not throttled: the loader may still be short of workers
    assert wr.recommend(data, dg.verdicts(data))["strategy"] == "loader_workers"


def test_other_programs_count_as_busy_only_beyond_what_the_quota_leaves_idle():
    data = _limited(_data(), QUOTA_HALF, CALM, background=1.2)  # 2 cores, a 0.5 quota: 1.5 left to others
    assert "WATCH_MACHINE_BUSY" not in [f["code"] for f in wr.findings(data, dg.verdicts(data))]
    data = _limited(_data(), QUOTA_HALF, CALM, background=2.0)
    assert "WATCH_MACHINE_BUSY" in [f["code"] for f in wr.findings(data, dg.verdicts(data))]
    data = _data()
    data["cpu"]["background_cpu_cores"] = 0.6  # no limit: the old rule
    assert "WATCH_MACHINE_BUSY" in [f["code"] for f in wr.findings(data, dg.verdicts(data))]


def test_the_view_shows_the_job_limit_and_its_throttling():
    from gpudiag.views import watch_view

    cpu = {"status": "ok", "limit": QUOTA_HALF, "throttling": THROTTLED}
    assert watch_view._cpu_limit_text(cpu) == ("a CPU limit of 0.5 CPU (cgroup v2 cpu.max, parent cgroup), 1 usable "
                                               "core; throttled in 95 % of 40 periods (2.10 s stalled) during the watch")
    assert watch_view._cpu_limit_text({"status": "ok"}) == ""


BUSY2 = """
import threading, time
def spin():
    while True:
        pass
for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
print("spinning", flush=True)
time.sleep(120)
"""


def test_watch_of_a_job_in_a_throttled_cgroup_reports_its_throttled_share(tmp_path):
    out = tmp_path / "w.json"
    # A tenth of a CPU: a spinning thread wants far more even on a loaded machine (at 0.5 CPU, with the GIL
    # letting one thread run at a time and other work on the 2 cores, it may get less than its quota).
    with cpu_quota_cgroup(0.1) as cg:
        job = subprocess.Popen(cg.wrap([sys.executable, "-c", BUSY2]), stdout=subprocess.PIPE, text=True)
        try:
            assert job.stdout.readline().strip() == "spinning"  # inside the cgroup and busy: no sleep race
            r = subprocess.run([sys.executable, "-m", "gpudiag", "watch", "--pid", str(job.pid), "--duration", "2",
                                "--no-gpu", "--no-gil", "--json", str(out), "-o", str(tmp_path / "w.html")],
                               capture_output=True, text=True, timeout=120)
        finally:
            job.kill()
            job.wait()
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    cpu = rep["probes"]["watch"]["data"]["cpu"]
    assert cpu["limit"]["quota_cpus"] == 0.1 and cpu["limit"]["usable_cores"] == 1
    assert cpu["limit"]["quota_source"].endswith("(own cgroup)")
    thr = cpu["throttling"]
    # Two spinning threads on a tenth of a CPU use up the quota in every period they run in.
    assert thr["periods"] >= 5 and thr["throttled_periods"] >= 1 and thr["throttled_s"] > 0
    assert rep["probes"]["watch"]["data"]["machine"]["usable_cores"] == 1
    assert "throttled in" in r.stderr and "CPU limit of 0.1 CPU" in r.stderr
    for text in (out.read_text(), (tmp_path / "w.html").read_text(), r.stderr):
        assert cg.path not in text and cg.path.rsplit("/", 1)[-1] not in text  # the cgroup's path and name
