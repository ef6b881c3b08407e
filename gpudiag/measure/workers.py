"""A small pool of long-lived spawned worker processes, for measuring "N processes" honestly.

Why not ProcessPoolExecutor: a measurement needs every worker to start its share of the work at
the same instant, its own clock around the work, and to pay process start-up (spawn + import
torch) once, not once per measurement. So:

    from gpudiag.measure.workers import WorkerPool

    with WorkerPool(2, initializer=mymod.setup, initargs=(True,)) as pool:
        pool.init_results          # what `initializer` returned in each worker, by worker index
        pool.startup               # per worker: {spawn_s, init_s, ready_s} (see below)
        values = pool.run_all(mymod.work, [(n,), (n,)])        # worker i runs work(*args[i])
        timed = pool.run_timed(mymod.work, [(n,)] * 2)          # values + wall_s + task_s
        pool.grow(4)               # start two more workers (same initializer), wait until ready

Contract:
- Workers are started with the `spawn` start method by default (CUDA does not survive fork); pass
  `ctx=multiprocessing.get_context(...)` to choose another. `fn`, its arguments and results must
  be picklable; `fn` must be a module-level function importable in the worker.
- `fork_when=gpudiag.platform.fork_is_safe` forks each worker instead whenever that says a fork is safe
  at its start (Linux, this process runs one thread and has loaded no GPU driver), else spawns it: a
  probe process forked from the start server (gpudiag.startserver) has torch imported, and a forked
  worker starts in milliseconds without importing it again. A forked worker closes its copies of the
  parent's ends of the other workers' pipes, so each worker still sees the parent go away.
- `run_all`/`run_timed` use the first `len(args_per_worker)` workers. Each worker receives its
  task, reports "armed", and waits on a shared start event; the parent sets the event once all are
  armed, so all begin together. `wall_s` is measured in the parent from that release to the last
  result; `task_s[i]` is measured inside worker i around `fn` alone (no IPC).
- Results come back in worker order. An exception inside `fn` is re-raised in the parent as
  `WorkerError` (naming the worker, the exception type, its message; `.remote_traceback` holds the
  traceback) after every worker of that call has answered; the pool stays usable.
- A worker that dies (e.g. SIGKILL from the OOM killer) raises `WorkerDied`; a call that exceeds
  `timeout_s` raises `WorkerTimeout`. In both cases the whole pool is closed first, because the
  surviving workers may be mid-task.
- `close()` (also on leaving the `with` block, on exceptions, and when the pool is garbage
  collected) asks workers to stop, then terminates and finally kills any that do not, and then
  the processes the workers had started (found before the workers stop), if still running.
- State: the initializer may keep objects (a model, tensors) in module globals of its own module;
  every later task in that worker sees them. Workers exit by themselves when the parent dies.
- `startup[i]`: `spawn_s` = parent's `start()` to the worker's entry point (interpreter start,
  unpickling, imports of this module; a fork's few milliseconds), `init_s` = the initializer's own run
  time, `ready_s` = `start()` to the ready message arriving in the parent, `method` = "spawn" or "fork".
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

_STOP = b"stop"
_DEFAULT_START_TIMEOUT_S = 120.0


class WorkerError(RuntimeError):
    """A worker raised inside the initializer or the task function."""

    def __init__(self, message: str, index: Optional[int] = None, remote_traceback: str = ""):
        super().__init__(message)
        self.index = index
        self.remote_traceback = remote_traceback


class WorkerDied(WorkerError):
    """A worker process ended without answering (killed, crashed, exited)."""


class WorkerTimeout(WorkerError):
    """A start or a call took longer than its timeout."""


@dataclass
class Timed:
    """What run_timed returns: each worker's value (worker order), the parent's wall seconds from the release to the
    last result, and each worker's own seconds around fn (no IPC), to tell work from coordination."""

    values: List[Any]  # fn's return value per worker, in worker order
    wall_s: float  # parent: start event released -> last result received
    task_s: List[float]  # per worker, measured inside the worker around fn


def _describe_exit(code: Optional[int]) -> str:
    """How a worker's exit code reads in an error ("was killed by signal 9 (SIGKILL - likely the out-of-memory
    killer)"...): the commonest way a worker dies is the OOM killer, and the user should be told so."""
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by signal {-code}" + (" (SIGKILL - likely the out-of-memory killer)" if code == -9 else "")
    return f"exited with code {code}"


def _error_payload(exc: BaseException) -> tuple:
    """The ("error", "Type: message", traceback text) message a worker sends the parent, which raises it as
    WorkerError: the exception object itself may not pickle."""
    return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())


def _worker_main(index: int, conn, go, initializer, initargs, inherited=()) -> None:
    """Entry point of one worker: initialise once, then serve tasks until told to stop. `inherited`: the parent's
    ends of the pipes (this worker's and the others'), which a forked worker holds copies of; closed, or no worker
    would see the parent go away while this one lives."""
    for other in inherited:
        try:
            other.close()
        except OSError:
            pass
    try:
        stopped = _serve(conn, go, initializer, initargs)
    except (EOFError, OSError):  # the parent went away mid-conversation: nothing left to report to
        return
    if stopped:
        # Asked to stop: leave at once. Interpreter teardown (torch's included, ~0.3 s) would only
        # delay the parent's close(); a worker holds no files or locks of its own to flush.
        try:
            conn.close()
            for stream in (sys.stdout, sys.stderr):  # what a step printed still reaches the probe's log
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError):
            pass
        os._exit(0)


def _serve(conn, go, initializer, initargs) -> bool:
    """Serve tasks; True when the parent asked to stop, False when it went away."""
    entered_at = time.time()
    t0 = time.perf_counter()
    parent_pid = os.getppid()
    try:
        init_result = initializer(*initargs) if initializer is not None else None
    except BaseException as exc:  # reported to the parent, which raises WorkerError
        conn.send(_error_payload(exc))
        return False
    conn.send(("ready", {"entered_at": entered_at, "init_s": time.perf_counter() - t0, "pid": os.getpid()},
               init_result))
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return False  # parent went away
        if raw == _STOP:
            return True
        try:
            fn, args = pickle.loads(raw)
        except BaseException as exc:  # worker side: unpickling imports fn's module, which can raise anything
            conn.send(_error_payload(exc))
            continue
        conn.send(("armed",))
        while not go.wait(1.0):  # a parent killed before releasing us must not leave us waiting forever
            if _parent_gone(parent_pid):
                return False
        start = time.perf_counter()
        try:
            value = fn(*args)
        except BaseException as exc:  # worker side: fn's failure (SystemExit included) goes to the parent as WorkerError
            conn.send(_error_payload(exc))
            continue
        elapsed = time.perf_counter() - start
        try:
            conn.send(("done", value, elapsed))
        except BaseException as exc:  # an unpicklable result
            conn.send(_error_payload(exc))


def _parent_gone(parent_pid: int) -> bool:
    """True once the parent has ended: re-parented (POSIX), or its sentinel says so. A forked worker cannot rely on
    the sentinel alone: a sibling forked after it holds a copy of the sentinel pipe's other end. No OS test needed
    (measure sits below platform): Windows never re-parents, and its getppid() keeps the creator's id."""
    if os.getppid() != parent_pid:
        return True
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


class _Worker:
    """The parent's record of one worker: its process, its end of the pipe, start times, start-up figures,
    initializer result and whether it said ready."""

    __slots__ = ("index", "proc", "conn", "started_at", "startup", "init_result", "ready", "method")

    def __init__(self, index, proc, conn, started_at, method="spawn"):
        self.index, self.proc, self.conn, self.started_at, self.method = index, proc, conn, started_at, method
        self.startup: Optional[dict] = None
        self.init_result: Any = None
        self.ready = False


def _descendants(workers: List[_Worker]) -> list:
    """psutil.Process of every process the workers started (a user's step may start some), found before the
    workers stop: once a worker is gone its children are re-parented and can no longer be found from here."""
    import psutil

    out = []
    for w in workers:
        try:
            out.extend(psutil.Process(w.proc.pid).children(recursive=True))
        except (psutil.Error, ValueError):  # the worker already ended (or never started): nothing to find
            continue
    return out


def _stop_processes(procs: list, grace_s: float = 1.0) -> None:
    """Terminate, then kill, what is still running of `procs` (psutil.Process objects), counting the CPU time of
    each as gpudiag's own (gpudiag.measure.load): init, not this process, reaps them."""
    import psutil

    from gpudiag.measure.load import add_ended_elsewhere

    me = os.getpid()
    alive = []
    for p in procs:
        try:
            if p.ppid() != me:  # re-parented away: its time would be lost to every CpuMeter
                c = p.cpu_times()
                add_ended_elsewhere(c.user + c.system + c.children_user + c.children_system)
            p.terminate()  # psutil checks the pid still names the same process
            alive.append(p)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace_s)


def _shutdown(workers: List[_Worker], grace_s: float = 2.0) -> None:
    """Stop every worker (ask, then terminate, then kill) and whatever the workers started. Safe to call twice."""
    started = _descendants(workers)
    for w in workers:
        try:
            w.conn.send_bytes(_STOP)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + grace_s
    for w in workers:
        w.proc.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.proc.is_alive():
            w.proc.terminate()
    for w in workers:
        w.proc.join(1.0)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(1.0)
    for w in workers:
        try:
            w.conn.close()
        except OSError:
            pass
    workers.clear()
    if started:  # a hung step's own child processes must not run on (and load the machine) after its worker
        _stop_processes(started)


class WorkerPool:
    """Long-lived spawned workers with a common start line; see the module docstring."""

    def __init__(self, n: int = 0, initializer: Optional[Callable[..., Any]] = None, initargs: Sequence = (),
                 ctx=None, start_timeout_s: float = _DEFAULT_START_TIMEOUT_S, name: str = "gpudiag-worker",
                 fork_when: Optional[Callable[[], bool]] = None):
        self._fork_when = fork_when if ctx is None else None
        self._ctx = ctx if ctx is not None else multiprocessing.get_context("spawn")
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._name = name
        self._go = self._ctx.Event()
        self._workers: List[_Worker] = []
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        if n:
            self.grow(n, timeout_s=start_timeout_s)

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, n: int) -> None:
        """Start workers until there are `n` (without waiting for them to be ready)."""
        self._check_open()
        while len(self._workers) < n:
            index = len(self._workers)
            method = "fork" if self._fork_when is not None and self._fork_when() else "spawn"
            ctx = multiprocessing.get_context("fork") if method == "fork" else self._ctx
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            # A fork copies the parent's end of this worker's pipe and of the others': closed in the worker.
            inherited = [w.conn for w in self._workers] + [parent_conn] if method == "fork" else []
            proc = ctx.Process(target=_worker_main, name=f"{self._name}-{index}",
                               args=(index, child_conn, self._go, self._initializer, self._initargs, inherited),
                               daemon=True)
            started_at = time.time()
            started_pc = time.perf_counter()
            try:
                proc.start()
            finally:
                child_conn.close()
            self._workers.append(_Worker(index, proc, parent_conn, (started_at, started_pc), method))

    def wait_ready(self, timeout_s: float = _DEFAULT_START_TIMEOUT_S) -> None:
        """Wait until every started worker has run its initializer; raise (and close) if one fails."""
        deadline = time.monotonic() + timeout_s
        pending = [w for w in self._workers if not w.ready]
        try:
            while pending:
                msg_from = self._wait_any(pending, deadline, "starting")
                for w, msg in msg_from:
                    if msg[0] == "ready":
                        info, w.init_result = msg[1], msg[2]
                        now_pc = time.perf_counter()
                        w.startup = {"spawn_s": max(0.0, info["entered_at"] - w.started_at[0]),
                                     "init_s": info["init_s"], "ready_s": now_pc - w.started_at[1],
                                     "method": w.method}
                        w.ready = True
                    else:
                        raise WorkerError(f"worker {w.index} failed to start: {msg[1]}", w.index, msg[2])
                    pending.remove(w)
        except BaseException:  # cleanup and re-raise: no worker outlives a failed start, Ctrl-C included
            self.close()
            raise

    def grow(self, n: int, timeout_s: float = _DEFAULT_START_TIMEOUT_S) -> None:
        """Start workers until there are `n`, and wait until all are ready."""
        self.start(n)
        self.wait_ready(timeout_s)

    def close(self) -> None:
        """Stop all workers (ask, terminate, kill). Idempotent."""
        self._closed = True
        _shutdown(self._workers)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- facts ----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of workers started (ready or not)."""
        return len(self._workers)

    @property
    def pids(self) -> List[int]:
        """OS process ids of the workers: their CPU time is the measurement's own, never "other load"."""
        return [w.proc.pid for w in self._workers]

    @property
    def init_results(self) -> List[Any]:
        """What the initializer returned in each worker, by worker index (None until that worker is ready)."""
        return [w.init_result for w in self._workers]

    @property
    def startup(self) -> List[Optional[dict]]:
        """Per worker {spawn_s, init_s, ready_s} in seconds (None until ready): start-up is reported apart from the
        measured rates, which exclude it."""
        return [w.startup for w in self._workers]

    # -- work -----------------------------------------------------------------------------------
    def run_all(self, fn: Callable[..., Any], args_per_worker: Sequence[Sequence[Any]],
                timeout_s: Optional[float] = None) -> List[Any]:
        """Worker i runs fn(*args_per_worker[i]), all starting together; returns values in worker order."""
        return self.run_timed(fn, args_per_worker, timeout_s).values

    def run_timed(self, fn: Callable[..., Any], args_per_worker: Sequence[Sequence[Any]],
                  timeout_s: Optional[float] = None) -> Timed:
        """Like run_all, plus the parent's wall time and each worker's own time around fn."""
        self._check_open()
        k = len(args_per_worker)
        if k > len(self._workers):
            raise ValueError(f"{k} tasks for a pool of {len(self._workers)} workers; grow() it first")
        if any(not w.ready for w in self._workers[:k]):
            raise RuntimeError("workers not ready: call wait_ready() after start()")
        payloads = [pickle.dumps((fn, tuple(a))) for a in args_per_worker]  # fail here, before any send
        workers = self._workers[:k]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        errors: dict = {}
        values: List[Any] = [None] * k
        task_s = [0.0] * k
        try:
            self._go.clear()
            for w, payload in zip(workers, payloads):
                w.conn.send_bytes(payload)
            waiting = list(workers)
            while waiting:  # phase 1: everyone armed (or failed to unpickle the task)
                for w, msg in self._wait_any(waiting, deadline, "arming"):
                    if msg[0] == "error":
                        errors[w.index] = msg
                    waiting.remove(w)
            t0 = time.perf_counter()
            self._go.set()
            waiting = [w for w in workers if w.index not in errors]
            while waiting:  # phase 2: results
                for w, msg in self._wait_any(waiting, deadline, "running"):
                    if msg[0] == "done":
                        values[w.index], task_s[w.index] = msg[1], msg[2]
                    else:
                        errors[w.index] = msg
                    waiting.remove(w)
            wall = time.perf_counter() - t0
        except (WorkerDied, WorkerTimeout):
            self.close()
            raise
        except BaseException:  # cleanup and re-raise
            self.close()  # e.g. Ctrl-C mid-call: workers are in an unknown state
            raise
        if errors:
            i = min(errors)
            raise WorkerError(f"worker {i} raised {errors[i][1]}", i, errors[i][2])
        return Timed(values, wall, task_s)

    # -- internals --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        """RuntimeError when the pool is closed: a call on a closed pool must fail clearly rather than hang on a pipe."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")

    def _wait_any(self, waiting: List[_Worker], deadline: Optional[float], phase: str):
        """Block until at least one waiting worker has a message; [(worker, msg)]. Raises on death/timeout."""
        by_conn = {w.conn: w for w in waiting}
        by_sentinel = {w.proc.sentinel: w for w in waiting}
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = multiprocessing.connection.wait(list(by_conn) + list(by_sentinel), timeout)
        if not ready:
            raise WorkerTimeout(f"timed out while workers were {phase}")
        out = []
        for obj in ready:
            if obj in by_conn:
                w = by_conn[obj]
                try:
                    out.append((w, w.conn.recv()))
                except (EOFError, OSError):
                    w.proc.join(1.0)
                    raise WorkerDied(f"worker {w.index} {_describe_exit(w.proc.exitcode)} while {phase}", w.index) from None
        if not out:  # only sentinels: a worker ended; it may still have left a message behind
            for obj in ready:
                w = by_sentinel[obj]
                if w.conn.poll(0):
                    try:
                        out.append((w, w.conn.recv()))
                        continue
                    except (EOFError, OSError):
                        pass
                w.proc.join(1.0)
                raise WorkerDied(f"worker {w.index} {_describe_exit(w.proc.exitcode)} while {phase}", w.index)
        return out


class ThreadTeam:
    """n long-lived threads, released together for each run: what a ThreadPoolExecutor kept across a loop's
    iterations does, so starting the threads - and each new thread's first pass through the work, which sets
    up its allocator arena and thread-local state - is paid once, as the worker processes' start-up is,
    instead of in every timed run (run_threads). On issue 22's step that per-run cost held threads at 1.64x
    of the one-thread loop with 4 cycles per run, against 1.87x with 16.

        team = ThreadTeam(2)
        wall_s = team.run(fn, [(a,), (b,)], finish=sync, timeout_s=10)   # fn(a) and fn(b) side by side
        team.close()

    A run that does not finish within timeout_s raises TimeoutError; its threads cannot be stopped from
    outside, so they are left behind (daemon threads, they end with the process) and the team refuses
    further runs. A thread's exception is re-raised by run() once every thread has finished. Threads are
    named `<name>-<i>`.
    """

    def __init__(self, n: int, name: str = "gpudiag-thread"):
        self.size = n
        self._cv = threading.Condition()
        self._generation = 0
        self._task: Optional[tuple] = None  # (fn, args_list) of the current run; None: closed
        self._finished = 0
        self._errors: List[BaseException] = []
        self._broken = False
        self._open = True
        self._threads = [threading.Thread(target=self._serve, args=(i,), daemon=True, name=f"{name}-{i}")
                         for i in range(n)]
        for t in self._threads:
            t.start()

    def _serve(self, i: int) -> None:
        seen = 0
        while True:
            with self._cv:
                while self._generation == seen:
                    self._cv.wait()
                seen = self._generation
                if not self._open:
                    return
                fn, args_list = self._task  # type: ignore[misc]
            error = None
            try:
                fn(*args_list[i])
            except BaseException as exc:  # re-raised by run() in the measuring thread
                error = exc
            with self._cv:
                if error is not None:
                    self._errors.append(error)
                self._finished += 1
                self._cv.notify_all()

    def run(self, fn: Callable[..., Any], args_list: Sequence[tuple], finish: Optional[Callable[[], Any]] = None,
            timeout_s: Optional[float] = None) -> float:
        """Wall seconds from releasing every thread (thread i runs fn(*args_list[i])) to the last one finishing
        (and `finish()`, e.g. a device sync)."""
        if len(args_list) != self.size:
            raise ValueError(f"{len(args_list)} tasks for a team of {self.size} threads")
        if self._broken or not self._open:
            raise RuntimeError("the thread team is closed or has threads left behind by an earlier run")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cv:
            self._task, self._finished, self._errors = (fn, list(args_list)), 0, []
            t0 = time.perf_counter()
            self._generation += 1
            self._cv.notify_all()
            while self._finished < self.size:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._broken = True
                    raise TimeoutError(f"{self.size - self._finished} of {self.size} threads still running after "
                                       f"{timeout_s:g} s")
                self._cv.wait(left)
            errors = list(self._errors)
        return _wall_since(t0, finish, errors)

    def close(self) -> None:
        """Let the threads end (those still running a hung task end with the process). Idempotent."""
        with self._cv:
            self._open = False
            self._generation += 1
            self._cv.notify_all()


def run_threads(fn: Callable[..., Any], args_list: Sequence[tuple],
                finish: Optional[Callable[[], Any]] = None, timeout_s: Optional[float] = None) -> float:
    """Run fn(*args) in len(args_list) threads released together; wall seconds from the release to
    the last join (and `finish()`, e.g. a device sync, when given). A thread's exception is re-raised.

    With timeout_s, threads still running after it raise TimeoutError; they are daemon threads and
    cannot be stopped from outside, so they are left behind (they end with the process).
    """
    barrier = threading.Barrier(len(args_list) + 1)
    errors: List[BaseException] = []

    def target(args):
        """Thread body: wait at the barrier so all threads start together, run fn, and keep its exception for the caller."""
        barrier.wait()
        try:
            fn(*args)
        except BaseException as exc:  # re-raised in the measuring thread below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(a,), daemon=True, name=f"gpudiag-thread-{i}")
               for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise TimeoutError(f"{sum(x.is_alive() for x in threads)} of {len(threads)} threads still running "
                               f"after {timeout_s:g} s")
    return _wall_since(t0, finish, errors)


def _wall_since(t0: float, finish: Optional[Callable[[], Any]], errors: List[BaseException]) -> float:
    """The end of a timed threaded run: `finish()` (a device sync) inside the timing, then the first thread's
    exception re-raised, else the wall seconds since t0 (time.perf_counter)."""
    if finish is not None:
        finish()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall
