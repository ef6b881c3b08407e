"""`gpudiag fleet merge` at cluster scale: 8, 512, 4,096 and 10,000 ranks of synthetic GPU ranks.

    python benchmarks/fleet_scale.py [--sizes 8,512,4096,10000] [--checkout DIR] [--keep DIR]

Every rank entry is in the real format: one is measured through gpudiag's own code on this machine
(gpudiag.fleet.measure.measure_rank on the test suite's fake torch, 8 H100s, and its recorded NVML of an
H100 node: preflight checks, driver facts, figures, the CPU account, redacted as a rank redacts it),
then copied to every rank with figures jittered by 1 % (seeded), 8 GPUs a node, and planted faults:

- two straggler GPUs (matmul at 0.80x), on two different nodes;
- a slow node: all 8 GPUs of one node at 0.60x host->device bandwidth;
- a missing rank (it never answered);
- a node whose driver differs from the others' (535.104.05 against 545.23.08).
At 8 ranks (one node) only the straggler and the missing rank can be planted.

The ranks go into one fleet report file, with the intra-node, inter-node and world collective rows a
sweep of that fleet writes; then, each step in its own process (so its peak memory is its own):

- merge: `gpudiag.fleet.merge.merge([file])`, the code behind `gpudiag fleet merge` (load, analysis,
  report), timed, with the process's peak RSS; then the report written as `gpudiag fleet merge` writes
  it (its JSON size, and the time to write it); and whether every planted fault was named (a straggler
  outlier for each planted GPU, the slow node as a node-level straggler, the missing rank, the driver
  node's ranks as the minority of FLEET_VERSION_SKEW) and nothing else excluded;
- render: `gpudiag render` of that JSON to HTML (load + render), timed, the HTML's size.

--checkout DIR runs the same steps against another tree (e.g. `git archive <commit> | tar -x -C DIR`),
for a before/after table on one machine. Prints the load average before and after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_NODE = 8
SEED = 28
OLD_DRIVER = "535.104.05"


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "n/a"


def _peak_mib() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- the input (child: gen)

def _measured_template() -> dict:
    """One GPU rank's entry as gpudiag measures and redacts it, on the fake torch and recorded NVML."""
    from gpudiag.backends import nvml
    from gpudiag.fleet import launcher, measure
    from gpudiag.report.redact import redact
    from tests import fake_torch as ft
    from tests.fakes import FakeNvml

    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    os.environ.pop("CUDA_DEVICE_ORDER", None)
    real = nvml.session
    nvml.session = lambda _lib=None: real(FakeNvml.h100())
    try:
        # Device 0 at PCI bus 0x19, where the recorded node's NVML has its H100.
        torch = ft.FakeTorch(devices=8, pci=[(0, 0x19 + i, 0) for i in range(8)], name="NVIDIA H100 80GB HBM3",
                             capability=(9, 0))
        place = launcher.Place("torchrun", 0, PER_NODE, 0, PER_NODE, 0, None, None, None)
        entry = measure.measure_rank(torch, place)
    finally:
        nvml.session = real
    entry["host"] = "host-x"
    # What this machine's CPU build of torch makes of a GPU node: a CUDA build there, and its versions.
    entry["versions"].update(torch="2.5.1+cu124", torch_cuda="12.4", nccl="2.21.5")
    pf = entry["preflight"]
    for c in pf["checks"]:
        if c["name"] == "torch_cuda":
            c.update(status="pass", message="torch 2.5.1+cu124 sees 8 CUDA devices")
    if "passed" in pf:  # where a passed check is named only (as measure writes it), so is this one
        pf["passed"].append("torch_cuda")
        pf["checks"] = [c for c in pf["checks"] if c["name"] != "torch_cuda"]
    pf["ready"] = not any(c["status"] == "fail" for c in pf["checks"])
    return redact(entry)


def _healthy_cpu(cpu: dict) -> dict:
    """The template's CPU account with the figures of a rank alone on a quiet core (so the machine's own
    load while the template was measured does not plant a CPU fault on every rank)."""
    if not isinstance(cpu, dict):
        return cpu
    out = dict(cpu, share=0.97, cores_got=0.97, other_cores=0.01, steal_cores=0.0, job_cores=0.0,
               job_ranks_sharing=[], fair_share=1.0)
    if isinstance(out.get("throttling"), dict):
        out["throttling"] = dict(out["throttling"], throttled_share=0.0, throttled_periods=0)
    return out


def plan_faults(n: int) -> dict:
    nodes = max(1, n // PER_NODE)
    faults = {"stragglers": [3] if nodes < 2 else [PER_NODE + 3, (nodes - 1) * PER_NODE + 5],
              "missing": n - 2}
    if nodes >= 4:
        faults["slow_node"] = nodes // 2
        faults["driver_node"] = nodes // 3
    return faults


def generate(n: int, path: str) -> dict:
    """Write a fleet report of n ranks (one missing) to `path`; returns the planted faults."""
    import copy

    from gpudiag.fleet import collectives
    from gpudiag.fleet.measure import host_label
    from gpudiag.report import contract
    from gpudiag.report.redact import short_hash

    rng = random.Random(SEED + n)
    template = _measured_template()
    template["cpu"] = _healthy_cpu(template.get("cpu"))
    faults = plan_faults(n)
    hosts = [host_label(f"gpu-node{i:05d}") for i in range(max(1, n // PER_NODE))]
    ranks, missing = [], []
    base = {m: template["figures"][m]["value"] for m in ("matmul_gflops", "launch_us", "h2d_gbps")}
    base["h2d_gbps"] = 52.0  # an H100's pinned copies over PCIe Gen5 x16 (the fake's copies are not timed alike)
    for r in range(n):
        node, local = divmod(r, PER_NODE)
        if r == faults["missing"]:
            missing.append({"rank": r, "host": hosts[node], "local_rank": local,
                            "reason": "did not reach the barrier within the deadline"})
            continue
        e = copy.deepcopy(template)
        e.update(rank=r, local_rank=local, node_rank=node, host=hosts[node])
        e["device"].update(index=local, gpu_uuid_hash=short_hash(f"gpu-uuid:{r}"))
        for m, v in base.items():
            x = v * rng.lognormvariate(0, 0.01)
            if m == "matmul_gflops" and r in faults["stragglers"]:
                x *= 0.80
            if m == "h2d_gbps" and node == faults.get("slow_node"):
                x *= 0.60
            fig = e["figures"][m]
            fig.update(value=round(x, 4), p10=round(x * 0.995, 4), p90=round(x * 1.005, 4), n=5)
        if node == faults.get("driver_node") and isinstance(e.get("driver"), dict):
            e["driver"]["driver_version"] = OLD_DRIVER
        ranks.append(e)
    rows = []
    by_node = {}
    for e in ranks:
        by_node.setdefault(e["host"], []).append(e["rank"])
    sizes = collectives.plan("cuda", True)["sizes"]
    groups = [("intra_node", h, rs) for h, rs in by_node.items() if len(rs) > 1]
    if len(by_node) > 1:
        groups += [("inter_node", None, [rs[0] for rs in by_node.values()]), ("world", None, [e["rank"] for e in ranks])]
    for scope, host, rs in groups:
        for op in collectives.OPS:
            for size in sizes:
                t = size / (200e9 if scope == "intra_node" else 40e9)
                times = [t * rng.lognormvariate(0, 0.02) for _ in range(5)]
                rows.append(collectives.aggregate(op, scope, size, rs, {rs[0]: times, **{r: times for r in rs[1:]}},
                                                  host=host))
    data = {"launcher": {"launcher": "torchrun", "world_size": n}, "backend": "nccl", "mode": "quick",
            "deadline_s": 60.0, "world_size": n, "answered": len(ranks), "ranks": ranks, "missing": missing,
            "collectives": rows, "collectives_status": {"state": "ok", "backend": "nccl", "reason": ""}}
    probe = {"status": "ok", "reason": "", "duration_s": 1.0, "data": data, "findings": []}
    rep = contract.build_report({"fleet": probe}, "quick", created_at="2026-01-01T00:00:00Z", redacted=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rep, fh, separators=(",", ":"))
    return dict(faults, hosts=hosts)


# ----------------------------------------------------------------------------- the steps (children)

def _named(rep: dict, faults: dict) -> dict:
    """Which planted faults the report names, and what it excludes that was not planted."""
    data = rep["probes"]["fleet"]["data"]
    findings = rep["probes"]["fleet"]["findings"]
    hosts = faults["hosts"]
    out = {}
    strag = {o["rank"] for o in data["outliers"] if o["kind"] == "straggler" and o["level"] == "rank"}
    out["stragglers"] = all(r in strag for r in faults["stragglers"])
    out["missing"] = [m["rank"] for m in data["missing"]] == [faults["missing"]] and any(
        f["code"] == "FLEET_RANK_MISSING" for f in findings)
    expected = {hosts[r // PER_NODE] for r in faults["stragglers"] + [faults["missing"]]}
    if "slow_node" in faults:
        slow = hosts[faults["slow_node"]]
        out["slow_node"] = any(o["level"] == "node" and o["host"] == slow and o["kind"] == "straggler"
                               for o in data["outliers"])
        expected.add(slow)
    if "driver_node" in faults:
        node_ranks = [r for r in range(faults["driver_node"] * PER_NODE, (faults["driver_node"] + 1) * PER_NODE)
                      if r != faults["missing"]]
        skew = next((f for f in findings if f["code"] == "FLEET_VERSION_SKEW"), None)
        out["driver_node"] = bool(skew) and sorted(skew["evidence"]["driver"].get(OLD_DRIVER, [])) == node_ranks
    out["false_exclusions"] = sorted(set(data["exclude"]["hosts"]) - expected)
    return out


def step_merge(path: str, out: str, faults: dict) -> dict:
    from gpudiag.fleet.merge import merge
    from gpudiag.report import contract

    t0 = time.perf_counter()
    rep, _ = merge([path])
    analysis_s = time.perf_counter() - t0
    peak = _peak_mib()
    t1 = time.perf_counter()
    text = contract.dumps(rep)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    write_s = time.perf_counter() - t1
    return {"analysis_s": analysis_s, "peak_mib": peak, "json_bytes": os.path.getsize(out), "write_s": write_s,
            "named": _named(rep, faults), "verdict": rep["probes"]["fleet"]["data"]["verdict"][:160]}


def step_render(path: str, out: str) -> dict:
    from gpudiag.report.contract import load_report
    from gpudiag.views import render

    t0 = time.perf_counter()
    rep = load_report(path)
    load_s = time.perf_counter() - t0
    html = render.render_html(rep)
    render_s = time.perf_counter() - t0
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(html)
    md = render.render_markdown(rep)
    return {"load_s": load_s, "render_s": render_s, "html_bytes": os.path.getsize(out), "md_chars": len(md),
            "render_peak_mib": _peak_mib()}


def _child(argv) -> None:
    step, args = argv[0], argv[1:]
    if step == "gen":
        res = generate(int(args[0]), args[1])
    elif step == "merge":
        with open(args[2], encoding="utf-8") as fh:
            res = step_merge(args[0], args[1], json.load(fh))
    else:
        res = step_render(args[0], args[1])
    print("RESULT " + json.dumps(res))


def _run_child(tree: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, ROOT]), PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], cwd=tree, env=env,
                         capture_output=True, text=True)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    if res.returncode != 0 or line is None:
        if args[0] == "gen":
            raise SystemExit(f"step gen failed (exit {res.returncode}): {res.stderr.strip()[-1500:]}")
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{args[0]} failed: {last[-200:]}"}
    return json.loads(line[len("RESULT "):])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="8,512,4096,10000")
    ap.add_argument("--checkout", default=ROOT, help="the gpudiag tree to measure (default: this one)")
    ap.add_argument("--keep", help="keep the input, JSON and HTML of each size in this folder")
    a = ap.parse_args()
    tree = os.path.abspath(a.checkout)
    folder = a.keep or tempfile.mkdtemp(prefix="fleet-scale-")
    os.makedirs(folder, exist_ok=True)
    print(f"tree: {tree}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    cols = ("ranks", "analysis s", "per rank ms", "peak MiB", "JSON MiB", "write s", "render s", "HTML MB",
            "MD chars", "faults named", "load before-after")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    try:
        for n in (int(x) for x in a.sizes.split(",")):
            before = _loadavg()
            inp, js, html = (os.path.join(folder, f"fleet-{n}{ext}") for ext in ("-input.json", ".json", ".html"))
            faults = _run_child(tree, "gen", str(n), inp)
            planted = os.path.join(folder, f"fleet-{n}-faults.json")  # the planted faults (too long for argv)
            with open(planted, "w", encoding="utf-8") as fh:
                json.dump(faults, fh)
            m = _run_child(tree, "merge", inp, js, planted)
            r = _run_child(tree, "render", js, html)
            if "error" in m or "error" in r:
                print(f"| {n:,} | " + (f"{m['analysis_s']:.2f} | {m['analysis_s'] / n * 1e3:.3f} | {m['peak_mib']:.0f} | "
                                       f"{m['json_bytes'] / 2**20:.1f} | {m['write_s']:.2f} | " if "error" not in m
                                       else "| | | | | ") + f"{(m.get('error') or r.get('error'))} | | | | | "
                      f"{before} - {_loadavg()} |", flush=True)
                continue
            named = m["named"]
            ok = all(v for k, v in named.items() if k != "false_exclusions") and not named["false_exclusions"]
            what = "all (" + ", ".join(k for k in named if k != "false_exclusions") + ")" if ok else json.dumps(named)
            print(f"| {n:,} | {m['analysis_s']:.2f} | {m['analysis_s'] / n * 1e3:.3f} | {m['peak_mib']:.0f} | "
                  f"{m['json_bytes'] / 2**20:.1f} | {m['write_s']:.2f} | {r['render_s']:.2f} | "
                  f"{r['html_bytes'] / 1e6:.2f} | {r['md_chars']:,} | {what} | {before} - {_loadavg()} |", flush=True)
    finally:
        if not a.keep:
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)


if __name__ == "__main__":
    main()
