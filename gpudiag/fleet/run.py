"""One rank's part in `gpudiag fleet`: join, measure, answer rank 0 by the deadline; rank 0 writes the report.

    join ─ exchange identities (host names, for naming and node groups) ─ measure this rank
    ─ monitored_barrier(deadline): rank 0 learns who is missing ─ payloads to rank 0
    ─ rank 0 writes the report (so a hang in the collectives still leaves one)
    ─ collectives sweep (only when every rank answered) ─ timings to rank 0 ─ final report.

A rank that does not answer in time is named in the report, which holds the ranks that did.
Non-zero ranks print nothing and exit 0 once rank 0 has their results (3 if they cannot reach it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from gpudiag.fleet import assemble, collectives, measure
from gpudiag.fleet.analysis import EXIT_UNKNOWN
from gpudiag.fleet.launcher import LaunchError, Place, discover
from gpudiag.fleet.transport import (Groups, TransportError, all_gather_json, monitored_barrier_missing,
                                     receive_json, send_json)
from gpudiag.report.redact import redact

TAG_RESULTS, TAG_TIMINGS = 101, 102
BACKENDS = ("auto", "gloo", "nccl")
# What a rank's own measurement may raise (torch, NVML, the OS); it is then reported, not fatal.
MEASURE_ERRORS = (RuntimeError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError,
                  ImportError, ArithmeticError)


class FleetError(Exception):
    """The fleet could not be measured at all (exit 3); the message is one line."""


@dataclass
class Options:
    """What the user asked for on the command line (the same on every rank)."""

    mode: str = "quick"
    deadline_s: float = 60.0
    backend: str = "auto"
    collectives: bool = True
    identify: bool = True


@dataclass
class Outcome:
    """How this rank's part ended; only rank 0 holds the report."""

    reporter: bool  # True on rank 0, the one that holds the report
    exit_code: int
    report: Optional[Dict[str, Any]] = None
    real_names: Dict[str, str] = field(default_factory=dict)  # host label -> real host name (for --exclude-file)


def _import_torch():
    """torch and torch.distributed, or FleetError saying what to install (gpudiag never requires torch)."""
    import warnings

    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise FleetError("gpudiag fleet needs torch (with torch.distributed): pip install torch") from None
    if not dist.is_available():
        raise FleetError(f"this torch {torch.__version__} was built without torch.distributed")
    return torch, dist


def choose_backend(requested: str, torch: Any, dist: Any) -> str:
    """NCCL when this rank has a GPU and torch has NCCL; gloo otherwise (or as asked)."""
    if requested == "nccl":
        if not dist.is_nccl_available() or not torch.cuda.is_available():
            raise FleetError("--backend nccl: this torch has no NCCL or sees no GPU; use --backend gloo")
        return "nccl"
    if requested == "gloo":
        return "gloo"
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _measure(torch: Any, place: Place, opts: Options, label: str, idents: Mapping[int, Mapping[str, Any]]
             ) -> Dict[str, Any]:
    """This rank's redacted entry; a measurement that raises becomes an entry with `error`, still sent.

    idents: every rank's identity; those on this host (same host name) are the job's ranks whose CPU
    on this rank's cores counts as the job's own, not as other programs'."""
    me = idents.get(place.rank) or {}
    job = {r: (i["pid"], i.get("started")) for r, i in idents.items()
           if r != place.rank and i.get("hostname") == me.get("hostname") and isinstance(i.get("pid"), int)}
    try:
        entry = measure.measure_rank(torch, place, quick=opts.mode == "quick", job_ranks=job)
    except MEASURE_ERRORS as exc:
        entry = measure.failed_entry(place, f"{type(exc).__name__}: {str(exc)[:300]}")
    entry["host"] = label
    # Redacted here, with this rank's own identity (user, home, host name), before it leaves the machine.
    return redact(entry, identify=opts.identify)


def run(opts: Options, write: Callable[[Dict[str, Any], bool], None],
        environ: Optional[Mapping[str, str]] = None) -> Outcome:
    """Play this rank's part; on rank 0 call write(report, final) once before the collectives and once at the end.

    Raises LaunchError (bad launcher variables), FleetError and TransportError (exit 3 in the CLI).
    """
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    created = assemble.contract.utc_now_iso()
    place = discover(environ)
    torch, dist = _import_torch()
    backend = choose_backend(opts.backend, torch, dist)
    if backend == "nccl":  # NCCL binds each rank to the current device: choose it before joining
        torch.cuda.set_device(place.local_rank % torch.cuda.device_count())
    groups = Groups.open(place, backend, opts.deadline_s)
    try:
        return _run(torch, dist, place, groups, backend, opts, write, started, created)
    finally:
        if groups.distributed and not groups.abandon:
            groups.close()


def _run(torch, dist, place: Place, groups: Groups, backend: str, opts: Options, write, started: float,
         created: str) -> Outcome:
    """The phases after joining (see the module docstring); rank 0 gathers and reports, the others send."""
    idents = {i["rank"]: i for i in all_gather_json(groups, measure.identity(place))}
    names = {r: i["hostname"] for r, i in idents.items()}
    labels = {r: measure.host_label(h, opts.identify) for r, h in names.items()}
    entry = _measure(torch, place, opts, labels[place.rank], idents)
    missing_set, barrier_error = monitored_barrier_missing(groups, opts.deadline_s)

    if place.rank != 0:
        send_json(groups, entry, TAG_RESULTS)
        if missing_set == set() and opts.collectives:
            sweep = _sweep(torch, dist, groups, labels, place, backend, entry, opts)
            send_json(groups, sweep, TAG_TIMINGS)
        return Outcome(reporter=False, exit_code=0)

    others = [r for r in range(1, place.world_size) if r not in (missing_set or set())]
    got = receive_json(groups, others, time.monotonic() + opts.deadline_s, TAG_RESULTS) if others else {}
    ranks = [entry] + [got[r] for r in sorted(got)]
    missing = [{"rank": r, "host": labels.get(r), "local_rank": idents.get(r, {}).get("local_rank"),
                "reason": _why_missing(r, missing_set, barrier_error)}
               for r in range(1, place.world_size) if r not in got]
    meta = {"launcher": place.to_dict(), "backend": backend, "mode": opts.mode, "deadline_s": opts.deadline_s}
    real = {labels[r]: names[r] for r in names}

    def report(rows: List[Dict[str, Any]], status: Dict[str, Any]) -> Dict[str, Any]:
        """The fleet report over the ranks gathered, with these collective rows and status: written
        once before the sweep (so a hang still leaves one) and once after."""
        return assemble.build([dict(e) for e in ranks], missing, rows, status, meta, mode=opts.mode,
                              created_at=created, duration_s=time.monotonic() - started, identify=opts.identify,
                              other_hostnames=names.values())

    status = _status_before(place, missing, opts, backend)
    if status["state"] != "running":
        rep = report([], status)
        write(rep, True)
        groups.abandon = bool(missing)  # a hung rank would keep destroy_process_group waiting
        return Outcome(True, assemble.exit_code_of(rep), rep, real)
    write(report([], status), False)
    t_sweep = time.monotonic()
    sweep = _sweep(torch, dist, groups, labels, place, backend, entry, opts)
    timings = receive_json(groups, range(1, place.world_size), time.monotonic() + opts.deadline_s, TAG_TIMINGS)
    per_rank = {0: sweep, **timings}
    rows = collectives.combine(per_rank)
    errors = {r: t.get("error") for r, t in per_rank.items() if isinstance(t, dict) and t.get("error")}
    silent = [r for r in range(place.world_size) if r not in per_rank]
    status = dict(status, state="ok", reason="", duration_s=round(time.monotonic() - t_sweep, 3))
    if errors or silent:
        status.update(state="incomplete" if rows else "failed",
                      reason="; ".join([f"rank {r}: {e}" for r, e in sorted(errors.items())]
                                       + ([f"no timings from rank(s) {silent}"] if silent else [])))
        groups.abandon = bool(silent)
    rep = report(rows, status)
    write(rep, True)
    return Outcome(True, assemble.exit_code_of(rep), rep, real)


def _why_missing(rank: int, named: Optional[set], barrier_error: str) -> str:
    """Why rank 0 has nothing from `rank`: late at the barrier, gone (crashed), or silent afterwards."""
    if named and rank in named:
        return "did not reach the barrier within the deadline"
    if named is None and barrier_error:
        return f"sent nothing: the barrier failed ({barrier_error[:160]}), a crashed rank closes its connections"
    return "reached the barrier but sent no results in time"


def _status_before(place: Place, missing: List[Dict[str, Any]], opts: Options, backend: str) -> Dict[str, Any]:
    """collectives_status before the sweep: `running`, or `skipped` with why (asked, one rank, a rank missing)."""
    device = "cuda" if backend == "nccl" else "cpu"
    base = {"backend": backend, "device": device, "plan": collectives.plan(device, opts.mode == "quick")}
    if not opts.collectives:
        return dict(base, state="skipped", reason="--no-collectives")
    if place.world_size == 1:
        return dict(base, state="skipped", reason="one rank: a collective needs two or more")
    if missing:
        return dict(base, state="skipped", reason="not every rank answered: a collective with a missing rank hangs")
    return dict(base, state="running", reason="the report was written before the collectives; if this stays, they "
                                              "did not finish (a hang or a crash during the sweep)")


def _sweep(torch, dist, groups: Groups, labels: Dict[int, str], place: Place, backend: str,
           entry: Dict[str, Any], opts: Options) -> Dict[str, Any]:
    """This rank's part of the collectives sweep, with nodes told apart by host label."""
    nodes: Dict[str, List[int]] = {}
    for r in range(place.world_size):
        nodes.setdefault(labels[r], []).append(r)
    device = "cuda" if backend == "nccl" else "cpu"
    if device == "cuda":
        device = f"cuda:{(entry.get('device') or {}).get('index') or 0}"
    p = collectives.plan("cuda" if backend == "nccl" else "cpu", opts.mode == "quick")
    return collectives.run_sweep(torch, dist, groups, collectives.scopes(nodes), place.rank, device, p)


__all__ = ["Options", "Outcome", "FleetError", "LaunchError", "TransportError", "run", "EXIT_UNKNOWN", "BACKENDS"]
