"""Probe `system`: the OS, Python and its GIL, CPU, memory limits and OOM evidence, torch build, env.

Runs in a child so it can import torch (to read the GIL state after torch loads) without the
parent paying for it; it never initialises CUDA.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from gpudiag.probes.base import Probe, ProbeContext, ProbeOutput, finding

ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "CUDA_DEVICE_ORDER", "CUDA_MODULE_LOADING",
    "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_CACHE_DISABLE", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING", "TORCH_CUDNN_V8_API_DISABLED",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "PYTHON_GIL", "PYTHONMALLOC", "WSL_DISTRO_NAME",
)
ENV_PREFIXES = ("NCCL_",)
# Variables DCGM's diagnostic flags as performance-limiting (NVIDIA/DCGM nvvs/src/Software.cpp).
DCGM_PERF_ENV = (
    "NSIGHT_CUDA_DEBUGGER", "CUDA_INJECTION32_PATH", "CUDA_INJECTION64_PATH", "CUDA_AUTO_BOOST",
    "CUDA_ENABLE_COREDUMP_ON_EXCEPTION", "CUDA_COREDUMP_FILE", "CUDA_DEVICE_WAITS_ON_EXCEPTION",
    "CUDA_PROFILE", "COMPUTE_PROFILE", "OPENCL_PROFILE",
)

GIB = 2**30


def env_findings(env: Dict[str, str]) -> List[dict]:
    out = []
    if env.get("CUDA_LAUNCH_BLOCKING", "").strip() not in ("", "0"):
        out.append(finding(
            "CUDA_LAUNCH_BLOCKING_ON", "critical",
            "CUDA_LAUNCH_BLOCKING is set: every kernel launch waits for the GPU to finish, so the CPU "
            "and GPU never overlap and any parallelism strategy is serialised.",
            {"CUDA_LAUNCH_BLOCKING": env["CUDA_LAUNCH_BLOCKING"], "source": "environment"},
            "Unset it (it is a debugging aid): `unset CUDA_LAUNCH_BLOCKING` / remove it from your launch config."))
    if "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"].strip() in ("", "-1", "NoDevFiles"):
        out.append(finding(
            "CUDA_VISIBLE_DEVICES_EMPTY", "critical",
            "CUDA_VISIBLE_DEVICES hides every GPU from CUDA programs: torch will run on the CPU.",
            {"CUDA_VISIBLE_DEVICES": env["CUDA_VISIBLE_DEVICES"], "source": "environment"},
            "Unset it or list the GPU index to use, e.g. CUDA_VISIBLE_DEVICES=0."))
    if env.get("PYTORCH_NO_CUDA_MEMORY_CACHING", "").strip() not in ("", "0"):
        out.append(finding(
            "CUDA_CACHING_ALLOCATOR_OFF", "warning",
            "PYTORCH_NO_CUDA_MEMORY_CACHING disables torch's caching allocator: every allocation goes to "
            "cudaMalloc/cudaFree, which synchronise and slow each cycle.",
            {"PYTORCH_NO_CUDA_MEMORY_CACHING": env["PYTORCH_NO_CUDA_MEMORY_CACHING"]},
            "Unset it unless you are debugging memory."))
    return out


def dcgm_env_finding(environ: Dict[str, str]) -> List[dict]:
    # Only the names are reported: these hold paths or flags, not something a report needs verbatim.
    present = [k for k in DCGM_PERF_ENV if k in environ]
    if not present:
        return []
    return [finding("PERFORMANCE_LIMITING_ENV", "warning",
                    f"{', '.join(present)} {'is' if len(present) == 1 else 'are'} set: DCGM flags these as "
                    "limiting CUDA performance (profiler/debugger injection, core dumps).",
                    {"variables": present, "source": "DCGM diagnostic environment check list"},
                    "Unset them for performance runs.")]


def memory_findings(mem: Dict[str, Any], wsl: Any) -> List[dict]:
    out = []
    kills = mem.get("oom_kills_since_boot")
    if isinstance(kills, int) and kills > 0:
        out.append(finding("OOM_KILLS_SINCE_BOOT", "warning",
                           f"The kernel's out-of-memory killer has killed {kills} process(es) since boot: a worker "
                           "that vanished without a Python error was likely one of them.",
                           {"oom_kills_since_boot": kills, "source": "/proc/vmstat oom_kill"},
                           "Run fewer workers or smaller batches; `gpudiag preflight --workers N` checks the fit first."))
    ck = mem.get("cgroup_oom_kills")
    if isinstance(ck, int) and ck > 0:
        out.append(finding("CGROUP_OOM_KILLS", "warning",
                           f"{ck} process(es) in this cgroup (container/session) were OOM-killed at its memory limit.",
                           {"cgroup_oom_kills": ck, "cgroup_limit_bytes": mem.get("cgroup_limit_bytes"),
                            "source": "cgroup memory.events oom_kill"},
                           "Raise the container's memory limit or run fewer workers."))
    limit, total = mem.get("cgroup_limit_bytes"), mem.get("total_bytes")
    if isinstance(limit, int) and isinstance(total, int) and limit < total:
        out.append(finding("CGROUP_MEMORY_LIMIT", "warning" if limit < total / 2 else "info",
                           f"This process runs under a cgroup memory limit of {limit / GIB:.1f} GiB "
                           f"(the machine has {total / GIB:.1f} GiB): workers are killed at the limit, not at RAM.",
                           {"cgroup_limit_bytes": limit, "total_bytes": total, "source": "cgroup memory.max"},
                           "Size workers against the limit; raise it (docker --memory, systemd MemoryMax) if needed."))
    if wsl == 2 and mem.get("wsl_memory_cap_bytes"):
        cap = mem["wsl_memory_cap_bytes"]
        out.append(finding("WSL_MEMORY_CAP", "info",
                           f"WSL2 gives this Linux VM {cap / GIB:.1f} GiB (by default half of the Windows host's RAM): "
                           "the OOM killer acts at this cap.",
                           {"wsl_memory_cap_bytes": cap, "source": "MemTotal inside the WSL2 VM"},
                           "Raise it in %UserProfile%\\.wslconfig: [wsl2] memory=24GB, then `wsl --shutdown`."))
    if mem.get("overcommit_memory") == 2:
        out.append(finding("OVERCOMMIT_STRICT", "warning",
                           "vm.overcommit_memory=2 (strict): CUDA reserves large host address ranges, so cuInit or "
                           "allocations can fail with out-of-memory while RAM is free.",
                           {"overcommit_memory": 2, "commit_limit_bytes": mem.get("commit_limit_bytes"),
                            "committed_as_bytes": mem.get("committed_as_bytes"), "source": "/proc/sys/vm/overcommit_memory"},
                           "Use the default heuristic mode 0 (`sysctl vm.overcommit_memory=0`) if CUDA fails to start."))
    if mem.get("swap_total_bytes") == 0:
        out.append(finding("NO_SWAP", "info",
                           "No swap: when workers exceed RAM the OOM killer acts at once, with no slow-down first.",
                           {"swap_total_bytes": 0, "source": "psutil.swap_memory"}, None))
    return out


def python_findings(py: Dict[str, Any], torch: Dict[str, Any]) -> List[dict]:
    out = []
    if py.get("free_threaded_build"):
        if py.get("gil_enabled"):
            out.append(finding("GIL_REENABLED", "warning",
                               "This is a free-threaded Python build, but the GIL is enabled at run time"
                               f"{' after importing torch' if py.get('gil_checked_after_torch') else ''}: "
                               "threads still take turns.",
                               {"free_threaded_build": True, "gil_enabled": True,
                                "gil_checked_after_torch": py.get("gil_checked_after_torch")},
                               "Use a torch build with free-threading support, or PYTHON_GIL=0 at your own risk."))
        else:
            out.append(finding("FREE_THREADED_PYTHON", "info",
                               "Free-threaded Python with the GIL disabled: Python threads can run in parallel.",
                               {"free_threaded_build": True, "gil_enabled": False}, None))
    if py.get("mp_start_method") == "fork" and torch.get("cuda_build"):
        out.append(finding("FORK_START_METHOD", "info",
                           "multiprocessing defaults to 'fork' here: a forked child cannot use CUDA once the parent "
                           "has initialised it ('Cannot re-initialize CUDA in forked subprocess').",
                           {"mp_start_method": "fork"},
                           "Use multiprocessing.get_context('spawn') (or torch.multiprocessing with spawn) for GPU workers."))
    return out


def collect(root: str = "/", environ=None, check_torch: bool = True, detailed_cpu: bool = True) -> Dict[str, Any]:
    from gpudiag import platform
    from gpudiag.redact import allowlisted_env

    environ = dict(os.environ) if environ is None else environ
    os_ = platform.os_facts(root, environ)
    return {
        "os": os_,
        "python": platform.python_facts(check_torch=check_torch),
        "cpu": platform.cpu_facts(detailed=detailed_cpu, root=root),
        "memory": platform.memory_facts(root, wsl=os_.get("wsl")),
        "torch": platform.torch_facts(import_torch=check_torch),
        "env": allowlisted_env(environ, ENV_ALLOWLIST, ENV_PREFIXES),
        "performance_limiting_env": [k for k in DCGM_PERF_ENV if k in environ],
    }


def analyze(data: Dict[str, Any]) -> List[dict]:
    env = data.get("env") or {}
    findings = env_findings(env)
    findings += dcgm_env_finding({k: "" for k in data.get("performance_limiting_env") or []})
    findings += memory_findings(data.get("memory") or {}, (data.get("os") or {}).get("wsl"))
    findings += python_findings(data.get("python") or {}, data.get("torch") or {})
    cpu = data.get("cpu") or {}
    if cpu.get("affinity_cores") and cpu.get("logical_cores") and cpu["affinity_cores"] < cpu["logical_cores"]:
        findings.append(finding("CPU_AFFINITY_RESTRICTED", "info",
                                f"This process may use {cpu['affinity_cores']} of {cpu['logical_cores']} logical CPUs "
                                "(affinity mask, taskset or container CPU set): worker counts should follow it.",
                                {"affinity_cores": cpu["affinity_cores"], "logical_cores": cpu["logical_cores"]}, None))
    return findings


def run(ctx: ProbeContext) -> ProbeOutput:
    data = collect(detailed_cpu=not ctx.options.get("fast_cpu", False))
    return ProbeOutput(data, analyze(data))


PROBE = Probe(
    name="system",
    title="System",
    summary="OS/distro, WSL, containers, Python and its GIL, CPU, RAM limits and OOM kills, torch build, env",
    run=run,
    needs=(),
    isolate=True,
    timeout_s=60,
)
