"""`gpudiag fleet` for real, several processes on this machine, CPU ranks on gloo, loopback only.

- torchrun --standalone with 2 ranks: the whole path (rendezvous, gather, collectives, report, views);
- two "nodes" on one machine: two torchrun launchers with --nnodes 2, each in its own UTS namespace
  (`unshare -u`, root only) so the host names differ, each pinned to one core (`taskset`); node B's rank
  gets CPU hogs on its core while it measures and must be named the straggler, node A's rank not;
- the same two nodes with node A's two ranks sharing core 0 (half a core each, the launch's choice) and
  node B's one rank alone on core 1 inside a cgroup limited to 20 % of a core (tests/cgroup_quota.py,
  root only): node B's rank is named with the quota, node A is neither named nor excluded;
- a rank that hangs is named by the deadline and the report is still written;
- srun's variables (SLURM_PROCID, ...) without srun, one task crashing; a world of one without a launcher.
Each test starts a few Python processes that import torch (torchrun's agents too): 1-12 s each,
20-40 s in all depending on how busy the machine is (the quota one 30-60 s: node B's agent and rank start
at a fifth of a core). Nothing here asserts a timing except that the starved rank, with four busy loops
on its core, is slower than its peers. Rendezvous and gloo use 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import tests
from gpudiag.fleet import collectives
from gpudiag.fleet.measure import host_label

ROOT = tests.ROOT
FAULTS = os.path.join(ROOT, "tests", "fleet", "fleet_faults.py")
HOG = [sys.executable, "-c", "while True: pass"]

pytestmark = pytest.mark.torch  # gpudiag fleet needs torch
if not sys.platform.startswith("linux"):
    pytest.skip("these runs use Linux process tools (torchrun on loopback, taskset, unshare)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """This checkout's gpudiag, gloo on loopback, and no launcher variables inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "GPUDIAG_TEST_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                         "MASTER_PORT")}
    env.update(PYTHONPATH=ROOT, GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def load(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def fleet_data(path) -> dict:
    return load(path)["probes"]["fleet"]["data"]


def leftovers(marker: str):
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if marker in " ".join(cmd) or cmd == HOG:
            out.append(p.pid)
    return out


def test_standalone_two_ranks_write_one_fleet_report(tmp_path):
    import jsonschema

    out, html, md = tmp_path / "f.json", tmp_path / "f.html", tmp_path / "f.md"
    cmd = TORCHRUN + ["--standalone", "--nproc-per-node", "2", "-m", "gpudiag", "fleet", "--json", str(out),
                      "-o", str(html), "--markdown", str(md), "--deadline", "30"]
    res = subprocess.run(cmd, cwd=str(tmp_path), env=clean_env(), capture_output=True, text=True, timeout=120)
    assert out.exists(), res.stderr[-3000:]
    rep = load(out)
    jsonschema.validate(rep, load(os.path.join(ROOT, "gpudiag", "report", "schema", "report.schema.json")))
    data = rep["probes"]["fleet"]["data"]
    assert (res.returncode == 0) == (data["exit_code"] == 0), res.stderr[-2000:]
    assert (data["world_size"], data["answered"], data["launcher"]["launcher"], data["backend"]) == \
        (2, 2, "torchrun", "gloo")
    assert [(e["rank"], e["local_rank"], e["device"]["kind"]) for e in data["ranks"]] == [(0, 0, "cpu"), (1, 1, "cpu")]
    assert data["ranks"][0]["host"] == data["ranks"][1]["host"] == host_label(socket.gethostname())
    assert all("no GPU" in f["what"] for e in data["ranks"] for f in e["figures"].values())  # labelled CPU
    assert data["collectives_status"]["state"] == "ok"
    rows = data["collectives"]
    assert {(c["op"], c["scope"]) for c in rows} == {(op, "intra_node") for op in collectives.OPS}
    assert len(rows) == len(collectives.OPS) * len(data["collectives_status"]["plan"]["sizes"])
    for c in rows:
        assert c["busbw_gbps"] == pytest.approx(c["algbw_gbps"] * collectives.busbw_factor(c["op"], 2), rel=1e-3)
        assert c["time_us"]["n"] == data["collectives_status"]["plan"]["repeats"]
    assert "FLEET_GLOO_ONLY" in {f["code"] for f in rep["probes"]["fleet"]["findings"]}
    assert "<svg" in html.read_text() and "| rank |" in md.read_text()
    assert "gpudiag fleet:" in res.stdout


@pytest.fixture
def two_namespaced_nodes():
    """Skip unless this machine can give two launchers their own host names and their own cores."""
    if not (shutil.which("unshare") and shutil.which("taskset")):
        pytest.skip("needs unshare and taskset (util-linux)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPU cores to pin one launcher to each")
    probe = subprocess.run(["unshare", "-u", "sh", "-c", "hostname fleet-probe && hostname"], capture_output=True,
                           text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "fleet-probe":
        pytest.skip(f"unshare -u (a UTS namespace per launcher) needs root here: {probe.stderr.strip()[:200]}")
    cores = sorted(os.sched_getaffinity(0))[:2]
    return cores


def launcher_cmd(hostname: str, core: int, node_rank: int, nproc: int, port: int, args):
    inner = TORCHRUN + ["--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", str(nproc),
                        "--master-addr", "127.0.0.1", "--master-port", str(port), FAULTS] + list(args)
    script = f"hostname {hostname} && exec taskset -c {core} \"$@\""
    return ["unshare", "-u", "sh", "-c", script, "sh"] + inner


def run_two_launchers(tmp_path, a_cmd, b_cmd, env, timeout=150):
    """Node A's and node B's launchers, both waited for (and killed if they outlive the timeout):
    (node A's exit code, stdout, stderr); node A's rank 0 writes the report."""
    a = subprocess.Popen(a_cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(b_cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        a_out, a_err = a.communicate(timeout=timeout)
        b.communicate(timeout=60)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.communicate()
    return a.returncode, a_out, a_err


def test_two_nodes_name_the_starved_rank_the_straggler(tmp_path, two_namespaced_nodes):
    core_a, core_b = two_namespaced_nodes
    port = free_port()
    out, ex = tmp_path / "fleet.json", tmp_path / "exclude.txt"
    # One rank per node: two ranks sharing node A's one core would disturb each other as much as the hogs
    # disturb rank 1, and the score would rightly call the fleet too noisy to judge.
    env = clean_env(GPUDIAG_TEST_FAULT="hog:1:4")  # rank 1, on node B, shares its core with 4 busy loops
    args = ["fleet", "--deadline", "40"]
    a_code, a_out, a_err = run_two_launchers(
        tmp_path, launcher_cmd("fleet-node-a", core_a, 0, 1, port, args + ["--json", str(out), "--exclude-file", str(ex)]),
        launcher_cmd("fleet-node-b", core_b, 1, 1, port, args), env)
    assert out.exists(), a_err[-3000:]
    data = fleet_data(out)
    by_rank = {e["rank"]: e for e in data["ranks"]}
    node_a, node_b = host_label("fleet-node-a"), host_label("fleet-node-b")
    assert [by_rank[r]["host"] for r in (0, 1)] == [node_a, node_b]
    strag = [o for o in data["outliers"] if o["kind"] == "straggler" and o["level"] == "rank"]
    print("\nstarved rank 1 scores:", by_rank[1]["scores"], by_rank[1]["cpu"],
          "\nhealthy rank 0 scores:", by_rank[0]["scores"], by_rank[0]["cpu"])
    assert strag and {o["rank"] for o in strag} == {1}, data["outliers"]
    # The hogs are not the job's ranks: the straggler is named with other programs on its core as the cause.
    assert by_rank[1]["cpu_verdict"] == {"state": "starved", "causes": ["other_processes"]}, by_rank[1]["cpu"]
    findings = load(out)["probes"]["fleet"]["findings"]
    assert "other programs used" in next(f for f in findings if f["code"] == "FLEET_STRAGGLER")["message"]
    assert not any(s["flagged"] for s in by_rank[0]["scores"].values())
    assert data["exclude"]["hosts"] == [node_b] and ex.read_text() == "fleet-node-b\n"
    assert data["exit_code"] == 2 and a_code != 0  # torchrun reports rank 0's code 2 as a failure
    assert {c["scope"] for c in data["collectives"]} == {"inter_node"}  # one rank per node: the world is inter-node
    text = out.read_text()
    assert "fleet-node-a" not in text and "fleet-node-b" not in text
    assert "straggler rank(s) 1" in a_out
    assert not leftovers(FAULTS)


def test_two_nodes_name_the_quota_throttled_node_not_the_one_whose_ranks_share_a_core(tmp_path, two_namespaced_nodes):
    """Issue 21's fleet: node A's two ranks share core 0 (half a core each: their fair share, by the launch's
    pinning); node B's one rank has core 1 to itself but its whole agent runs in a cgroup limited to 0.2 CPU.
    A throttled rank runs at full speed inside each quota window, so short repeats made node B the fastest
    and node A the one to exclude; sustained windows and each rank's CPU account must name node B and its
    quota, and leave node A alone."""
    from tests.cgroup_quota import cpu_quota_cgroup

    core_a, core_b = two_namespaced_nodes
    port = free_port()
    out, ex = tmp_path / "fleet.json", tmp_path / "exclude.txt"
    env = clean_env(OMP_NUM_THREADS="1")  # one torch thread per rank on both nodes: one comparable group
    args = ["fleet", "--deadline", "120", "--no-collectives"]
    with cpu_quota_cgroup(0.2) as cg:
        a_code, _, a_err = run_two_launchers(
            tmp_path, launcher_cmd("fleet-node-a", core_a, 0, 2, port, args + ["--json", str(out), "--exclude-file",
                                                                               str(ex)]),
            cg.wrap(launcher_cmd("fleet-node-b", core_b, 1, 1, port, args)), env, timeout=300)
    assert out.exists(), a_err[-3000:]
    data = fleet_data(out)
    findings = load(out)["probes"]["fleet"]["findings"]
    by_rank = {e["rank"]: e for e in data["ranks"]}
    node_a, node_b = host_label("fleet-node-a"), host_label("fleet-node-b")
    assert [by_rank[r]["host"] for r in (0, 1, 2)] == [node_a, node_a, node_b]
    for r in (0, 1, 2):
        print(f"\nrank {r}:", {m: f["value"] for m, f in by_rank[r]["figures"].items()}, by_rank[r]["cpu"],
              by_rank[r].get("cpu_verdict"))
    # Each of node A's ranks found the other on its core (pid and start time); node B's rank is alone.
    assert by_rank[0]["cpu"]["job_ranks_sharing"] == [1] and by_rank[1]["cpu"]["job_ranks_sharing"] == [0]
    assert by_rank[2]["cpu"]["job_ranks_sharing"] == []
    # One torch thread each: the launch leaves node A's ranks half a core each, node B's rank all of its core.
    assert [by_rank[r]["cpu"]["fair_share"] for r in (0, 1, 2)] == [0.5, 0.5, 1.0]
    # Node B's rank read its quota and was throttled by it while it measured: the named cause.
    b_cpu = by_rank[2]["cpu"]
    assert b_cpu["limit"]["quota_cpus"] == pytest.approx(0.2) and b_cpu["limit"]["limited_by"] == "quota"
    assert b_cpu["throttling"]["throttled_periods"] > 0
    assert by_rank[2]["cpu_verdict"]["state"] == "starved" and "quota" in by_rank[2]["cpu_verdict"]["causes"]
    named_b = [f for f in findings if f["code"] in ("FLEET_STRAGGLER", "FLEET_CPU_QUOTA") and "rank 2 " in f["message"]]
    assert named_b and "by a CPU limit of 0.2 CPU" in named_b[0]["message"], findings
    # Node A is never the straggler, the slow node or on the exclude list, and no quota is blamed there.
    assert not [o for o in data["outliers"] if o["kind"] in ("straggler", "system_wide")
                and (o["host"] == node_a or o["rank"] in (0, 1))], data["outliers"]
    assert node_a not in data["exclude"]["hosts"]
    assert all("quota" not in (by_rank[r].get("cpu_verdict") or {}).get("causes", []) for r in (0, 1))
    # Critical (2) when node B's throttled rank is slower than its peers, as it is at 0.2 against 0.5 of a
    # core; a quota named on a rank that is not slower than its peers is a warning (1).
    assert data["exit_code"] != 0 and a_code != 0
    if data["exit_code"] == 2:
        assert named_b[0]["code"] == "FLEET_STRAGGLER" and data["exclude"]["hosts"] == [node_b]
        assert ex.read_text() == "fleet-node-b\n"
    assert not leftovers(FAULTS)


def test_a_hung_rank_is_named_by_the_deadline(tmp_path):
    out = tmp_path / "f.json"
    cmd = TORCHRUN + ["--standalone", "--nproc-per-node", "2", FAULTS, "fleet", "--json", str(out), "--deadline", "3"]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=str(tmp_path), env=clean_env(GPUDIAG_TEST_FAULT="hang:1"), capture_output=True,
                         text=True, timeout=120)
    assert out.exists(), res.stderr[-3000:]
    data = fleet_data(out)
    assert [(m["rank"], m["local_rank"], m["host"]) for m in data["missing"]] == \
        [(1, 1, host_label(socket.gethostname()))]
    assert data["answered"] == 1 and data["exit_code"] == 2 and res.returncode != 0
    assert data["collectives_status"]["state"] == "skipped"
    assert "missing rank(s) 1" in data["verdict"]
    assert time.monotonic() - t0 < 60
    assert not leftovers(FAULTS)


def test_srun_variables_without_srun_and_a_crashed_rank(tmp_path):
    """Two tasks with srun's variables (no srun here); task 1 crashes before measuring. Without torchrun
    nobody kills the others, so rank 0 must notice the closed connection and still write the report."""
    port = free_port()
    out = tmp_path / "f.json"
    procs = []
    for rank in range(2):
        env = clean_env(SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_STEP_ID="0", SLURM_LOCALID=str(rank),
                        SLURM_NODEID="0", SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost",
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                        GPUDIAG_TEST_FAULT="die:1")
        procs.append(subprocess.Popen([sys.executable, FAULTS, "fleet", "--json", str(out), "--deadline", "20"],
                                      cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = [p.communicate(timeout=120) for p in procs]
    assert out.exists(), results[0][1][-2000:]
    data = fleet_data(out)
    assert (data["launcher"]["launcher"], data["world_size"], data["answered"]) == ("slurm", 2, 1)
    assert [(m["rank"], m["local_rank"]) for m in data["missing"]] == [(1, 1)]
    assert "connection closed" in data["missing"][0]["reason"].lower()  # gloo says "closed" or "reset by peer"
    assert procs[0].returncode == data["exit_code"] == 2 and procs[1].returncode == 17
    assert "Traceback" not in results[0][1]


def test_world_of_one_without_a_launcher(tmp_path):
    out = tmp_path / "one.json"
    res = subprocess.run([sys.executable, "-m", "gpudiag", "fleet", "--json", str(out)], cwd=str(tmp_path),
                         env=clean_env(), capture_output=True, text=True, timeout=120)
    data = fleet_data(out)
    findings = load(out)["probes"]["fleet"]["findings"]
    # Healthy, unless other programs (other tests, on a shared machine) held its cores while it measured:
    # then it says so, which is a warning.
    assert res.returncode == data["exit_code"] == (1 if "FLEET_CPU_CONTENDED" in {f["code"] for f in findings} else 0), \
        res.stderr
    assert {f["code"] for f in findings if f["severity"] != "info"} <= {"FLEET_CPU_CONTENDED"}
    assert (data["world_size"], data["launcher"]["launcher"]) == (1, "none")
    assert "FLEET_SINGLE_RANK" in {f["code"] for f in findings}
    # The HTML next to the JSON (a JSON path alone never drops the HTML); no temp file left.
    assert sorted(os.listdir(tmp_path)) == ["one.html", "one.json"]


# ----------------------------------------------------------------------------- stopped runs (issue 28)

def _three_ranks(tmp_path, fault, deadline, markers=None):
    out = tmp_path / "f.json"
    extra = {"GPUDIAG_TEST_FAULT": fault}
    if markers:
        extra["GPUDIAG_TEST_MARKERS"] = str(markers)
    cmd = TORCHRUN + ["--standalone", "--nproc-per-node", "3", FAULTS, "fleet", "--json", str(out), "--deadline",
                      str(deadline), "--no-collectives"]
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=clean_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, out


def test_a_rank_dying_while_the_others_measure_leaves_a_report(tmp_path):
    """Rank 1 exits (code 17) as it starts measuring; torchrun stops ranks 0 and 2 with SIGTERM while they
    measure. Rank 0 writes the report of what it has: rank 1 gone (its connection closed, no stop notice),
    rank 2 stopped, itself stopped before its own figures, and exits with the critical code."""
    proc, out = _three_ranks(tmp_path, "die:1", 60)
    stdout, stderr = proc.communicate(timeout=150)
    assert out.exists(), stderr[-3000:]
    rep = load(out)
    data = rep["probes"]["fleet"]["data"]
    by_rank = {m["rank"]: m for m in data["missing"]}
    print("\n", data["verdict"], json.dumps(data["missing"], indent=1))
    assert by_rank[1]["state"] == "gone" and "connection closed" in by_rank[1]["reason"]
    assert data["exit_code"] == 2 and proc.returncode != 0
    assert rep["interrupted"] is True and data["stopped"]["signal"] == "SIGTERM"
    codes = {f["code"]: f["severity"] for f in rep["probes"]["fleet"]["findings"]}
    assert codes["FLEET_STOPPED"] == codes["FLEET_RANK_MISSING"] == "critical"
    assert "gone (died) rank(s) 1" in data["verdict"] and "gpudiag fleet: critical" in stdout
    # Ranks 0 and 2 were stopped with rank 1 (or had answered, if they finished measuring first).
    for r in (0, 2):
        assert r in {e["rank"] for e in data["ranks"]} or by_rank[r]["state"] == "stopped", data["missing"]
    assert "Traceback (most recent call last)" not in stdout
    assert not leftovers(FAULTS)


def test_a_rank_dying_while_the_others_wait_at_the_barrier_is_named_gone(tmp_path):
    """Rank 1 measures, waits until ranks 0 and 2 are at the barrier (blocked in gloo), and exits (code 17)
    without sending its results. Rank 0 holds ranks 0 and 2's results and names rank 1 as the one that left."""
    markers = tmp_path / "markers"
    markers.mkdir()
    proc, out = _three_ranks(tmp_path, "die_late:1", 120, markers)
    _, stderr = proc.communicate(timeout=150)
    assert out.exists(), stderr[-3000:]
    data = fleet_data(out)
    print("\n", data["verdict"], json.dumps(data["missing"], indent=1))
    assert sorted(e["rank"] for e in data["ranks"]) == [0, 2] and [m["rank"] for m in data["missing"]] == [1]
    # Named either by the stop report (gone) or, had the report been written before torchrun's SIGTERM, by
    # the barrier that rank 1 left (its connection closed there).
    assert "connection closed" in data["missing"][0]["reason"]
    assert data["exit_code"] == 2 and proc.returncode != 0
    assert not leftovers(FAULTS)


def test_a_run_stopped_while_rank_0_waits_for_a_silent_rank_reports_at_once(tmp_path):
    """Rank 1 never reports (it hangs where it would measure); ranks 0 and 2 measure, send and wait at the
    barrier (a 300 s deadline: rank 0 blocked in gloo). The job is stopped (SIGTERM to torchrun, as scancel or
    a job time limit would): rank 0 writes the report within torchrun's grace period, naming rank 1 as
    stopped while measuring, with rank 2's results in it."""
    import signal

    markers = tmp_path / "markers"
    markers.mkdir()
    proc, out = _three_ranks(tmp_path, "hang:1", 300, markers)
    # Wait for the hook: ranks 0 and 2 have entered the barrier (never a sleep race).
    waited = 0.0
    while not all((markers / f"barrier-{r}").exists() for r in (0, 2)) and proc.poll() is None and waited < 240:
        time.sleep(0.05)
        waited += 0.05
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=150)
    assert out.exists(), stderr[-3000:]
    rep = load(out)
    data = rep["probes"]["fleet"]["data"]
    print("\n", data["verdict"], json.dumps(data["missing"], indent=1))
    assert sorted(e["rank"] for e in data["ranks"]) == [0, 2]
    assert [(m["rank"], m["state"]) for m in data["missing"]] == [(1, "stopped")]
    assert "stopped by SIGTERM while measuring" in data["missing"][0]["reason"]
    # The stop reaches every rank at once: rank 1's exit can end rank 0's barrier before rank 0's own stop is
    # handled, and the report then says so.
    assert data["stopped"]["phase"] in ("waiting at the barrier", "reading the results") and data["exit_code"] == 2
    assert data["collectives_status"]["state"] == "skipped" and "SIGTERM" in data["collectives_status"]["reason"]
    assert "Exit code 2 (critical)" in stdout
    assert not leftovers(FAULTS)
