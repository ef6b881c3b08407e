"""The fleet report: a normal gpudiag report whose `probes.fleet` holds the ranks, collectives and verdict.

Shared by `gpudiag fleet` (rank 0) and `gpudiag fleet merge`. Every string passes the redactor:
rank 0's own identity, then each other host name seen in the job, so no rank's name survives in a
message it wrote (hostnames themselves travel only as `host-<hash>` labels unless --no-redact).
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from gpudiag.fleet import analysis, scores
from gpudiag.report import contract
from gpudiag.report.redact import redact
from gpudiag.report.values import as_dict

PROBE_NAME = "fleet"


def host_summary(ranks: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The report's `host` block for a fleet: rank 0's machine, and the GPU models of every rank."""
    first = as_dict(ranks[0]) if ranks else {}
    facts, vers, drv = as_dict(first.get("host_facts")), as_dict(first.get("versions")), as_dict(first.get("driver"))
    models = Counter(as_dict(e.get("device")).get("name") for e in ranks if as_dict(e.get("device")).get("kind") == "cuda")
    return {"os": facts.get("os"), "kernel": None, "python": f"CPython {vers['python']}" if vers.get("python") else None,
            "cpu": None, "logical_cores": facts.get("logical_cores"), "torch": vers.get("torch"),
            "torch_cuda": vers.get("torch_cuda"), "driver_version": drv.get("driver_version"),
            "gpus": [f"{n} x {m}" for m, n in sorted(models.items())]}


@contextlib.contextmanager
def cycle_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the block: a fleet report is millions of small objects
    without cycles, which every full collection would walk again (a third of the analysis time at 10,000
    ranks); reference counting still frees them, and the collector resumes as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build(ranks: List[Dict[str, Any]], missing: Sequence[Mapping[str, Any]], collectives: Sequence[Mapping[str, Any]],
          collectives_status: Mapping[str, Any], meta: Mapping[str, Any], *, mode: str, created_at: str,
          duration_s: float, identify: bool, other_hostnames: Iterable[str] = (),
          stopped: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The redacted fleet report for gathered data; `meta` goes into the data as is (launcher, backend, ...).
    stopped: {signal, phase, after_s} when a stop signal ended the run (the report is then `interrupted`)."""
    with cycle_gc_paused():
        return _build(ranks, missing, collectives, collectives_status, meta, mode=mode, created_at=created_at,
                      duration_s=duration_s, identify=identify, other_hostnames=other_hostnames, stopped=stopped)


def _build(ranks: List[Dict[str, Any]], missing: Sequence[Mapping[str, Any]], collectives: Sequence[Mapping[str, Any]],
           collectives_status: Mapping[str, Any], meta: Mapping[str, Any], *, mode: str, created_at: str,
           duration_s: float, identify: bool, other_hostnames: Iterable[str], stopped: Optional[Mapping[str, Any]]
           ) -> Dict[str, Any]:
    """build() with the cyclic collector paused."""
    ranks = sorted(ranks, key=lambda e: e.get("rank", 0))
    result = analysis.analyze(ranks, missing, collectives, collectives_status, stopped)
    per_host: Dict[str, Dict[str, Any]] = {}
    for (m, h), v in result["node_values"].items():
        per_host.setdefault(h, {})[m] = {"value": v}
    for r in result["node_scores"]:
        per_host.setdefault(r["host"], {})[r["metric"]] = {k: r[k] for k in ("value", "score", "relative",
                                                                             "peer_median", "flagged")}
    nodes = [{"host": host, "ranks": members, "scores": per_host.get(host, {})}
             for host, members in analysis.nodes_of(ranks).items()]
    data = dict(meta)
    data.update({
        "world_size": len(ranks) + len(missing), "answered": len(ranks), "nodes": nodes, "ranks": ranks,
        "missing": [dict(m) for m in missing], "collectives": list(collectives),
        "collectives_status": dict(collectives_status), "outliers": result["outliers"],
        "exclude": result["exclude"], "verdict": result["verdict"], "exit_code": result["exit_code"],
        "exit_meaning": analysis.EXIT_MEANING[result["exit_code"]],
        "thresholds": {"z_flag": scores.Z_FLAG, "min_effect": scores.MIN_EFFECT, "noise_floor": scores.NOISE_FLOOR,
                       "few_fraction": analysis.FEW_FRACTION},
    })
    if stopped:
        data["stopped"] = dict(stopped)
    probe = {"status": "ok" if ranks else "failed", "reason": "" if ranks else "no rank answered",
             "duration_s": round(max(duration_s, 0.0), 3), "data": data, "findings": result["findings"]}
    rep = contract.build_report({PROBE_NAME: probe}, mode, created_at=created_at, redacted=identify,
                                interrupted=bool(stopped))
    rep["host"] = host_summary(ranks)
    # One pass: rank 0's own identity, and every other host name of the job (however many nodes).
    return redact(rep, identify=identify, hostnames=other_hostnames if identify else ())


def exit_code_of(report: Mapping[str, Any]) -> int:
    """The exit code a fleet report carries (3 when it carries none)."""
    code = as_dict(as_dict(as_dict(report.get("probes")).get(PROBE_NAME)).get("data")).get("exit_code")
    return code if isinstance(code, int) and code in analysis.EXIT_MEANING else analysis.EXIT_UNKNOWN


def real_exclude(report: Mapping[str, Any], names: Mapping[str, str]) -> List[str]:
    """The exclude list with real host names (label -> name map), for a scheduler, never for a report."""
    hosts = as_dict(as_dict(as_dict(as_dict(report.get("probes")).get(PROBE_NAME)).get("data")).get("exclude")).get("hosts") or []
    return [names.get(h, h) for h in hosts]

