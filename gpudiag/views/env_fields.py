"""`torch.utils.collect_env`'s fields, one row each, from gpudiag's `system` (and `driver`) data.

Shared by `gpudiag env` (views/env_summary.py) and the report's system section (views/render.py),
so both say the same. Each row is (collect_env's exact label, value); a value gpudiag does not
have says why ("not checked: needs importing torch ...") instead of being left out. Rows gpudiag
adds next to a collect_env field carry "(gpudiag)" in their label.

    collect_env_rows(system, driver) -> [(label, value)]
    cpu_rows(system)                 -> [(lscpu label, value)]   collect_env's CPU block
    package_lines(system)            -> ["[pip3] torch==2.13.0+cpu", "[conda] ...", ...]
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from gpudiag.backends.torch_meta import ALLOC_CONF_VARS, NOT_IMPORTED
from gpudiag.report.values import as_dict, as_list

Row = Tuple[str, str]
# The fields collect_env prints, in its order (torch/utils/collect_env.py `env_info_fmt`).
COLLECT_ENV_LABELS = (
    "PyTorch version", "Is debug build", "CUDA used to build PyTorch", "ROCM used to build PyTorch",
    "OS", "GCC version", "Clang version", "CMake version", "Libc version",
    "Python version", "Python platform", "Is CUDA available", "CUDA runtime version",
    "CUDA_MODULE_LOADING set to", "GPU models and configuration", "Nvidia driver version", "cuDNN version",
    "Is XPU available", "HIP runtime version", "MIOpen runtime version", "Is XNNPACK available",
    "Caching allocator config", "CPU", "Versions of relevant libraries",
)


def _tool(t: Any, name: str) -> str:
    """A toolchain row's version, or "Could not collect: <why>" as collect_env words a missing tool."""
    t = as_dict(t)
    if t.get("version"):
        return str(t["version"])
    return f"Could not collect: {t.get('reason') or f'{name} was not checked'}"


def _lib_list(libs: List[dict]) -> str:
    """Libraries as "path (version)", comma-separated, for one row."""
    return ", ".join(f"{as_dict(x).get('path')} ({as_dict(x).get('version') or 'version unknown'})" for x in libs)


def _cudnn(system: dict) -> str:
    """The cuDNN row: every copy found (torch's own answer, the pip wheel torch loads first,
    torch/lib, the system, headers), or where it looked when none was found."""
    torch = as_dict(system.get("torch"))
    cud = as_dict(as_dict(system.get("cuda_libs")).get("cudnn"))
    pip = {str(as_dict(p).get("name")).lower(): as_dict(p).get("version") for p in as_list(as_dict(system.get("packages")).get("pip"))}
    parts = []
    if torch.get("cudnn"):
        parts.append(f"torch.backends.cudnn.version() = {torch['cudnn']}")
    wheel = next(((n, v) for n, v in pip.items() if n.startswith("nvidia-cudnn")), None)
    if wheel:
        parts.append(f"{wheel[0]} {wheel[1]} (pip wheel torch loads first)")
    if as_list(cud.get("wheels")) and not wheel:
        parts.append("in NVIDIA wheels: " + _lib_list(as_list(cud.get("wheels"))))
    if as_list(cud.get("torch")):
        parts.append("inside torch: " + _lib_list(as_list(cud.get("torch"))))
    if as_list(cud.get("system")):
        parts.append(f"on the system ({cud.get('system_source')}): " + _lib_list(as_list(cud.get("system"))))
    if as_list(cud.get("headers")):
        parts.append("headers: " + ", ".join(f"{as_dict(h).get('path')} ({as_dict(h).get('version')})" for h in as_list(cud.get("headers"))))
    if parts:
        return "; ".join(parts)
    if not cud:
        return "not collected by this gpudiag version"
    if cud.get("reason"):
        return f"Could not collect: {cud['reason']}"
    where = ["torch/lib", "no nvidia-cudnn wheel"]
    where.append(cud.get("system_source") or cud.get("system_reason") or "system not searched")
    reason = torch.get("cudnn_reason")
    return "none found (looked in " + ", ".join(where) + ")" + (f"; {reason}" if reason and torch.get("source") == "import" else "")


def _cuda_runtime_libs(system: dict) -> str:
    """The CUDA runtime torch would load, beyond nvcc (a gpudiag row)."""
    torch = as_dict(system.get("torch"))
    cud = as_dict(as_dict(system.get("cuda_libs")).get("cudart"))
    pip = {str(as_dict(p).get("name")).lower(): as_dict(p).get("version") for p in as_list(as_dict(system.get("packages")).get("pip"))}
    parts = []
    wheel = next(((n, v) for n, v in pip.items() if n.startswith("nvidia-cuda-runtime")), None)
    if wheel:
        parts.append(f"{wheel[0]} {wheel[1]} (pip wheel)")
    if as_list(cud.get("torch")):
        parts.append("inside torch: " + _lib_list(as_list(cud.get("torch"))))
    if as_list(cud.get("system")):
        parts.append(f"libcudart on the system ({cud.get('system_source')}): " + _lib_list(as_list(cud.get("system"))))
    if as_list(cud.get("headers")):
        parts.append("toolkit headers: " + ", ".join(f"{as_dict(h).get('path')} (CUDA {as_dict(h).get('version')})"
                                                      for h in as_list(cud.get("headers"))))
    if not torch.get("cuda_build") and torch.get("version"):
        parts.insert(0, "torch is a CPU-only build: it loads no CUDA runtime")
    if cud.get("reason"):
        parts.append(f"libraries not searched: {cud['reason']}")
    return "; ".join(parts) or "none found"


def _gpus(driver: Optional[dict]) -> Tuple[str, str]:
    """(GPU models, driver version) from `driver` ({data} | {unavailable}); None = a report."""
    if driver is None:
        return ("see the NVIDIA driver section of this report",) * 2  # type: ignore[return-value]
    if "unavailable" in driver:
        return (f"Could not collect: {driver['unavailable']}",) * 2  # type: ignore[return-value]
    d = as_dict(driver.get("data"))
    gpus = [f"GPU {as_dict(g).get('index')}: {as_dict(g).get('name') or as_dict(g).get('error') or 'unknown'}" for g in as_list(d.get("gpus"))]
    return ("; ".join(gpus) or "none: NVML sees no GPU", str(d.get("driver_version") or "unknown"))


def _cuda_available(system: dict, driver: Optional[dict]) -> str:
    """The "Is CUDA available" row without initialising CUDA: the build and what NVML
    sees, marked not checked, because only a CUDA init can answer it."""
    torch = as_dict(system.get("torch"))
    if not torch.get("version"):
        return "N/A: torch is not installed"
    if not torch.get("cuda_build") and not torch.get("hip"):
        return "No: this torch is a CPU-only build (torch/version.py cuda = None)"
    seen = ""
    if driver is not None and "data" in driver:
        d = as_dict(driver["data"])
        n = len(as_list(d.get("gpus")))
        seen = f"; NVML sees {n} GPU(s), the driver supports CUDA {d.get('cuda_driver_version')}"
    elif driver is not None and "unavailable" in driver:
        seen = f"; likely No: {driver['unavailable']}"
    return ("not checked: answering needs importing torch and initialising CUDA (the CUDA probes of "
            f"`gpudiag report` do){seen}")


def collect_env_rows(system: dict, driver: Optional[dict] = None) -> List[Row]:
    """One row per collect_env field (COLLECT_ENV_LABELS), plus gpudiag's rows beside them."""
    s = system
    torch, os_, cpu = as_dict(s.get("torch")), as_dict(s.get("os")), as_dict(s.get("cpu"))
    build, rt, tools = as_dict(s.get("torch_build")), as_dict(s.get("torch_runtime")), as_dict(s.get("toolchain"))
    pyb, feats, env = as_dict(s.get("python_build")), as_dict(s.get("cpu_features")), as_dict(s.get("env"))
    inventory = bool(tools)  # reports from before issue 17 lack these sections
    old = "not collected by this gpudiag version"
    hip = torch.get("hip")
    rows: List[Row] = []
    rows.append(("PyTorch version", str(torch.get("version") or torch.get("reason_missing") or "N/A")))
    if rt.get("checked"):
        debug = str(rt.get("debug"))
    elif build.get("debug_known"):
        debug = f"{build.get('debug')} (torch/version.py)"
    else:
        debug = "not stated by this torch's version.py; " + NOT_IMPORTED if inventory else old
    rows.append(("Is debug build", debug if torch.get("version") else "N/A"))
    rows.append(("CUDA used to build PyTorch", str(torch["cuda_build"]) if torch.get("cuda_build") else
                 ("N/A (ROCm build)" if hip else "None (CPU-only build)" if torch.get("version") else "N/A")))
    rows.append(("ROCM used to build PyTorch", str(hip) if hip else "N/A (not a ROCm build)"))
    arch = cpu.get("arch")
    rows.append(("OS", f"{os_.get('pretty') or os_.get('name') or 'unknown'}" + (f" ({arch})" if arch else "")
                 + (f", kernel {os_['kernel']}" if os_.get("kernel") else "")))
    for label, key in (("GCC version", "gcc"), ("Clang version", "clang"), ("CMake version", "cmake")):
        rows.append((label, _tool(tools.get(key), key) if inventory else old))
    libc = as_dict(tools.get("libc"))
    rows.append(("Libc version", str(libc.get("version") or libc.get("reason") or "N/A") if inventory else old))
    rows.append(("Python version", f"{pyb['version_full']} ({pyb.get('bits')}-bit runtime)" if pyb.get("version_full")
                 else f"{as_dict(s.get('python')).get('version')} ({as_dict(s.get('python')).get('bits')}-bit runtime)"))
    rows.append(("Python platform", str(pyb.get("platform") or old)))
    rows.append(("Is CUDA available", _cuda_available(s, driver)))
    nvcc = as_dict(tools.get("nvcc"))
    if nvcc.get("version"):
        where = nvcc.get("path") or nvcc.get("source")
        note = "" if nvcc.get("on_path", True) else " (not on PATH: collect_env would not find it)"
        runtime = f"{nvcc['version']} (nvcc, the CUDA toolkit at {where}{note}; not the runtime torch loads)"
    else:
        runtime = f"Could not collect: {nvcc.get('reason')}" if inventory else old
    rows.append(("CUDA runtime version", runtime))
    if inventory:
        rows.append(("CUDA runtime libraries (gpudiag)", _cuda_runtime_libs(s)))
    ml = env.get("CUDA_MODULE_LOADING")
    loading = ml if ml else "unset (torch sets LAZY when it initialises CUDA)"
    if not torch.get("cuda_build"):
        loading = f"N/A: no CUDA torch build; CUDA_MODULE_LOADING {'=' + ml if ml else 'is unset'}"
    rows.append(("CUDA_MODULE_LOADING set to", loading))
    models, driver_version = _gpus(driver)
    rows.append(("GPU models and configuration", models))
    rows.append(("Nvidia driver version", driver_version))
    rows.append(("cuDNN version", _cudnn(s) if inventory or torch.get("cudnn") else old))
    if rt.get("checked") and rt.get("xpu_available") is not None:
        xpu = str(rt["xpu_available"])
    elif build.get("xpu_known") and not build.get("xpu"):
        xpu = "False: this torch build has no XPU support (torch/version.py xpu = None)"
    elif build.get("xpu"):
        xpu = f"XPU build ({build['xpu']}); " + NOT_IMPORTED
    else:
        xpu = ("not stated by this torch's version.py; " + NOT_IMPORTED) if inventory else old
    rows.append(("Is XPU available", xpu if torch.get("version") else "N/A"))
    if build.get("xpu"):
        rows.append(("XPU used to build PyTorch", str(build["xpu"])))
        for label in ("Intel GPU driver version", "Intel GPU models onboard", "Intel GPU models detected"):
            rows.append((label, "not checked: gpudiag reads NVIDIA GPUs through NVML only"))
    rocm = as_dict(as_dict(s.get("cuda_libs")).get("rocm"))
    if not hip:
        rows.append(("HIP runtime version", "N/A (not a ROCm build)"))
        rows.append(("MIOpen runtime version", "N/A (not a ROCm build)"))
    else:
        installed = f"; ROCm {rocm['rocm']} installed at {rocm.get('source')}" if rocm.get("rocm") else ""
        rows.append(("HIP runtime version", str(rt.get("hip_runtime") or (NOT_IMPORTED if not rt.get("checked")
                                                                         else "not in torch's build config")) + installed))
        rows.append(("MIOpen runtime version", str(rt.get("miopen") or (f"{rocm['miopen']} (installed headers)"
                                                                       if rocm.get("miopen") else NOT_IMPORTED))))
    rows.append(("Is XNNPACK available", str(rt["xnnpack"]) if rt.get("checked") and rt.get("xnnpack") is not None
                 else (NOT_IMPORTED if torch.get("version") else "N/A")))
    if rt.get("checked") and rt.get("cpu_capability"):
        rows.append(("CPU capability torch uses (gpudiag)", str(rt["cpu_capability"])))
    alloc = {k: env[k] for k in ALLOC_CONF_VARS if env.get(k)}
    rows.append(("Caching allocator config", ", ".join(f"{k}={v}" for k, v in alloc.items()) if alloc else
                 "N/A: none of " + ", ".join(ALLOC_CONF_VARS) + " is set (torch's defaults)"))
    cores = f"{cpu.get('physical_cores') or '?'} cores / {cpu.get('logical_cores') or '?'} threads"
    rows.append(("CPU", " · ".join(x for x in (cpu.get("brand"), cores, feats.get("isa_summary"),
                                               "lscpu fields below" if feats.get("rows") else None) if x)))
    pk = as_dict(s.get("packages"))
    conda = as_dict(pk.get("conda"))
    mism = as_list(as_dict(pk.get("cuda_check")).get("mismatches"))
    rows.append(("Versions of relevant libraries", f"Could not collect: {pk['reason']}" if pk.get("reason") else (
        f"{len(as_list(pk.get('pip')))} pip, {len(as_list(conda.get('packages')))} conda package(s) below"
        + (f"; conda: {conda['reason']}" if conda.get("reason") else "")
        + (f"; {len(mism)} CUDA package mismatch(es) with torch's build" if mism else
           ("; CUDA packages match torch's build" if as_list(as_dict(pk.get("cuda_check")).get("checked")) else ""))
    ) if pk else old))
    return rows


def cpu_rows(system: dict) -> List[Row]:
    """The CPU block: lscpu's labels on Linux, the same labels from the registry/kernel32 on Windows."""
    return [(str(r[0]), str(r[1])) for r in as_list(as_dict(system.get("cpu_features")).get("rows"))
            if isinstance(r, (list, tuple)) and len(r) == 2]


def package_lines(system: dict) -> List[str]:
    """collect_env's "[pip3] name==version" and "[conda] name version build channel" lines."""
    pk = as_dict(system.get("packages"))
    label = pk.get("pip_label") or "pip3"
    lines = [f"[{label}] {as_dict(p).get('name')}=={as_dict(p).get('version')}" for p in as_list(pk.get("pip"))]
    conda = as_dict(pk.get("conda"))
    for p in as_list(conda.get("packages")):
        p = as_dict(p)
        lines.append("[conda] " + " ".join(str(x) for x in (p.get("name"), p.get("version"), p.get("build"),
                                                           p.get("channel")) if x))
    if not as_list(conda.get("packages")):
        lines.append(f"[conda] none: {conda.get('reason') or 'no relevant conda packages'}")
    return lines


def cpu_feature_rows(system: dict) -> List[Row]:
    """gpudiag's own CPU rows for the main table: instruction sets, caches, NUMA."""
    f = as_dict(system.get("cpu_features"))
    if not f:
        return []
    caches = as_dict(f.get("caches"))
    numa = as_dict(f.get("numa"))
    from gpudiag.platform.cpu_features import cache_row

    rows = [("CPU instruction sets", str(f.get("isa_summary") or f.get("reason") or "unknown"))]
    rows.append(("CPU caches", " · ".join(f"{k} {cache_row(as_dict(c))}" for k, c in caches.items()) or "not read"))
    rows.append(("NUMA", f"{numa['nodes']} node(s)" + (": " + ", ".join(f"node{n} CPUs {c}" for n, c in as_dict(numa.get("cpus")).items())
                                                       if numa.get("cpus") else "") if numa.get("nodes")
                 else str(numa.get("reason") or "unknown")))
    return rows


def report_tables(system: dict) -> List[Tuple[str, List[str], List[List[str]]]]:
    """(title, columns, rows) for the report's system section: collect_env's fields, the CPU block,
    the packages and any CUDA package mismatch. Empty for reports from before issue 17."""
    if not as_dict(system.get("toolchain")):
        return []
    out = [("Field by field: torch.utils.collect_env", ["field", "value"],
            [[k, v] for k, v in collect_env_rows(system, None)])]
    cpu = cpu_rows(system)
    if cpu:
        out.append(("CPU (lscpu fields)", ["field", "value"], [[k, v] for k, v in cpu]))
    out.append(("Versions of relevant libraries", ["package"], [[line] for line in package_lines(system)]))
    mism = as_list(as_dict(as_dict(system.get("packages")).get("cuda_check")).get("mismatches"))
    if mism:
        out.append(("CUDA packages that do not match torch's build", ["package", "installed", "expected", "why"],
                    [[as_dict(m).get("name"), as_dict(m).get("installed"), as_dict(m).get("expected"), as_dict(m).get("rule")]
                     for m in mism]))
    return out
