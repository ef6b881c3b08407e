"""Facts about this machine behind the one OS switch. Only gpudiag/platform/ tests which OS this is (its per-OS
modules are the only OS-specific code); everything else asks it for a fact or a behaviour (tests/test_os_switch.py).

    os_facts(root)        -> system.os       (distro, kernel, WSL, container, virtualization)
    memory_facts(root)    -> system.memory   (RAM, swap, cgroup, WSL cap, overcommit, OOM kills, budget)
    cgroup_memory(pid)    -> a process's cgroup memory limit (least along its ancestry) and usage, cheaply
    cpu_facts(detailed)   -> system.cpu      (fast path: /proc/cpuinfo | registry | sysctl + psutil)
    cpu_limit(pid)        -> system.cpu.limit (affinity, cpuset, cgroup quota or Windows job cap; usable cores)
    usable_cores(pid)     -> the one count of whole workers a process can keep busy
    ThrottleMeter(pid)    -> CPU-quota throttling over a measurement
    python_facts(check_torch) -> system.python (free-threaded build, GIL at run time, start method)
    start_server_supported()  -> whether probe processes may be forked from a start server that imported torch
    fork_is_safe()            -> whether this process may fork a worker now (one thread, no GPU driver loaded)
    become_subreaper()        -> orphaned descendants are re-parented to this process (Linux; else nothing)
    process_age_s()           -> seconds since this process was created (its interpreter's start-up, when early)
    descendant_pids(pid)      -> a process's descendants, cheaply (Linux), else None (ask psutil)
    torch_facts(import_torch) -> system.torch  (version, CUDA/cuDNN/HIP build; never initialises CUDA)

`root` (Linux) and `reg` (Windows) are seams for tests: a fake /proc tree, a fake winreg.
"""

from __future__ import annotations

import multiprocessing
import os
import platform as _platform
import sys
import sysconfig
from typing import Any, List, Mapping, Optional

from gpudiag.platform import _cgroup, _darwin, _linux, _windows

# The one place that looks at sys.platform.
KIND = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux" if sys.platform.startswith("linux") else sys.platform)
# Names of files compare without case on the default file systems of macOS (APFS) and Windows (NTFS).
NAMES_FOLD_CASE = KIND in ("macos", "windows")
# A child can be started in a session of its own (setsid), out of reach of the terminal's Ctrl-C: POSIX only.
NEW_SESSIONS = KIND != "windows"
# Linux's Yama (kernel.yama.ptrace_scope) decides who may read another process's memory.
YAMA_PTRACE = KIND == "linux"
# multiprocessing runs a resource tracker process on POSIX; Windows' spawn uses none.
HAS_RESOURCE_TRACKER = os.name == "posix"
# The exit code of a Windows process that crashed with an access violation (STATUS_ACCESS_VIOLATION); None
# elsewhere, where a crash is a signal.
ACCESS_VIOLATION_EXIT_CODE = 0xC0000005 if KIND == "windows" else None


def executable_name(name: str, kind: Optional[str] = None) -> str:
    """A program's file name on this OS (or `kind`'s): "py-spy.exe" on Windows, else "py-spy"."""
    return f"{name}.exe" if (kind or KIND) == "windows" else name


def wsl_version() -> Optional[int]:
    """1 or 2 when this is Linux under WSL, else None: read once by callers that pass it on to memory_facts."""
    return os_facts().get("wsl") if KIND == "linux" else None


def os_facts(root: str = "/", environ: Optional[Mapping[str, str]] = None, reg: Any = None,
             kind: Optional[str] = None) -> dict:
    """system.os (distro, kernel, WSL, container, virtualization) from this OS's reader: the one
    dispatch probes and `env` call."""
    kind = kind or KIND
    if kind == "windows":
        return _windows.os_facts(reg)
    if kind == "macos":
        return _darwin.os_facts()
    return _linux.os_facts(root, environ)


def _psutil_memory_facts() -> dict:
    """Windows and macOS: RAM and swap only; they have no cgroups, overcommit knob or OOM counter.

    Windows has no OOM killer either: allocations fail at the commit limit, so available physical
    RAM is what new workers can use without paging.
    """
    import psutil

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return {
        "total_bytes": vm.total, "available_bytes": vm.available,
        "swap_total_bytes": sw.total, "swap_used_bytes": sw.used,
        "cgroup_version": None, "cgroup_limit_bytes": None, "cgroup_limit_source": None,
        "cgroup_usage_bytes": None, "cgroup_oom_kills": None, "wsl_memory_cap_bytes": None,
        "overcommit_memory": None, "commit_limit_bytes": None, "committed_bytes": None,
        "oom_kills_since_boot": None,
        "budget_bytes": vm.available, "budget_source": "ram_available",
    }


def memory_facts(root: str = "/", kind: Optional[str] = None, wsl: Optional[int] = None,
                 environ: Optional[Mapping[str, str]] = None) -> dict:
    """`wsl` may be passed when already known (saves re-reading /proc); otherwise detected."""
    kind = kind or KIND
    if kind in ("windows", "macos"):
        return _psutil_memory_facts()
    if wsl is None:
        wsl = _linux.os_facts(root, environ)["wsl"]
    return _linux.memory_facts(root, wsl=wsl)


def cgroup_memory(pid: Optional[int] = None, root: str = "/", kind: Optional[str] = None) -> dict:
    """{version, limit_bytes, usage_bytes, oom_kills, limit_source} of a process's memory cgroup (the
    limit is the least along its ancestry; the source by kind, never a path); all None outside Linux
    or without a memory controller. A few file reads: cheap enough to ask again before each spawn."""
    if (kind or KIND) != "linux":
        return {"version": None, "limit_bytes": None, "usage_bytes": None, "oom_kills": None, "limit_source": None}
    return _cgroup.cgroup_memory(root, pid)


def _affinity_cores(pid: Optional[int] = None) -> Optional[int]:
    """How many CPUs a process may run on (sched_getaffinity, else psutil's cpu_affinity on
    Windows), None on macOS, which has no affinity."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(pid or 0))
        except OSError:
            pass
    try:
        import psutil

        return len(psutil.Process(pid).cpu_affinity())  # Windows; macOS has no affinity
    except ImportError:
        return None
    except (AttributeError, OSError, psutil.Error):  # no cpu_affinity on macOS, AccessDenied in sandboxes
        return None


def cpu_limit(pid: Optional[int] = None, root: str = "/", kind: Optional[str] = None, job_api: Any = None,
              affinity: Optional[int] = None, logical: Optional[int] = None) -> dict:
    """system.cpu.limit: how much CPU a process (default: this one) may use, and why.

    {affinity_cores, cpuset_cpus, quota_cpus, quota_period_us, quota_source, cgroup_version,
    usable_cpus, usable_cores, limited_by, throttling_since_start?}. usable_cpus is the least of the
    affinity, the cpuset and the quota (1.5 for Docker's --cpus=1.5); usable_cores is that in whole
    workers (a quota rounded up, as loky counts). limited_by names the binding one ("quota",
    "affinity", "cpuset") or is None when the process may use every CPU. Sources are said by kind,
    never as a path (a cgroup path names the container and the pod). `affinity` and `logical` (the
    machine's CPUs) are seams for tests.
    """
    kind = kind or KIND
    logical = logical or os.cpu_count() or 1
    affinity = affinity if affinity is not None else (_affinity_cores(pid) if root == "/" else None)
    out: dict = {"affinity_cores": affinity, "cpuset_cpus": None, "quota_cpus": None, "quota_period_us": None,
                 "quota_source": None, "cgroup_version": None}
    if kind == "linux":
        out.update(_cgroup.cpu_limit(root, pid))
    elif kind == "windows" and pid is None:  # only the calling process's own job can be queried
        out.update(_windows.job_cpu_limit(job_api if job_api is not None else _windows.default_job_api(), logical))
    bounds = [(float(v), name) for v, name in ((affinity, "affinity"), (out["cpuset_cpus"], "cpuset"),
                                               (out["quota_cpus"], "quota")) if v]
    usable, binding = min(bounds, key=lambda b: b[0]) if bounds else (float(logical), None)
    out["usable_cpus"] = round(usable, 4)
    out["usable_cores"] = (_cgroup.quota_cores(usable) if binding == "quota" else max(1, int(usable)))
    out["limited_by"] = binding if usable < logical else None
    return out


def usable_cores(pid: Optional[int] = None) -> int:
    """Whole workers a process can keep busy: the least of its affinity, cpuset and CPU quota. The one
    count every probe, verdict and check uses."""
    return cpu_limit(pid)["usable_cores"]


class ThrottleMeter:
    """Reads the CPU-quota throttling of a process's cgroup, to say how much of a measurement ran
    throttled. `read()` is None where no quota applies or the counters are unreadable (Windows job
    objects keep no throttling counters).

        meter = ThrottleMeter()
        t0 = meter.read(); ... measure ...; share = ThrottleMeter.delta(t0, meter.read())
    """

    def __init__(self, pid: Optional[int] = None, root: str = "/", kind: Optional[str] = None):
        self._root = root
        self.quota = _cgroup.cpu_quota(root, pid)[0] if (kind or KIND) == "linux" else None

    def read(self) -> Optional["_cgroup.Throttling"]:
        """The cumulative counters now, or None."""
        return _cgroup.read_throttling(self._root, self.quota) if self.quota is not None else None

    @staticmethod
    def delta(before: Optional["_cgroup.Throttling"], after: Optional["_cgroup.Throttling"]) -> Optional[dict]:
        """{periods, throttled_periods, throttled_share, throttled_s} between two readings; None if unknown.
        throttled_share is of the periods in which the cgroup ran (the kernel counts only those)."""
        if before is None or after is None:
            return None
        periods = after.nr_periods - before.nr_periods
        throttled = after.nr_throttled - before.nr_throttled
        if periods < 0 or throttled < 0:
            return None
        return {"periods": periods, "throttled_periods": throttled,
                "throttled_share": round(throttled / periods, 4) if periods else 0.0,
                "throttled_s": round(max(0.0, after.throttled_s - before.throttled_s), 4)}


def _detailed_cpu() -> dict:
    """py-cpuinfo (over a second: it starts an interpreter and sleeps to time the TSC)."""
    import cpuinfo

    info = cpuinfo.get_cpu_info()
    hz = info.get("hz_advertised") or info.get("hz_actual")
    return {"brand": info.get("brand_raw") or None,
            "advertised_mhz": round(hz[0] / 1e6, 1) if hz and hz[0] else None,
            "flags_count": len(info.get("flags") or []) or None,
            "l3_cache_bytes": info.get("l3_cache_size") if isinstance(info.get("l3_cache_size"), int) else None}


def cpu_facts(detailed: bool = False, root: str = "/", reg: Any = None, kind: Optional[str] = None) -> dict:
    """CPU brand, cores, frequency. detailed=True adds py-cpuinfo; if that fails, the fast path stays."""
    import psutil

    kind = kind or KIND
    if kind == "windows":
        brand = _windows.cpu_brand(reg)
    elif kind == "macos":
        brand = _darwin.cpu_brand()
    else:
        brand = _linux.cpu_brand(root)
    try:
        freq = psutil.cpu_freq()
    except (AttributeError, RuntimeError, OSError):
        # VMs and containers without cpufreq: NotImplementedError (a RuntimeError) or FileNotFoundError on
        # Linux, RuntimeError on Apple silicon (psutil #2382), no cpu_freq at all on old psutil (#1197)
        freq = None
    freq_max = round(freq.max, 1) if freq and freq.max else None
    if freq_max is None and kind == "windows":
        freq_max = _windows.cpu_mhz(reg)
    out = {
        "brand": brand or _platform.processor() or None,
        "arch": _platform.machine() or None,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "freq_current_mhz": round(freq.current, 1) if freq and freq.current else None,
        "freq_max_mhz": freq_max,
        "affinity_cores": _affinity_cores(),
        "limit": cpu_limit(root=root, kind=kind),
        "source": "fast",
    }
    if detailed:
        try:
            extra = _detailed_cpu()
        except Exception as exc:  # kept broad: py-cpuinfo (ImportError when absent) runs and parses tools
            # in ways that fail differently per CPU and OS; a best-effort extra must not cost the fast facts
            out["detailed_reason"] = f"py-cpuinfo failed: {type(exc).__name__}: {exc}"
        else:
            out["brand"] = extra.pop("brand") or out["brand"]
            out.update(extra)
            out["source"] = "py-cpuinfo"
    return out


def default_start_method() -> str:
    """The platform's default multiprocessing start method, without fixing the global context.

    get_start_method() would set the context as a side effect, and inside a spawned probe child
    it answers "spawn"; the docs say the first of get_all_start_methods() is the default.
    """
    return multiprocessing.get_all_start_methods()[0]


def start_server_supported(kind: Optional[str] = None) -> bool:
    """True where probe processes may be forked from a start server that imported torch once (multiprocessing's
    forkserver; Linux). Elsewhere every probe process is spawned and imports torch itself: Windows has no fork,
    and on macOS a fork of a process that loaded the system frameworks torch links is not safe."""
    return (kind or KIND) == "linux" and "forkserver" in multiprocessing.get_all_start_methods()


def become_subreaper(kind: Optional[str] = None) -> None:
    """Linux: processes this one's descendants orphan are re-parented to it, so it can still find and end them.
    Elsewhere (and where the call fails) nothing: orphans are then found only while their parent lives."""
    if (kind or KIND) == "linux":
        _linux.become_subreaper()


def fork_is_safe(root: str = "/", kind: Optional[str] = None) -> bool:
    """True when this process may fork a worker that imports nothing again (Linux): it runs one thread (a fork
    copies the locks another thread may hold at that moment) and has not loaded a GPU driver (CUDA and HIP do not
    survive a fork). False elsewhere, and whenever /proc cannot tell."""
    if (kind or KIND) != "linux":
        return False
    return _linux.fork_is_safe(root)


def process_age_s(root: str = "/", kind: Optional[str] = None) -> Optional[float]:
    """Seconds since this process was created: to 10 ms on Linux (/proc/self/stat against the boot clock), else
    from psutil's creation time (whose boot time can be a second off on Linux, hence not used there)."""
    if (kind or KIND) == "linux":
        return _linux.process_age_s(root)
    import time

    import psutil

    try:
        return max(0.0, time.time() - psutil.Process().create_time())
    except (psutil.Error, OSError):
        return None


def descendant_pids(pid: int, root: str = "/", kind: Optional[str] = None) -> Optional[List[int]]:
    """The pids of every process below `pid`, read from its own /proc entries and its descendants' (Linux: a
    fraction of a millisecond, where psutil reads every process on the machine); None where that cannot be
    read (another OS, a kernel without /proc/PID/task/TID/children): the caller asks psutil then."""
    if (kind or KIND) != "linux":
        return None
    return _linux.descendant_pids(pid, root)


def free_threaded_build() -> bool:
    """True for a free-threaded (PEP 703) CPython build, the only kind where the GIL
    can be off."""
    # Truthiness, not `is not None`: regular Windows builds define Py_GIL_DISABLED as 0 (cpython #143423).
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """True unless this is a free-threaded build running with the GIL off right now."""
    check = getattr(sys, "_is_gil_enabled", None)
    return bool(check()) if check is not None else True  # before 3.13 the GIL always exists


def python_facts(check_torch: bool = False) -> dict:
    """Interpreter facts. check_torch imports torch first (if installed) because importing an
    extension without free-threading support re-enables the GIL on a free-threaded build."""
    from gpudiag.backends import torch_meta

    after_torch = False
    if check_torch and torch_meta.torch_version() is not None:
        try:
            import torch  # noqa: F401  (imported for its effect on the GIL)

            after_torch = True
        except Exception:  # a broken torch install: the GIL answer is still worth having
            after_torch = False
    return {
        "version": _platform.python_version(),
        "implementation": _platform.python_implementation(),
        "free_threaded_build": free_threaded_build(),
        "gil_enabled": gil_enabled(),
        "gil_checked_after_torch": after_torch,
        "switch_interval_s": sys.getswitchinterval(),
        "mp_start_method": default_start_method(),
        "executable": sys.executable or None,
        "bits": 64 if sys.maxsize > 2 ** 32 else 32,
    }


def torch_facts(import_torch: bool = False) -> dict:
    """What torch was built with. Never calls torch.cuda.is_available/init/device_count."""
    from gpudiag.backends import torch_meta
    from gpudiag.backends.torch_meta import TORCH_HINT

    version = torch_meta.torch_version()
    if version is None:
        return {"version": None, "cuda_build": None, "cudnn": None, "hip": None, "source": None,
                "cudnn_reason": None, "reason_missing": f"torch is not installed: {TORCH_HINT}"}
    out = {"version": version, "cuda_build": torch_meta.torch_cuda_version(),
           "cudnn": None, "hip": torch_meta.torch_hip_version(), "source": "files",
           "cudnn_reason": "not read: torch was not imported (fast path)", "reason_missing": None}
    if not import_torch:
        return out
    try:
        import torch
    except Exception as exc:  # kept broad: a broken torch install raises anything at import (ImportError,
        # OSError for a missing .so, RuntimeError, AttributeError), and that failure is itself the fact reported
        out["cudnn_reason"] = f"import torch failed: {type(exc).__name__}: {exc}"
        return out
    out.update(version=str(torch.__version__), cuda_build=getattr(torch.version, "cuda", None),
               hip=getattr(torch.version, "hip", None), source="import")
    try:
        # Loads the cuDNN library if present; it does not create a CUDA context.
        cudnn = torch.backends.cudnn.version()
    except (RuntimeError, OSError, AttributeError) as exc:
        # RuntimeError: torch's cuDNN version-compatibility checks (and the CUDA device query they make);
        # OSError: a cuDNN library that fails to load; AttributeError: a build without torch.backends.cudnn
        cudnn = None
        out["cudnn_reason"] = f"torch.backends.cudnn.version() failed: {type(exc).__name__}"
    else:
        out["cudnn_reason"] = None if cudnn is not None else "this torch build has no cuDNN"
    out["cudnn"] = cudnn
    return out
