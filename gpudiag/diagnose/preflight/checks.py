"""`gpudiag preflight`: a go / no-go in about a second, before a long run.

Two halves, so that every check is testable without hardware:
- `gather_facts(plan, ...)` collects facts cheaply (NVML through the driver probe's `collect`, memory,
  torch build facts read from files, environment, saved reports, disk). It never imports torch and
  never initialises CUDA: NVML is a separate library that does not create a CUDA context.
- `run_checks(facts, plan)` turns a facts dict into `Check`s with pure functions, one per concern.

`preflight(workers=4, ...)` does both and returns a `PreflightResult` (`.ready`, `.checks`,
`.raise_if_failed()`). Rules, thresholds and their sources are in docs/preflight.md.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from gpudiag.measure.sizes import format_size, parse_size

STATUSES = ("pass", "warn", "fail", "skip")
STRATEGIES = ("threads", "processes")
NA = "n/a"  # what the NVML seam writes for a value the GPU/driver does not give

# Conservative per-worker defaults, used only when neither a saved report nor a flag gives a figure.
# Sources (docs/preflight.md, research/methods.md 7.3): a CUDA context takes ~300-400 MB of device
# memory with lazy module loading (measured 287 MB LAZY vs 667 MB EAGER, pytorch#107667/#109888)
# and host RSS after importing torch and initialising CUDA is ~1-2 GB (1.9 GB max RSS, pytorch#12873).
DEFAULT_PROCESS_HOST_BYTES = 2 * 2**30
DEFAULT_PROCESS_DEVICE_BYTES = 768 * 2**20
# Threads share one process and one CUDA context; each thread adds its own tensors and buffers.
DEFAULT_THREAD_HOST_BYTES = 128 * 2**20
DEFAULT_THREAD_DEVICE_BYTES = 256 * 2**20

DEFAULT_LABEL = "conservative default, no saved report"  # docs/preflight.md says where the figures come from

TIGHT_FRACTION = 0.9  # a need above this share of what is free leaves no room: warn
REPORT_GLOB = "gpudiag-report-*.json"
MAX_REPORTS_READ = 20  # newest by modification time; keeps the search cheap in a folder of old reports

THROTTLING_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
                                "hw_thermal_slowdown", "hw_power_brake_slowdown"})
ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "CUDA_DEVICE_ORDER", "CUDA_MODULE_LOADING",
             "PYTORCH_NO_CUDA_MEMORY_CACHING")


# ----------------------------------------------------------------------------- data types

@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail | skip
    message: str
    evidence: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, "evidence": self.evidence}


@dataclass(frozen=True)
class Plan:
    """What the user is about to run; the checks compare the machine against it."""
    workers: int = 1
    strategy: str = "processes"
    device: int = 0
    ram_per_worker: Optional[int] = None
    vram_per_worker: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    min_free_disk: Optional[int] = None


class PreflightFailed(RuntimeError):
    """Raised by `PreflightResult.raise_if_failed()`; `.result` holds every check."""

    def __init__(self, result: "PreflightResult"):
        self.result = result
        super().__init__("gpudiag preflight: NOT READY: " + "; ".join(result.reasons()))


@dataclass
class PreflightResult:
    checks: List[Check]
    workers: int
    strategy: str
    per_worker: Dict[str, Any]
    duration_s: float
    strict: bool = False
    device: int = 0

    def blocking(self) -> List[Check]:
        """The checks that make it not ready: any fail; with strict, any warn too."""
        bad = ("fail", "warn") if self.strict else ("fail",)
        return [c for c in self.checks if c.status in bad]

    @property
    def ready(self) -> bool:
        return not self.blocking()

    def reasons(self) -> List[str]:
        return [f"{c.name}: {c.message}" for c in self.blocking()]

    def check(self, name: str) -> Optional[Check]:
        return next((c for c in self.checks if c.name == name), None)

    def raise_if_failed(self) -> "PreflightResult":
        if not self.ready:
            raise PreflightFailed(self)
        return self

    def to_dict(self) -> Dict[str, Any]:
        return {"ready": self.ready, "strict": self.strict, "checks": [c.to_dict() for c in self.checks],
                "workers": self.workers, "strategy": self.strategy, "device": self.device,
                "per_worker": self.per_worker, "duration_s": round(self.duration_s, 3)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def format_text(self) -> str:
        """One line per check, then READY / NOT READY and the reasons."""
        width = max(len(c.name) for c in self.checks) if self.checks else 0
        lines = [f"gpudiag preflight: {self.workers} worker{'s' if self.workers != 1 else ''}, "
                 f"{self.strategy}, CUDA device {self.device}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper():<4}  {c.name:<{width}}  {c.message}")
        warns = [c.name for c in self.checks if c.status == "warn"]
        if self.ready:
            tail = f" ({len(warns)} warning{'s' if len(warns) != 1 else ''}: {', '.join(warns)})" if warns else ""
            lines.append(f"READY{tail}  [{self.duration_s:.2f} s]")
        else:
            lines.append(f"NOT READY{' (--strict: warnings count)' if self.strict else ''}  [{self.duration_s:.2f} s]")
            lines.extend(f"  - {r}" for r in self.reasons())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_text()


# ----------------------------------------------------------------------------- small helpers

def _num(value: Any) -> Optional[float]:
    """A usable number, or None for None / "n/a" / bools / anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _version_tuple(text: Any) -> Optional[Tuple[int, int]]:
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?", str(text)) if text not in (None, NA) else None
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _display_path(path: str) -> str:
    """A path safe to print and share: relative to the current folder, or with the home folder as ~."""
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute)
        if not rel.startswith(".."):
            return rel
    except ValueError:  # another drive on Windows
        pass
    home = os.path.expanduser("~")
    if home and home != "~" and (absolute == home or absolute.startswith(home + os.sep)):
        return "~" + absolute[len(home):]
    return absolute


def _worst(statuses: Iterable[str]) -> str:
    order = {"fail": 3, "warn": 2, "pass": 1, "skip": 0}
    return max(statuses, key=lambda s: order[s], default="pass")


def _driver_host(facts: Mapping[str, Any]) -> str:
    """linux | wsl2 | windows | darwin | ...: the driver probe's view when it has one."""
    drv = facts.get("driver") or {}
    return drv.get("host") or facts.get("platform") or ""


def visible_nvml_indices(cvd: Optional[str], count: int) -> Tuple[Optional[List[int]], str]:
    """NVML indices CUDA will see, in CUDA order, from CUDA_VISIBLE_DEVICES.

    CUDA reads the comma list up to the first invalid entry (an index out of range, a repeat or
    garbage) and ignores the rest. GPU-/MIG- UUIDs cannot be mapped without UUIDs, which gpudiag does
    not collect (privacy): (None, note) then.
    """
    if cvd is None:
        return list(range(count)), "CUDA_VISIBLE_DEVICES not set: every GPU is visible"
    if not cvd.strip():
        return [], "CUDA_VISIBLE_DEVICES is set but empty"
    out: List[int] = []
    for token in cvd.split(","):
        token = token.strip()
        if re.match(r"(?i)^(GPU|MIG)-", token):
            return None, "CUDA_VISIBLE_DEVICES selects GPUs by UUID"
        if not re.match(r"^\d+$", token):
            break
        index = int(token)
        if index >= count or index in out:
            break
        out.append(index)
    return out, f"CUDA_VISIBLE_DEVICES={cvd}"


def resolve_gpu(facts: Mapping[str, Any], plan: Plan) -> Tuple[Optional[Dict[str, Any]], str]:
    """The driver data of the GPU the run will use (CUDA device `plan.device`), or (None, why not)."""
    nv = facts.get("nvml") or {}
    if not nv.get("reachable"):
        return None, "NVML not reachable"
    drv = facts.get("driver")
    if not isinstance(drv, dict):
        return None, facts.get("driver_reason") or "no driver facts"
    gpus = [g for g in drv.get("gpus") or [] if isinstance(g, dict)]
    visible, note = visible_nvml_indices((facts.get("env") or {}).get("CUDA_VISIBLE_DEVICES"), len(gpus))
    if visible is None:
        if len(gpus) == 1:
            visible = [0]
        else:
            return None, f"{note}; with {len(gpus)} GPUs gpudiag cannot tell which one is device {plan.device}"
    if plan.device >= len(visible):
        return None, f"CUDA device {plan.device} does not exist ({len(visible)} visible)"
    index = visible[plan.device]
    gpu = next((g for g in gpus if g.get("index") == index), None)
    if gpu is None:
        return None, f"no NVML data for GPU {index}"
    if gpu.get("error"):
        return None, f"NVML cannot read GPU {index}: {gpu['error']}"
    return gpu, ""


def _gpu_tag(gpu: Mapping[str, Any]) -> str:
    name = gpu.get("name")
    return f"GPU {gpu.get('index')}" + (f" ({name})" if isinstance(name, str) and name != NA else "")


# ----------------------------------------------------------------------------- per-worker need

def worker_needs(facts: Mapping[str, Any], plan: Plan) -> Dict[str, Any]:
    """Host and device bytes the planned workers need, and where each figure comes from.

    processes: N x (one worker process: its interpreter, torch, CUDA context and data).
    threads:   one process (interpreter, torch, one shared CUDA context) + N x a per-thread extra.
    An explicit --ram/--vram-per-worker wins (the user knows their model and data; a saved report only
    measured torch and CUDA overhead); then the latest saved report; then the documented defaults.
    """
    rep = facts.get("saved_report") or {}
    rep_label = f"report {rep.get('file')}" if rep else None
    if rep and rep.get("host_without_cuda"):
        rep_host_label = f"{rep_label}, measured without CUDA initialised"
    else:
        rep_host_label = rep_label

    def pick(flag: Optional[int], flag_name: str, rep_value: Any, rep_src: Optional[str], default: int,
             default_src: str) -> Tuple[int, str]:
        if flag is not None:
            return flag, flag_name
        if _num(rep_value) and rep_src:
            return int(rep_value), rep_src
        return default, default_src

    proc_host, proc_host_src = pick(None, "", rep.get("host_bytes"), rep_host_label,
                                    DEFAULT_PROCESS_HOST_BYTES, DEFAULT_LABEL)
    proc_dev, proc_dev_src = pick(None, "", rep.get("device_bytes"), rep_label,
                                  DEFAULT_PROCESS_DEVICE_BYTES, DEFAULT_LABEL)
    n = plan.workers
    if plan.strategy == "threads":
        host, host_src = pick(plan.ram_per_worker, "--ram-per-worker", rep.get("thread_host_bytes"), rep_label,
                              DEFAULT_THREAD_HOST_BYTES, DEFAULT_LABEL)
        dev, dev_src = pick(plan.vram_per_worker, "--vram-per-worker", None, None,
                            DEFAULT_THREAD_DEVICE_BYTES, DEFAULT_LABEL)
        shared_host, shared_dev = proc_host, proc_dev
        shared_src: Dict[str, Optional[str]] = {"host": proc_host_src, "device": proc_dev_src}
    else:
        host, host_src = pick(plan.ram_per_worker, "--ram-per-worker", rep.get("host_bytes"), rep_host_label,
                              DEFAULT_PROCESS_HOST_BYTES, DEFAULT_LABEL)
        dev, dev_src = pick(plan.vram_per_worker, "--vram-per-worker", rep.get("device_bytes"), rep_label,
                            DEFAULT_PROCESS_DEVICE_BYTES, DEFAULT_LABEL)
        shared_host = shared_dev = 0
        shared_src = {"host": None, "device": None}
    source = host_src if host_src == dev_src else f"host: {host_src}; device: {dev_src}"
    return {
        "host_bytes": host, "device_bytes": dev, "source": source,
        "host_source": host_src, "device_source": dev_src,
        "shared_host_bytes": shared_host, "shared_device_bytes": shared_dev,
        "shared_host_source": shared_src["host"], "shared_device_source": shared_src["device"],
        "total_host_bytes": shared_host + n * host, "total_device_bytes": shared_dev + n * dev,
    }


def _need_text(need: Mapping[str, Any], plan: Plan, kind: str) -> str:
    """'4 workers x 2.0 GiB (default) = 8.0 GiB' or '1 process 2.0 GiB + 4 threads x 128 MiB = ...'."""
    per, src = need[f"{kind}_bytes"], need[f"{kind}_source"]
    total = need[f"total_{kind}_bytes"]
    if plan.strategy == "threads":
        shared, shared_src = need[f"shared_{kind}_bytes"], need[f"shared_{kind}_source"]
        return (f"1 process {format_size(shared)} ({shared_src}) + {plan.workers} thread"
                f"{'s' if plan.workers != 1 else ''} x {format_size(per)} ({src}) = {format_size(total)}")
    return (f"{plan.workers} worker{'s' if plan.workers != 1 else ''} x {format_size(per)} ({src}) "
            f"= {format_size(total)}")


def _fit_status(need: float, have: float) -> str:
    if need > have:
        return "fail"
    if need > TIGHT_FRACTION * have:
        return "warn"
    return "pass"


# ----------------------------------------------------------------------------- the checks

def check_nvml(facts: Mapping[str, Any], plan: Plan) -> Check:
    nv = facts.get("nvml") or {}
    if not nv.get("reachable"):
        return Check("nvml", "fail", f"NVIDIA driver/NVML not reachable: {nv.get('reason') or 'unknown reason'}",
                     {"reason": nv.get("reason")})
    drv = facts.get("driver") or {}
    version, cuda = drv.get("driver_version"), drv.get("cuda_driver_version")
    count = len(drv.get("gpus") or [])
    parts = [f"NVIDIA driver {version}" if version not in (None, NA) else "NVIDIA driver"]
    if cuda not in (None, NA):
        parts.append(f"(supports CUDA {cuda})")
    parts.append(f"reachable, {count} GPU{'s' if count != 1 else ''}")
    if not facts.get("driver"):
        parts = [f"NVML reachable; driver details unavailable: {facts.get('driver_reason')}"]
    return Check("nvml", "pass", " ".join(parts),
                 {"driver_version": version, "cuda_driver_version": cuda, "gpu_count": count})


def check_gpu_visible(facts: Mapping[str, Any], plan: Plan) -> Check:
    env = facts.get("env") or {}
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    ev: Dict[str, Any] = {"CUDA_VISIBLE_DEVICES": cvd, "device": plan.device}
    if cvd is not None and not cvd.strip():
        return Check("gpu_visible", "fail", "CUDA_VISIBLE_DEVICES is set but empty: CUDA will see no GPU "
                     "(unset it, or set it to the GPU index, e.g. 0)", ev)
    nv = facts.get("nvml") or {}
    if not nv.get("reachable"):
        return Check("gpu_visible", "skip", "NVML not reachable, so no GPU can be listed", ev)
    drv = facts.get("driver")
    if not isinstance(drv, dict):
        return Check("gpu_visible", "skip", f"no driver facts: {facts.get('driver_reason')}", ev)
    count = len(drv.get("gpus") or [])
    ev["gpu_count"] = count
    if count == 0:
        return Check("gpu_visible", "fail", "the NVIDIA driver answers but lists no GPU", ev)
    visible, note = visible_nvml_indices(cvd, count)
    ev["visible_nvml_indices"] = visible
    if visible == []:
        return Check("gpu_visible", "fail", f"{note} hides every GPU (CUDA stops at the first invalid entry; "
                     f"valid indices are 0..{count - 1})", ev)
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("gpu_visible", "fail", why, ev)
    ev["nvml_index"] = gpu.get("index")
    msg = f"CUDA device {plan.device} is {_gpu_tag(gpu)}"
    total = _num(gpu.get("memory_total_bytes"))
    if total:
        msg += f", {format_size(total)}"
    if cvd is not None:
        msg += f" ({note})"
    if visible and len(visible) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        msg += "; assuming PCI order (set CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA and NVML agree)"
    return Check("gpu_visible", "pass", msg, ev)


def check_torch_cuda(facts: Mapping[str, Any], plan: Plan) -> Check:
    """torch's CUDA build against the driver's CUDA version.

    Rule (NVIDIA CUDA Compatibility guide, "Minor Version Compatibility", CUDA 11+): a runtime of
    CUDA X.Y runs on a driver that supports X.0 or later within the same major version, with a
    limited feature set (no JIT of PTX newer than the driver). So: driver >= torch -> pass; same
    major, older minor -> warn (runs unless torch has to JIT PTX for this GPU); older major, or
    older minor before CUDA 11 -> fail.
    """
    t = facts.get("torch") or {}
    version, cuda, hip = t.get("version"), t.get("cuda"), t.get("hip")
    ev = {"torch_version": version, "torch_cuda": cuda, "torch_hip": hip}
    if not version:
        return Check("torch_cuda", "skip", "torch is not installed in this Python; run preflight from the "
                     "environment that will run the training to check its torch build", ev)
    if hip:
        return Check("torch_cuda", "fail", f"torch {version} is a ROCm build (HIP {hip}): it cannot use an "
                     "NVIDIA GPU; install a CUDA build from pytorch.org", ev)
    if not cuda:
        return Check("torch_cuda", "fail", f"torch {version} is a CPU-only build: it cannot use the GPU; "
                     "install a CUDA build from pytorch.org", ev)
    drv = facts.get("driver") or {}
    dcuda = drv.get("cuda_driver_version") if (facts.get("nvml") or {}).get("reachable") else None
    ev["driver_cuda"] = dcuda
    want, have = _version_tuple(cuda), _version_tuple(dcuda)
    if have is None:
        why = "NVML not reachable" if not (facts.get("nvml") or {}).get("reachable") else "the driver does not say"
        return Check("torch_cuda", "skip", f"torch {version} is built for CUDA {cuda}; the driver's CUDA "
                     f"version is unknown ({why})", ev)
    if want is None:
        return Check("torch_cuda", "skip", f"cannot read torch's CUDA version {cuda!r}", ev)
    if have >= want:
        return Check("torch_cuda", "pass", f"torch {version} (CUDA {cuda}) runs on this driver (supports CUDA "
                     f"{dcuda})", ev)
    if have[0] == want[0] and want[0] >= 11:
        return Check("torch_cuda", "warn", f"torch {version} is built for CUDA {cuda} but the driver supports "
                     f"CUDA {dcuda}: it runs through CUDA minor version compatibility, but kernels that need "
                     "newer PTX JIT-compiled fail; update the driver to be safe", ev)
    return Check("torch_cuda", "fail", f"torch {version} needs CUDA {cuda} but the driver only supports CUDA "
                 f"{dcuda}: update the NVIDIA driver or install a torch build for CUDA {have[0]}.x", ev)


def _proc_rows(gpu: Mapping[str, Any], kind: str) -> Any:
    rows = (gpu.get("processes") or {}).get(kind, NA)
    return rows if isinstance(rows, list) else NA


def _proc_name(row: Mapping[str, Any]) -> str:
    name = row.get("name")
    if not name:
        return f"pid {row.get('pid')}"
    label = row.get("label")
    if row.get("category") == "app" and label and label.lower() != str(name).lower():
        return f"{name} ({label})"
    return str(name)


def _names(rows: Sequence[Mapping[str, Any]]) -> str:
    seen: List[str] = []
    for r in rows:
        n = _proc_name(r)
        if n not in seen:
            seen.append(n)
    return ", ".join(seen)


def check_gpu_processes(facts: Mapping[str, Any], plan: Plan) -> Check:
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("gpu_processes", "skip", why)
    compute, graphics = _proc_rows(gpu, "compute"), _proc_rows(gpu, "graphics")
    if compute is NA and graphics is NA:
        return Check("gpu_processes", "skip", f"NVML does not list the processes on {_gpu_tag(gpu)} here "
                     "(usual under WSL2)")
    own = {facts.get("pid")}
    compute = [r for r in (compute if compute is not NA else []) if r.get("pid") not in own]
    graphics = [r for r in (graphics if graphics is not NA else []) if r.get("pid") not in own]
    # Windows (WDDM) lists desktop processes in both lists (C+G). A known desktop/app process there is
    # drawing, not computing; any other process in both lists counts once, as compute.
    gpids = {r.get("pid") for r in graphics}
    drawing = {r.get("pid") for r in compute if r.get("pid") in gpids and r.get("category") in ("display", "app")}
    compute = [r for r in compute if r.get("pid") not in drawing]
    cpids = {r.get("pid") for r in compute}
    graphics = [r for r in graphics if r.get("pid") not in cpids]
    brief = lambda rows: [{"pid": r.get("pid"), "name": r.get("name"),  # noqa: E731
                           "used_memory_bytes": r.get("used_memory_bytes")} for r in rows]
    ev = {"gpu": gpu.get("index"), "compute": brief(compute), "graphics": brief(graphics)}
    if not compute and not graphics:
        return Check("gpu_processes", "pass", f"no other process on {_gpu_tag(gpu)}", ev)
    parts = []
    if compute:
        used = sum(_num(r.get("used_memory_bytes")) or 0 for r in compute)
        parts.append(f"compute: {_names(compute)}" + (f" ({format_size(used)})" if used else ""))
    if graphics:
        parts.append(f"graphics: {_names(graphics)}")
    tail = (" - they time-share the GPU with your run" if compute else
            " - the desktop draws on this GPU and competes for it; close GPU-accelerated apps for a long run")
    return Check("gpu_processes", "warn", f"{_gpu_tag(gpu)} is shared: {'; '.join(parts)}{tail}", ev)


def check_vram(facts: Mapping[str, Any], plan: Plan, need: Mapping[str, Any]) -> Check:
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("vram", "skip", why)
    free, total = _num(gpu.get("memory_free_bytes")), _num(gpu.get("memory_total_bytes"))
    ev = {"gpu": gpu.get("index"), "free_bytes": free, "total_bytes": total,
          "need_bytes": need["total_device_bytes"], "per_worker_bytes": need["device_bytes"],
          "source": need["device_source"]}
    if free is None:
        return Check("vram", "skip", f"NVML does not report free memory on {_gpu_tag(gpu)}", ev)
    status = _fit_status(need["total_device_bytes"], free)
    verdict = {"fail": "does not fit in", "warn": "barely fits in", "pass": "fits in"}[status]
    return Check("vram", status, f"{_need_text(need, plan, 'device')} {verdict} {format_size(free)} free"
                 + (f" of {format_size(total)}" if total else "") + f" on GPU {gpu.get('index')}", ev)


def host_budget(mem: Mapping[str, Any]) -> Tuple[Optional[float], str]:
    """Bytes new workers may use, and what limits it (RAM available, or the cgroup limit)."""
    budget = _num(mem.get("budget_bytes"))
    avail = _num(mem.get("available_bytes"))
    limit, usage = _num(mem.get("cgroup_limit_bytes")), _num(mem.get("cgroup_usage_bytes"))
    cg_room = limit - usage if limit is not None and usage is not None else None
    if budget is None:
        candidates = [v for v in (avail, cg_room) if v is not None]
        budget = min(candidates) if candidates else None
    if cg_room is not None and (avail is None or cg_room <= avail):
        return budget, f"cgroup limit {format_size(limit)}, {format_size(usage)} used"
    return budget, "available RAM"


def check_host_ram(facts: Mapping[str, Any], plan: Plan, need: Mapping[str, Any]) -> Check:
    mem = facts.get("memory") or {}
    budget, what = host_budget(mem)
    ev = {k: mem.get(k) for k in ("available_bytes", "total_bytes", "cgroup_limit_bytes", "cgroup_usage_bytes",
                                  "wsl_memory_cap_bytes", "budget_bytes")}
    ev.update({"budget_bytes": budget, "need_bytes": need["total_host_bytes"],
               "per_worker_bytes": need["host_bytes"], "source": need["host_source"],
               "facts_from": facts.get("memory_source")})
    if budget is None:
        return Check("host_ram", "skip", f"available memory unknown ({facts.get('memory_reason') or 'no facts'})", ev)
    status = _fit_status(need["total_host_bytes"], budget)
    verdict = {"fail": "does not fit in", "warn": "barely fits in", "pass": "fits in"}[status]
    msg = f"{_need_text(need, plan, 'host')} {verdict} {format_size(budget)} ({what})"
    cap = _num(mem.get("wsl_memory_cap_bytes"))
    if cap:
        msg += f"; WSL2 caps this Linux at {format_size(cap)} (.wslconfig memory=)"
    if status == "fail":
        msg += " - expect the OOM killer"
    return Check("host_ram", status, msg, ev)


def check_swap(facts: Mapping[str, Any], plan: Plan, need: Mapping[str, Any]) -> Check:
    mem = facts.get("memory") or {}
    total, used = _num(mem.get("swap_total_bytes")), _num(mem.get("swap_used_bytes"))
    ev = {"swap_total_bytes": total, "swap_used_bytes": used}
    if total is None:
        return Check("swap", "skip", "swap size unknown", ev)
    budget, _ = host_budget(mem)
    if total == 0:
        if budget and need["total_host_bytes"] > 0.75 * budget:
            return Check("swap", "warn", "no swap, and the workers need over 3/4 of the memory left: going over "
                         "means the OOM killer, not a slowdown", ev)
        return Check("swap", "pass", "no swap (fine while the workers fit with room to spare)", ev)
    if used is not None and used > 0.5 * total:
        return Check("swap", "warn", f"swap is already {100 * used / total:.0f}% used ({format_size(used)} of "
                     f"{format_size(total)}): this machine is short of RAM before the run starts", ev)
    return Check("swap", "pass", f"{format_size(total)} swap" + (f", {format_size(used)} used" if used else ""), ev)


def check_oom_kills(facts: Mapping[str, Any], plan: Plan) -> Check:
    mem = facts.get("memory") or {}
    kills, cg_kills = _num(mem.get("oom_kills_since_boot")), _num(mem.get("cgroup_oom_kills"))
    ev = {"oom_kills_since_boot": kills, "cgroup_oom_kills": cg_kills}
    if kills is None and cg_kills is None:
        return Check("oom_kills", "skip", "no OOM-kill counter here (Linux /proc/vmstat)", ev)
    parts = []
    if kills:
        parts.append(f"the OOM killer has killed {int(kills)} process{'es' if kills != 1 else ''} since boot")
    if cg_kills:
        parts.append(f"{int(cg_kills)} in this cgroup")
    if parts:
        return Check("oom_kills", "warn", "; ".join(parts) + ": memory has already run out on this machine "
                     "(`journalctl -k | grep -i oom` shows which)", ev)
    return Check("oom_kills", "pass", "no OOM kills since boot", ev)


def check_clocks(facts: Mapping[str, Any], plan: Plan) -> Check:
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("clocks", "skip", why)
    ce = gpu.get("clock_event_reasons") or {}
    active = ce.get("active")
    ev = {"gpu": gpu.get("index"), "active": active, "raw": ce.get("raw"),
          "temperature_c": gpu.get("temperature_c"), "power_draw_w": gpu.get("power_draw_w"),
          "power_limit_w": gpu.get("power_limit_w")}
    if not isinstance(active, list):
        return Check("clocks", "skip", f"NVML does not report clock-event reasons on {_gpu_tag(gpu)}", ev)
    throttling = [r for r in active if r in THROTTLING_REASONS]
    if throttling:
        extra = []
        if _num(gpu.get("temperature_c")) is not None:
            extra.append(f"{gpu['temperature_c']} C")
        if _num(gpu.get("power_draw_w")) is not None and _num(gpu.get("power_limit_w")) is not None:
            extra.append(f"{gpu['power_draw_w']} W of {gpu['power_limit_w']} W")
        return Check("clocks", "warn", f"{_gpu_tag(gpu)} clocks are held down right now by {', '.join(throttling)}"
                     + (f" ({', '.join(extra)})" if extra else "") + ": a long run will be slower", ev)
    return Check("clocks", "pass", "no thermal or power throttling right now"
                 + (" (GPU idle)" if "gpu_idle" in active else ""), ev)


def _gpu_idle(gpu: Mapping[str, Any]) -> bool:
    active = (gpu.get("clock_event_reasons") or {}).get("active")
    util = _num(gpu.get("utilization_gpu_percent"))
    return (isinstance(active, list) and "gpu_idle" in active) or (util is not None and util < 10)


def check_pcie(facts: Mapping[str, Any], plan: Plan) -> Check:
    """Width below max, or a slot slower than the card: warn. A lower generation at idle is normal
    power saving (links train up under load), so it only warns when the GPU is busy."""
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("pcie_link", "skip", why)
    p = gpu.get("pcie") or {}
    gen, gen_sys, gen_card = (_num(p.get(k)) for k in ("gen_current", "gen_max_system", "gen_max_card"))
    width, width_max = _num(p.get("width_current")), _num(p.get("width_max"))
    idle = _gpu_idle(gpu)
    ev = {"gpu": gpu.get("index"), "pcie": dict(p), "gpu_idle": idle}
    if gen is None and width is None:
        return Check("pcie_link", "skip", f"NVML does not report the PCIe link of {_gpu_tag(gpu)}", ev)
    now = f"Gen{int(gen) if gen else '?'} x{int(width) if width else '?'}"
    problems, notes = [], []
    if width is not None and width_max is not None and width < width_max:
        problems.append(f"running x{int(width)} of x{int(width_max)} lanes")
    if gen_sys is not None and gen_card is not None and gen_sys < gen_card:
        problems.append(f"the slot/CPU allows Gen{int(gen_sys)} but the card supports Gen{int(gen_card)}")
    if gen is not None and gen_sys is not None and gen < gen_sys:
        if idle:
            notes.append(f"Gen{int(gen)} of Gen{int(gen_sys)} at idle is normal power saving")
        else:
            problems.append(f"Gen{int(gen)} of Gen{int(gen_sys)} while the GPU is busy")
    if problems:
        return Check("pcie_link", "warn", f"link {now} below its maximum: {'; '.join(problems)}"
                     + (" (an idle link may downtrain; `gpudiag report --only pcie` reads it under load)"
                        if idle else ""), ev)
    return Check("pcie_link", "pass", f"link {now}" + (f" ({'; '.join(notes)})" if notes else " at its maximum"), ev)


def check_persistence(facts: Mapping[str, Any], plan: Plan) -> Check:
    host = _driver_host(facts)
    if host not in ("linux",):
        return Check("persistence_mode", "skip", "Linux only" + (" (under WSL2 the Windows driver manages the GPU)"
                                                                 if host == "wsl2" else ""))
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("persistence_mode", "skip", why)
    mode, display = gpu.get("persistence_mode"), gpu.get("display_active")
    ev = {"gpu": gpu.get("index"), "persistence_mode": mode, "display_active": display}
    if mode is True:
        return Check("persistence_mode", "pass", "persistence mode on", ev)
    if mode is not False:
        return Check("persistence_mode", "skip", "NVML does not report persistence mode", ev)
    if display is True:
        return Check("persistence_mode", "pass", "persistence mode off, but the display keeps the driver "
                     "initialised", ev)
    return Check("persistence_mode", "warn", "persistence mode off on a GPU with no display: when no client "
                 "holds it the driver tears down, and the next CUDA process pays its start-up again (up to "
                 "seconds); `sudo nvidia-smi -pm 1` or enable nvidia-persistenced", ev)


def check_windows_hags(facts: Mapping[str, Any], plan: Plan) -> Check:
    """Reported so runs are compared with the same setting; it changes how work is scheduled and the
    desktop shares the GPU, but no source says which way is faster for CUDA, so it never warns."""
    win = (facts.get("driver") or {}).get("windows")
    if _driver_host(facts) != "windows" or not isinstance(win, dict):
        return Check("windows_hags", "skip", "Windows only")
    hags = win.get("hags") or {}
    ev = {"hags": hags}
    raw, enabled = hags.get("raw"), hags.get("enabled")
    if enabled is True:
        return Check("windows_hags", "pass", f"hardware-accelerated GPU scheduling on (HwSchMode={raw}); compare "
                     "runs with the same setting", ev)
    if enabled is False:
        return Check("windows_hags", "pass", f"hardware-accelerated GPU scheduling off (HwSchMode={raw})", ev)
    if raw is None and "could not read" not in str(hags.get("reason", "")):
        return Check("windows_hags", "pass", "HwSchMode not set: Windows uses its default for this GPU "
                     "(Settings > Display > Graphics shows it)", ev)
    return Check("windows_hags", "skip", hags.get("reason") or f"unrecognised HwSchMode {raw!r}", ev)


def check_windows_tdr(facts: Mapping[str, Any], plan: Plan) -> Check:
    win = (facts.get("driver") or {}).get("windows")
    if _driver_host(facts) != "windows" or not isinstance(win, dict):
        return Check("windows_tdr", "skip", "Windows only")
    tdr = win.get("tdr") or {}
    gpu, why = resolve_gpu(facts, plan)
    if gpu is None:
        return Check("windows_tdr", "skip", why, {"tdr": tdr})
    model = (gpu.get("driver_model") or {}).get("current")
    display = gpu.get("display_active")
    delay, level = _num(tdr.get("delay_s")), tdr.get("level")
    ev = {"gpu": gpu.get("index"), "tdr": tdr, "driver_model": model, "display_active": display}
    if model not in (None, "WDDM"):
        return Check("windows_tdr", "pass", f"{_gpu_tag(gpu)} runs {model}, not WDDM: display timeouts do "
                     "not cut kernels short", ev)
    if level == 0:
        return Check("windows_tdr", "pass", "timeout detection off (TdrLevel=0): long kernels are not killed, "
                     "a hung one freezes the display", ev)
    if delay is None:
        return Check("windows_tdr", "skip", tdr.get("reason") or "TdrDelay unknown", ev)
    default = " (the default)" if "delay_s" in (tdr.get("defaults") or []) else ""
    if display is True and delay <= 2:
        return Check("windows_tdr", "warn", f"TdrDelay {delay:g} s{default} on a GPU that drives a display: a "
                     f"kernel or batch running longer than {delay:g} s is killed ('display driver stopped "
                     "responding'); keep batches short or raise TdrDelay", ev)
    return Check("windows_tdr", "pass", f"TdrDelay {delay:g} s{default}"
                 + ("" if display is True else "; no display on this GPU"), ev)


def check_environment(facts: Mapping[str, Any], plan: Plan) -> Check:
    """Settings left over from debugging that make a long run slower or fragile.

    CUDA_LAUNCH_BLOCKING=1 fails: it makes every launch synchronous (a debugging switch) and is never
    what a long production run wants. The rest warn: they may be deliberate.
    """
    env = facts.get("env") or {}
    items: List[Tuple[str, str]] = []
    blocking = env.get("CUDA_LAUNCH_BLOCKING")
    if blocking is not None and blocking.strip() not in ("", "0"):
        items.append(("fail", f"CUDA_LAUNCH_BLOCKING={blocking} makes every kernel launch synchronous (a "
                              "debugging switch that leaves the GPU idle between launches): unset it"))
    if (env.get("PYTORCH_NO_CUDA_MEMORY_CACHING") or "").strip() not in ("", "0"):
        items.append(("warn", "PYTORCH_NO_CUDA_MEMORY_CACHING disables torch's caching allocator: every "
                              "allocation goes to cudaMalloc (slow); unset it"))
    if (env.get("CUDA_MODULE_LOADING") or "").strip().upper() == "EAGER":
        items.append(("warn", "CUDA_MODULE_LOADING=EAGER loads every kernel into each CUDA context (hundreds of "
                              "MB more per process than LAZY)"))
    method, source = facts.get("start_method"), facts.get("start_method_source")
    if plan.strategy == "processes" and plan.workers > 1 and method == "fork":
        items.append(("warn", f"the multiprocessing start method is fork ({source}): CUDA does not work in "
                              "forked children; use multiprocessing.get_context('spawn')"))
    ev = {"env": {k: env.get(k) for k in ("CUDA_LAUNCH_BLOCKING", "PYTORCH_NO_CUDA_MEMORY_CACHING",
                                          "CUDA_MODULE_LOADING")},
          "start_method": method, "start_method_source": source,
          "problems": [{"status": s, "message": m} for s, m in items]}
    if not items:
        return Check("environment", "pass", f"no debug switches set; start method {method}", ev)
    items.sort(key=lambda i: i[0] != "fail")
    return Check("environment", _worst(s for s, _ in items), "; ".join(m for _, m in items), ev)


def check_disk(facts: Mapping[str, Any], plan: Plan) -> Check:
    disk = facts.get("disk")
    if not plan.checkpoint_dir or not isinstance(disk, dict):
        return Check("disk", "skip", "no --checkpoint-dir given")
    free, path = _num(disk.get("free_bytes")), disk.get("path")
    ev = {"path": path, "free_bytes": free, "total_bytes": disk.get("total_bytes"),
          "writable": disk.get("writable"), "min_free_bytes": plan.min_free_disk}
    if disk.get("writable") is False:
        return Check("disk", "fail", f"{path} is not writable: checkpoints cannot be saved there", ev)
    if free is None:
        return Check("disk", "skip", f"free space at {path} unknown ({disk.get('reason')})", ev)
    if plan.min_free_disk is not None and free < plan.min_free_disk:
        return Check("disk", "fail", f"{format_size(free)} free at {path}, less than the "
                     f"{format_size(plan.min_free_disk)} asked for (--min-free-disk)", ev)
    return Check("disk", "pass", f"{format_size(free)} free at {path}"
                 + (f" (>= {format_size(plan.min_free_disk)})" if plan.min_free_disk is not None
                    else " (no --min-free-disk given)"), ev)


def run_checks(facts: Mapping[str, Any], plan: Plan) -> Tuple[List[Check], Dict[str, Any]]:
    """Every check, in the order they are printed, and the per-worker figures they used."""
    need = worker_needs(facts, plan)
    checks = [
        check_nvml(facts, plan),
        check_gpu_visible(facts, plan),
        check_torch_cuda(facts, plan),
        check_gpu_processes(facts, plan),
        check_vram(facts, plan, need),
        check_host_ram(facts, plan, need),
        check_swap(facts, plan, need),
        check_oom_kills(facts, plan),
        check_clocks(facts, plan),
        check_pcie(facts, plan),
        check_persistence(facts, plan),
        check_windows_hags(facts, plan),
        check_windows_tdr(facts, plan),
        check_environment(facts, plan),
        check_disk(facts, plan),
    ]
    return checks, need


# ----------------------------------------------------------------------------- gathering facts

def _default_session() -> Callable[[], Any]:
    from gpudiag.backends import nvml

    return nvml.session


def _default_driver_collect() -> Callable[[Any], Dict[str, Any]]:
    from gpudiag.probes import driver  # written by the driver probe work; ImportError until merged

    return driver.collect


def _gather_driver(facts: Dict[str, Any], nvml_session: Optional[Callable[[], Any]],
                   driver_collect: Optional[Callable[[Any], Dict[str, Any]]]) -> None:
    try:
        session = nvml_session or _default_session()
    except ImportError as exc:
        facts["nvml"] = {"reachable": False, "reason": f"gpudiag's NVML backend is missing ({exc})"}
        return
    try:
        with session() as n:
            facts["nvml"] = {"reachable": True, "reason": None}
            try:
                collect = driver_collect or _default_driver_collect()
            except ImportError as exc:
                facts["driver_reason"] = f"the driver probe is not in this gpudiag ({exc})"
                return
            try:
                facts["driver"] = collect(n)
            except Exception as exc:  # one odd NVML answer must not stop the other checks
                facts["driver_reason"] = f"reading the driver failed: {type(exc).__name__}: {exc}"
    except Exception as exc:
        if facts.get("nvml", {}).get("reachable"):  # NVML answered; closing it is what failed
            facts.setdefault("driver_reason", f"NVML session error: {type(exc).__name__}: {exc}")
            return
        # NvmlUnavailable carries the reason in words; anything else is named.
        reason = str(exc) if type(exc).__name__ == "NvmlUnavailable" else f"{type(exc).__name__}: {exc}"
        facts["nvml"] = {"reachable": False, "reason": reason}


def _psutil_memory() -> Dict[str, Any]:
    """Small fallback until gpudiag.platform.memory_facts exists: RAM, swap, the kernel OOM counter."""
    import psutil

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    kills = None
    try:
        with open("/proc/vmstat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("oom_kill "):
                    kills = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return {"total_bytes": vm.total, "available_bytes": vm.available, "swap_total_bytes": sw.total,
            "swap_used_bytes": sw.used, "cgroup_limit_bytes": None, "cgroup_usage_bytes": None,
            "wsl_memory_cap_bytes": None, "oom_kills_since_boot": kills, "budget_bytes": None}


def _gather_memory(facts: Dict[str, Any], memory_facts: Optional[Callable[[], Dict[str, Any]]]) -> None:
    fn, source = memory_facts, "injected"
    if fn is None:
        try:
            from gpudiag.platform import memory_facts as fn  # type: ignore[no-redef]
            source = "gpudiag.platform.memory_facts"
        except ImportError:
            fn, source = None, "psutil (cgroup and WSL limits not checked)"
    try:
        facts["memory"] = fn() if fn is not None else _psutil_memory()
        facts["memory_source"] = source
    except Exception as exc:
        try:
            facts["memory"] = _psutil_memory()
            facts["memory_source"] = f"psutil ({source} failed: {type(exc).__name__})"
        except Exception as exc2:
            facts["memory"] = None
            facts["memory_reason"] = f"{type(exc2).__name__}: {exc2}"


def _report_figures(rep: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    mem = ((((rep.get("probes") or {}).get("gil") or {}).get("data") or {}).get("memory") or {})
    host, dev = _num(mem.get("per_worker_host_bytes")), _num(mem.get("per_worker_device_bytes"))
    if not host and not dev:
        return None
    return {"host_bytes": host, "device_bytes": dev, "thread_host_bytes": _num(mem.get("per_thread_host_bytes")),
            "host_without_cuda": host is not None and mem.get("rss_after_cuda_bytes") is None}


def find_saved_report(search_dir: Optional[str], explicit: Sequence[str] = ()) -> Dict[str, Any]:
    """The newest saved report (by created_at) that has per-worker memory figures.

    Explicit paths that cannot be read raise ValueError (the user asked for them); unreadable files
    found by the folder search are skipped and counted.
    """
    from gpudiag.report.contract import ReportError, load_report

    found: List[str] = []
    if search_dir:
        def mtime(path: str) -> float:
            try:
                return os.path.getmtime(path)
            except OSError:  # removed while we looked
                return 0.0

        found = sorted(glob.glob(os.path.join(glob.escape(search_dir), REPORT_GLOB)),
                       key=mtime, reverse=True)[:MAX_REPORTS_READ]
    candidates, unreadable = [], 0
    for path in list(explicit) + [p for p in found if p not in explicit]:
        try:
            rep = load_report(path)
        except ReportError as exc:
            if path in explicit:
                raise ValueError(f"--report {exc}") from None
            unreadable += 1
            continue
        candidates.append((str(rep.get("created_at")), path, rep))
    candidates.sort(key=lambda c: c[0], reverse=True)
    for created, path, rep in candidates:
        fig = _report_figures(rep)
        if fig:
            return {"saved_report": dict(fig, file=_display_path(path), created_at=created),
                    "reports_seen": len(candidates), "reports_unreadable": unreadable}
    return {"saved_report": None, "reports_seen": len(candidates), "reports_unreadable": unreadable}


def _start_method() -> Tuple[str, str]:
    """The start method new processes will use, without fixing it (get_context() would set it and
    make the caller's later set_start_method fail)."""
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True)
    if method:
        return method, "set by this program"
    return multiprocessing.get_all_start_methods()[0], "the platform default"


def _gather_disk(path: str) -> Dict[str, Any]:
    import shutil

    out: Dict[str, Any] = {"path": _display_path(path), "writable": os.access(path, os.W_OK)}
    try:
        usage = shutil.disk_usage(path)
        out.update(free_bytes=usage.free, total_bytes=usage.total)
    except OSError as exc:
        out.update(free_bytes=None, total_bytes=None, reason=exc.strerror or str(exc))
    return out


def gather_facts(plan: Plan, *, environ: Optional[Mapping[str, str]] = None,
                 nvml_session: Optional[Callable[[], Any]] = None,
                 driver_collect: Optional[Callable[[Any], Dict[str, Any]]] = None,
                 memory_facts: Optional[Callable[[], Dict[str, Any]]] = None,
                 reports: Sequence[str] = (), search_dir: Optional[str] = ".") -> Dict[str, Any]:
    """Everything the checks read, collected cheaply: no torch import, no CUDA initialisation.

    The keyword arguments are seams for tests: `nvml_session()` returns a context manager yielding an
    Nvml wrapper (default gpudiag.backends.nvml.session), `driver_collect(n)` returns the `driver`
    data, `memory_facts()` the `system.memory` data.
    """
    from gpudiag.backends import torch_meta

    environ = os.environ if environ is None else environ
    facts: Dict[str, Any] = {
        "platform": {"win32": "windows", "darwin": "darwin"}.get(sys.platform, sys.platform),
        "pid": os.getpid(),
        "env": {k: environ[k] for k in ENV_NAMES if k in environ},
        "driver": None,
    }
    _gather_driver(facts, nvml_session, driver_collect)
    _gather_memory(facts, memory_facts)
    facts["torch"] = {"version": torch_meta.torch_version(), "cuda": torch_meta.torch_cuda_version(),
                      "hip": torch_meta.torch_hip_version()}
    facts["start_method"], facts["start_method_source"] = _start_method()
    facts.update(find_saved_report(search_dir, reports))
    if plan.checkpoint_dir:
        facts["disk"] = _gather_disk(plan.checkpoint_dir)
    return facts


# ----------------------------------------------------------------------------- the API

def make_plan(workers: int = 1, strategy: str = "processes", *, vram_per_worker: Any = None,
              ram_per_worker: Any = None, checkpoint_dir: Optional[str] = None, min_free_disk: Any = None,
              device: int = 0) -> Plan:
    """Validate the arguments (ValueError with a one-line message) and build a Plan."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, not {workers!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise ValueError(f"device must be a CUDA device index >= 0, not {device!r}")
    sizes = {}
    for name, value in (("vram_per_worker", vram_per_worker), ("ram_per_worker", ram_per_worker),
                        ("min_free_disk", min_free_disk)):
        sizes[name] = None if value is None else parse_size(value)
    if sizes["min_free_disk"] is not None and not checkpoint_dir:
        raise ValueError("min_free_disk needs checkpoint_dir (the folder the checkpoints go to)")
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        if not os.path.isdir(checkpoint_dir):
            raise ValueError(f"checkpoint_dir {checkpoint_dir}: no such folder")
    return Plan(workers=workers, strategy=strategy, device=device, checkpoint_dir=checkpoint_dir, **sizes)


def preflight(workers: int = 1, strategy: str = "processes", *, vram_per_worker: Any = None,
              ram_per_worker: Any = None, checkpoint_dir: Optional[str] = None, min_free_disk: Any = None,
              device: int = 0, strict: bool = False, report: Any = None, search_dir: Optional[str] = ".",
              environ: Optional[Mapping[str, str]] = None, nvml_session: Optional[Callable[[], Any]] = None,
              driver_collect: Optional[Callable[[Any], Dict[str, Any]]] = None,
              memory_facts: Optional[Callable[[], Dict[str, Any]]] = None) -> PreflightResult:
    """Go / no-go before a long run. Sizes accept '1.5G', '800M' or bytes.

    >>> import gpudiag
    >>> gpudiag.preflight(workers=4, strategy="processes").raise_if_failed()  # doctest: +SKIP

    Raises ValueError for bad arguments. Never imports torch or initialises CUDA.
    """
    t0 = time.perf_counter()
    plan = make_plan(workers, strategy, vram_per_worker=vram_per_worker, ram_per_worker=ram_per_worker,
                     checkpoint_dir=checkpoint_dir, min_free_disk=min_free_disk, device=device)
    reports = [report] if isinstance(report, (str, os.PathLike)) else list(report or [])
    facts = gather_facts(plan, environ=environ, nvml_session=nvml_session, driver_collect=driver_collect,
                         memory_facts=memory_facts, reports=[os.fspath(r) for r in reports], search_dir=search_dir)
    checks, need = run_checks(facts, plan)
    return PreflightResult(checks=checks, workers=plan.workers, strategy=plan.strategy, per_worker=need,
                           duration_s=time.perf_counter() - t0, strict=strict, device=plan.device)
