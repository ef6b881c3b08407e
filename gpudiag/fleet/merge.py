"""`gpudiag fleet merge A.json B.json ...`: the fleet analysis over reports gathered separately.

Inputs may be fleet reports (their ranks are taken as they are, renumbered) or ordinary
`gpudiag report` files, e.g. from a Slurm array with one report per node: each becomes one rank
whose figures are the comparable ones that report holds (`launch` overhead, `pcie` pinned H2D at
its largest size; a plain report has no matmul figure). A plain report holds no host name, so the
node is named after the file: `node17.json` is host `node17` (hashed in the report unless
--no-redact, with the same hash a fleet run on node17 gives).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from gpudiag.fleet import assemble
from gpudiag.fleet.measure import host_label
from gpudiag.report.contract import ReportError, load_report, utc_now_iso
from gpudiag.report.values import as_dict
from gpudiag.units import fmt_bytes


def _ok(rep: Mapping[str, Any], probe: str) -> dict:
    """The data of probe `probe` when it ran ok, else {}: a merged node brings only measured figures."""
    res = as_dict(as_dict(rep.get("probes")).get(probe))
    return as_dict(res.get("data")) if res.get("status") == "ok" else {}


def _stats_fig(st: Mapping[str, Any], what: str) -> Optional[Dict[str, Any]]:
    """A fleet figure {value (the median), p10, p90, n, what} from a report's stats block, or None
    without a median."""
    if not isinstance(st.get("median"), (int, float)):
        return None
    return {"value": st["median"], "p10": st.get("p10"), "p90": st.get("p90"), "n": st.get("n"), "what": what}


def entry_from_plain(rep: Mapping[str, Any], host: str) -> Dict[str, Any]:
    """One rank entry from a single-machine gpudiag report."""
    system, drv, launch, pcie = (_ok(rep, p) for p in ("system", "driver", "launch", "pcie"))
    gpus = [g for g in drv.get("gpus") or [] if isinstance(g, dict) and not g.get("error")]
    gpu = gpus[0] if gpus else {}
    figures: Dict[str, Any] = {}
    lf = _stats_fig(as_dict(launch.get("launch_overhead_us")), "GPU: host time to launch one tiny kernel (launch probe)")
    if lf:
        figures["launch_us"] = lf
    h2d = [p for p in pcie.get("points") or [] if isinstance(p, dict) and p.get("direction") == "h2d"
           and p.get("memory") == "pinned" and isinstance(p.get("size_bytes"), int)]
    if h2d:
        top = max(h2d, key=lambda p: p["size_bytes"])
        fig = _stats_fig(as_dict(top.get("gbps")), f"GPU: pinned host->device copy of {fmt_bytes(top['size_bytes'])} "
                                              "(pcie probe)")
        if fig:
            link = as_dict(pcie.get("link"))
            fig["link_under_load"] = {"gen": link.get("gen"), "width": link.get("width")} \
                if link.get("read_under_load") else {"reason": "the pcie probe did not read the link under load"}
            figures["h2d_gbps"] = fig
    kind = "cuda" if (launch or pcie) else "cpu"
    torch = as_dict(system.get("torch"))
    return {
        "rank": None, "host": host, "local_rank": 0, "node_rank": None, "launcher": "report",
        "device": {"kind": kind, "index": 0 if kind == "cuda" else None, "name": gpu.get("name"),
                   "torch_threads": None, "gpu_uuid_hash": None},
        "versions": {"gpudiag": rep.get("gpudiag_version"), "python": as_dict(system.get("python")).get("version"),
                     "torch": torch.get("version"), "torch_cuda": torch.get("cuda_build"), "nccl": None},
        "driver": {"driver_version": drv.get("driver_version"), "cuda_driver_version": drv.get("cuda_driver_version"),
                   "persistence_mode": gpu.get("persistence_mode"), "pcie": gpu.get("pcie"),
                   "throttling": as_dict(gpu.get("clock_event_reasons")).get("throttling"), "ecc": gpu.get("ecc"),
                   "name": gpu.get("name")} if drv else {"reason": as_dict(as_dict(rep.get("probes")).get("driver")).get("reason")},
        "host_facts": {"os": as_dict(system.get("os")).get("pretty")},
        "figures": figures,
    }


def _renumbered_cpu(entry: Mapping[str, Any], offset: int) -> Dict[str, Any]:
    """{"cpu": the rank's CPU account with the ranks sharing its cores renumbered like the rank}, or {}."""
    cpu = entry.get("cpu")
    if not isinstance(cpu, dict):
        return {}
    return {"cpu": dict(cpu, job_ranks_sharing=[offset + r for r in cpu.get("job_ranks_sharing") or []
                                                if isinstance(r, int)])}


def _stem(path: str) -> str:
    """The file's name without folder and .json: the node of a plain report (node17.json -> node17)."""
    base = os.path.basename(path)
    return base[:-5] if base.lower().endswith(".json") else base


def gather(paths: Sequence[str], identify: bool) -> Dict[str, Any]:
    """{ranks, missing, collectives, names (label -> real name), sources} from the files; ReportError on a bad one."""
    ranks: List[Dict[str, Any]] = []
    missing: List[Dict[str, Any]] = []
    rows: List[Dict[str, Any]] = []
    names: Dict[str, str] = {}
    sources: List[Dict[str, Any]] = []
    for index, path in enumerate(paths):
        rep = load_report(path)
        fleet = as_dict(as_dict(rep.get("probes")).get(assemble.PROBE_NAME))
        sources.append({"index": index, "kind": "fleet" if fleet else "report", "created_at": rep.get("created_at")})
        if fleet:
            data = as_dict(fleet.get("data"))
            offset = len(ranks) + len(missing)
            for e in data.get("ranks") or []:
                if isinstance(e, dict) and isinstance(e.get("rank"), int):
                    ranks.append(dict(e, rank=offset + e["rank"], source=index, source_rank=e["rank"],
                                      **_renumbered_cpu(e, offset)))
            for m in data.get("missing") or []:
                if isinstance(m, dict) and isinstance(m.get("rank"), int):
                    missing.append(dict(m, rank=offset + m["rank"], source=index, source_rank=m["rank"]))
            for c in data.get("collectives") or []:
                if isinstance(c, dict):
                    rows.append(dict(c, source=index, ranks=[offset + r for r in c.get("ranks") or []
                                                             if isinstance(r, int)]))
            continue
        stem = _stem(path)
        label = host_label(stem, identify)
        names[label] = stem
        ranks.append(dict(entry_from_plain(rep, label), rank=len(ranks) + len(missing), source=index))
    return {"ranks": ranks, "missing": missing, "collectives": rows, "names": names, "sources": sources}


def merge(paths: Sequence[str], identify: bool = True) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """(merged fleet report, label -> real name) for the given report files; ReportError names a bad file."""
    if len(paths) < 1:
        raise ReportError("fleet merge needs at least one report file")
    t0 = time.monotonic()
    with assemble.cycle_gc_paused():
        got = gather(paths, identify)
    ranks, missing, rows, names = got["ranks"], got["missing"], got["collectives"], got["names"]
    if not ranks and not missing:
        raise ReportError("none of the files holds a rank to analyse")
    meta = {"launcher": {"launcher": "merge", "world_size": len(ranks) + len(missing), "note":
                         f"merged from {len(paths)} report file(s)"},
            "backend": None, "mode": "quick", "deadline_s": None,
            "sources": got["sources"]}
    status = {"state": "merged" if rows else "skipped",
              "reason": "collectives of each input, as measured there" if rows else
              "no input holds collectives (plain reports never do)", "backend": None}
    rep = assemble.build(ranks, missing, rows, status, meta, mode="quick", created_at=utc_now_iso(),
                         duration_s=time.monotonic() - t0, identify=identify, other_hostnames=names.values())
    return rep, names
