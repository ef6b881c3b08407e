"""The fleet verdict: consistency across ranks, outliers per rank and per node, what to exclude, the exit code.

Pure functions of the gathered data (`data.ranks`, the ranks that did not answer, `data.collectives`),
so `gpudiag fleet` and `gpudiag fleet merge` share them and tests feed them canned fleets.

Outlier kinds: `straggler` when one or a few comparable ranks (at most a quarter, at least one) are
worse than their peers: excluding them helps. `system_wide` when the slowness is shared: more than a
quarter of the ranks are flagged, or every rank misses an absolute reference gpudiag already uses for
one machine (H2D below 60 % of the PCIe link, launch overhead above 20 us): excluding nodes will not fix
it. `shared_cores` when a slow rank (or node) is slowed by the launch pinning several of the job's ranks
to its cores (gpudiag.fleet.cpu_verdict.by_launch): the launch is named, not the node. A straggler short of CPU for a quota or other programs is named with
that cause. Exit codes follow the Nagios plugin convention that GCM and node-problem-detector use:
0 healthy, 1 warning, 2 critical, 3 unknown (nothing could be measured, or a usage error).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from gpudiag.fleet import cpu_verdict
from gpudiag.fleet.consistency import consistency_findings, preflight_findings, preflight_split, where
from gpudiag.fleet.scores import median_uncertainty, robust_scores
from gpudiag.measure.stats import median
from gpudiag.probes.base import finding
from gpudiag.probes.cuda import analysis as cuda_analysis
from gpudiag.report.values import as_dict, is_num

EXIT_HEALTHY, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_MEANING = {0: "healthy", 1: "warning", 2: "critical", 3: "unknown"}

# metric -> (higher is better, words)
METRICS: Dict[str, Tuple[bool, str]] = {
    "matmul_gflops": (True, "matmul throughput"),
    "launch_us": (False, "launch latency"),
    "h2d_gbps": (True, "host->device bandwidth"),
}
NODE_METRICS: Dict[str, Tuple[bool, str]] = {"intra_busbw_gbps": (True, "intra-node all_reduce bus bandwidth")}
FEW_FRACTION = 0.25
H2D_LOW_FRACTION = cuda_analysis.PCIE_EFFICIENCY_LOW_FRACTION
LAUNCH_HIGH_US = cuda_analysis.LAUNCH_OVERHEAD_HIGH_US


def _fig(entry: Mapping[str, Any], metric: str) -> Dict[str, Any]:
    """Figure `metric` of one rank entry ({value, p10, p90, n, ...}), or {} when the rank has none."""
    return as_dict(as_dict(entry.get("figures")).get(metric))


def group_key(entry: Mapping[str, Any]) -> str:
    """Ranks compared with each other: the same device kind and model (or CPU thread count)."""
    dev = as_dict(entry.get("device"))
    if dev.get("kind") == "cuda":
        return f"cuda:{dev.get('name') or 'unknown GPU'}"
    if dev.get("kind") == "cpu":
        return f"cpu:{dev.get('torch_threads') or '?'} threads"
    return "unknown"


def _few(flagged: int, total: int) -> bool:
    """True when `flagged` of `total` ranks is "one or a few" (a straggler), not a fleet-wide pattern."""
    return flagged <= max(1, int(total * FEW_FRACTION))


# ----------------------------------------------------------------------------- outliers

def rank_scores(ranks: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """{metric: {rank: score row}} within each comparable group."""
    out: Dict[str, Dict[int, Dict[str, Any]]] = {m: {} for m in METRICS}
    groups: Dict[str, List[Mapping[str, Any]]] = defaultdict(list)
    for e in ranks:
        groups[group_key(e)].append(e)
    for key, members in groups.items():
        for metric, (higher, _) in METRICS.items():
            values = {e["rank"]: _fig(e, metric).get("value") for e in members}
            noise = {e["rank"]: median_uncertainty(_fig(e, metric)) for e in members}
            for r, row in robust_scores(values, higher, noise).items():
                out[metric][r] = dict(row, group=key, group_size=len(members))
    return out


def nodes_of(ranks: Iterable[Mapping[str, Any]]) -> Dict[str, List[int]]:
    """{host: [ranks]} in rank order: the nodes the report lists and its verdict counts."""
    nodes: Dict[str, List[int]] = defaultdict(list)
    for e in sorted(ranks, key=lambda e: e.get("rank", 0)):
        nodes[str(e.get("host"))].append(e["rank"])
    return dict(nodes)


def node_values(ranks: Sequence[Mapping[str, Any]], collectives: Sequence[Mapping[str, Any]]
                ) -> Dict[str, Dict[str, Dict[str, Dict[str, Any]]]]:
    """{group: {metric: {host: {value, noise, ranks}}}}: each node's median figure, and its intra-node busbw."""
    out: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    by: Dict[Tuple[str, str], List[Mapping[str, Any]]] = defaultdict(list)
    for e in ranks:
        by[(group_key(e), str(e.get("host")))].append(e)
    for (key, host), members in by.items():
        for metric in METRICS:
            vals = [_fig(e, metric).get("value") for e in members if is_num(_fig(e, metric).get("value"))]
            if vals:
                noise = [n for n in (median_uncertainty(_fig(e, metric)) for e in members) if n is not None]
                out[key][metric][host] = {"value": median(vals), "noise": median(noise) if noise else None,
                                          "ranks": [e["rank"] for e in members]}
    intra = [c for c in collectives if c.get("scope") == "intra_node" and c.get("op") == "all_reduce"
             and is_num(c.get("busbw_gbps")) and c.get("host")]
    if intra:
        top = max(c["size_bytes"] for c in intra)
        for c in intra:
            if c["size_bytes"] == top:
                lo, hi = c.get("busbw_gbps_p10"), c.get("busbw_gbps_p90")
                out["collectives"]["intra_busbw_gbps"][c["host"]] = {
                    "value": c["busbw_gbps"], "ranks": c.get("ranks"), "size_bytes": top,
                    "noise": median_uncertainty({"p10": lo, "p90": hi, "n": (c.get("time_us") or {}).get("n")})}
    return out


def node_scores(values: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]]) -> List[Dict[str, Any]]:
    """[{group, metric, host, ranks, value, score, ...}] for every node where two or more nodes compare."""
    rows = []
    for key, metrics in values.items():
        for metric, hosts in metrics.items():
            higher = (METRICS.get(metric) or NODE_METRICS.get(metric) or (True, ""))[0]
            scored = robust_scores({h: v["value"] for h, v in hosts.items()}, higher,
                                   {h: v.get("noise") for h, v in hosts.items()})
            for host, row in scored.items():
                rows.append(dict(row, group=key, metric=metric, host=host, ranks=hosts[host].get("ranks"),
                                 group_size=len(hosts)))
    return rows


def find_outliers(ranks: Sequence[Mapping[str, Any]], scores: Mapping[str, Mapping[int, Mapping[str, Any]]],
                  nscores: Sequence[Mapping[str, Any]], cpu: Optional[Mapping[int, Mapping[str, Any]]] = None
                  ) -> List[Dict[str, Any]]:
    """data.outliers: flagged ranks and nodes with their kind, then fleet-wide misses of absolute references.

    cpu: {rank: cpu_verdict.cpu_state}; a flagged rank (or node) slowed by the launch pinning several of the
    job's ranks to its cores (cpu_verdict.by_launch) is `shared_cores`, and does not count towards the few
    that make a straggler.
    """
    cpu = cpu if cpu is not None else cpu_verdict.states(ranks)
    by_rank = {e["rank"]: e for e in ranks}
    out: List[Dict[str, Any]] = []
    for metric, rows in scores.items():
        flagged_by_group: Dict[str, List[int]] = defaultdict(list)
        for r, row in rows.items():
            if row["flagged"]:
                flagged_by_group[row["group"]].append(r)
        for key, flagged in flagged_by_group.items():
            peers = cpu_verdict.PeerFair([j for j in rows if rows[j]["group"] == key], cpu)
            slow = [r for r in flagged
                    if not cpu_verdict.by_launch([r], rows[r]["relative"], (), cpu, peers.without([r]))]
            kind = "straggler" if _few(len(slow), rows[flagged[0]]["group_size"]) else "system_wide"
            for r in sorted(flagged):
                e, row = by_rank[r], rows[r]
                dev = as_dict(e.get("device"))
                out.append({"level": "rank", "rank": r, "host": e.get("host"), "local_rank": e.get("local_rank"),
                            "gpu_index": dev.get("index"), "gpu_uuid_hash": dev.get("gpu_uuid_hash"),
                            "metric": metric, "value": row["value"], "median": row["peer_median"],
                            "relative": row["relative"], "score": row["score"],
                            "kind": "shared_cores" if r not in slow else kind, "group": key})
                if r not in slow:
                    out[-1]["note"] = (f"its fair share of its cores is {cpu[r]['fair_share']:.2f}: the launch pinned "
                                       f"rank(s) {', '.join(map(str, cpu[r]['job_ranks']))} of this job to them too")
                elif as_dict(cpu.get(r)).get("state", cpu_verdict.OK) != cpu_verdict.OK:
                    out[-1]["note"] = cpu_verdict.cause_text(cpu[r])
    per_node_count = defaultdict(int)
    for e in ranks:
        per_node_count[(group_key(e), str(e.get("host")))] += 1
    flagged_nodes: Dict[Tuple[str, str], List[Mapping[str, Any]]] = defaultdict(list)
    for row in nscores:
        # A node of one rank is already scored as that rank; a node outlier adds news only for 2+ ranks.
        if row["flagged"] and (row["metric"] in NODE_METRICS or per_node_count[(row["group"], row["host"])] > 1):
            flagged_nodes[(row["group"], row["metric"])].append(row)
    node_ranks = {(row["group"], row["metric"], row["host"]): list(row.get("ranks") or []) for row in nscores}
    for (key, metric), rows in flagged_nodes.items():
        members = {h: rs for (g, m, h), rs in node_ranks.items() if (g, m) == (key, metric)}
        # A node's peers are the other nodes: their median fair share is over all their ranks.
        peers = cpu_verdict.PeerFair([r for rs in members.values() for r in rs], cpu)
        slow = {row["host"] for row in rows if not cpu_verdict.by_launch(
            members[row["host"]], row["relative"], (), cpu, peers.without(members[row["host"]]))}
        kind = "straggler" if _few(len(slow), rows[0]["group_size"]) else "system_wide"
        for row in rows:
            out.append({"level": "node", "rank": None, "host": row["host"], "local_rank": None, "gpu_index": None,
                        "gpu_uuid_hash": None, "metric": metric, "value": row["value"], "median": row["peer_median"],
                        "relative": row["relative"], "score": row["score"],
                        "kind": kind if row["host"] in slow else "shared_cores", "group": key,
                        "ranks": row.get("ranks")})
            if out[-1]["kind"] == "shared_cores":
                fair = cpu_verdict.fair_of(members[row["host"]], cpu)
                out[-1]["note"] = (f"its ranks' fair share of their cores is {fair:.2f}: the launch pinned several "
                                   "of them to the same cores")
    out += absolute_misses(ranks)
    return out


def absolute_misses(ranks: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Fleet-level system_wide outliers: every GPU rank below a one-machine reference (none for CPU ranks)."""
    gpus = [e for e in ranks if as_dict(e.get("device")).get("kind") == "cuda"]
    if not gpus:
        return []
    out = []
    effs = []
    for e in gpus:
        fig = _fig(e, "h2d_gbps")
        link = as_dict(fig.get("link_under_load"))
        pcie = as_dict(as_dict(e.get("driver")).get("pcie"))
        theo = cuda_analysis.theoretical_gbps(link.get("gen") or pcie.get("gen_max_system"),
                                   link.get("width") or pcie.get("width_max"))
        if is_num(fig.get("value")) and theo:
            effs.append(fig["value"] / theo)
    if effs and len(effs) == len(gpus) and max(effs) < H2D_LOW_FRACTION:
        out.append({"level": "fleet", "rank": None, "host": None, "metric": "h2d_gbps",
                    "value": round(median(effs), 4), "median": H2D_LOW_FRACTION, "score": None, "kind": "system_wide",
                    "relative": None, "note": f"every GPU rank moves under {H2D_LOW_FRACTION:.0%} of its PCIe "
                                              "link's theoretical bandwidth (value: median fraction)"})
    lat = [_fig(e, "launch_us").get("value") for e in gpus]
    if lat and all(is_num(v) for v in lat) and min(lat) > LAUNCH_HIGH_US:
        out.append({"level": "fleet", "rank": None, "host": None, "metric": "launch_us", "value": median(lat),
                    "median": LAUNCH_HIGH_US, "score": None, "kind": "system_wide", "relative": None,
                    "note": f"every GPU rank takes over {LAUNCH_HIGH_US:g} us per launch (usually 5-20 us)"})
    return out


# ----------------------------------------------------------------------------- findings and verdict

def _fmt(metric: str, v: Any) -> str:
    """A figure with its unit ("12.3 GB/s"), "n/a" when not a number: for the findings' sentences."""
    if not is_num(v):
        return "n/a"
    unit = {"matmul_gflops": " GFLOP/s", "launch_us": " us", "h2d_gbps": " GB/s", "intra_busbw_gbps": " GB/s"}
    return f"{v:.3g}{unit.get(metric, '')}"


def _cpu_why(ranks: Iterable[int], cpu: Mapping[int, Mapping[str, Any]]) -> Tuple[str, Optional[str]]:
    """("; rank 2: it got 0.20 of a core: throttled ...", fix) for the ranks short of CPU among `ranks`."""
    short = [(r, cpu[r]) for r in ranks if as_dict(cpu.get(r)).get("state", cpu_verdict.OK) != cpu_verdict.OK]
    if not short:
        return "", None
    text = "; ".join((f"rank {r}: " if len(short) > 1 else "") + cpu_verdict.cause_text(st) for r, st in short)
    starved = [st for _, st in short if st["state"] == cpu_verdict.STARVED]
    return f"; {text}", (cpu_verdict.cause_fix(starved[0]) if starved else None)


def outlier_findings(ranks: Sequence[Mapping[str, Any]], outliers: Sequence[Mapping[str, Any]],
                     cpu: Optional[Mapping[int, Mapping[str, Any]]] = None) -> List[dict]:
    """One critical finding per straggling rank or node (with why it was short of CPU, where it was);
    one warning per fleet-wide slowness. `shared_cores` outliers are cpu_verdict's (FLEET_CORES_SHARED)."""
    cpu = cpu if cpu is not None else cpu_verdict.states(ranks)
    by_rank = {e["rank"]: e for e in ranks}
    out: List[dict] = []
    per_rank: Dict[int, List[Mapping[str, Any]]] = defaultdict(list)
    per_node: Dict[str, List[Mapping[str, Any]]] = defaultdict(list)
    wide: Dict[str, List[Mapping[str, Any]]] = defaultdict(list)
    for o in outliers:
        if o["kind"] == "shared_cores":
            continue
        if o["kind"] == "system_wide":
            wide[o["metric"]].append(o)
        elif o["level"] == "rank":
            per_rank[o["rank"]].append(o)
        else:
            per_node[o["host"]].append(o)
    for r, items in sorted(per_rank.items()):
        what = "; ".join(f"{(METRICS.get(o['metric']) or ('', o['metric']))[1]} {_fmt(o['metric'], o['value'])} "
                         f"= {o['relative']:.2f}x its peers' {_fmt(o['metric'], o['median'])} (score {o['score']:.1f})"
                         for o in items)
        why, fix = _cpu_why([r], cpu)
        out.append(finding("FLEET_STRAGGLER", "critical", f"straggler: {where(by_rank[r])}: {what}{why}",
                           evidence=[dict(o) for o in items],
                           fix=fix or "a synchronous job runs at this rank's pace: exclude its node, or look at what "
                                      "else runs there (other jobs, throttling, a degraded link)"))
    for host, items in sorted(per_node.items()):
        what = "; ".join(f"{(METRICS.get(o['metric']) or NODE_METRICS.get(o['metric']) or ('', o['metric']))[1]} "
                         f"{_fmt(o['metric'], o['value'])} = {o['relative']:.2f}x the other nodes' "
                         f"(score {o['score']:.1f})" for o in items)
        why, fix = _cpu_why(items[0].get("ranks") or [], cpu)
        out.append(finding("FLEET_SLOW_NODE", "critical",
                           f"slow node {host} (ranks {items[0].get('ranks')}): {what}{why}",
                           evidence=[dict(o) for o in items], fix=fix or "exclude the node; compare it with a healthy one"))
    for metric, items in sorted(wide.items()):
        words = (METRICS.get(metric) or NODE_METRICS.get(metric) or ("", metric))[1]
        if items[0]["level"] == "fleet":
            msg = f"system-wide: {items[0]['note']}"
        else:
            msg = (f"system-wide: {len(items)} ranks are slow in {words} compared with the best ones "
                   f"(ranks {_some(sorted(o['rank'] for o in items if o['rank'] is not None), 20)}): too many to be "
                   "one bad node")
        out.append(finding("FLEET_SYSTEM_WIDE_SLOW", "warning", msg, evidence=[dict(o) for o in items],
                           fix="look for a shared cause (image, BIOS, power capping, the fabric, a job on every node); "
                               "excluding nodes will not fix it"))
    return out


def _some(items: Sequence[Any], limit: int = 12) -> str:
    """"1, 2, 3 and 40 more": a list a sentence can hold on a fleet of thousands."""
    text = ", ".join(map(str, items[:limit]))
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


MISSING_WORDS = {"gone": "gone before the stop (connection closed, no stop notice: died or killed)",
                 "stopped": "stopped before sending their results", "silent": "silent"}


def missing_findings(missing: Sequence[Mapping[str, Any]]) -> List[dict]:
    """A rank that hung or died: named by rank, host and local rank (after a stop signal, grouped by what
    became of it: gone, stopped, silent)."""
    if not missing:
        return []
    def names(ms: Sequence[Mapping[str, Any]]) -> str:
        return _some([f"rank {m['rank']} ({m.get('host') or 'unknown host'}, local rank {m.get('local_rank')})"
                      for m in ms], 8)
    states = {m.get("state") for m in missing}
    if states <= {None}:
        text = (f"{len(missing)} rank(s) did not answer within the deadline: {names(missing)}; the report holds the "
                "ranks that did")
    else:
        groups = [(MISSING_WORDS.get(st, st), [m for m in missing if m.get("state") == st])
                  for st in ("gone", "stopped", "silent") if any(m.get("state") == st for m in missing)]
        text = f"{len(missing)} rank(s) have no results: " + "; ".join(f"{len(ms)} {w}: {names(ms)}" for w, ms in groups)
    return [finding("FLEET_RANK_MISSING", "critical", text, evidence=[dict(m) for m in missing],
                    fix="a rank that hangs here will hang the job: look at that node (dmesg, nvidia-smi, a stuck "
                        "process) or exclude it")]


def stopped_findings(stopped: Optional[Mapping[str, Any]], answered: int, world: int) -> List[dict]:
    """FLEET_STOPPED (critical) when a stop signal ended the run before it finished."""
    if not stopped:
        return []
    return [finding("FLEET_STOPPED", "critical",
                    f"the run was stopped by {stopped.get('signal')} after {stopped.get('after_s', 0):.0f} s, while rank 0 "
                    f"was {stopped.get('phase')}: this report holds what rank 0 had then ({answered} of {world} ranks' "
                    "results)", evidence=dict(stopped),
                    fix="torchrun (and srun --kill-on-bad-exit) stop every rank as soon as one fails: the ranks named "
                        "gone are the ones to look at; a run cancelled on purpose needs no fix")]


def error_findings(ranks: Sequence[Mapping[str, Any]]) -> List[dict]:
    """A rank that answered with an error instead of figures (its own measurement raised)."""
    bad = [e for e in ranks if e.get("error")]
    return [finding("FLEET_RANK_ERROR", "critical",
                    f"{where(e)} answered but could not measure: {e['error']}", evidence={"rank": e["rank"]},
                    fix="run `gpudiag report` on that node to see which part fails") for e in bad]


def collectives_findings(status: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> List[dict]:
    """Whether the sweep ran; on CPU ranks, what it could not show."""
    out = []
    state = status.get("state")
    if state in ("failed", "incomplete"):
        out.append(finding("FLEET_COLLECTIVES_INCOMPLETE", "warning",
                           f"the collectives sweep did not complete: {status.get('reason')}", evidence=dict(status),
                           fix="see the missing or failed ranks above; the per-rank figures are still valid"))
    if status.get("backend") == "gloo" and state == "ok":
        out.append(finding("FLEET_GLOO_ONLY", "info",
                           "collectives ran on gloo over CPU tensors: they measure host networking and memory copies; "
                           "NCCL, NVLink and GPU peer-to-peer paths were not exercised", evidence=None, fix=None))
    return out


def exclude_list(ranks: Sequence[Mapping[str, Any]], missing: Sequence[Mapping[str, Any]],
                 outliers: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Nodes a scheduler should avoid, and why: stragglers, silent or failing ranks, minority preflight fails."""
    why: Dict[str, List[str]] = defaultdict(list)
    for m in missing:
        why[str(m.get("host") or "unknown")].append(f"rank {m['rank']} did not answer")
    for e in ranks:
        if e.get("error"):
            why[str(e.get("host"))].append(f"rank {e['rank']} could not measure")
    for o in outliers:
        if o["kind"] == "straggler" and o.get("host"):
            who = f"rank {o['rank']}" if o["rank"] is not None else "node"
            why[str(o["host"])].append(f"{who} {o['metric']} {o['relative']:.2f}x peers")
    by_rank = {e["rank"]: e for e in ranks}
    for name, failed in preflight_split(ranks).items():
        if len(failed) < len(ranks):
            for r in failed:
                why[str(by_rank[r].get("host"))].append(f"rank {r} preflight {name} failed")
    hosts = sorted(h for h in why if h != "unknown")
    return {"hosts": hosts, "slurm": f"--exclude={','.join(hosts)}" if hosts else "",
            "reasons": {h: sorted(set(v)) for h, v in why.items()}}


def exit_code(findings: Sequence[Mapping[str, Any]], answered: int, stopped: bool = False) -> int:
    """0 healthy, 1 warning, 2 critical, 3 unknown (no rank measured; a run a stop signal ended is critical
    even then: it did not finish)."""
    if answered == 0 and not stopped:
        return EXIT_UNKNOWN
    sev = {f.get("severity") for f in findings}
    if "critical" in sev:
        return EXIT_CRITICAL
    if "warning" in sev:
        return EXIT_WARNING
    return EXIT_HEALTHY


def analyze(ranks: Sequence[Dict[str, Any]], missing: Sequence[Mapping[str, Any]] = (),
            collectives: Sequence[Mapping[str, Any]] = (), collectives_status: Optional[Mapping[str, Any]] = None,
            stopped: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Everything the fleet report adds to the gathered data: scores, outliers, findings, exclude list, exit code.

    Writes each rank's scores into its entry (`entry["scores"][metric]`). stopped: {signal, phase, after_s}
    when a stop signal ended the run (gpudiag.fleet.run.stop_report).
    """
    usable = [e for e in ranks if not e.get("error")]
    scores = rank_scores(usable)
    for e in ranks:
        e["scores"] = {m: {k: rows[e["rank"]][k] for k in ("score", "relative", "peer_median", "flagged")}
                       for m, rows in scores.items() if e["rank"] in rows}
    nvalues = node_values(usable, collectives)
    nscores = node_scores(nvalues)
    cpu = cpu_verdict.states(usable)
    for e in usable:
        if e["rank"] in cpu:
            e["cpu_verdict"] = {k: cpu[e["rank"]][k] for k in ("state", "causes")}
    outliers = find_outliers(usable, scores, nscores, cpu)
    findings = stopped_findings(stopped, len(usable), len(ranks) + len(missing))
    findings += missing_findings(missing) + error_findings(ranks) + outlier_findings(usable, outliers, cpu)
    named = {o["rank"] for o in outliers if o["kind"] == "straggler" and o["rank"] is not None}
    named |= {r for o in outliers if o["kind"] == "straggler" and o["rank"] is None for r in o.get("ranks") or []}
    findings += cpu_verdict.cpu_findings(usable, cpu, sorted(named), _shared_ranks(outliers))
    findings += preflight_findings(usable) + consistency_findings(usable)
    findings += collectives_findings(collectives_status or {}, collectives)
    findings += omp_findings(ranks)
    if len(usable) == 1 and not missing:
        findings.append(finding("FLEET_SINGLE_RANK", "info",
                                "one rank only: nothing to compare it with (launch with torchrun or srun for a fleet)"))
    code = exit_code(findings, len(usable), stopped=bool(stopped))
    exclude = exclude_list(ranks, missing, outliers)
    flat = {(m, h): v["value"] for metrics in nvalues.values() for m, hosts in metrics.items() for h, v in hosts.items()}
    return {"outliers": outliers, "node_scores": nscores, "node_values": flat, "findings": findings, "exclude": exclude,
            "exit_code": code, "verdict": verdict(usable, missing, outliers, code, nodes_of(ranks), stopped)}


def omp_findings(ranks: Sequence[Mapping[str, Any]]) -> List[dict]:
    """FLEET_OMP_THREADS_SET (information): the CPU ranks on which gpudiag set OMP_NUM_THREADS=1 (a Slurm
    step where it was not set), as torchrun does."""
    set_on = [e for e in ranks if as_dict(as_dict(e.get("device")).get("omp_num_threads")).get("value") is not None]
    if not set_on:
        return []
    return [finding("FLEET_OMP_THREADS_SET", "info",
                    f"OMP_NUM_THREADS was not set, so gpudiag set it to 1 on {len(set_on)} CPU rank(s) "
                    f"(rank(s) {_some([e['rank'] for e in set_on])}), as torchrun does for its workers: several "
                    "ranks on one node, each with a thread per core, would crowd each other out",
                    evidence={"ranks": [e["rank"] for e in set_on]},
                    fix="set OMP_NUM_THREADS in the job script to choose another count")]


def _shared_ranks(outliers: Sequence[Mapping[str, Any]]) -> List[int]:
    """The ranks of `shared_cores` outliers (rank rows, and every rank of a node row)."""
    out = set()
    for o in outliers:
        if o["kind"] == "shared_cores":
            out |= {o["rank"]} if o["rank"] is not None else set(o.get("ranks") or [])
    return sorted(out)


def verdict(ranks: Sequence[Mapping[str, Any]], missing: Sequence[Mapping[str, Any]],
            outliers: Sequence[Mapping[str, Any]], code: int, nodes: Mapping[str, List[int]],
            stopped: Optional[Mapping[str, Any]] = None) -> str:
    """One line for the terminal and the report's top (long lists cut: "1, 2, 3 and 40 more")."""
    size = f"{len(ranks)} of {len(ranks) + len(missing)} ranks answered, {len(nodes)} node(s)"
    strag = sorted({o["rank"] for o in outliers if o["kind"] == "straggler" and o["rank"] is not None})
    slow_nodes = sorted({o["host"] for o in outliers if o["kind"] == "straggler" and o["rank"] is None})
    parts = []
    if stopped:
        parts.append(f"stopped by {stopped.get('signal')} while rank 0 was {stopped.get('phase')}")
    gone = [m["rank"] for m in missing if m.get("state") == "gone"]
    if gone:
        parts.append(f"gone (died) rank(s) {_some(gone)}")
    rest = [m["rank"] for m in missing if m.get("state") != "gone"]
    if rest:
        parts.append(f"missing rank(s) {_some(rest)}")
    if strag:
        parts.append(f"straggler rank(s) {_some(strag)}")
    if slow_nodes:
        parts.append(f"slow node(s) {_some(slow_nodes)}")
    if any(o["kind"] == "system_wide" for o in outliers):
        parts.append("system-wide slowness")
    shared = _shared_ranks(outliers)
    if shared:
        parts.append(f"rank(s) {_some(shared)} slowed by sharing cores as the launch pinned them")
    head = EXIT_MEANING[code]
    return f"{head}: {size}" + (f"; {'; '.join(parts)}" if parts else "")
