"""`gpudiag fleet` without processes: bandwidth formulas, launcher discovery, scores, analysis, merge, views.

All in-process and fast; the real multi-process runs (torchrun, two "nodes", a hung rank) are in
tests/test_fleet_torchrun.py.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import types

import pytest

import tests
from gpudiag.fleet import analysis, assemble, collectives, launcher, scores, transport
from gpudiag.fleet.measure import host_label
from gpudiag.report.redact import short_hash

ROOT = tests.ROOT
RECORDED = os.path.join(ROOT, "tests", "recorded_views", "gpu-ubuntu.json")


# ----------------------------------------------------------------------------- nccl-tests formulas

@pytest.mark.parametrize("n, ar, ag", [(1, 0.0, 0.0), (2, 1.0, 0.5), (4, 1.5, 0.75), (8, 1.75, 0.875)])
def test_busbw_factors_follow_nccl_tests(n, ar, ag):
    assert collectives.busbw_factor("all_reduce", n) == pytest.approx(ar)  # 2(n-1)/n
    assert collectives.busbw_factor("all_gather", n) == pytest.approx(ag)  # (n-1)/n
    assert collectives.busbw_factor("reduce_scatter", n) == pytest.approx(ag)


def test_bandwidths_algbw_is_bytes_over_time_and_busbw_scales_it():
    bw = collectives.bandwidths("all_reduce", 1e9, 0.5, 8)  # 1 GB in 0.5 s on 8 ranks
    assert bw["algbw_gbps"] == pytest.approx(2.0)
    assert bw["busbw_gbps"] == pytest.approx(2.0 * 2 * 7 / 8)
    ag = collectives.bandwidths("all_gather", 4e8, 0.1, 4)
    assert (ag["algbw_gbps"], ag["busbw_gbps"]) == (pytest.approx(4.0), pytest.approx(3.0))
    assert collectives.bandwidths("all_reduce", 1e6, 0.0, 2) == {"algbw_gbps": None, "busbw_gbps": None}
    with pytest.raises(ValueError):
        collectives.busbw_factor("broadcast", 2)
    with pytest.raises(ValueError):
        collectives.busbw_factor("all_reduce", 0)


def test_operation_bytes_match_what_each_rank_moves():
    # all_gather: S is the gathered output (n parts of the per-rank input); reduce_scatter: S is the input.
    assert collectives.element_count("all_reduce", 4096, 3) == 1024
    assert collectives.element_count("all_gather", 4096, 4) == 256
    assert collectives.op_bytes("all_gather", 4096, 4) == 4096
    assert collectives.element_count("reduce_scatter", 4096, 3) == 1023  # a multiple of n elements
    assert collectives.op_bytes("reduce_scatter", 4096, 3) == 1023 * 4
    assert collectives.op_bytes("all_reduce", 4096, 3) == 4096


def test_aggregate_takes_the_slowest_rank_of_each_repeat():
    per_rank = {0: [0.010, 0.010, 0.010], 1: [0.020, 0.010, 0.030]}
    row = collectives.aggregate("all_reduce", "world", 2 * 10 ** 7, [0, 1], per_rank)
    assert row["time_us"]["median"] == pytest.approx(20000.0)  # max per repeat: 20, 10, 30 ms
    assert row["algbw_gbps"] == pytest.approx(1.0)
    assert row["busbw_gbps"] == pytest.approx(1.0)  # 2(n-1)/n = 1 for two ranks
    assert row["busbw_gbps_p10"] < row["busbw_gbps"] < row["busbw_gbps_p90"]
    short = collectives.aggregate("all_reduce", "world", 100, [0, 1], {0: [0.1]})
    assert short["busbw_gbps"] is None and "1 of 2 ranks" in short["reason"]


def test_scopes_split_intra_and_inter_node_like_nccl_tests_split():
    assert collectives.scopes({"a": [0, 1]}) == [{"scope": "intra_node", "groups": [("a", [0, 1])]}]
    assert collectives.scopes({"a": [0]}) == []
    two = collectives.scopes({"a": [0, 1], "b": [2, 3]})
    assert [s["scope"] for s in two] == ["world", "intra_node", "inter_node"]
    assert two[1]["groups"] == [("a", [0, 1]), ("b", [2, 3])]
    assert two[2]["groups"] == [(None, [0, 2])]
    assert collectives.scopes({"a": [0], "b": [1]}) == [{"scope": "inter_node", "groups": [(None, [0, 1])]}]


# ----------------------------------------------------------------------------- launcher variables

def test_torchrun_variables():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x",
           "SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"}  # torchrun inside srun: torchrun wins
    p = launcher.discover(env)
    assert (p.launcher, p.rank, p.world_size, p.local_rank, p.local_world_size, p.node_rank) == \
        ("torchrun", 5, 8, 1, 4, 1)
    assert p.init_method == "env://"
    assert "MASTER_ADDR" in p.variables and "127.0.0.1" not in json.dumps(p.to_dict())


def test_slurm_step_derives_the_rendezvous_from_the_node_list_and_job_id():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1",
           "SLURM_NODEID": "1", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "123456",
           "SLURM_STEP_NODELIST": "gpu[07-08,11]"}
    p = launcher.discover(env)
    assert (p.launcher, p.rank, p.world_size, p.local_rank, p.node_rank) == ("slurm", 3, 4, 1, 1)
    assert p.master_addr == "gpu07"
    assert p.master_port == launcher.SLURM_PORT_BASE + 123456 % launcher.SLURM_PORT_SPAN
    assert p.init_method == f"tcp://gpu07:{p.master_port}"
    assert launcher.discover(dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT="4000")).init_method == \
        "tcp://127.0.0.1:4000"


def test_slurm_batch_script_without_a_step_is_a_world_of_one():
    p = launcher.discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "1"})
    assert (p.launcher, p.world_size) == ("none", 1)
    assert "srun" in p.note


@pytest.mark.parametrize("env, words", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 is not below the world size 2"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not a whole number"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR/MASTER_PORT are not"),
    ({"RANK": "0", "WORLD_SIZE": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "WORLD_SIZE=0 is below 1"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "1"}, "cannot find each other"),
])
def test_bad_launcher_variables_are_one_line_errors(env, words):
    with pytest.raises(launcher.LaunchError, match=words.replace("(", r"\(").replace(")", r"\)")):
        launcher.discover(env)


def test_expand_hostlist():
    assert launcher.expand_hostlist("a[1-3],b") == ["a1", "a2", "a3", "b"]
    assert launcher.expand_hostlist("node[008-010,2]x") == ["node008x", "node009x", "node010x", "node2x"]
    assert launcher.expand_hostlist("") == []
    assert launcher.tcp_init("::1", 5) == "tcp://[::1]:5"
    with pytest.raises(launcher.LaunchError):
        launcher.expand_hostlist("n[a-b]")


# ----------------------------------------------------------------------------- transport helpers

def test_monitored_barrier_message_names_the_missing_ranks():
    assert transport.parse_missing("[Rank 0]: Ranks 1, 3 failed to pass monitoredBarrier in 3000 ms", 4) == {1, 3}
    assert transport.parse_missing("Rank 2 failed to pass monitoredBarrier in 10 ms", 4) == {2}
    assert transport.parse_missing("Connection closed by peer", 4) is None
    err = RuntimeError("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.1.2.3]:4014. Next\nmore")
    assert transport.first_line(err) == "Connection closed by peer <peer>. Next"
    assert transport.first_line(RuntimeError("peer [fe80::1%eth0]:5 and [::1]:29500")).count("<peer>") == 2
    assert transport.decode(transport.encode({"a": [1, "é"]})) == {"a": [1, "é"]}
    with pytest.raises(ValueError):
        transport.encode({"x": float("nan")})


# ----------------------------------------------------------------------------- robust scores

def test_two_ranks_are_told_apart_only_by_more_than_their_noise():
    quiet = scores.robust_scores({0: 100.0, 1: 50.0}, True, {0: 0.02, 1: 0.02})
    assert quiet[1]["flagged"] and not quiet[0]["flagged"]
    assert quiet[1]["relative"] == pytest.approx(0.5)
    assert quiet[1]["score"] == pytest.approx(math.log(2) / math.hypot(0.02, 0.02), rel=1e-3)
    noisy = scores.robust_scores({0: 100.0, 1: 50.0}, True, {0: 0.5, 1: 0.5})
    assert not noisy[1]["flagged"]  # half as fast, but the repeats scatter as much: not believed
    assert scores.robust_scores({0: 1.0}, True) == {}


def test_a_lemon_gpu_five_percent_slow_is_flagged_and_three_percent_is_not():
    base = {r: 100.0 + (r % 3) * 0.2 for r in range(8)}
    lemon = scores.robust_scores({**base, 5: 93.0}, True, {r: 0.005 for r in range(8)})
    assert [r for r, row in lemon.items() if row["flagged"]] == [5]
    close = scores.robust_scores({**base, 5: 97.0}, True, {r: 0.005 for r in range(8)})
    assert not any(row["flagged"] for row in close.values())  # below MIN_EFFECT, however clear


def test_lower_is_better_metrics_flag_the_slow_rank():
    rows = scores.robust_scores({0: 5.0, 1: 5.1, 2: 4.9, 3: 15.0}, False)
    assert rows[3]["flagged"] and rows[3]["relative"] == pytest.approx(5.0 / 15.0, rel=0.02)
    assert not any(rows[r]["flagged"] for r in (0, 1, 2))
    # sigma from p10..p90, then the standard error of a median of n repeats
    sigma = 2 / scores.P10_P90_SIGMAS
    assert scores.median_uncertainty({"p10": 1.0, "p90": math.e ** 2, "n": 4}) == \
        pytest.approx(scores.MEDIAN_EFFICIENCY * sigma / 2)
    assert scores.median_uncertainty({"p10": None, "p90": 2}) is None


# ----------------------------------------------------------------------------- analysis on canned fleets

def gpu_rank(rank, host, local, matmul=700_000.0, launch=6.0, h2d=50.0, noise=0.005, **extra):
    def fig(v):
        return {"value": v, "p10": v * (1 - noise), "p90": v * (1 + noise), "n": 5, "what": "canned"}
    e = {"rank": rank, "host": host, "local_rank": local,
         "device": {"kind": "cuda", "index": local, "name": "NVIDIA H100 80GB HBM3",
                    "gpu_uuid_hash": short_hash(f"gpu-uuid:{rank}")},
         "versions": {"gpudiag": "0.1.0", "python": "3.11.7", "torch": "2.5.1+cu124", "torch_cuda": "12.4",
                      "nccl": "2.21.5"},
         "driver": {"driver_version": "550.54.15", "cuda_driver_version": "12.4", "persistence_mode": True,
                    "pcie": {"gen_max_system": 5, "width_max": 16}, "throttling": [], "other_processes": 0},
         "preflight": {"ready": True, "checks": [{"name": "nvml", "status": "pass", "message": "ok", "applies": True}]},
         "figures": {"matmul_gflops": fig(matmul), "launch_us": fig(launch),
                     "h2d_gbps": dict(fig(h2d), link_under_load={"gen": 5, "width": 16})}}
    for k, v in extra.items():
        e[k] = v
    return e


def fleet(changes=None, n_nodes=2, per_node=4):
    ranks = []
    for node in range(n_nodes):
        for local in range(per_node):
            r = node * per_node + local
            ranks.append(gpu_rank(r, f"host-node{node}", local, **(changes or {}).get(r, {})))
    return ranks


def test_lemon_gpu_is_a_straggler_named_by_host_rank_gpu_and_uuid_hash():
    ranks = fleet({6: {"matmul": 650_000.0}})  # 7 % slower than its peers
    res = analysis.analyze(ranks)
    out = [o for o in res["outliers"] if o["metric"] == "matmul_gflops"]
    assert len(out) == 1
    o = out[0]
    assert (o["rank"], o["host"], o["gpu_index"], o["kind"], o["level"]) == (6, "host-node1", 2, "straggler", "rank")
    assert o["gpu_uuid_hash"] == short_hash("gpu-uuid:6") and o["score"] >= scores.Z_FLAG
    assert o["relative"] == pytest.approx(650 / 700, rel=0.01)
    assert res["exclude"]["hosts"] == ["host-node1"] and res["exclude"]["slurm"] == "--exclude=host-node1"
    assert res["exit_code"] == analysis.EXIT_CRITICAL
    strag = [f for f in res["findings"] if f["code"] == "FLEET_STRAGGLER"]
    assert len(strag) == 1 and "rank 6 (host-node1, GPU 2, uuid" in strag[0]["message"]
    assert ranks[6]["scores"]["matmul_gflops"]["flagged"] and not ranks[0]["scores"]["matmul_gflops"]["flagged"]


def test_a_slow_node_is_named_at_node_level():
    slow = {r: {"h2d": 25.0} for r in range(4, 8)}  # all four GPUs of node 1: a node problem (its PCIe switch)
    res = analysis.analyze(fleet(slow, n_nodes=3))
    node = [o for o in res["outliers"] if o["level"] == "node"]
    assert [(o["host"], o["metric"], o["kind"]) for o in node] == [("host-node1", "h2d_gbps", "straggler")]
    assert "host-node1" in res["exclude"]["hosts"]
    assert any(f["code"] == "FLEET_SLOW_NODE" for f in res["findings"])


def test_many_slow_ranks_are_system_wide_not_excluded():
    slow = {r: {"matmul": 500_000.0} for r in (1, 2, 5, 6)}  # half the fleet, spread over both nodes
    res = analysis.analyze(fleet(slow))
    kinds = {o["kind"] for o in res["outliers"] if o["metric"] == "matmul_gflops"}
    assert kinds == {"system_wide"}
    assert res["exclude"]["hosts"] == []
    assert [f["code"] for f in res["findings"] if f["severity"] != "info"] == ["FLEET_SYSTEM_WIDE_SLOW"]
    assert res["exit_code"] == analysis.EXIT_WARNING


def test_every_gpu_below_the_pcie_reference_is_system_wide():
    res = analysis.analyze(fleet({r: {"h2d": 12.0} for r in range(8)}))  # Gen5 x16 is ~63 GB/s
    fleet_rows = [o for o in res["outliers"] if o["level"] == "fleet"]
    assert [o["metric"] for o in fleet_rows] == ["h2d_gbps"] and fleet_rows[0]["kind"] == "system_wide"
    assert res["exclude"]["hosts"] == []


def test_version_skew_and_link_mismatch_name_the_minority():
    ranks = fleet()
    ranks[3]["driver"]["driver_version"] = "535.104.05"
    ranks[5]["figures"]["h2d_gbps"]["link_under_load"] = {"gen": 5, "width": 8}
    res = analysis.analyze(ranks)
    skew = next(f for f in res["findings"] if f["code"] == "FLEET_VERSION_SKEW")
    assert "rank 3 (host-node0" in skew["message"] and "rank 4" not in skew["message"]
    assert skew["evidence"]["driver"] == {"550.54.15": [0, 1, 2, 4, 5, 6, 7], "535.104.05": [3]}
    link = next(f for f in res["findings"] if f["code"] == "FLEET_LINK_MISMATCH")
    assert "rank 5" in link["message"] and "x16" in link["message"]
    assert res["exit_code"] == analysis.EXIT_WARNING


def test_missing_rank_and_preflight_failures():
    ranks = fleet(n_nodes=2, per_node=2)
    ranks[1]["preflight"]["checks"].append({"name": "gpu_processes", "status": "fail", "message": "python holds it",
                                            "applies": True})
    for e in ranks:  # a check failing everywhere is the job's setup, not a node
        e["preflight"]["checks"].append({"name": "torch_cuda", "status": "fail", "message": "CPU build",
                                         "applies": True})
    missing = [{"rank": 4, "host": "host-node2", "local_rank": 0, "reason": "did not reach the barrier"}]
    res = analysis.analyze(ranks, missing)
    codes = {f["code"]: f["severity"] for f in res["findings"]}
    assert codes["FLEET_RANK_MISSING"] == "critical" and codes["FLEET_PREFLIGHT_FAIL"] == "critical"
    assert codes["FLEET_PREFLIGHT_FAIL_ALL"] == "warning"
    assert res["exclude"]["hosts"] == ["host-node0", "host-node2"]
    assert "1 of" not in res["verdict"] and "4 of 5 ranks answered" in res["verdict"]


def test_cpu_ranks_are_compared_with_cpu_ranks_and_gpu_checks_do_not_count():
    cpu = gpu_rank(8, "host-cpu", 0)
    cpu["device"] = {"kind": "cpu", "index": None, "torch_threads": 1}
    cpu["figures"]["matmul_gflops"]["value"] = 50.0
    cpu["preflight"]["checks"] = [{"name": "nvml", "status": "fail", "message": "no driver", "applies": False}]
    res = analysis.analyze(fleet() + [cpu])
    assert not any(o["rank"] == 8 for o in res["outliers"])  # 50 GFLOP/s is not compared with an H100
    assert "FLEET_DEVICE_MIX" in {f["code"] for f in res["findings"]}
    assert "FLEET_PREFLIGHT_FAIL" not in {f["code"] for f in res["findings"]}


def test_exit_codes():
    assert analysis.exit_code([], 0) == 3
    assert analysis.exit_code([{"severity": "info"}], 2) == 0
    assert analysis.exit_code([{"severity": "warning"}, {"severity": "info"}], 2) == 1
    assert analysis.exit_code([{"severity": "critical"}], 2) == 2


# ----------------------------------------------------------------------------- the report and its views

def build_report(ranks, missing=(), rows=(), status=None, identify=True, others=()):
    return assemble.build(ranks, list(missing), list(rows), status or {"state": "skipped", "backend": None},
                          {"launcher": {"launcher": "test"}, "backend": "nccl"}, mode="quick",
                          created_at="2026-01-01T00:00:00Z", duration_s=1.0, identify=identify,
                          other_hostnames=others)


def test_fleet_report_is_a_valid_gpudiag_report_and_renders(tmp_path):
    import jsonschema

    from gpudiag.report.contract import dumps, load_report
    from gpudiag.views import render

    ranks = fleet({6: {"matmul": 600_000.0}})
    ranks[2]["preflight"]["checks"][0]["message"] = "seen on gpu-node-17.example.org"  # a raw name in a message
    rows = [collectives.aggregate(op, "world", 2 ** 28, list(range(8)), {r: [0.01, 0.011, 0.012] for r in range(8)})
            for op in collectives.OPS]
    rep = build_report(ranks, rows=rows, status={"state": "ok", "backend": "nccl"}, others=["gpu-node-17.example.org"])
    schema = json.load(open(os.path.join(ROOT, "gpudiag", "report", "schema", "report.schema.json")))
    jsonschema.validate(rep, schema)
    text = dumps(rep)
    assert "gpu-node-17" not in text and host_label("gpu-node-17.example.org") in text
    path = tmp_path / "f.json"
    path.write_text(text)
    rep = load_report(str(path))
    data = rep["probes"]["fleet"]["data"]
    assert {"ranks", "collectives", "outliers"} <= set(data)
    assert all({"rank", "host", "local_rank"} <= set(e) for e in data["ranks"])
    assert all({"op", "size_bytes", "algbw_gbps", "busbw_gbps"} <= set(c) for c in data["collectives"])
    assert assemble.exit_code_of(rep) == 2
    html = render.render_html(rep)
    assert html.count("<svg") >= 2  # relative speed and the collective curves
    assert '<span class="badge sev-critical">600,000 (0.86x, z' in html  # the flagged cell, marked
    assert '<span class="badge sev-critical">straggler</span>' in html
    md = render.render_markdown(rep)
    assert "| 6 | host-node1 | 2 |" in md and "outlier**" in md
    assert "all_reduce" in md and "FLEET_STRAGGLER" in md


def test_terminal_summary_names_the_straggler_and_the_exclude_list():
    from gpudiag.views import fleet_view

    rep = build_report(fleet({6: {"matmul": 600_000.0}}))
    text = fleet_view.render_terminal(rep, {"JSON": "f.json"})
    assert text.splitlines()[0].startswith("gpudiag fleet: critical: 8 of 8 ranks answered, 2 node(s); straggler")
    assert "OUTLIER" in text and "Exclude: --exclude=host-node1" in text and "Exit code 2 (critical)" in text


def test_view_survives_a_report_of_another_shape():
    from gpudiag.views import fleet_view

    v = fleet_view.view({"ranks": [{"rank": 0, "figures": {"matmul_gflops": "fast"}}], "collectives": [None],
                         "outliers": [{"kind": "straggler"}], "nodes": [{}]})
    assert v["tables"][0]["rows"][0][4] == "n/a"


# ----------------------------------------------------------------------------- merge

def _plain_reports(tmp_path, slow_stem=None, h2d_factor=0.5):
    """Five copies of a recorded `gpudiag report`, one a node whose pinned H2D runs at h2d_factor."""
    base = json.load(open(RECORDED))
    paths = []
    for i in range(5):
        rep = copy.deepcopy(base)
        stem = f"node{i:02d}"
        for p in rep["probes"]["pcie"]["data"]["points"]:
            jitter = 1 + 0.002 * i
            factor = h2d_factor if stem == slow_stem else 1.0
            p["gbps"] = {k: (v * jitter * factor if isinstance(v, float) and k != "n" else v)
                         for k, v in p["gbps"].items()}
        path = tmp_path / f"{stem}.json"
        path.write_text(json.dumps(rep))
        paths.append(str(path))
    return paths


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "gpudiag", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_merge_of_recorded_reports_names_the_planted_outlier(tmp_path):
    paths = _plain_reports(tmp_path, slow_stem="node03")
    out = tmp_path / "merged.json"
    ex = tmp_path / "exclude.txt"
    res = _cli("fleet", "merge", *paths, "--json", str(out), "--exclude-file", str(ex), cwd=str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    data = json.loads(out.read_text())["probes"]["fleet"]["data"]
    strag = [o for o in data["outliers"] if o["kind"] == "straggler"]
    assert [(o["rank"], o["host"], o["metric"]) for o in strag] == [(3, host_label("node03"), "h2d_gbps")]
    assert strag[0]["relative"] == pytest.approx(0.5, rel=0.02)
    assert ex.read_text() == "node03\n"  # the real name, for sbatch --exclude
    assert "node03" not in out.read_text()  # the report keeps only the hash
    assert "straggler rank(s) 3" in res.stdout


def test_merge_without_an_outlier_is_healthy_and_no_redact_keeps_names(tmp_path):
    paths = _plain_reports(tmp_path)
    res = _cli("fleet", "merge", *paths, "--markdown", "-", "--no-redact", cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "| 0 | node00 |" in res.stdout and "healthy: 5 of 5 ranks answered" in res.stderr


def test_merge_of_fleet_reports_renumbers_ranks(tmp_path):
    a = build_report(fleet(n_nodes=1, per_node=2))
    b = build_report([gpu_rank(0, "host-x", 0, matmul=300_000.0), gpu_rank(1, "host-x", 1, matmul=300_000.0)])
    for name, rep in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(rep))
    from gpudiag.fleet.merge import merge

    rep, names = merge([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    data = rep["probes"]["fleet"]["data"]
    assert [(e["rank"], e["source"], e["source_rank"]) for e in data["ranks"]] == [(0, 0, 0), (1, 0, 1), (2, 1, 0),
                                                                                   (3, 1, 1)]
    assert names == {}
    assert data["sources"] == [{"index": 0, "kind": "fleet", "created_at": "2026-01-01T00:00:00Z"},
                               {"index": 1, "kind": "fleet", "created_at": "2026-01-01T00:00:00Z"}]


@pytest.mark.parametrize("args, words", [
    (("fleet", "merge", "nothere.json"), "nothere.json: no such file"),
    (("fleet", "--deadline", "0"), "Invalid value for '--deadline'"),
    (("fleet", "--backend", "mpi"), "Invalid value for '--backend'"),
    (("fleet", "mrege"), "No such command"),
    (("fleet", "-o", "x.txt"), "use a name ending in .html"),
])
def test_fleet_usage_errors_exit_3_without_traceback(tmp_path, args, words):
    res = _cli(*args, cwd=str(tmp_path))
    assert res.returncode == 3, (res.returncode, res.stderr)
    assert words.lower() in res.stderr.lower() and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("gpudiag: error: ")
    assert os.listdir(tmp_path) == []


def test_bad_launcher_variables_exit_3(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, RANK="3", WORLD_SIZE="2")
    env.pop("TORCHELASTIC_RUN_ID", None)
    res = subprocess.run([sys.executable, "-m", "gpudiag", "fleet"], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and "gpudiag: error: RANK/WORLD_SIZE: rank 3 is not below" in res.stderr


# ----------------------------------------------------------------------------- the GPU path, on fakes

def _fleet_nvml(monkeypatch, lib):
    """Every NVML session fleet opens talks to `lib` (a FakeNvml)."""
    from gpudiag.backends import nvml

    real = nvml.session
    monkeypatch.setattr(nvml, "session", lambda _lib=None: real(lib))


def test_gpu_figures_on_a_fake_torch_have_the_report_shape(monkeypatch):
    from gpudiag.fleet import measure
    from gpudiag.fleet.windows import Windows
    from tests import fake_torch as ft
    from tests.fakes import FakeNvml

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # Two H100s; rank 3 of 4 on this node binds CUDA device 1, at PCI bus 0x19 like the capture's GPU.
    torch = ft.FakeTorch(devices=2, pci=[(0, 0x18, 0), (0, 0x19, 0)], name="Fake H100", capability=(9, 0))
    nvml = FakeNvml.h100()
    _fleet_nvml(monkeypatch, nvml)
    place = launcher.Place("torchrun", 3, 4, 3, 4, 1, None, None, None)
    dev = measure.pick_device(torch, place)
    assert (dev["kind"], dev["index"]) == ("cuda", 1)
    assert dev["gpu_uuid_hash"] == short_hash("gpu-uuid:01234567-89ab-cdef-0123-456789abcdef")
    assert dev["shared_with_other_ranks"] is True  # local rank 3 on a node with 2 GPUs
    windows = Windows(0.002, cores=1)  # short windows: the fake GPU's launches cost no host time
    figs = measure.measure_figures(torch, dev, quick=True, windows=windows)
    n = measure._plan("cuda", True)["matmul_n"]
    matmul_ms = 2 * n ** 3 / (ft.MATMUL_TFLOPS * 1e12) * 1e3
    inner = measure._plan("cuda", True)["matmul_inner"]
    # Events frame `inner` back-to-back matmuls after the 1 launch that started on an idle stream.
    want = 2 * n ** 3 * inner / ((matmul_ms * inner + ft.HOST_LAUNCH_MS) / 1e3) / 1e9
    assert figs["matmul_gflops"]["value"] == pytest.approx(want, rel=1e-6)
    assert "GPU bfloat16 8192x8192" in figs["matmul_gflops"]["what"]
    # The host-timed launch figure is the one made of sustained windows, and the only one in the CPU account.
    assert figs["launch_us"]["value"] > 0 and figs["launch_us"]["window_s"] == 0.002
    assert "window_s" not in figs["matmul_gflops"] and windows.totals()["windows"] == figs["launch_us"]["n"]
    # Issue 25 item 1: with NVML reachable the link is read while the copies run (it used to raise
    # AttributeError here and fail the rank's whole measurement).
    link = figs["h2d_gbps"]["link_under_load"]
    assert figs["h2d_gbps"]["n"] == 5
    assert (link["gen"], link["width"], link["reason"]) == (5, 16, None) and link["samples"] > 0
    assert "nvmlDeviceGetHandleByPciBusId" in nvml.calls


def test_gpu_matmul_warms_up_for_half_a_second_of_device_time():
    from gpudiag.fleet import measure
    from tests import fake_torch as ft

    torch = ft.FakeTorch(capability=(9, 0))
    measure._gpu_matmul(torch, measure._plan("cuda", True))
    p = measure._plan("cuda", True)
    timed_ms = p["repeats"] * p["matmul_inner"] * 2 * p["matmul_n"] ** 3 / (ft.MATMUL_TFLOPS * 1e12) * 1e3
    assert torch.clock.host - timed_ms >= measure.WARMUP_MS  # the fake's device clock: warm-up ran that long


@pytest.mark.parametrize("capability, signature, dtype", [
    ((8, 0), "new", "bfloat16"),  # A100: native bf16
    ((7, 0), "new", "float16"),  # V100: bf16 only emulated (counted by is_bf16_supported() by default)
    ((7, 5), "old", "float16"),  # T4 under a torch without including_emulation: judged by capability
    ((9, 0), "old", "bfloat16"),
])
def test_bf16_only_where_the_gpu_runs_it_natively(capability, signature, dtype):
    from gpudiag.fleet import measure
    from tests import fake_torch as ft

    torch = ft.FakeTorch(capability=capability)
    if signature == "old":
        torch.cuda.is_bf16_supported = lambda: True  # torch 2.2 counted emulation, with no way to ask
    fig = measure._gpu_matmul(torch, dict(measure._plan("cuda", True), repeats=1, matmul_inner=1))
    assert fig["what"].startswith(f"GPU {dtype} ")


def test_gpu_driver_facts_through_the_nvml_fake():
    from gpudiag.backends import nvml
    from gpudiag.fleet import measure
    from tests.fakes import FakeNvml

    out = measure.preflight_and_driver({"kind": "cuda", "index": 0}, nvml_session=lambda: nvml.session(FakeNvml.h100()))
    drv = out["driver"]
    assert (drv["name"], drv["driver_version"], drv["persistence_mode"]) == ("NVIDIA H100 80GB HBM3", "545.23.08", True)
    assert drv["pcie"]["width_max"] == 16 and drv["other_processes"] == 0
    assert drv["clocks"] == {"sm_mhz": 345, "sm_max_mhz": 1980, "mem_mhz": 2619}  # from the capture
    assert all(c["applies"] for c in out["preflight"]["checks"])
    cpu = measure.preflight_and_driver({"kind": "cpu", "index": None}, nvml_session=lambda: nvml.session(FakeNvml.h100()))
    assert not next(c for c in cpu["preflight"]["checks"] if c["name"] == "nvml")["applies"]


def _mixed_nvml():
    """NVML's view of a host with a T4 at PCI bus 0x19 (NVML index 0) and an H100 at 0x3b (index 1): CUDA,
    fastest first, calls the H100 device 0."""
    import dataclasses

    from tests.fakes import FakeNvml

    t4 = dataclasses.replace(FakeNvml.h100().gpus[0], name="Tesla T4", pci_bus_id="00000000:19:00.0",
                             memory_total_bytes=15 * 2 ** 30)
    h100 = dataclasses.replace(FakeNvml.h100().gpus[0], pci_bus_id="00000000:3B:00.0")
    base = FakeNvml.h100()
    return FakeNvml([t4, h100], base.driver_version, base.cuda_version, base.nvml_version)


def test_a_ranks_driver_facts_are_its_gpus_when_cuda_and_nvml_order_differ(monkeypatch):
    # Issue 25 item 6: CUDA device 0 is the H100 (NVML index 1); mapping by index read the T4's facts.
    from gpudiag.backends import nvml
    from gpudiag.fleet import measure

    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    session = lambda: nvml.session(_mixed_nvml())  # noqa: E731
    out = measure.preflight_and_driver({"kind": "cuda", "index": 0}, nvml_session=session, bus_id="0000:3b:00.0")
    assert (out["driver"]["nvml_index"], out["driver"]["name"]) == (1, "NVIDIA H100 80GB HBM3")
    # Without the bus id gpudiag cannot tell which GPU CUDA device 0 is, and says so instead of guessing.
    guess = measure.preflight_and_driver({"kind": "cuda", "index": 0}, nvml_session=session)
    assert guess["driver"]["reason"].startswith("with 2 different GPUs CUDA numbers them fastest-first")
    visible = next(c for c in guess["preflight"]["checks"] if c["name"] == "gpu_visible")
    assert visible["status"] == "warn" and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in visible["message"]
    # With CUDA_DEVICE_ORDER=PCI_BUS_ID the numbers agree: device 0 is the T4.
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert measure.preflight_and_driver({"kind": "cuda", "index": 0}, nvml_session=session)["driver"]["name"] == "Tesla T4"


def test_measure_rank_matches_its_gpu_by_pci_bus_id(monkeypatch):
    from gpudiag.fleet import measure
    from tests import fake_torch as ft

    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fleet_nvml(monkeypatch, _mixed_nvml())
    torch = ft.FakeTorch(devices=2, pci=[(0, 0x3B, 0), (0, 0x19, 0)], name=["Fake H100", "Fake T4"])
    place = launcher.Place("torchrun", 0, 1, 0, 1, 0, None, None, None)
    entry = measure.measure_rank(torch, place)
    assert entry["driver"]["nvml_index"] == 1 and entry["driver"]["name"] == "NVIDIA H100 80GB HBM3"


def test_sweep_keeps_what_was_measured_when_a_collective_fails():
    calls = []

    class Dist:
        def all_reduce(self, x, group=None):
            calls.append(("all_reduce", x.n, group))

        def all_gather_single(self, out, x, group=None):
            calls.append(("all_gather", x.n, group))
            if len(calls) > 12:  # one world all_reduce step (1 warm-up + 3 x 2) and part of all_gather
                raise RuntimeError("[/g/pair.cc:553] Connection closed by peer [10.0.0.7]:4014")

        reduce_scatter_single = all_gather_single

    class Tensor:
        def __init__(self, n):
            self.n = n

    fake_torch = types.SimpleNamespace(float32="f32", ones=lambda n, dtype=None, device=None: Tensor(n),
                                       empty=lambda n, dtype=None, device=None: Tensor(n))

    class Groups:
        world_size, barriers, made = 4, 0, []

        def new_group(self, ranks):
            self.made.append(ranks)
            return f"group{ranks}"

        def barrier_all(self):
            self.barriers += 1

    g = Groups()
    layout = collectives.scopes({"a": [0, 1], "b": [2, 3]})
    p = {"sizes": [1024], "warmup": 1, "iters": 2, "repeats": 3}
    res = collectives.run_sweep(fake_torch, Dist(), g, layout, rank=2, device="cpu", p=p)
    assert g.made == [[0, 1], [2, 3], [0, 2]]  # every rank makes every subgroup, in the same order
    assert [t["op"] for t in res["timings"]] == ["all_reduce"]  # the world's all_reduce, then all_gather broke
    assert res["error"] == "Connection closed by peer <peer>"
    assert calls[0][2] is None  # the world runs on the default group
    rows = collectives.combine({2: res, 0: {"timings": [dict(res["timings"][0])]}})
    assert rows[0]["reason"] == "2 of 4 ranks sent no timing" and rows[0]["busbw_gbps"] is None
