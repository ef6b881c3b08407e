"""The process-tree sampler (psutil): memory, CPU and threads of the job and every process it starts.

Each tick walks the tree from the job's root pid (children(recursive=True)), so DataLoader and
multiprocessing workers are seen when they appear and kept after they end. Per process it reads
RSS, USS and PSS (psutil memory_full_info, which reads /proc/PID/smaps_rollup on Linux; USS/PSS
are not available on every OS), CPU time and per-thread CPU time. It also reads the machine's busy
CPU time, so that load from other programs during the watch is noticed.

`psutil` is the seam for tests: a psutil-like module (Process, cpu_times, cpu_count, AccessDenied,
NoSuchProcess). Reading nothing but counters, it never pauses the job.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Callable, Dict, List, Optional

from gpudiag.watch.sampler import Sampler

_PYTHON_NAME = re.compile(r"^(python|pypy)[\d.]*[a-z]?(\.exe)?$", re.I)
# multiprocessing's helpers are Python processes of the job that do no work of their own.
_HELPER_MARKS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver", "resource_tracker import main")
_WORKER_MARKS = ("multiprocessing.spawn", "spawn_main", "--multiprocessing-fork", "multiprocessing.popen_")


def looks_python(name: Optional[str], cmdline: Optional[List[str]]) -> bool:
    """Whether a process is (probably) a Python interpreter, from its name or argv[0]."""
    for cand in [name] + list((cmdline or [])[:1]):
        if cand and _PYTHON_NAME.match(os.path.basename(str(cand))):
            return True
    return False


def classify(proc: dict, parent: Optional[dict], root_pid: int) -> str:
    """main | launcher | worker | helper | child: what a process of the job tree is for."""
    cmd = " ".join(proc.get("cmdline") or [])
    if proc["pid"] == root_pid:
        return "main" if proc.get("python") else "launcher"
    if proc.get("python"):
        if any(m in cmd for m in _HELPER_MARKS):
            return "helper"
        if any(m in cmd for m in _WORKER_MARKS):
            return "worker"
        if parent is not None and parent.get("python"):
            return "worker"  # fork-started workers keep their parent's command line
        if parent is not None and parent.get("role") == "launcher" and parent["pid"] == root_pid:
            return "main"  # `bash run.sh` -> python: the first Python process is the job's main one
        return "worker"
    return "child"


class ProcessSampler(Sampler):
    """Samples the job's process tree; results in `procs` (pid -> record) and `machine` (CPU busy)."""

    name = "processes"

    def __init__(self, root_pid: int, interval_s: float, clock: Callable[[], float], psutil: Any = None,
                 exclude_pids: Optional[set] = None, memory_facts: Optional[Callable[[], dict]] = None):
        super().__init__(interval_s, clock)
        if psutil is None:
            import psutil
        self.psutil = psutil
        self.root_pid = root_pid
        self.exclude = set(exclude_pids or ())
        self.procs: Dict[int, dict] = {}
        self._handles: Dict[int, Any] = {}
        self.lock = threading.Lock()
        self.denied: Dict[str, str] = {}  # what could not be read -> the error, e.g. {"uss": "AccessDenied"}
        self.root_gone = False
        self.machine: List[tuple] = []  # (t_s, busy_cpu_s summed over cores, total_cpu_s)
        self.logical_cores = psutil.cpu_count(logical=True) or 1
        self._order = 0
        # The machine's memory limits as last read while the job was alive: the headroom the OOM
        # projection counts must not include what the job freed by ending.
        self.memory_facts_fn = memory_facts
        self.memory_facts: Optional[dict] = None
        self.memory_facts_t: Optional[float] = None

    # ---- the tree

    def _handle(self, pid: int) -> Any:
        """The psutil.Process of `pid`, made once and reused, so each tick reads the process it first
        saw rather than building a new handle per pid."""
        h = self._handles.get(pid)
        if h is None:
            h = self.psutil.Process(pid)
            self._handles[pid] = h
        return h

    def _tree(self) -> List[Any]:
        """Handles of the job's root and of every descendant alive now (excluded pids left out); []
        with root_gone set once the root has ended. A refused child list is noted in `denied`."""
        try:
            root = self._handle(self.root_pid)
            kids = root.children(recursive=True)
        except self.psutil.NoSuchProcess:
            self.root_gone = True
            return []
        except self.psutil.AccessDenied as exc:
            self.denied.setdefault("children", type(exc).__name__)
            kids = []
            root = self._handle(self.root_pid)
        out = [root]
        for k in kids:
            if k.pid in self.exclude:
                continue
            if k.pid not in self._handles:
                self._handles[k.pid] = k
            out.append(self._handles[k.pid])
        return out

    def _new_record(self, h: Any, t_s: float) -> dict:
        """A new process record (pid, name, cmdline, ppid, exe, python, role, order seen); a field
        psutil refuses stays None and is noted in `denied`."""
        info: Dict[str, Any] = {"pid": h.pid, "first_seen_s": t_s, "last_seen_s": t_s, "alive": True,
                                "order": self._order, "samples": [], "threads": {}, "python": False}
        self._order += 1
        for key, fn in (("name", "name"), ("cmdline", "cmdline"), ("ppid", "ppid"), ("create_time", "create_time"),
                        ("exe", "exe")):
            try:
                info[key] = getattr(h, fn)()
            except (self.psutil.AccessDenied, self.psutil.ZombieProcess) as exc:
                info[key] = None
                self.denied.setdefault(key, type(exc).__name__)
            except self.psutil.NoSuchProcess:
                info[key] = None
        info["python"] = looks_python(info.get("name"), info.get("cmdline")) or looks_python(info.get("exe"), None)
        parent = self.procs.get(info.get("ppid"))
        info["role"] = classify(info, parent, self.root_pid)
        return info

    # ---- one tick

    def tick(self, t_s: float) -> None:
        """Walk the tree, read each process's counters, mark the ones that ended."""
        try:
            ct = self.psutil.cpu_times()
            busy = sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
            total = busy + getattr(ct, "idle", 0.0) + getattr(ct, "iowait", 0.0)
            self.machine.append((t_s, busy, total))
        except (OSError, self.psutil.Error):  # /proc/stat unreadable: no machine load this tick; the tree matters more
            pass
        tree = self._tree()
        if tree and self.memory_facts_fn is not None:
            try:
                self.memory_facts, self.memory_facts_t = self.memory_facts_fn(), t_s
            except Exception:  # best-effort fact in a sampler tick, kept broad on purpose:
                # memory_facts is a seam (platform.memory_facts: /proc, cgroup files and psutil); whatever
                # it raises must not cost this tick's process samples, and the projection says when no
                # limit could be read.
                pass
        seen = set()
        for h in tree:
            pid = h.pid
            seen.add(pid)
            with self.lock:
                rec = self.procs.get(pid)
                if rec is None:
                    rec = self._new_record(h, t_s)
                    self.procs[pid] = rec
            self._sample(h, rec, t_s)
        with self.lock:
            for pid, rec in self.procs.items():
                if pid not in seen and rec["alive"]:
                    rec["alive"] = False
                    rec["ended_s"] = t_s

    def _sample(self, h: Any, rec: dict, t_s: float) -> None:
        """Appends one sample of process `h` to its record: RSS, USS/PSS where readable, CPU seconds
        and per-thread CPU seconds; nothing when the process ended mid-read."""
        psutil = self.psutil
        row: Dict[str, Any] = {"t": t_s}
        try:
            with h.oneshot():
                mi = h.memory_info()
                row["rss"] = mi.rss
                try:
                    ct = h.cpu_times()
                    row["cpu"] = ct.user + ct.system
                except psutil.AccessDenied as exc:
                    self.denied.setdefault("cpu", type(exc).__name__)
                try:
                    threads = h.threads()
                except psutil.AccessDenied as exc:
                    self.denied.setdefault("threads", type(exc).__name__)
                    threads = []
        except psutil.NoSuchProcess:
            return
        except psutil.AccessDenied as exc:
            self.denied.setdefault("memory", type(exc).__name__)
            return
        # memory_full_info walks the page tables' summary (smaps_rollup): outside oneshot, and
        # optional: other users' processes, macOS without root, or old kernels refuse it.
        if "uss" not in self.denied:
            try:
                full = h.memory_full_info()
                row["uss"] = getattr(full, "uss", None)
                row["pss"] = getattr(full, "pss", None)
            except psutil.AccessDenied as exc:
                self.denied["uss"] = type(exc).__name__
            except psutil.NoSuchProcess:
                return
            except (NotImplementedError, AttributeError, OSError) as exc:
                self.denied["uss"] = type(exc).__name__
        with self.lock:
            rec["samples"].append(row)
            rec["last_seen_s"] = t_s
            for th in threads:
                series = rec["threads"].setdefault(th.id, [])
                series.append((t_s, th.user_time + th.system_time))

    # ---- views of the state for other samplers

    def snapshot(self) -> List[dict]:
        """[{pid, role, python, alive, order}] of every process seen so far, oldest first."""
        with self.lock:
            return sorted(({k: r.get(k) for k in ("pid", "role", "python", "alive", "order", "name")}
                           for r in self.procs.values()), key=lambda r: r["order"])
