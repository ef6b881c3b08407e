"""`gpudiag preflight`: a go / no-go in about a second, before a long run.

Two halves, so that every check is testable without hardware:
- `facts.gather_facts(plan)` collects facts cheaply (NVML through the driver probe's collector, platform.gpu_driver; memory
  and the CPU limit from the platform layer, torch build facts read from files, environment, saved reports, disk). It
  never imports torch and never initialises CUDA: NVML is a separate library that creates no CUDA context.
- `run_checks(facts, plan)` turns a facts dict into `Check`s with pure functions, one per concern
  (gpu_checks.py, host_checks.py; per-worker needs in needs.py).

`preflight(workers=4, ...)` does both and returns a `PreflightResult` (`.ready`, `.checks`,
`.raise_if_failed()`). Rules, thresholds and their sources are in docs/preflight.md.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from gpudiag.diagnose.preflight import facts as facts_mod
from gpudiag.diagnose.preflight.gpu_checks import (
    check_clocks,
    check_gpu_processes,
    check_gpu_visible,
    check_nvml,
    check_pcie,
    check_persistence,
    check_torch_cuda,
    check_vram,
    check_windows_hags,
    check_windows_tdr,
)
from gpudiag.diagnose.preflight.host_checks import (
    check_cpu_limit,
    check_disk,
    check_environment,
    check_host_ram,
    check_oom_kills,
    check_swap,
)
from gpudiag.diagnose.preflight.model import (
    MAX_DEVICE,
    MAX_WORKERS,
    STRATEGIES,
    Check,
    Plan,
    PreflightFailed,
    PreflightResult,
)
from gpudiag.diagnose.preflight.needs import worker_needs
from gpudiag.measure.sizes import parse_size

__all__ = ["Check", "Plan", "PreflightFailed", "PreflightResult", "make_plan", "preflight", "run_checks"]


def run_checks(facts: Mapping[str, Any], plan: Plan) -> Tuple[List[Check], Dict[str, Any]]:
    """Every check, in the order they are printed, and the per-worker figures they used."""
    need = worker_needs(facts, plan)
    checks = [
        check_nvml(facts, plan),
        check_gpu_visible(facts, plan),
        check_torch_cuda(facts, plan),
        check_gpu_processes(facts, plan),
        check_vram(facts, plan, need),
        check_cpu_limit(facts, plan),
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


def make_plan(workers: int = 1, strategy: str = "processes", *, vram_per_worker: Any = None,
              ram_per_worker: Any = None, checkpoint_dir: Optional[str] = None, min_free_disk: Any = None,
              device: int = 0) -> Plan:
    """Validate the arguments (ValueError with a one-line message) and build a Plan."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be a whole number from 1 to {MAX_WORKERS:,}, not {str(workers)[:40]}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device <= MAX_DEVICE:
        raise ValueError(f"device must be a CUDA device index from 0 to {MAX_DEVICE}, not {str(device)[:40]}")
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


def preflight(workers: int = 1, strategy: str = "processes", *, vram_per_worker: Union[str, int, None] = None,
              ram_per_worker: Union[str, int, None] = None, checkpoint_dir: Union[str, "os.PathLike[str]", None] = None,
              min_free_disk: Union[str, int, None] = None, device: int = 0, strict: bool = False,
              report: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]], None] = None,
              search_dir: Optional[str] = ".") -> PreflightResult:
    """Go / no-go before a long run of `workers` workers of `strategy` ("threads" or "processes").

    Sizes accept "1.5G", "800M" or a number of bytes. Per-worker memory comes from, in order: the
    `ram_per_worker` / `vram_per_worker` arguments, the saved report(s) given in `report`, the newest
    gpudiag report (gpudiag-report-*.json) with per-worker figures found in `search_dir` (None: do not
    search), else a labelled conservative default. `strict` turns warnings into failures for `.ready`.
    `device` is the CUDA device index as the job will see it (CUDA_VISIBLE_DEVICES is honoured).

    Returns a PreflightResult (`.ready`, `.checks`, `.blocking()`, `.raise_if_failed()`). Raises
    ValueError with a one-line message for bad arguments. Never imports torch or initialises CUDA.

    >>> import gpudiag
    >>> gpudiag.preflight(workers=4, strategy="processes").raise_if_failed()  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    plan = make_plan(workers, strategy, vram_per_worker=vram_per_worker, ram_per_worker=ram_per_worker,
                     checkpoint_dir=checkpoint_dir, min_free_disk=min_free_disk, device=device)
    reports = [report] if isinstance(report, (str, os.PathLike)) else list(report or [])
    facts = facts_mod.gather_facts(plan, reports=[os.fspath(r) for r in reports], search_dir=search_dir)
    checks, need = run_checks(facts, plan)
    return PreflightResult(checks=checks, workers=plan.workers, strategy=plan.strategy, per_worker=need,
                           duration_s=time.perf_counter() - t0, strict=strict, device=plan.device)
