"""Moving results between ranks over torch.distributed, with a deadline that names who is missing.

Everything here travels over gloo groups on CPU tensors, never over the NCCL group under test, so
a broken fabric or a hung GPU still leaves a report (research anchors-2 B.8). Objects travel as
UTF-8 JSON in uint8 tensors: `all_gather_object`/`gather_object` pickle through numpy-free paths
only on some versions, and a CPU torch does not pull in numpy, so they are not used.

- `Groups.open(place, backend, deadline_s)`: the main group (collectives), a `gather` group
  (payloads), a `barrier` group kept apart because a failed monitored_barrier closes its pairs.
- `all_gather_json`: an object from every rank, when every rank is known to be alive.
- `monitored_barrier_missing`: the ranks that did not reach a point in time (gloo names them).
- `send_json` / `receive_json`: point to point, rank 0 waiting at most until a deadline.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from gpudiag.fleet.launcher import Place

_MISSING_RE = re.compile(r"Ranks? ([\d,\s]+) failed to pass monitoredBarrier")
# Peer addresses in gloo's messages ("closed by peer [10.1.2.3]:4014") name a node as well as its host name.
_ADDRESS_RE = re.compile(r"\[?\b\d{1,3}(?:\.\d{1,3}){3}\b\]?(?::\d+)?|\[[0-9A-Fa-f:]*:[0-9A-Fa-f:.%\w]*\](?::\d+)?")


class TransportError(RuntimeError):
    """A rank could not reach the others (rendezvous, a lost rank 0); the message is one line."""


def _torch():
    """torch and torch.distributed, imported on first use with NumPy's import warning silenced
    (fleet never imports torch at module level)."""
    import warnings

    # A CPU torch without numpy warns at import; it changes nothing here and would repeat per rank.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch
    import torch.distributed as dist

    return torch, dist


def encode(obj: Any) -> bytes:
    """JSON bytes of a result (NaN refused: a report never holds one)."""
    return json.dumps(obj, allow_nan=False, default=str, separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> Any:
    """The object encode() made, from its UTF-8 JSON bytes (UnicodeDecodeError or JSONDecodeError when garbled)."""
    return json.loads(raw.decode("utf-8"))


def parse_missing(message: str, world_size: int) -> Optional[Set[int]]:
    """The ranks a monitored_barrier error names ("Ranks 2, 3 failed to pass ..."), or None if it names none."""
    m = _MISSING_RE.search(message or "")
    if not m:
        return None
    ranks = {int(x) for x in re.findall(r"\d+", m.group(1))}
    return {r for r in ranks if 0 <= r < world_size} or None


@dataclass
class Groups:
    """The process groups of one fleet run (all None for a world of one)."""

    world_size: int
    rank: int
    backend: str
    main: Any = None
    gather: Any = None
    barrier: Any = None
    deadline_s: float = 60.0
    abandon: bool = False  # leave without destroy_process_group (a hung peer would keep it waiting)

    @classmethod
    def open(cls, place: Place, backend: str, deadline_s: float) -> "Groups":
        """Join the job (rendezvous) and make the side groups; TransportError if the ranks cannot meet."""
        if place.world_size == 1:
            return cls(1, 0, backend, deadline_s=deadline_s)
        torch, dist = _torch()
        timeout = _dt.timedelta(seconds=deadline_s)
        try:
            dist.init_process_group(backend, init_method=place.init_method, rank=place.rank,
                                    world_size=place.world_size, timeout=timeout)
            gather = dist.new_group(backend="gloo", timeout=timeout)
            barrier = dist.new_group(backend="gloo", timeout=timeout)
        except (RuntimeError, ValueError) as exc:
            raise TransportError(f"rank {place.rank} could not join the other {place.world_size - 1} rank(s) "
                                 f"({place.launcher}, backend {backend}): {first_line(exc)}") from None
        return cls(place.world_size, place.rank, backend, dist.group.WORLD, gather, barrier, deadline_s)

    @property
    def distributed(self) -> bool:
        """False for a world of one, which never touches torch.distributed."""
        return self.world_size > 1

    def new_group(self, ranks: List[int]) -> Any:
        """A subgroup of the main backend; every rank must call this in the same order."""
        _, dist = _torch()
        return dist.new_group(sorted(ranks), timeout=_dt.timedelta(seconds=self.deadline_s))

    def barrier_all(self) -> None:
        """Everyone in step (gloo); raises RuntimeError when a rank is gone or late past the deadline."""
        if self.distributed:
            _, dist = _torch()
            dist.barrier(group=self.gather)

    def close(self) -> None:
        """Leave the job; a peer that hangs must not keep this rank alive, so errors are ignored."""
        if not self.distributed:
            return
        _, dist = _torch()
        try:
            dist.destroy_process_group()
        except (RuntimeError, ValueError, AssertionError):
            pass


def first_line(exc: BaseException) -> str:
    """An exception as one short line (gloo messages carry paths and multi-line hints)."""
    text = str(exc).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text[0]) if text else type(exc).__name__
    return _ADDRESS_RE.sub("<peer>", line)[:300]


def all_gather_json(groups: Groups, obj: Any) -> List[Any]:
    """The object of every rank, in rank order (lengths first, then padded bytes)."""
    if not groups.distributed:
        return [obj]
    torch, dist = _torch()
    raw = encode(obj)
    n = groups.world_size
    lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(n)]
    dist.all_gather(lengths, torch.tensor([len(raw)], dtype=torch.int64), group=groups.gather)
    width = max(int(t.item()) for t in lengths)
    mine = torch.zeros(width, dtype=torch.uint8)
    mine[:len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    bufs = [torch.zeros(width, dtype=torch.uint8) for _ in range(n)]
    dist.all_gather(bufs, mine, group=groups.gather)
    return [decode(bytes(b[:int(length.item())].tolist())) for b, length in zip(bufs, lengths)]


def monitored_barrier_missing(groups: Groups, timeout_s: float) -> Tuple[Optional[Set[int]], str]:
    """(missing ranks, barrier error) at this point in time, waiting at most timeout_s.

    On rank 0: the ranks gloo names as not arrived (an empty set: all did), or None with the error when
    the barrier failed without naming anyone (a peer that crashed closes its connection instead).
    On other ranks: an empty set when the barrier passed, None when it failed (rank 0 names who).
    A failed barrier also leaves the barrier group's connections closed; it is not used again.
    """
    if not groups.distributed:
        return set(), ""
    _, dist = _torch()
    try:
        dist.monitored_barrier(group=groups.barrier, timeout=_dt.timedelta(seconds=timeout_s),
                               wait_all_ranks=True)
    except RuntimeError as exc:
        named = parse_missing(str(exc), groups.world_size) if groups.rank == 0 else None
        return named, "" if named else first_line(exc)
    return set(), ""


def send_json(groups: Groups, obj: Any, tag: int, dst: int = 0) -> None:
    """Send an object to rank dst (length, then bytes) under `tag`; returns once dst has received it."""
    torch, dist = _torch()
    raw = encode(obj)
    try:
        dist.send(torch.tensor([len(raw)], dtype=torch.int64), dst=dst, group=groups.gather, tag=tag)
        dist.send(torch.frombuffer(bytearray(raw), dtype=torch.uint8), dst=dst, group=groups.gather, tag=tag)
    except RuntimeError as exc:
        raise TransportError(f"rank {groups.rank} could not send its results to rank {dst}: "
                             f"{first_line(exc)}") from None


def receive_json(groups: Groups, sources: Iterable[int], deadline: float, tag: int) -> Dict[int, Any]:
    """On rank 0: {rank: object} sent under `tag` by each source before `deadline` (time.monotonic()).

    Every receive is posted at once, so one silent rank does not hold up the others' answers.
    A rank that does not answer in time is simply absent from the result; the caller names it.
    Its pending receive is abandoned: this process writes the report and leaves.
    """
    torch, dist = _torch()
    posted = {}
    for src in sources:
        length = torch.zeros(1, dtype=torch.int64)
        work = _post(dist, length, src, groups, tag)
        if work is not None:
            posted[src] = (length, work)
    bodies = {}
    for src, (length, work) in posted.items():
        if _wait(work, deadline - time.monotonic()):
            buf = torch.zeros(int(length.item()), dtype=torch.uint8)
            work = _post(dist, buf, src, groups, tag)
            if work is not None:
                bodies[src] = (buf, work)
    got: Dict[int, Any] = {}
    for src, (buf, work) in bodies.items():
        # The length arrived, so the body is on its way: allow it a moment past the deadline.
        if _wait(work, max(deadline - time.monotonic(), 2.0)):
            try:
                got[src] = decode(bytes(buf.tolist()))
            except (UnicodeDecodeError, json.JSONDecodeError):
                got[src] = {"error": f"rank {src} sent an unreadable result"}
    return got


def _post(dist: Any, buf: Any, src: int, groups: Groups, tag: int) -> Any:
    """A posted receive, or None when the peer is already gone (gloo refuses to post on a closed pair)."""
    try:
        return dist.irecv(buf, src=src, group=groups.gather, tag=tag)
    except RuntimeError:
        return None


def _wait(work: Any, seconds: float) -> bool:
    """True when a posted receive completes within `seconds` (at least a moment, for data already here)."""
    try:
        work.wait(_dt.timedelta(seconds=max(seconds, 0.05)))
    except RuntimeError:
        return False  # timed out, or the peer is gone
    return True
