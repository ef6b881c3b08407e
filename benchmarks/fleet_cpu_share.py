"""The two-"node" fleet of issue 21 on one machine: what each rank measures, and how much CPU it really got.

    sudo PYTHONPATH=. python benchmarks/fleet_cpu_share.py [--runs 2] [--checkout DIR] [--quota 0.2]

Node A: a torchrun agent with two ranks, both pinned to core 0 (`taskset -c 0`): half a core each, by
the launch's own choice. Node B: a torchrun agent with one rank alone on core 1, inside a cgroup with
a CPU quota of `--quota` CPUs (tests/cgroup_quota.py) in the "quota" scenario, without it in the
"no quota" scenario. Each agent runs in its own UTS namespace (`unshare -u`) so the host names differ.
The scenarios alternate, `--runs` times each. Needs root, unshare, taskset and torch.

Each rank is started through this file (`--rank`), which wraps gpudiag's own measure_figures to
record the rank's CPU time (time.process_time) against wall time (time.perf_counter) over the
figures: an account that does not depend on the gpudiag under test, so `--checkout` can point at an
older tree (e.g. `git archive main | tar -x -C /tmp/base`) to compare before and after.

Prints per run: the load average before and after, each rank's node, figures (median of repeats, as
the report says), its CPU time / wall time over the figures, the report's own CPU block where it has
one, the verdict, the exclude list and the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS = ("fleet-node-a", "fleet-node-b")


def _rank_main(argv) -> None:
    """Inside torchrun: gpudiag fleet with the figures wrapped in a CPU-time/wall-time account."""
    from gpudiag.fleet import measure

    figures, rank = measure.measure_figures, measure.measure_rank
    account = {}

    def timed_figures(*args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        out = figures(*args, **kwargs)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        account.update(wall_s=round(wall, 3), cpu_s=round(cpu, 3), cpu_per_wall=round(cpu / wall, 3))
        return out

    def ranked(*args, **kwargs):
        entry = rank(*args, **kwargs)
        entry["bench_cpu"] = dict(account)
        return entry

    measure.measure_figures, measure.measure_rank = timed_figures, ranked
    from gpudiag.cli import main

    main(argv, prog_name="gpudiag")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent(host: str, core: int, node_rank: int, nproc: int, port: int, args) -> list:
    inner = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
             "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1", "--master-port", str(port),
             os.path.abspath(__file__), "--rank"] + list(args)
    return ["unshare", "-u", "sh", "-c", f"hostname {host} && exec taskset -c {core} \"$@\"", "sh"] + inner


def _loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def one_run(checkout: str, quota: float, with_quota: bool, mode: str) -> dict:
    """One fleet of 3 ranks (2 on node A's core 0, 1 on node B's core 1); the report's data."""
    sys.path.insert(0, ROOT)
    from tests.cgroup_quota import cpu_quota_cgroup

    cores = sorted(os.sched_getaffinity(0))[:2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                         "MASTER_PORT")}
    env.update(PYTHONPATH=checkout, GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    tmp = tempfile.mkdtemp(prefix="fleet-cpu-share-")
    out = os.path.join(tmp, "fleet.json")
    port = _free_port()
    args = ["fleet", f"--{mode}", "--deadline", "90", "--no-collectives"]
    load0 = _loadavg()
    try:
        a_cmd = _agent(HOSTS[0], cores[0], 0, 2, port, args + ["--json", out])
        b_cmd = _agent(HOSTS[1], cores[1], 1, 1, port, args)
        a = subprocess.Popen(a_cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if with_quota:
            try:
                with cpu_quota_cgroup(quota) as cg:
                    b = subprocess.Popen(cg.wrap(b_cmd), cwd=tmp, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
                    b.communicate(timeout=400)
            except BaseException as exc:  # pytest.skip's exception is a BaseException: say why and stop
                a.kill()
                a.communicate()
                raise SystemExit(f"cannot make the cgroup: {exc}") from None
        else:
            b = subprocess.Popen(b_cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            b.communicate(timeout=400)
        _, a_err = a.communicate(timeout=400)
        if not os.path.exists(out):
            raise SystemExit("no report: " + a_err[-2000:])
        with open(out) as fh:
            rep = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data = rep["probes"]["fleet"]["data"]
    data["_load"] = (load0, _loadavg())
    data["_findings"] = rep["probes"]["fleet"]["findings"]
    return data


def show(data: dict, label: str) -> None:
    from gpudiag.fleet.measure import host_label

    names = {host_label(h): h[-6:] for h in HOSTS}
    print(f"\n== {label}: load average before {data['_load'][0]}, after {data['_load'][1]}")
    for e in data["ranks"]:
        figs = e.get("figures") or {}
        cells = []
        for m in ("matmul_gflops", "launch_us", "h2d_gbps"):
            f = figs.get(m) or {}
            cells.append(f"{m} {f.get('value')} (p10 {f.get('p10')}, p90 {f.get('p90')}, n {f.get('n')})")
        b = e.get("bench_cpu") or {}
        print(f"  rank {e['rank']} {names.get(e.get('host'), e.get('host'))}: " + "; ".join(cells))
        print(f"      CPU/wall over the figures {b.get('cpu_per_wall')} ({b.get('cpu_s')} s CPU in {b.get('wall_s')} s)")
        if e.get("cpu"):
            c = e["cpu"]
            print("      report's cpu account: " + json.dumps(dict(
                {k: c.get(k) for k in ("cores_got", "share", "job_cores", "other_cores")},
                quota_cpus=(c.get("limit") or {}).get("quota_cpus"),
                throttled_share=(c.get("throttling") or {}).get("throttled_share"),
                verdict=e.get("cpu_verdict"))))
    print(f"  verdict: {data['verdict']}")
    print(f"  exclude: {[names.get(h, h) for h in data['exclude']['hosts']]}; exit code {data['exit_code']}")
    for f in data["_findings"]:
        if f.get("severity") in ("critical", "warning"):
            print(f"  [{f['severity']}] {f['code']}: {f['message']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rank":
        _rank_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1, help="runs of each scenario, alternating")
    ap.add_argument("--checkout", default=ROOT, help="the gpudiag tree the ranks import (default: this one)")
    ap.add_argument("--quota", type=float, default=0.2, help="node B's CPU quota in CPUs")
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("taskset"):
        raise SystemExit("needs root, unshare and taskset")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores")
    for i in range(a.runs):
        order = (True, False) if i % 2 == 0 else (False, True)
        for with_quota in order:
            label = f"run {i + 1}, node B " + (f"limited to {a.quota:g} CPU" if with_quota else "without a quota")
            show(one_run(os.path.abspath(a.checkout), a.quota, with_quota, a.mode), label)


if __name__ == "__main__":
    main()
