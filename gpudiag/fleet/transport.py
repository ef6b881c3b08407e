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
- `Inbox` / `send_block`: every rank's result in one fixed-size block (compressed JSON with a checksum),
  its receive posted by rank 0 before anyone measures: a rank's send completes as soon as it is made,
  whatever rank 0 is doing, and rank 0 sees which blocks have arrived by reading their headers, without
  waiting on anything. So at any moment (a stop signal included) rank 0 holds every result sent so far,
  and can tell a rank that is gone (its connection closed) from one that has not answered yet.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import json
import re
import struct
import threading
import time
import zlib
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


# ----------------------------------------------------------------------------- results in fixed blocks

BLOCK_BYTES = 8192  # a rank's result, compressed: a GPU rank's ~3.5 KB of JSON is ~1.2 KB
_HEAD = struct.Struct("<4sII")  # magic, payload length, CRC-32 of the payload
_MAGIC = b"gdf1"


class BlockTooLarge(ValueError):
    """A result that does not fit in one block even compressed."""


def pack(obj: Any, block: int = BLOCK_BYTES) -> bytes:
    """obj as one block's bytes: header (magic, length, CRC-32) and zlib-compressed JSON; BlockTooLarge when
    it does not fit in `block` bytes."""
    data = zlib.compress(encode(obj), 6)
    if _HEAD.size + len(data) > block:
        raise BlockTooLarge(f"{len(data)} bytes compressed")
    return _HEAD.pack(_MAGIC, len(data), zlib.crc32(data)) + data


def unpack(raw: bytes) -> Tuple[bool, Any]:
    """(True, object) for a whole block, (False, None) for one that has not (completely) arrived: a zeroed
    buffer, or bytes still landing (their CRC does not match yet)."""
    if len(raw) < _HEAD.size:
        return False, None
    magic, length, crc = _HEAD.unpack_from(raw)
    if magic != _MAGIC or _HEAD.size + length > len(raw):
        return False, None
    data = raw[_HEAD.size:_HEAD.size + length]
    if zlib.crc32(data) != crc:
        return False, None
    try:
        return True, decode(zlib.decompress(data))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError):
        return True, {"error": "sent an unreadable result"}


def send_block(groups: Groups, obj: Any, tag: int, dst: int = 0, block: int = BLOCK_BYTES) -> None:
    """Send obj to rank dst as one block (pack); dst posted its receive at the start (Inbox), so this returns
    at once. TransportError when dst is gone; BlockTooLarge when obj does not fit."""
    torch, dist = _torch()
    raw = pack(obj, block)
    buf = torch.zeros(block, dtype=torch.uint8)
    buf[:len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:
        dist.send(buf, dst=dst, group=groups.gather, tag=tag)
    except RuntimeError as exc:
        raise TransportError(f"rank {groups.rank} could not send its results to rank {dst}: "
                             f"{first_line(exc)}") from None


class Inbox:
    """Rank 0's receive of one block from each source, posted at once into one buffer.

    `poll()` reads the blocks that have arrived (from their headers: gloo writes into the posted buffer and
    its completion is seen only by waiting, which for a rank that never sends would take the whole
    deadline); `gone(ranks)` asks gloo which of the silent ones have closed their connection. Safe to call
    from two threads (the main one and the stop watchdog).
    """

    def __init__(self, groups: Groups, sources: Iterable[int], tag: int, block: int = BLOCK_BYTES):
        torch, dist = _torch()
        self.block = block
        self.sources = sorted(sources)
        self.index = {r: i for i, r in enumerate(self.sources)}
        self.buf = torch.zeros((max(len(self.sources), 1), block), dtype=torch.uint8)
        self.base = self.buf.data_ptr()
        self.lock = threading.Lock()
        self.got: Dict[int, Any] = {}
        self.closed: Dict[int, str] = {}  # rank -> why its receive failed (its connection closed)
        self.works: Dict[int, Any] = {}
        self.asked: Set[int] = set()  # ranks whose work was waited on
        for r in self.sources:
            work = _post(dist, self.buf[self.index[r]], r, groups, tag)
            if work is None:
                self.closed[r] = "its connection was already closed"
            else:
                self.works[r] = work

    def poll(self) -> Dict[int, Any]:
        """{rank: result} of every block that has arrived so far (a copy)."""
        with self.lock:
            for r in self.sources:
                if r in self.got or r in self.closed:
                    continue
                at = self.base + self.index[r] * self.block
                head = ctypes.string_at(at, _HEAD.size)
                if head[:4] != _MAGIC:
                    continue
                ok, obj = unpack(ctypes.string_at(at, self.block))
                if ok:
                    self.got[r] = obj
            return dict(self.got)

    def gone(self, ranks: Iterable[int], budget_s: float = 2.0) -> Dict[int, str]:
        """{rank: why} for those of `ranks` (silent ones) whose connection gloo has closed: asked by a 1 ms
        wait each, at most budget_s in all (the first that times out is not asked again). Also remembers them.

        A last word, not a poll: a wait that times out makes gloo close that rank's connection ("Application
        timeout caused pair closure"), and with it every later send from a rank that was only slow. Ask only
        when nothing more is expected from `ranks`."""
        t0 = time.monotonic()
        for r in ranks:
            if time.monotonic() - t0 > budget_s:
                break
            with self.lock:
                # A work is waited on once (a second wait only times out); it stays referenced, since gloo
                # may still write a late block into its buffer.
                work = None if r in self.asked else self.works.get(r)
                self.asked.add(r)
            if work is None:
                continue
            try:
                work.wait(_dt.timedelta(milliseconds=1))
            except RuntimeError as exc:
                # Anything but the wait's own timeout is the connection failing ("closed by peer", "reset").
                if "timed out" not in str(exc).lower():
                    with self.lock:
                        self.closed[r] = first_line(exc)
            # A block that did land meanwhile is still read by poll(): its bytes are in the buffer.
        with self.lock:
            return {r: self.closed[r] for r in ranks if r in self.closed}

    def settle(self) -> None:
        """Complete the receives of the blocks that arrived (each wait returns at once), so that leaving the
        process group later does not wait on them."""
        for r in list(self.poll()):
            with self.lock:
                work = None if r in self.asked else self.works.get(r)
                self.asked.add(r)
            if work is not None:
                _wait(work, 0.05)
