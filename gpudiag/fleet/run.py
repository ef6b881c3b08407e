"""One rank's part in `gpudiag fleet`: join, measure, answer rank 0 by the deadline; rank 0 writes the report.

    join ─ exchange identities (host names, for naming and node groups); rank 0 posts a receive for every
    other rank's result ─ measure this rank ─ send the result (it lands in rank 0's posted buffer at once)
    ─ monitored_barrier(deadline): rank 0 learns who is missing ─ rank 0 reads what arrived
    ─ rank 0 writes the report (so a hang in the collectives still leaves one)
    ─ collectives sweep (only when every rank answered) ─ timings to rank 0 ─ final report.

A rank that does not answer in time is named in the report, which holds the ranks that did.
Non-zero ranks print nothing and exit 0 once their results are sent (3 if they cannot reach rank 0).

A stop signal (torchrun's or srun's SIGTERM when another rank failed, Ctrl-C) ends every rank within
seconds, also while it waits in native code (gpudiag.fleet.stop): a non-zero rank tells rank 0 where it
was stopped and exits; rank 0 writes the report of what it has (every result sent so far), naming each
other rank as stopped (its notice), gone before the stop (its connection closed without a notice: it died),
or silent, and exits with the report's code (critical: the run did not finish).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from gpudiag.fleet import assemble, collectives, measure
from gpudiag.fleet.analysis import EXIT_UNKNOWN
from gpudiag.fleet.launcher import LaunchError, Place, discover
from gpudiag.fleet.stop import HANDOVER_WAIT_S, StopWatch
from gpudiag.fleet.transport import (BlockTooLarge, Groups, Inbox, TransportError, all_gather_json,
                                     monitored_barrier_missing, pack, receive_json, send_block, send_json)
from gpudiag.platform import signals
from gpudiag.report.redact import redact
from gpudiag.units import fmt_bytes

TAG_RESULTS, TAG_TIMINGS, TAG_STOP = 101, 102, 103
STOP_BLOCK = 512  # a stop notice: {rank, signal, phase}
# After a stop signal, how long rank 0 waits for the other ranks' stop notices (each sends one at once).
NOTICE_WAIT_S = 5.0
# After a barrier that failed without naming anyone, how long rank 0 reads results before asking who is gone.
GONE_GRACE_S = 1.0
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


class Live:
    """What rank 0 shows while it waits (the CLI's live line on a terminal): start(text) with a function the
    line redraws from, stop() before anything else is printed. This one shows nothing."""

    def start(self, text: Callable[[], str]) -> None:
        """Begin showing text() (redrawn now and then)."""

    def stop(self) -> None:
        """Clear the line."""


@dataclass
class RunState:
    """What this rank knows so far: read by the stop watchdog (rank 0's report of what it has) and the
    live line, from another thread than the main one that fills it in."""

    place: Place
    opts: Options
    started: float
    created: str
    backend: str = ""
    phase: str = "joining the job"
    groups: Optional[Groups] = None
    idents: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    labels: Dict[int, str] = field(default_factory=dict)
    names: Dict[int, str] = field(default_factory=dict)
    own: Optional[Dict[str, Any]] = None  # rank 0's own entry, once measured
    inbox: Optional[Inbox] = None  # rank 0: every other rank's result
    notices: Optional[Inbox] = None  # rank 0: every other rank's stop notice
    barrier_named: Optional[set] = None
    barrier_error: str = ""
    barrier_early: bool = False  # the barrier ended before its deadline
    collectives_status: Optional[Dict[str, Any]] = None
    omp_note: Optional[Dict[str, Any]] = None
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: bool = False  # a stop signal's report is on its way

    def reported(self) -> List[int]:
        """The ranks whose results rank 0 has, itself included once measured."""
        got = sorted(self.inbox.poll()) if self.inbox else []
        return ([0] if self.own is not None else []) + got

    def status_line(self) -> str:
        """"gpudiag fleet: waiting at the barrier, 12 s; 6 of 8 ranks have reported (waiting for 3, 7)"."""
        world = self.place.world_size
        done = self.reported()
        waiting = [r for r in range(world) if r not in set(done)]
        line = (f"gpudiag fleet: {self.phase}, {time.monotonic() - self.started:.0f} s; {len(done)} of {world} "
                f"rank(s) have reported")
        if waiting and len(done):
            shown = ", ".join(map(str, waiting[:8])) + (f" and {len(waiting) - 8} more" if len(waiting) > 8 else "")
            line += f" (waiting for {shown})"
        return line


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


def _measure(torch: Any, place: Place, opts: Options, label: str, idents: Mapping[int, Mapping[str, Any]],
             omp_note: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """This rank's redacted entry; a measurement that raises becomes an entry with `error`, still sent.

    idents: every rank's identity; those on this host (same host name) are the job's ranks whose CPU
    on this rank's cores counts as the job's own, not as other programs'. omp_note: set when gpudiag set
    OMP_NUM_THREADS (a Slurm CPU rank), recorded in the entry's device block."""
    me = idents.get(place.rank) or {}
    job = {r: (i["pid"], i.get("started")) for r, i in idents.items()
           if r != place.rank and i.get("hostname") == me.get("hostname") and isinstance(i.get("pid"), int)}
    try:
        entry = measure.measure_rank(torch, place, quick=opts.mode == "quick", job_ranks=job)
    except MEASURE_ERRORS as exc:
        entry = measure.failed_entry(place, f"{type(exc).__name__}: {str(exc)[:300]}")
    entry["host"] = label
    if omp_note and isinstance(entry.get("device"), dict) and entry["device"].get("kind") == "cpu":
        entry["device"]["omp_num_threads"] = dict(omp_note)
    # Redacted here, with this rank's own identity (user, home, host name), before it leaves the machine.
    return redact(entry, identify=opts.identify)


def fit(entry: Dict[str, Any]) -> Dict[str, Any]:
    """The entry, made to fit one result block (transport.pack): first without the preflight checks'
    messages, then without the driver facts; an entry that still does not fit says so as its error."""
    try:
        pack(entry)
        return entry
    except BlockTooLarge:
        pass
    slim = dict(entry)
    pf = slim.get("preflight")
    if isinstance(pf, dict):
        slim["preflight"] = dict(pf, checks=[{k: v for k, v in c.items() if k != "message"}
                                             for c in pf.get("checks") or [] if isinstance(c, dict)])
    for drop in (None, "driver"):
        if drop:
            slim[drop] = {"reason": "left out: this rank's result was too large to send"}
        try:
            pack(slim)
            return slim
        except BlockTooLarge:
            continue
    return measure.failed_entry_of(entry, "its result was too large to send to rank 0 (over "
                                          f"{fmt_bytes(len(str(entry)))})")


def _slurm_omp(place: Place, environ: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    """OMP_NUM_THREADS=1 for the ranks of a Slurm step where the user has not set it, as torchrun sets it for
    its workers (several CPU ranks of one node, each with a thread per core, would crowd each other out);
    set before torch is imported. Returns the note the report carries, None where nothing was set."""
    if place.launcher != "slurm" or environ.get("OMP_NUM_THREADS"):
        return None
    if environ is os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
    return {"value": 1, "set_by": "gpudiag: OMP_NUM_THREADS was not set in this Slurm step, so it was set to 1 "
                                  "as torchrun does for its workers"}


def run(opts: Options, write: Callable[[Dict[str, Any], bool], None],
        environ: Optional[Mapping[str, str]] = None,
        on_stop: Optional[Callable[[Dict[str, Any], Dict[str, str]], None]] = None,
        live: Optional[Live] = None) -> Outcome:
    """Play this rank's part; on rank 0 call write(report, final) once before the collectives and once at the end.

    on_stop(report, real names): on rank 0, after a stop signal, once write(report, True) has written the
    report of what it had (the CLI prints its summary there); the process then ends with the report's code.
    live: what rank 0 shows while it waits (Live). Raises LaunchError (bad launcher variables), FleetError and
    TransportError (exit 3 in the CLI).
    """
    environ = os.environ if environ is None else environ
    state = RunState(discover(environ), opts, time.monotonic(), assemble.contract.utc_now_iso())
    place, live = state.place, live or Live()
    state.omp_note = _slurm_omp(place, environ)
    torch, dist = _import_torch()
    if state.omp_note and torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # torch was imported before (a library caller): the variable came too late
    state.backend = choose_backend(opts.backend, torch, dist)
    if state.backend == "nccl":  # NCCL binds each rank to the current device: choose it before joining
        torch.cuda.set_device(place.local_rank % torch.cuda.device_count())
    with StopWatch(lambda signum: _stopped(state, signum, write, on_stop, live)) as watch:
        # The main thread may meet the signal first (running Python: Interrupted): it hands over to the
        # watchdog's work, which ends the process (before any clean-up that could wait on a gone rank).
        try:
            state.groups = Groups.open(place, state.backend, opts.deadline_s)
        except signals.Interrupted as exc:
            watch.handle(exc.signum)
        try:
            return _run(torch, dist, state, write, live)
        except signals.Interrupted as exc:
            watch.handle(exc.signum)
            raise
        finally:
            live.stop()
            if state.groups.distributed and not state.groups.abandon:
                state.groups.close()


def _run(torch, dist, state: RunState, write, live: Live) -> Outcome:
    """The phases after joining (see the module docstring); rank 0 gathers and reports, the others send."""
    place, opts, groups = state.place, state.opts, state.groups
    assert groups is not None
    idents = {i["rank"]: i for i in all_gather_json(groups, measure.identity(place))}
    names = {r: i["hostname"] for r, i in idents.items()}
    labels = {r: measure.host_label(h, opts.identify) for r, h in names.items()}
    state.idents, state.names, state.labels = idents, names, labels
    if place.rank == 0 and groups.distributed:
        # Posted before anyone measures: each rank's result lands here the moment it is sent.
        state.inbox = Inbox(groups, range(1, place.world_size), TAG_RESULTS)
        state.notices = Inbox(groups, range(1, place.world_size), TAG_STOP, block=STOP_BLOCK)
    if place.rank == 0:
        live.start(state.status_line)
    state.phase = "measuring"
    entry = _measure(torch, place, opts, labels[place.rank], idents, state.omp_note)

    if place.rank != 0:
        state.phase = "sending its results"
        send_block(groups, fit(entry), TAG_RESULTS)
        state.phase = "waiting at the barrier"
        missing_set, _ = monitored_barrier_missing(groups, opts.deadline_s)
        if missing_set == set() and opts.collectives:
            state.phase = "in the collectives"
            sweep = _sweep(torch, dist, groups, labels, place, state.backend, entry, opts)
            send_json(groups, sweep, TAG_TIMINGS)
        return Outcome(reporter=False, exit_code=0)

    state.own = entry
    state.phase = "waiting at the barrier"
    t_barrier = time.monotonic()
    missing_set, barrier_error = monitored_barrier_missing(groups, opts.deadline_s)
    # gloo names a rank whose connection closed at the barrier as one that did not pass it in time.
    early = time.monotonic() - t_barrier < 0.9 * opts.deadline_s
    state.barrier_named, state.barrier_error, state.barrier_early = missing_set, barrier_error, early
    state.phase = "reading the results"
    got = _collect(state, missing_set, barrier_error, time.monotonic() + opts.deadline_s)
    ranks = [entry] + [got[r] for r in sorted(got)]
    gone = state.inbox.closed if state.inbox else {}
    missing = [{"rank": r, "host": labels.get(r), "local_rank": idents.get(r, {}).get("local_rank"),
                "reason": _why_missing(r, missing_set, barrier_error, gone.get(r), early)}
               for r in range(1, place.world_size) if r not in got]
    real = {labels[r]: names[r] for r in names}

    def report(rows: List[Dict[str, Any]], status: Dict[str, Any]) -> Dict[str, Any]:
        """The fleet report over the ranks gathered, with these collective rows and status: written
        once before the sweep (so a hang still leaves one) and once after."""
        return assemble.build([dict(e) for e in ranks], missing, rows, status, _meta(state), mode=opts.mode,
                              created_at=state.created, duration_s=time.monotonic() - state.started,
                              identify=opts.identify, other_hostnames=names.values())

    status = _status_before(place, missing, opts, state.backend)
    if status["state"] != "running":
        rep = report([], status)
        _write(state, write, rep, True)
        groups.abandon = bool(missing)  # a hung rank would keep destroy_process_group waiting
        return Outcome(True, assemble.exit_code_of(rep), rep, real)
    _write(state, write, report([], status), False)
    state.phase, state.collectives_status = "in the collectives", status
    t_sweep = time.monotonic()
    sweep = _sweep(torch, dist, groups, labels, place, state.backend, entry, opts)
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
    state.phase = "writing the report"
    _write(state, write, rep, True)
    return Outcome(True, assemble.exit_code_of(rep), rep, real)


def _write(state: RunState, write: Callable[[Dict[str, Any], bool], None], rep: Dict[str, Any], final: bool) -> None:
    """write(rep, final) under the state's write lock, which a stop signal's report takes too (one writer
    at a time; the stop's report, written last, is the one left)."""
    with state.write_lock:
        if not state.stopping:
            write(rep, final)
            return
    # A stop signal's report is being written: that one is the last, and the watchdog ends the process.
    threading.Event().wait(HANDOVER_WAIT_S)


def _meta(state: RunState) -> Dict[str, Any]:
    """What the report's data holds as it is: launcher, backend, mode, deadline (and OMP_NUM_THREADS when
    gpudiag set it)."""
    meta = {"launcher": state.place.to_dict(), "backend": state.backend, "mode": state.opts.mode,
            "deadline_s": state.opts.deadline_s}
    if state.omp_note:
        meta["launcher"]["omp_num_threads"] = dict(state.omp_note)
    return meta


def _collect(state: RunState, named: Optional[set], barrier_error: str, deadline: float) -> Dict[int, Any]:
    """On rank 0: {rank: entry} of the other ranks, read from the inbox until every rank expected has sent
    (those the barrier did not name), one is found gone, or the deadline passes."""
    inbox = state.inbox
    if inbox is None:
        return {}
    expected = [r for r in inbox.sources if r not in (named or set())]
    asked = False
    # Results sent before the barrier are in flight at most briefly; asking whether a rank is gone ends a
    # live rank's connection (Inbox.gone), so it waits for them first.
    ask_after = time.monotonic() + GONE_GRACE_S
    while True:
        got = inbox.poll()
        waiting = [r for r in expected if r not in got and r not in inbox.closed]
        if not waiting or time.monotonic() >= deadline:
            break
        if named is None and barrier_error and not asked and time.monotonic() >= ask_after:
            inbox.gone(waiting)  # the barrier failed unnamed: a crashed rank closed its connection
            asked = True
            continue
        time.sleep(0.05)
    inbox.settle()
    return {r: _entry_of(r, e, state) for r, e in got.items()}


def _entry_of(rank: int, entry: Any, state: RunState) -> Dict[str, Any]:
    """A received result as a rank entry: its rank and host are the ones rank 0 knows it by."""
    e = dict(entry) if isinstance(entry, dict) else {"error": "sent an unreadable result"}
    e["rank"] = rank
    e.setdefault("host", state.labels.get(rank))
    e.setdefault("local_rank", (state.idents.get(rank) or {}).get("local_rank"))
    return e


def _why_missing(rank: int, named: Optional[set], barrier_error: str, closed: Optional[str] = None,
                 early: bool = False) -> str:
    """Why rank 0 has nothing from `rank`: late at the barrier, gone (crashed), or silent afterwards. early: the
    barrier ended before its deadline (a rank it names then left: its connection closed)."""
    if named and rank in named:
        if early:
            return "left the job before the barrier: its connection closed while the others waited there (it " \
                   "crashed or was killed)"
        return "did not reach the barrier within the deadline"
    if closed:
        return f"sent nothing: its connection closed ({closed[:160]}): it crashed or was killed"
    if named is None and barrier_error:
        return f"sent nothing: the barrier failed ({barrier_error[:160]}), a crashed rank closes its connections"
    return "reached the barrier but sent no results in time"


# ----------------------------------------------------------------------------- a stop signal

def _stopped(state: RunState, signum: int, write, on_stop, live: Live) -> int:
    """The stop watchdog's work (gpudiag.fleet.stop): a non-zero rank tells rank 0 where it was stopped; rank 0
    writes the report of what it has and returns its exit code."""
    place = state.place
    state.stopping = True
    if place.rank != 0:
        groups = state.groups
        if groups is not None and groups.distributed and state.idents:
            try:
                send_block(groups, {"rank": place.rank, "signal": signals.label(signum), "phase": state.phase},
                           TAG_STOP, block=STOP_BLOCK)
            except (TransportError, RuntimeError, ValueError):
                pass  # rank 0 is gone too: nothing to tell
        return signals.exit_code(signum)
    live.stop()
    rep = stop_report(state, signum)
    real = {state.labels[r]: state.names[r] for r in state.names if r in state.labels}
    with state.write_lock:
        write(rep, True)
    if on_stop is not None:
        on_stop(rep, real)
    return assemble.exit_code_of(rep)


def stop_report(state: RunState, signum: int) -> Dict[str, Any]:
    """Rank 0's report when a stop signal ends the run: every result it has, and each other rank named as
    stopped (its stop notice says where), gone before the stop (its connection closed and no notice came:
    it died), never joined, or silent."""
    place, opts = state.place, state.opts
    sig = signals.label(signum)
    got = {r: _entry_of(r, e, state) for r, e in (state.inbox.poll() if state.inbox else {}).items()}
    notices = _notices(state, [r for r in range(1, place.world_size) if r not in got])
    gone = state.inbox.closed if state.inbox else {}
    ranks = ([state.own] if state.own is not None else []) + [got[r] for r in sorted(got)]
    missing = []
    for r in range(place.world_size):
        if (r == 0 and state.own is not None) or r in got:
            continue
        ident = state.idents.get(r) or {}
        if r == 0:
            why = f"rank 0 (writing this report) was stopped by {sig} while {state.phase}, before its own figures"
        elif not state.idents:
            why = f"the job had not assembled: {sig} came during the rendezvous (rank 0 {state.phase})"
        elif r in notices:
            n = notices[r]
            why = (f"stopped by {n.get('signal') or sig} while {n.get('phase') or 'running'}, before it sent its "
                   "results")
        elif r in gone:
            why = f"gone before the stop: its connection closed ({gone[r][:120]}) and it sent no stop notice: it died or was killed"
        elif state.barrier_named and r in state.barrier_named:
            why = _why_missing(r, state.barrier_named, state.barrier_error, None, state.barrier_early)
        else:
            why = (f"no result and no stop notice within {NOTICE_WAIT_S:g} s of {sig}: hung, or not stopped with "
                   "the others")
        missing.append({"rank": r, "host": state.labels.get(r), "local_rank": ident.get("local_rank"),
                        "reason": why, "state": "stopped" if r == 0 else _missing_state(r, notices, gone)})
    status = dict(state.collectives_status or {"backend": state.backend},
                  state="failed" if state.collectives_status else "skipped",
                  reason=(f"stopped by {sig} during the collectives sweep" if state.collectives_status else
                          f"stopped by {sig} before the collectives"))
    stopped = {"signal": sig, "phase": state.phase, "after_s": round(time.monotonic() - state.started, 3)}
    return assemble.build([dict(e) for e in ranks], missing, [], status, _meta(state), mode=opts.mode,
                          created_at=state.created, duration_s=time.monotonic() - state.started,
                          identify=opts.identify, other_hostnames=state.names.values(), stopped=stopped)


def _missing_state(rank: int, notices: Mapping[int, Any], gone: Mapping[int, str]) -> str:
    """"stopped", "gone" or "silent": what a missing rank's reason says, as a word a script can read."""
    return "stopped" if rank in notices else "gone" if rank in gone else "silent"


def _notices(state: RunState, silent: List[int]) -> Dict[int, Dict[str, Any]]:
    """{rank: stop notice} of the silent ranks, waiting at most NOTICE_WAIT_S for them (every stopped rank sends
    one at once); only then are the silent ranks without one asked whether their connection closed, since
    asking a live rank ends its connection (Inbox.gone) and with it a notice still on its way."""
    if state.notices is None or not silent:
        return {}
    deadline = time.monotonic() + NOTICE_WAIT_S
    while True:
        got = state.notices.poll()
        left = [r for r in silent if r not in got]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if left and state.inbox is not None:
        state.inbox.gone(left, budget_s=2.0)  # a rank that died before the stop: its connection closed
    return {r: n for r, n in got.items() if r in silent and isinstance(n, dict)}


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


__all__ = ["Options", "Outcome", "Live", "FleetError", "LaunchError", "TransportError", "run", "stop_report", "EXIT_UNKNOWN",
           "BACKENDS"]
