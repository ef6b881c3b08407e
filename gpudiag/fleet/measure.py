"""What one rank measures about itself: preflight checks, driver facts, and three short figures.

The figures are the same on every rank so they compare across the fleet (research anchors-2 B.8):
- `matmul_gflops`: a fixed matmul loop (a GPU 5 % slower than its peers is a "lemon");
- `launch_us`: host time to launch one tiny kernel;
- `h2d_gbps`: pinned host->device copy bandwidth, the PCIe link read from NVML while it runs.
On a rank without a GPU each has a CPU equivalent, labelled as such in `figures[...]["what"]`
and `device.kind == "cpu"`: a float32 matmul on the rank's torch threads, the dispatch time of a
tiny CPU op, and a host memory copy. CPU and GPU figures are never compared with each other.

Each figure is the median of several repeats, with p10/p90 and n, so the analysis can tell a slow
rank from a noisy one. Host-timed repeats are sustained windows of several CPU-quota periods
(gpudiag.fleet.windows), so a quota or a shared core shows in the rate; the GPU matmul and copies are
timed on the device by CUDA events, which a stopped host can only make slower, never faster. Around
the figures the rank keeps a CPU account (gpudiag.fleet.cpu_account): the share of the CPU it got,
the load of the job's other ranks and of other programs on its cores, and its quota throttling.
torch is imported inside functions (listing probes stays cheap).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from gpudiag._version import __version__
from gpudiag.fleet.cpu_account import CpuAccount
from gpudiag.fleet.launcher import Place
from gpudiag.fleet.windows import Windows, window_seconds
from gpudiag.measure.stats import summarize
from gpudiag.report.redact import short_hash
from gpudiag.units import fmt_bytes

MiB = 2 ** 20
# nvmlClockType_t (nvml.h): NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2.
NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2
# Preflight checks that only make sense on a GPU; on a CPU rank they are kept but do not count.
GPU_CHECKS = frozenset({"nvml", "gpu_visible", "torch_cuda", "gpu_processes", "vram", "clocks", "pcie_link",
                        "persistence_mode", "windows_hags", "windows_tdr"})


def _plan(device: str, quick: bool) -> Dict[str, Any]:
    """Sizes and repeats: a second or so per rank in quick mode, on a GPU or a CPU."""
    if device == "cuda":
        return {"matmul_n": 8192, "matmul_inner": 10, "repeats": 5 if quick else 10, "launches": 1000,
                "copy_bytes": 64 * MiB, "copy_inner": 5}
    # Each CPU repeat is a sustained window of three quota periods (0.3 s): 3 figures x 5 windows in quick mode.
    return {"matmul_n": 384 if quick else 512, "repeats": 5 if quick else 9, "launches": 100, "copy_bytes": 32 * MiB}


def _stats(values: List[float], what: str, windows: Optional[Windows] = None, ndigits: int = 4) -> Dict[str, Any]:
    """A figure: median as `value`, with p10/p90/n and what was measured; `window_s` when each repeat
    was a sustained window."""
    st = summarize(values)
    out = {k: (round(v, ndigits) if isinstance(v, float) else v) for k, v in st.items()
           if k in ("n", "median", "p10", "p90")}
    out["value"] = out.pop("median")
    out["what"] = what
    if windows is not None:
        out["window_s"] = windows.window_s
    return out


def identity(place: Place) -> Dict[str, Any]:
    """What every rank tells the others at the start: its raw host name (kept off the report), place, and
    pid with start time (so the ranks of one host can count each other's CPU on the cores they share)."""
    import psutil

    try:
        started: Optional[float] = psutil.Process().create_time()
    except (OSError, psutil.Error):
        started = None
    return {"rank": place.rank, "hostname": socket.gethostname() or "unknown", "local_rank": place.local_rank,
            "node_rank": place.node_rank, "pid": os.getpid(), "started": started}


def host_label(hostname: str, identify: bool = True) -> str:
    """The host as reports show it: `host-<hash>` (the redactor's hash, so every rank agrees) unless --no-redact."""
    return "host-" + short_hash(hostname.lower()) if identify else hostname


# ----------------------------------------------------------------------------- device and facts

def pick_device(torch: Any, place: Place) -> Dict[str, Any]:
    """This rank's device: its local GPU (bound with set_device) or the CPU, and why."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        build = getattr(torch.version, "cuda", None)
        why = "torch has no CUDA support (CPU build)" if build is None else "torch sees no CUDA device"
        return {"kind": "cpu", "index": None, "reason": why, "torch_threads": torch.get_num_threads()}
    count = torch.cuda.device_count()
    index = place.local_rank % count
    torch.cuda.set_device(index)
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    out = {"kind": "cuda", "index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
           "memory_total_bytes": int(props.total_memory), "visible_gpus": count,
           "gpu_uuid_hash": short_hash("gpu-uuid:" + str(uuid)) if uuid else None,
           "shared_with_other_ranks": place.local_rank >= count}
    return out


def _driver_collect(extra: Dict[str, Any], bus_id: Optional[str] = None) -> Callable[[Any], Dict[str, Any]]:
    """A driver.collect for preflight that also reads clocks (which the driver probe does not), and NVML's index
    of the GPU at PCI bus id `bus_id` (this rank's CUDA device) when one is given."""
    def collect(n: Any) -> Dict[str, Any]:
        """The driver probe's data for NVML session `n`, each readable GPU with its SM and memory clocks
        (MHz); also kept in `extra` for preflight_and_driver, with extra["nvml_index"] when `bus_id` is set."""
        from gpudiag.backends import nvml as nvml_backend
        from gpudiag.probes import driver

        if bus_id:
            extra["nvml_index"] = nvml_backend.nvml_index_of(n, bus_id)
        data = driver.collect(n)
        for gpu in data.get("gpus") or []:
            if not isinstance(gpu, dict) or gpu.get("error"):
                continue
            try:
                h = n.handle(gpu["index"])
            except nvml_backend.NvmlError:  # the seam re-raises pynvml's errors as this: that GPU keeps no clocks
                continue
            gpu["clocks"] = {"sm_mhz": n.call("nvmlDeviceGetClockInfo", h, NVML_CLOCK_SM),
                             "sm_max_mhz": n.call("nvmlDeviceGetMaxClockInfo", h, NVML_CLOCK_SM),
                             "mem_mhz": n.call("nvmlDeviceGetClockInfo", h, NVML_CLOCK_MEM)}
        extra["driver"] = data
        return data
    return collect


# Why an AMD GPU (torch's ROCm build drives it through torch.cuda) gets no NVIDIA driver facts.
ROCM_REASON = "ROCm build of torch: this rank's GPU is an AMD GPU, which NVML does not describe"


def preflight_and_driver(device: Dict[str, Any], nvml_session: Optional[Callable[[], Any]] = None,
                         bus_id: Optional[str] = None, nvidia: bool = True) -> Dict[str, Any]:
    """The preflight checks for this rank's GPU (one worker) and that GPU's driver facts, one NVML session.

    bus_id: the CUDA device's PCI bus id (torch's device properties), which finds it in NVML's list whatever
    order CUDA numbers GPUs in. nvidia=False (a ROCm build): the GPU checks do not apply and no NVML GPU is
    read for it. nvml_session: a seam for tests (tests.fakes.FakeNvml behind gpudiag.backends.nvml.session).
    """
    from gpudiag.diagnose import preflight
    from gpudiag.diagnose.preflight.facts import gather_facts
    from gpudiag.diagnose.preflight.gpu_checks import resolve_gpu

    extra: Dict[str, Any] = {}
    plan = preflight.make_plan(1, "processes", device=device.get("index") or 0)
    facts = gather_facts(plan, driver_collect=_driver_collect(extra, bus_id), search_dir=None, nvml_session=nvml_session)
    if not nvidia:
        facts["cuda_device_match"] = {"device": plan.device, "nvml_index": None, "by": "rocm", "reason": ROCM_REASON}
    elif bus_id and "nvml_index" in extra:
        facts["cuda_device_match"] = {"device": plan.device, "nvml_index": extra["nvml_index"], "by": "pci_bus_id"}
    results, _ = preflight.run_checks(facts, plan)
    on_cpu = device["kind"] == "cpu"
    no_nvidia_gpu = on_cpu or not nvidia
    checks = [dict(c.to_dict(), applies=not (no_nvidia_gpu and c.name in GPU_CHECKS)) for c in results]
    for c in checks:
        c.pop("evidence", None)  # the report keeps the verdicts; `gpudiag preflight --json` has the rest
    counted = [c for c in checks if c["applies"]]
    # A passed check is listed by name only: its message repeats on every rank of a fleet (10,000 of them),
    # while the checks that failed, warned or were skipped keep theirs.
    passed = [c["name"] for c in counted if c["status"] == "pass"]
    out = {"preflight": {"ready": not any(c["status"] == "fail" for c in counted), "passed": passed,
                         "checks": [c for c in checks if not (c["applies"] and c["status"] == "pass")]},
           "driver": {"reason": (facts.get("nvml") or {}).get("reason") or facts.get("driver_reason")}}
    if on_cpu:
        out["driver"]["reason"] = out["driver"]["reason"] or "CPU rank: no GPU to read"
        return out
    if not nvidia:
        out["driver"]["reason"] = ROCM_REASON
        return out
    gpu, why = resolve_gpu(facts, plan)
    drv = extra.get("driver") or {}
    if gpu is None:
        out["driver"]["reason"] = why
        return out
    procs = gpu.get("processes") or {}
    others = [p for kind in ("compute", "graphics") for p in (procs.get(kind) or [])
              if isinstance(p, dict) and p.get("pid") != os.getpid()] if isinstance(procs, dict) else []
    out["driver"] = {
        "reason": None, "nvml_index": gpu.get("index"), "name": gpu.get("name"),
        "driver_version": drv.get("driver_version"), "cuda_driver_version": drv.get("cuda_driver_version"),
        "persistence_mode": gpu.get("persistence_mode"), "pcie": gpu.get("pcie"), "clocks": gpu.get("clocks"),
        "throttling": (gpu.get("clock_event_reasons") or {}).get("throttling"),
        "ecc": gpu.get("ecc"), "temperature_c": gpu.get("temperature_c"), "power_draw_w": gpu.get("power_draw_w"),
        "power_limit_w": gpu.get("power_limit_w"), "other_processes": len(others),
    }
    return out


def versions(torch: Any) -> Dict[str, Any]:
    """{gpudiag, python, torch, torch_cuda, nccl} of this rank: what must agree across a fleet (skew findings)."""
    nccl = None
    try:
        if getattr(torch.version, "cuda", None) and torch.distributed.is_nccl_available():
            v = torch.cuda.nccl.version()
            nccl = ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
    except (AttributeError, RuntimeError):
        nccl = None
    return {"gpudiag": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": getattr(torch.version, "cuda", None), "nccl": nccl}


def host_facts() -> Dict[str, Any]:
    """The machine in a few fields (no names): OS, kernel, cores this rank may use."""
    cores = None
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    return {"os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "logical_cores": os.cpu_count(), "affinity_cores": cores, "platform": sys.platform}


# ----------------------------------------------------------------------------- the figures

def _cpu_figures(torch: Any, p: Dict[str, Any], windows: Windows) -> Dict[str, Any]:
    """The CPU equivalents, each repeat a sustained window, measured in interleaved rounds (one window
    of each per round), so that a burst of other work on the core spoils a few repeats of every figure
    rather than all of one."""
    n, reps, chunk = p["matmul_n"], p["repeats"], p["launches"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = torch.zeros(1)
    src = torch.ones(p["copy_bytes"], dtype=torch.uint8)
    dst = torch.empty_like(src)
    a @ b  # warm-up: allocator and BLAS set-up, first touch of the copy buffers
    dst.copy_(src)
    for _ in range(200):
        x.add_(1)
    threads = torch.get_num_threads()

    def dispatch() -> None:
        for _ in range(chunk):
            x.add_(1)

    gflops, dispatch_us, copy = [], [], []
    for _ in range(reps):
        calls, wall = windows.run(lambda: a @ b, threads)
        gflops.append(2 * n ** 3 * calls / wall / 1e9)
        calls, wall = windows.run(dispatch, 1)
        dispatch_us.append(wall / (calls * chunk) * 1e6)
        calls, wall = windows.run(lambda: dst.copy_(src), threads)
        copy.append(p["copy_bytes"] * calls / wall / 1e9)
    over = f", over {windows.window_s:g} s windows"
    return {
        "matmul_gflops": _stats(gflops, f"CPU float32 {n}x{n} matmul on {threads} torch thread(s) (no GPU){over}",
                                windows),
        "launch_us": _stats(dispatch_us, f"CPU: dispatch of one tiny torch op (x.add_(1) on 1 element), no GPU{over}",
                            windows),
        "h2d_gbps": _stats(copy, f"CPU: host memory copy of {fmt_bytes(p['copy_bytes'])} (no GPU, no PCIe){over}",
                           windows),
    }


def _bf16_native(torch: Any, index: int) -> bool:
    """Whether the GPU runs bf16 in hardware. torch >= 2.3 also counts emulation (a slow path on V100/T4)
    unless asked not to; before `including_emulation` existed, NVIDIA GPUs have it from compute capability 8.0."""
    import inspect

    supported = torch.cuda.is_bf16_supported
    try:
        has_flag = "including_emulation" in inspect.signature(supported).parameters
    except (TypeError, ValueError):  # a signature that cannot be read
        has_flag = False
    if has_flag:
        return bool(supported(including_emulation=False))
    if getattr(torch.version, "hip", None):
        return bool(supported())  # every ROCm GPU torch supports has bf16
    return torch.cuda.get_device_properties(index).major >= 8


# Device time of warm-up matmuls before the timed ones: long enough for an idle GPU's clocks to rise
# (a few matmuls take milliseconds; boost clocks settle in tens to hundreds of ms).
WARMUP_MS = 500.0
WARMUP_MAX_MATMULS = 2000


def _gpu_matmul(torch: Any, p: Dict[str, Any], index: int = 0) -> Dict[str, Any]:
    """GFLOP/s of a fixed bf16 (where the GPU runs it natively, else fp16) matmul loop, timed with CUDA
    events after WARMUP_MS of warm-up."""
    n, inner = p["matmul_n"], p["matmul_inner"]
    dtype = torch.bfloat16 if _bf16_native(torch, index) else torch.float16
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(WARMUP_MAX_MATMULS):  # warm-up: cuBLAS handle, kernel choice, clocks up
        a @ b
        if i >= 2:
            end.record()
            end.synchronize()
            if start.elapsed_time(end) >= WARMUP_MS:
                break
    torch.cuda.synchronize()
    out = []
    for _ in range(p["repeats"]):
        start.record()
        for _ in range(inner):
            a @ b
        end.record()
        end.synchronize()
        out.append(2 * n ** 3 * inner / (start.elapsed_time(end) / 1e3) / 1e9)
    name = str(dtype).replace("torch.", "")
    del a, b
    return _stats(out, f"GPU {name} {n}x{n} matmul, timed with CUDA events after {WARMUP_MS / 1e3:g} s of warm-up")


def _gpu_launch(torch: Any, p: Dict[str, Any], windows: Windows) -> Dict[str, Any]:
    """Host-side microseconds per tiny kernel launch (the CPU time to enqueue, not the GPU time), each
    repeat a sustained window of launches: the one GPU figure a throttled host could make look fast."""
    x = torch.zeros(1, device="cuda")
    for _ in range(200):
        x.add_(1)
    torch.cuda.synchronize()
    out = []

    def launches() -> None:
        for _ in range(p["launches"]):
            x.add_(1)
        torch.cuda.synchronize()  # the queue drains once per 1000 launches: a tiny kernel runs faster than its launch

    for _ in range(p["repeats"]):
        calls, wall = windows.run(launches, 1)
        out.append(wall / (calls * p["launches"]) * 1e6)
    return _stats(out, f"GPU: host time to launch one tiny kernel (x.add_(1) on 1 element), over "
                       f"{windows.window_s:g} s windows", windows)


def _gpu_h2d(torch: Any, p: Dict[str, Any], index: int) -> Dict[str, Any]:
    """Pinned H2D bandwidth, the PCIe link sampled from NVML while the copies run."""
    from gpudiag.backends import nvml as nvml_backend
    from gpudiag.probes.cuda import pcie

    size, inner = p["copy_bytes"], p["copy_inner"]
    host = torch.empty(size, dtype=torch.uint8).pin_memory()
    dev = torch.empty(size, dtype=torch.uint8, device="cuda")
    dev.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out, link = [], {"reason": "NVML not reachable"}

    def copies() -> None:
        """Runs the timed pinned copies and appends each repeat's GB/s to `out`: the same loop with
        or without the link sampler."""
        for _ in range(p["repeats"]):
            start.record()
            for _ in range(inner):
                dev.copy_(host, non_blocking=True)
            end.record()
            end.synchronize()
            out.append(size * inner / (start.elapsed_time(end) / 1e3) / 1e9)

    if getattr(torch.version, "hip", None):
        copies()
        fig = _stats(out, f"GPU: pinned host->device copy of {fmt_bytes(size)}, timed with CUDA events")
        fig["link_under_load"] = {"reason": ROCM_REASON}
        return fig
    try:
        with nvml_backend.session() as n:
            bus_id = nvml_backend.pci_bus_id(torch.cuda.get_device_properties(index))
            h, how = nvml_backend.cuda_device_handle(n, bus_id, index, os.environ)
            if h is None:
                link = {"reason": how}
                copies()
            else:
                with pcie.LinkSampler(lambda: pcie.read_link(n, h)) as sampler:
                    copies()
                gens = [s["gen"] for s in sampler.samples if isinstance(s.get("gen"), int)]
                widths = [s["width"] for s in sampler.samples if isinstance(s.get("width"), int)]
                link = {"gen": max(gens) if gens else None, "width": max(widths) if widths else None,
                        "samples": len(sampler.samples), "reason": sampler.error or None}
    except nvml_backend.NvmlUnavailable as exc:  # raised on entering the session, before any copy
        link = {"reason": str(exc)}
        copies()
    fig = _stats(out, f"GPU: pinned host->device copy of {fmt_bytes(size)}, timed with CUDA events")
    fig["link_under_load"] = link
    return fig


def measure_figures(torch: Any, device: Dict[str, Any], quick: bool, windows: Optional[Windows] = None
                    ) -> Dict[str, Any]:
    """The three comparable figures of this rank (GPU, or the labelled CPU equivalents).

    windows: the sustained windows the host-timed repeats run in (and their CPU account); by default
    windows of the default quota period on one core.
    """
    p = _plan(device["kind"], quick)
    windows = windows or Windows(window_seconds(None), 1)
    if device["kind"] == "cpu":
        return _cpu_figures(torch, p, windows)
    return {"matmul_gflops": _gpu_matmul(torch, p, device["index"]), "launch_us": _gpu_launch(torch, p, windows),
            "h2d_gbps": _gpu_h2d(torch, p, device["index"])}


def measure_rank(torch: Any, place: Place, quick: bool = True,
                 job_ranks: Optional[Dict[int, Tuple[int, Optional[float]]]] = None) -> Dict[str, Any]:
    """This rank's entry for data.ranks (without host, which the caller labels): facts, figures and the
    CPU account of the figures. job_ranks: {rank: (pid, start time)} of the job's other ranks on this host."""
    t0 = time.perf_counter()
    device = pick_device(torch, place)
    entry: Dict[str, Any] = {"rank": place.rank, "local_rank": place.local_rank, "node_rank": place.node_rank,
                             "launcher": place.launcher, "device": device, "versions": versions(torch),
                             "host_facts": host_facts()}
    bus_id = None
    rocm = bool(getattr(torch.version, "hip", None))
    if device["kind"] == "cuda" and not rocm:
        from gpudiag.backends import nvml as nvml_backend

        bus_id = nvml_backend.pci_bus_id(torch.cuda.get_device_properties(device["index"]))
    entry.update(preflight_and_driver(device, bus_id=bus_id, nvidia=not rocm))
    account = CpuAccount(job_ranks or {})
    windows = Windows(window_seconds(account.period_us), account.cores)
    account.start()
    entry["figures"] = measure_figures(torch, device, quick, windows)
    entry["cpu"] = account.stop(windows.totals())
    entry["measure_s"] = round(time.perf_counter() - t0, 3)
    return entry


def failed_entry(place: Place, message: str) -> Dict[str, Any]:
    """The entry of a rank whose own measurement raised: it still answers, with the error."""
    return {"rank": place.rank, "local_rank": place.local_rank, "node_rank": place.node_rank,
            "launcher": place.launcher, "device": {"kind": None}, "figures": {}, "error": message}



def failed_entry_of(entry: Dict[str, Any], message: str) -> Dict[str, Any]:
    """An entry's place (rank, host, device kind) with `message` as its error, in place of what it measured."""
    keep = {k: entry.get(k) for k in ("rank", "local_rank", "node_rank", "launcher", "host")}
    device = entry.get("device") if isinstance(entry.get("device"), dict) else {}
    return dict(keep, device={"kind": device.get("kind"), "index": device.get("index"), "name": device.get("name")},
                figures={}, error=message)
