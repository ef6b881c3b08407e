"""Probe `system`: OS, distro, WSL/container, Python + GIL, CPU, memory limits, torch build, env vars.

Facts come from gpudiag.platform (one dispatch per OS); this module adds the allowlisted
environment and turns the facts into findings. `findings_for` is pure so it is tested on dicts.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional

from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, finding
from gpudiag.units import fmt_bytes

# Variables that change how CUDA/torch/threads behave. Values of anything else never leave the machine.
ENV_NAMES = (
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING",
    "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_CACHE_DISABLE", "CUDA_FORCE_PTX_JIT",
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING",
    "PYTORCH_NVML_BASED_CUDA_CHECK", "TORCH_NUM_THREADS", "TORCH_SHOW_CPP_STACKTRACES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "PYTHON_GIL", "PYTHONMALLOC",
)
# The variables DCGM's "Environmental Variables" check flags as performance-limiting
# (NVIDIA/DCGM nvvs/src/Software.cpp, see research/anchors.md section 1).
DCGM_PERF_LIMITING = (
    "NSIGHT_CUDA_DEBUGGER", "CUDA_INJECTION32_PATH", "CUDA_INJECTION64_PATH", "CUDA_AUTO_BOOST",
    "CUDA_ENABLE_COREDUMP_ON_EXCEPTION", "CUDA_COREDUMP_FILE", "CUDA_DEVICE_WAITS_ON_EXCEPTION",
    "CUDA_PROFILE", "COMPUTE_PROFILE", "OPENCL_PROFILE",
)
ENV_PREFIXES = ("NCCL_",)

_OFF = ("", "0", "false", "no", "off")


def collect_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The allowlisted environment variables (CUDA_*, NCCL_*, DCGM's performance-limiting ones...) and their values:
    only names known to matter reach the report, so no secret in the environment can leak into it."""
    from gpudiag.report.redact import allowlisted_env

    environ = os.environ if environ is None else environ
    return allowlisted_env(dict(environ), ENV_NAMES + DCGM_PERF_LIMITING, ENV_PREFIXES)


def env_findings(env: Mapping[str, str]) -> List[dict]:
    """Findings from environment variables alone (CUDA_LAUNCH_BLOCKING on, CUDA_VISIBLE_DEVICES empty, profiler or
    debugger injection, caching allocator off, eager module loading...): settings that idle a GPU without any
    measurement showing why."""
    out = []
    lb = env.get("CUDA_LAUNCH_BLOCKING")
    if lb is not None and lb.strip().lower() not in _OFF:
        out.append(finding(
            "CUDA_LAUNCH_BLOCKING_ON", "critical",
            "CUDA_LAUNCH_BLOCKING is on: every kernel launch waits for the GPU, so the CPU can never "
            "queue work ahead and the GPU idles between kernels.",
            {"variable": "CUDA_LAUNCH_BLOCKING", "value": lb, "source": "environment"},
            "unset CUDA_LAUNCH_BLOCKING (it is a debugging aid for locating CUDA errors)"))
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1", "NoDevFiles"):
        out.append(finding(
            "CUDA_VISIBLE_DEVICES_EMPTY", "critical",
            f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU from CUDA: torch runs on the CPU.",
            {"variable": "CUDA_VISIBLE_DEVICES", "value": cvd, "source": "environment"},
            "unset CUDA_VISIBLE_DEVICES or set it to the GPU index, e.g. CUDA_VISIBLE_DEVICES=0"))
    limiting = {k: env[k] for k in DCGM_PERF_LIMITING if k in env}
    if limiting:
        out.append(finding(
            "PERF_LIMITING_ENV_VARS", "warning",
            f"{len(limiting)} variable(s) that NVIDIA DCGM flags as performance-limiting are set: "
            + ", ".join(sorted(limiting)) + ".",
            {"variables": limiting, "source": "environment; list from NVIDIA DCGM's environment check"},
            "unset them unless you are profiling or debugging on purpose"))
    nc = env.get("PYTORCH_NO_CUDA_MEMORY_CACHING")
    if nc is not None and nc.strip().lower() not in _OFF:
        out.append(finding(
            "CUDA_CACHING_ALLOCATOR_OFF", "warning",
            "PYTORCH_NO_CUDA_MEMORY_CACHING disables torch's caching allocator: every tensor "
            "allocation goes to cudaMalloc/cudaFree, which synchronise and are slow.",
            {"variable": "PYTORCH_NO_CUDA_MEMORY_CACHING", "value": nc, "source": "environment"},
            "unset PYTORCH_NO_CUDA_MEMORY_CACHING"))
    ml = env.get("CUDA_MODULE_LOADING")
    if ml is not None and ml.strip().upper() == "EAGER":
        out.append(finding(
            "CUDA_MODULE_LOADING_EAGER", "info",
            "CUDA_MODULE_LOADING=EAGER loads every kernel into each CUDA context: each worker "
            "process costs more device memory (torch's default, LAZY, measured ~287 MB vs ~667 MB "
            "per context in pytorch/pytorch#109888).",
            {"variable": "CUDA_MODULE_LOADING", "value": ml, "source": "environment"},
            "unset CUDA_MODULE_LOADING (torch sets LAZY by default)"))
    return out


def findings_for(data: Mapping) -> List[dict]:
    """Findings from collected `system` data (pure: tested on dicts)."""
    out = env_findings(data.get("env") or {})
    os_ = data.get("os") or {}
    mem = data.get("memory") or {}
    py = data.get("python") or {}

    if mem.get("wsl_memory_cap_bytes"):
        out.append(finding(
            "WSL_MEMORY_CAP", "info",
            f"WSL2 runs Linux in a VM capped at {fmt_bytes(mem['wsl_memory_cap_bytes'], missing='unknown')} "
            "(by default half of the Windows host's RAM): workers are OOM-killed at this cap even "
            "when Windows shows free memory.",
            {"wsl_memory_cap_bytes": mem["wsl_memory_cap_bytes"], "source": "/proc/meminfo MemTotal inside WSL2"},
            "raise it in %UserProfile%\\.wslconfig: [wsl2] memory=12GB, then `wsl --shutdown`"))
    limit, total = mem.get("cgroup_limit_bytes"), mem.get("total_bytes")
    if limit is not None and (total is None or limit < total):
        out.append(finding(
            "CGROUP_MEMORY_LIMIT", "warning",
            f"This process runs in a cgroup limited to {fmt_bytes(limit, missing='unknown')} (machine RAM {fmt_bytes(total, missing='unknown')}; "
            f"{fmt_bytes(mem.get('cgroup_usage_bytes'), missing='unknown')} already used): the OOM killer fires at the cgroup limit.",
            {"cgroup_limit_bytes": limit, "cgroup_usage_bytes": mem.get("cgroup_usage_bytes"),
             "total_bytes": total, "cgroup_version": mem.get("cgroup_version"),
             "source": mem.get("cgroup_limit_source")},
            "size the worker count to the cgroup limit, or raise it (docker --memory, systemd MemoryMax)"))
    out += cpu_limit_findings(data.get("cpu") or {})
    oom = mem.get("oom_kills_since_boot")
    if isinstance(oom, int) and oom > 0:
        out.append(finding(
            "OOM_KILLS_SINCE_BOOT", "warning",
            f"The kernel's OOM killer has killed {oom} process(es) since boot.",
            {"oom_kills_since_boot": oom, "source": "/proc/vmstat oom_kill"},
            "check `journalctl -k | grep -i 'killed process'` to see which; use fewer workers or more memory"))
    coom = mem.get("cgroup_oom_kills")
    if isinstance(coom, int) and coom > 0:
        src = "memory.events oom_kill" if mem.get("cgroup_version") == 2 else "memory.oom_control oom_kill"
        out.append(finding(
            "CGROUP_OOM_KILLS", "warning",
            f"The OOM killer has killed {coom} process(es) inside this cgroup.",
            {"cgroup_oom_kills": coom, "source": f"cgroup {src}"},
            "use fewer workers, or raise the cgroup memory limit"))
    if mem.get("overcommit_memory") == 2:
        out.append(finding(
            "OVERCOMMIT_STRICT", "warning",
            "vm.overcommit_memory=2 (strict): CUDA reserves large host virtual-address ranges, so "
            "cuInit or allocations can fail with out-of-memory while RAM and VRAM are free.",
            {"overcommit_memory": 2, "commit_limit_bytes": mem.get("commit_limit_bytes"),
             "committed_bytes": mem.get("committed_bytes"),
             "source": "/proc/sys/vm/overcommit_memory, /proc/meminfo CommitLimit/Committed_AS"},
            "sudo sysctl vm.overcommit_memory=0 (the kernel default)"))
    if mem.get("swap_total_bytes") == 0:
        out.append(finding(
            "NO_SWAP", "info",
            "No swap is configured: when RAM runs out the OOM killer ends a process at once, "
            "with no slow-down first.",
            {"swap_total_bytes": 0, "source": "/proc/meminfo SwapTotal" if os_.get("name") == "Linux" else "psutil"},
            None))
    if py.get("free_threaded_build"):
        if py.get("gil_enabled"):
            out.append(finding(
                "GIL_REENABLED", "info",
                "This is a free-threaded Python build, but the GIL is enabled at run time"
                + (" after importing torch" if py.get("gil_checked_after_torch") else "")
                + ": threads still take turns.",
                {"free_threaded_build": True, "gil_enabled": True,
                 "gil_checked_after_torch": py.get("gil_checked_after_torch"),
                 "source": "sysconfig Py_GIL_DISABLED, sys._is_gil_enabled()"},
                "check PYTHON_GIL / -X gil and extensions without free-threading support"))
        else:
            out.append(finding(
                "FREE_THREADED_PYTHON", "info",
                "Free-threaded Python with the GIL off: Python threads can run in parallel.",
                {"free_threaded_build": True, "gil_enabled": False,
                 "gil_checked_after_torch": py.get("gil_checked_after_torch"),
                 "source": "sysconfig Py_GIL_DISABLED, sys._is_gil_enabled()"},
                None))
    if py.get("mp_start_method") == "fork":
        out.append(finding(
            "FORK_START_METHOD", "info",
            "multiprocessing starts workers with `fork` by default here: CUDA cannot be used in a "
            "forked child once the parent has initialised it.",
            {"mp_start_method": "fork", "source": "multiprocessing.get_all_start_methods()[0]"},
            "use multiprocessing.get_context('spawn') (or torch.multiprocessing with spawn) for CUDA workers"))
    out += inventory_findings(data)
    return out


def cpu_limit_findings(cpu: Mapping) -> List[dict]:
    """CPU_LIMIT when a quota, cpuset or affinity leaves this process fewer CPUs than the machine has: the limit
    by kind (never a cgroup path), the usable cores it leaves, and how often its cgroup has been throttled since
    the cgroup was created (a warning when that is often: the work there wants more than the limit)."""
    from gpudiag.diagnose import cpu_limit
    from gpudiag.diagnose.thresholds import THROTTLED_MIN_PERIODS, THROTTLED_SHARE_MIN

    limit = cpu.get("limit") or {}
    if not cpu_limit.limit_text(limit):
        return []
    usable = limit.get("usable_cores")
    msg = (f"This process may use {limit.get('usable_cpus')} of the machine's {cpu.get('logical_cores')} logical "
           f"CPUs: {cpu_limit.limit_text(limit)} leaves {usable} usable core{'s' if usable != 1 else ''} for workers"
           + (", so more than one CPU-bound worker cannot help." if usable == 1 else "."))
    since = limit.get("throttling_since_start") or {}
    periods, throttled = since.get("nr_periods"), since.get("nr_throttled")
    share = throttled / periods if isinstance(periods, int) and periods and isinstance(throttled, int) else None
    if share is not None:
        msg += (f" Its cgroup has been throttled in {100 * share:.0f} % of its {periods} scheduler periods since it "
                "was created.")
    severity = "warning" if (share is not None and periods >= THROTTLED_MIN_PERIODS
                             and share >= THROTTLED_SHARE_MIN) else "info"
    return [finding(
        "CPU_LIMIT", severity, msg,
        {k: limit.get(k) for k in ("usable_cpus", "usable_cores", "limited_by", "quota_cpus", "quota_period_us",
                                   "quota_source", "cgroup_version", "cpuset_cpus", "affinity_cores",
                                   "throttling_since_start")},
        f"size workers (and torch.set_num_threads) to {usable}; for more, raise the limit (docker --cpus, "
        "Kubernetes resources.limits.cpu, systemd CPUQuota, taskset)")]


def inventory_findings(data: Mapping) -> List[dict]:
    """Findings from the collect_env-style inventory (issue 17): CUDA packages against torch's build."""
    out = []
    check = (data.get("packages") or {}).get("cuda_check") or {}
    torch = data.get("torch") or {}
    mismatches = check.get("mismatches") or []
    if mismatches:
        shown = "; ".join(f"{m['name']} {m['installed']} (expected {m['expected']}: {m['rule']})" for m in mismatches[:6])
        out.append(finding(
            "CUDA_WHEEL_MISMATCH", "warning",
            f"{len(mismatches)} CUDA package(s) do not match the CUDA {check.get('torch_cuda')} torch "
            f"{torch.get('version')} was built for: {shown}. Mixed CUDA libraries fail at import or at the "
            "first kernel (undefined symbols, 'CUDA driver version is insufficient', cuDNN errors).",
            {"torch_cuda": check.get("torch_cuda"), "mismatches": mismatches, "pins": check.get("pins"),
             "source": "pip dist-info / conda-meta versions vs torch's Requires-Dist pins and torch/version.py"},
            "reinstall torch from the index of its CUDA version so pip resolves matching wheels, e.g. "
            "`pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu124`"))
    stray = [n for n in (check.get("cuda_packages_without_cuda_torch") or []) if n.lower().startswith("nvidia-")]
    if stray and torch.get("version") and not torch.get("cuda_build") and not torch.get("hip"):
        out.append(finding(
            "CUDA_WHEELS_WITH_CPU_TORCH", "info",
            f"{len(stray)} NVIDIA CUDA wheel(s) are installed ({', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}) "
            f"but torch {torch.get('version')} is a CPU-only build: torch will not use them and "
            "torch.cuda.is_available() stays False.",
            {"torch_version": torch.get("version"), "cuda_wheels": stray, "source": "torch/version.py cuda = None"},
            "install a CUDA build of torch (https://pytorch.org/get-started/locally/), or remove the unused wheels"))
    return out


def collect(detailed_cpu: bool, import_torch: bool, environ: Optional[Mapping[str, str]] = None,
            pending=None) -> dict:
    """All `system` data. detailed_cpu/import_torch are the slow parts (py-cpuinfo, torch import);
    `pending` is platform.inventory.start()'s handle when the caller started the compilers early."""
    import sysconfig

    from gpudiag import platform
    from gpudiag.platform import inventory

    os_ = platform.os_facts(environ=environ)
    # Importing torch can only change the GIL on a free-threaded build: elsewhere the answer is the
    # same without paying for the import.
    check_torch = import_torch or bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    env = collect_env(environ)
    return {
        "os": os_,
        # python first with check_torch: the GIL is read after torch has been imported
        "python": platform.python_facts(check_torch=check_torch),
        "cpu": platform.cpu_facts(detailed=detailed_cpu),
        "memory": platform.memory_facts(wsl=os_.get("wsl")),
        "torch": platform.torch_facts(import_torch=import_torch),
        "env": env,
        # collect_env's other fields (issue 17): toolchain, CUDA libraries, CPU features, packages
        **_inventory(environ, import_torch, pending),
        "allocator_config": inventory.allocator_config(env),
    }


def _inventory(environ: Optional[Mapping[str, str]], import_torch: bool, pending=None) -> dict:
    """platform.inventory's facts; torch's CUDA build is read from its files (no import)."""
    from gpudiag import platform
    from gpudiag.backends import torch_meta
    from gpudiag.platform import inventory

    return inventory.collect(environ=environ, kind=platform.KIND, torch_cuda=torch_meta.torch_cuda_version(),
                             import_torch=import_torch, pending=pending)


def run(ctx: ProbeContext) -> ProbeOutput:
    # --quick reads the CPU from /proc (py-cpuinfo times the TSC for over a second) and torch's build
    # from its files (importing it costs seconds; the gil probe re-checks the GIL after importing it);
    # --full adds both: the cuDNN version and py-cpuinfo's flags and caches.
    """The system probe's facts and findings; --quick reads CPU and torch build from files, --full imports torch
    and runs py-cpuinfo for the cuDNN version and CPU flags."""
    full = not ctx.quick
    data = collect(detailed_cpu=full, import_torch=full)
    return ProbeOutput(data=data, findings=findings_for(data))


PROBE = Probe(
    name="system",
    title="System",
    summary="OS/distro, WSL, container, Python + GIL, CPU, RAM/cgroup limits, torch build, CUDA env vars",
    run=run,
    needs=(),
    isolate=True,  # imports torch (to read cuDNN and the GIL after it) away from the parent
    timeout_s=60.0,
)
