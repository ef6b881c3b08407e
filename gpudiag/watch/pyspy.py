"""The GIL sampler: `py-spy dump --json` on the job's Python processes, and what each dump says.

py-spy (the optional extra `gpudiag[watch]`; its wheel ships the binary for Linux, macOS and
Windows) reads a process's interpreter state from outside: per Python thread its name, native
thread id, `owns_gil` and `active` (running or runnable, from /proc on Linux). With `--native` it
also unwinds the C stack, which tells a thread *waiting to take the GIL* (parked in the
interpreter's condition variable right under Python code, or under a C function such as
time.sleep re-acquiring it) from one sleeping, blocked on a lock or a queue, or inside an
extension that released the GIL (research/anchors-2.md A.1; the stacks were checked on this
machine with CPython 3.11 and py-spy 0.4.3).

One dump is one sample. Dumps with --native pause the process while they unwind (tens of
microseconds per thread to a few milliseconds); dumps without it run with --nonblocking and do
not pause it at all. The watcher spawns one short py-spy process per dump, so a py-spy that
crashes or hangs costs one sample, never the job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from gpudiag import platform
from gpudiag.watch import access
from gpudiag.watch.sampler import Sampler

ENV_BINARY = "GPUDIAG_PY_SPY"

# A worker process is dumped every this many ticks (the main process every tick).
WORKER_EVERY = 4

# States of one thread in one sample.
HOLDS, WAITS, RUNS, IDLE = "holds_gil", "waits_gil", "runs_native", "idle"

# Native frames that say nothing about why a thread is parked (libc internals, unnamed addresses).
_NOISE_PREFIXES = ("0x", "__futex", "futex_", "__GI_", "___pthread_cond", "__pthread_cond", "syscall")
_COND_WAITS = ("pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait")
# CPython functions on the way back into the interpreter, or the GIL's own functions.
_GIL_FUNCS = ("take_gil", "PyEval_RestoreThread", "PyEval_AcquireThread", "_PyEval_EvalFrameDefault",
              "PyEval_AcquireLock", "_PyThreadState_Attach", "PyCOND_TIMEDWAIT", "drop_gil")
# The loop of torch.utils.data waiting for a batch from its worker processes (multi-process
# DataLoader), and fetching it in the main thread (num_workers=0).
_LOADER_FILE = "torch/utils/data/dataloader.py"
_LOADER_WAIT_FUNCS = ("_try_get_data", "_get_data")
_LOADER_FETCH_FILES = ("torch/utils/data/_utils/fetch.py",)


# ------------------------------------------------------------------ finding the binary

def find_py_spy(environ: Optional[Mapping[str, str]] = None, executable: Optional[str] = None,
                kind: Optional[str] = None, which: Callable[[str], Optional[str]] = shutil.which) -> Optional[str]:
    """Path of the py-spy binary: $GPUDIAG_PY_SPY, then next to the interpreter, then PATH; else None.

    Next to the interpreter first because `pip install 'gpudiag[watch]'` puts py-spy in the same
    venv's bin/ (Scripts\\ on Windows), which need not be on PATH when the venv is not activated.
    """
    environ = os.environ if environ is None else environ
    exe_name = platform.executable_name("py-spy", kind)
    forced = environ.get(ENV_BINARY)
    if forced:
        return forced if os.path.isfile(forced) and os.access(forced, os.X_OK) else None
    folder = os.path.dirname(executable or sys.executable or "")
    for cand in (os.path.join(folder, exe_name), os.path.join(folder, "Scripts", exe_name)):
        if folder and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return which(exe_name)


def missing_reason(environ: Optional[Mapping[str, str]] = None) -> str:
    """Why the GIL part is skipped when find_py_spy found nothing, with how to install it."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_BINARY):
        return f"${ENV_BINARY}={environ[ENV_BINARY]} is not an executable file"
    return f"py-spy is not installed: {access.INSTALL_HINT}"


# ------------------------------------------------------------------ one dump

def classify_error(text: str) -> str:
    """denied | not_python | gone | native_unsupported | other, from py-spy's stderr."""
    low = text.lower()
    if "native" in low and ("not supported" in low or "can't get native" in low or "cannot" in low):
        return "native_unsupported"
    if "permission denied" in low or "operation not permitted" in low or "os error 1)" in low \
            or "os error 13" in low or "access is denied" in low or "sys_ptrace" in low:
        return "denied"
    if "no such process" in low or "os error 3)" in low or "check that the process is running" in low:
        return "gone"
    if "python version" in low or "python interpreter" in low or "interpreter address" in low \
            or "libpython" in low or "failed to find python" in low:
        return "not_python"
    return "other"


def short_error(text: str) -> str:
    """py-spy's error without its Rust backtrace: the first lines, at most 300 characters."""
    keep = []
    for line in (text or "").splitlines():
        if line.strip().startswith("Stack backtrace"):
            break
        if line.strip():
            keep.append(line.strip())
    return " ".join(keep)[:300] or "py-spy failed without a message"


class DumpResult:
    """One py-spy run: threads (parsed JSON) or an error kind and text; its cost in CPU and wall time."""

    def __init__(self, threads: Optional[list] = None, error: Optional[str] = None, kind: Optional[str] = None,
                 wall_s: float = 0.0, cpu_s: Optional[float] = None):
        self.threads, self.error, self.kind, self.wall_s, self.cpu_s = threads, error, kind, wall_s, cpu_s

    @property
    def ok(self) -> bool:
        """True when py-spy returned a thread list."""
        return self.threads is not None


def dump(binary: str, pid: int, native: bool, timeout_s: float = 5.0,
         on_start: Optional[Callable[[Any], None]] = None) -> DumpResult:
    """Run `py-spy dump --json` once; never raises for py-spy's own failures.

    The child gets no stdin and its own session, so the terminal's Ctrl-C (meant for the job)
    does not kill it mid-dump. On POSIX its CPU time is read with wait4, for the overhead figure.
    """
    args = [binary, "dump", "--json", "--pid", str(pid)] + (["--native"] if native else ["--nonblocking"])
    t0 = time.monotonic()
    kw: Dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if platform.NEW_SESSIONS:
        kw["start_new_session"] = True
    try:
        proc = subprocess.Popen(args, **kw)
    except OSError as exc:
        return DumpResult(error=f"cannot run {binary}: {exc.strerror or exc}", kind="other")
    if on_start is not None:
        on_start(proc)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    cpu_s = None
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        if hasattr(os, "wait4"):
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu_s = usage.ru_utime + usage.ru_stime
            except ChildProcessError:
                proc.wait()
        else:
            proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.stderr.close()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        if proc.returncode < 0 or wall >= timeout_s:
            return DumpResult(error=f"py-spy did not answer within {timeout_s:g} s", kind="timeout",
                              wall_s=wall, cpu_s=cpu_s)
        text = err.decode("utf-8", "replace")
        return DumpResult(error=short_error(text), kind=classify_error(text), wall_s=wall, cpu_s=cpu_s)
    try:
        threads = json.loads(out.decode("utf-8", "replace") or "null")
    except ValueError:
        return DumpResult(error="py-spy printed something that is not JSON", kind="other", wall_s=wall, cpu_s=cpu_s)
    if not isinstance(threads, list):
        return DumpResult(error="py-spy printed no thread list", kind="other", wall_s=wall, cpu_s=cpu_s)
    return DumpResult(threads=threads, wall_s=wall, cpu_s=cpu_s)


# ------------------------------------------------------------------ reading a dump (pure)

def _is_python_frame(f: dict) -> bool:
    """True for a Python frame of a py-spy stack (a .py file or a line number): where the
    native frames of a --native stack end."""
    name = str(f.get("filename") or f.get("short_filename") or "")
    return name.endswith((".py", ".pyw")) or (isinstance(f.get("line"), int) and f["line"] > 0)


def _fname(f: dict) -> str:
    """A frame's file name with forward slashes (py-spy gives Windows paths too), "" when none."""
    return str(f.get("filename") or f.get("short_filename") or "").replace("\\", "/")


def waits_for_gil(frames: List[dict]) -> bool:
    """True when a native stack shows the thread parked waiting to take the GIL.

    The GIL is a condition variable inside CPython: a waiter's innermost named native frame is
    pthread_cond_(timed)wait and the frame under it is Python code (the eval loop's take_gil is
    inlined) or CPython itself (take_gil, PyEval_RestoreThread, or a builtin such as time_sleep
    taking the GIL back). Locks and queues wait on semaphores (PyThread_acquire_lock_timed) and
    sleeps in clock_nanosleep/select, so they do not match; nor does an extension's own condition
    variable (a libtorch frame under the wait).
    """
    native = []
    for f in frames:
        if _is_python_frame(f):
            break
        name = str(f.get("name") or "")
        if not name or name.startswith(_NOISE_PREFIXES) or _fname(f).endswith("[vdso]"):
            continue
        native.append(f)
    names = [str(f.get("name")) for f in native]
    if any(n in _GIL_FUNCS[:1] for n in names):  # take_gil itself, where symbols show it
        return True
    if not names or not any(names[0].endswith(w) or names[0] == w for w in _COND_WAITS):
        return False
    if len(native) == 1:
        return True  # the wait sits directly under Python code
    below = native[1]
    if str(below.get("name")) in _GIL_FUNCS:
        return True
    base = os.path.basename(_fname(below)).lower()
    return base.startswith(("libpython", "python"))


def loader_state(frames: List[dict]) -> Optional[str]:
    """'waiting' (for a batch from DataLoader workers), 'loading' (num_workers=0, in this thread) or None."""
    for f in frames:
        path = _fname(f)
        if path.endswith(_LOADER_FILE) and str(f.get("name", "")).split(".")[-1] in _LOADER_WAIT_FUNCS:
            return "waiting"
        if path.endswith(_LOADER_FETCH_FILES):
            return "loading"
    return None


def thread_state(t: dict, native: bool) -> str:
    """holds_gil | waits_gil | runs_native | idle for one thread of one dump."""
    if t.get("owns_gil"):
        return HOLDS
    frames = t.get("frames") or []
    if native and waits_for_gil(frames):
        return WAITS
    if t.get("active"):
        return RUNS  # running without the GIL: C/C++ code that released it (torch ops, I/O)
    return IDLE


def compact(threads: List[dict], native: bool) -> List[dict]:
    """The few fields the analysis needs from one dump, one dict per Python thread."""
    out = []
    for t in threads:
        if not isinstance(t, dict):
            continue
        frames = t.get("frames") if isinstance(t.get("frames"), list) else []
        name = t.get("thread_name")
        if name is None and t.get("os_thread_id") is not None and t.get("os_thread_id") == t.get("pid"):
            name = "MainThread"  # py-spy names threads from `threading`, which a script may never import
        out.append({"id": t.get("thread_id"), "tid": t.get("os_thread_id"), "name": name,
                    "state": thread_state(t, native), "active": bool(t.get("active")),
                    "loader": loader_state(frames)})
    return out


# ------------------------------------------------------------------ the sampler

class GilSampler(Sampler):
    """Dumps the job's main Python process every tick (and one worker every WORKER_EVERY ticks).

    procs: callable returning the process sampler's snapshot ([{pid, role, python, alive}]).
    native_every: every how many ticks a dump is --native (wait detection; 0: never); the others
    are --nonblocking. Results: `samples[pid] = [{t, native, threads}]`, `status[pid] = {...}`.
    """

    name = "gil"
    jitter = 0.3  # periodic jobs (a 100 ms training step) must not alias with the dumps

    def __init__(self, binary: str, procs: Callable[[], List[dict]], interval_s: float,
                 clock: Callable[[], float], launched: bool, native_every: int = 1,
                 native: bool = True, dump_fn: Callable[..., DumpResult] = dump):
        super().__init__(interval_s, clock)
        self.binary = binary
        self.procs = procs
        self.launched = launched
        self.native_every = max(1, native_every)
        self.native = native and native_every > 0
        self.dump_fn = dump_fn
        self.samples: Dict[int, List[dict]] = {}
        self.status: Dict[int, Dict[str, Any]] = {}
        self.main_pid: Optional[int] = None
        self.cost = {"dumps": 0, "native_dumps": 0, "wall_s": 0.0, "pause_upper_s": 0.0, "cpu_s": 0.0,
                     "cpu_known": True}
        self._rr = 0
        self._live: Dict[int, Any] = {}
        self._live_lock = threading.Lock()

    def _track(self, proc: Any) -> None:
        """Keeps the py-spy child just started (dump's on_start), so close() can kill it when the
        watch stops mid-dump."""
        with self._live_lock:
            self._live[proc.pid] = proc

    def close(self) -> None:
        """Kill a py-spy still running (the sampler is being stopped mid-dump).

        Only killed here: the sampler thread that started it reads its pipes to the end and reaps
        it (with its CPU time), so nothing is left behind and nothing is reaped twice.
        """
        with self._live_lock:
            for proc in self._live.values():
                if proc.returncode is None:  # not poll(): that would reap it under the dumping thread
                    try:
                        proc.kill()  # a zombie not yet reaped takes the signal harmlessly
                    except OSError:
                        pass

    def _candidates(self) -> List[dict]:
        """The job's live Python processes (main, workers) still worth dumping: a pid py-spy was
        refused, found no interpreter in, or saw gone is dropped."""
        return [p for p in self.procs() if p.get("python") and p.get("alive") and p.get("role") in ("main", "worker")
                and self.status.get(p["pid"], {}).get("state") not in ("denied", "not_python", "gone")]

    def _dump(self, pid: int, t_s: float, native: bool = True) -> None:
        """One py-spy dump of `pid` (native every native_every ticks): adds its cost, keeps the sample
        or the failure in `status`; gives up on a pid when refused, or after repeated failures."""
        use_native = native and self.native and (self.ticks % self.native_every == 0)
        res = self.dump_fn(self.binary, pid, use_native, timeout_s=max(5.0, 10 * self.interval_s),
                           on_start=self._track)
        with self._live_lock:
            self._live.clear()
        self.cost["dumps"] += 1
        self.cost["wall_s"] += res.wall_s
        if use_native:
            self.cost["native_dumps"] += 1
            self.cost["pause_upper_s"] += res.wall_s
        if res.cpu_s is None and res.kind != "timeout":
            self.cost["cpu_known"] = False
        else:
            self.cost["cpu_s"] += res.cpu_s
        st = self.status.setdefault(pid, {"state": "sampling", "failures": 0, "error": None, "kind": None})
        if res.ok:
            st["state"], st["failures"] = "sampling", 0
            self.samples.setdefault(pid, []).append({"t": t_s, "native": use_native,
                                                     "threads": compact(res.threads, use_native)})
            return
        if res.kind == "native_unsupported" and use_native:
            self.native = False  # e.g. macOS: keep sampling without wait detection
            st["native_note"] = res.error
            return
        st["failures"] += 1
        st["error"], st["kind"] = res.error, res.kind
        # A process just started may not have an interpreter to find yet: give it a few tries.
        if res.kind == "denied" or (res.kind in ("not_python", "gone") and st["failures"] >= 5) \
                or st["failures"] >= 20:
            st["state"] = res.kind if res.kind in ("denied", "not_python", "gone") else "failed"
            if res.kind == "denied":
                st["advice"] = access.denied_advice(pid, launched=self.launched and pid == self.main_pid)

    def tick(self, t_s: float) -> None:
        """Dump the main Python process, and a worker every WORKER_EVERY ticks."""
        cands = self._candidates()
        if not cands:
            return
        mains = [p for p in cands if p["role"] == "main"]
        main = mains[0] if mains else cands[0]
        if self.main_pid is None or self.status.get(self.main_pid, {}).get("state") in ("not_python", "gone"):
            self.main_pid = main["pid"]
        if any(p["pid"] == self.main_pid for p in cands):
            self._dump(self.main_pid, t_s)
        workers = [p for p in cands if p["pid"] != self.main_pid]
        # Workers matter less for the GIL question (each has its own): one every WORKER_EVERY ticks,
        # round robin and without native stacks, so a job with many workers costs little more.
        if workers and self.ticks % WORKER_EVERY == 0:
            self._rr = (self._rr + 1) % len(workers)
            self._dump(workers[self._rr]["pid"], t_s, native=False)
