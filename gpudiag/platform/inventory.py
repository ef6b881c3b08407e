"""The inventory `torch.utils.collect_env` prints, gathered fast: compilers, C library, CUDA
toolkit, cuDNN and CUDA runtime libraries, CPU instruction sets/caches/NUMA, packages, and the
torch build fields its version.py states.

    start(environ, kind)            -> a handle; the compiler `--version` calls run meanwhile
    collect(..., toolchain=handle)  -> {toolchain, cuda_libs, cpu_features, packages, python_build,
                                        torch_build, torch_runtime}
    allocator_config(env)           -> {VAR: value} of the allocator variables in the allowlisted env

Only `torch_runtime` needs torch imported (debug/XNNPACK/XPU/CPU capability/HIP runtime); it is
filled only when the caller already imports torch (the report's system probe), never by `env`.
Every value is either there or has a reason next to it.
"""

from __future__ import annotations

import os
import platform as _platform
import sys
from typing import Any, Mapping, Optional

from gpudiag.backends import cuda_libs, packages, torch_meta
from gpudiag.backends.torch_meta import ALLOC_CONF_VARS, NOT_IMPORTED
from gpudiag.platform import cpu_features, libraries, toolchain



def start(environ: Optional[Mapping[str, str]] = None, kind: str = "linux") -> toolchain.Pending:
    """Start the compiler/nvcc `--version` subprocesses now so they overlap other collection."""
    return toolchain.start(environ, kind)


def torch_build() -> dict:
    """torch/version.py fields beyond version/cuda/hip: {present, debug, xpu, rocm, git_version}."""
    out: dict = {"present": torch_meta.torch_version() is not None}
    for key in ("debug", "xpu", "rocm", "git_version"):
        present, value = torch_meta.build_field(key)
        out[key] = value if present else None
        out[key + "_known"] = present
    if isinstance(out.get("debug"), str):
        out["debug"] = out["debug"] == "True"
    out["dir"] = torch_meta.torch_dir()
    return out


def _show_config_value(config: str, prefix: str) -> Optional[str]:
    """collect_env's reading of torch.__config__.show(): last word of the first line naming `prefix`."""
    for line in config.splitlines():
        if prefix in line and line.split():
            return line.split()[-1]
    return None


def torch_runtime(import_torch: bool) -> dict:
    """What only an imported torch says. Never calls torch.cuda.* (that can initialise CUDA)."""
    if not import_torch:
        return {"checked": False, "reason": NOT_IMPORTED}
    try:
        import torch
    except Exception as exc:  # a broken torch install is itself a fact worth reporting
        return {"checked": False, "reason": f"import torch failed: {type(exc).__name__}: {exc}"}
    out: dict = {"checked": True, "reason": None,
                 "debug": bool(getattr(torch.version, "debug", False)),
                 "xnnpack": None, "xpu_available": None, "cpu_capability": None,
                 "hip_runtime": None, "miopen": None}
    try:
        import torch.backends.xnnpack

        # torch swaps the module for an object with this property at import; the stubs do not know it.
        out["xnnpack"] = bool(torch.backends.xnnpack.enabled)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, RuntimeError):
        pass
    xpu = getattr(torch, "xpu", None)
    try:
        out["xpu_available"] = bool(xpu.is_available()) if xpu is not None else False
    except RuntimeError:
        pass
    cpu = getattr(torch.backends, "cpu", None)
    try:
        out["cpu_capability"] = cpu.get_cpu_capability() if cpu is not None else None
    except (AttributeError, RuntimeError):
        pass
    if getattr(torch.version, "hip", None):
        try:
            config = torch._C._show_config()
        except (AttributeError, RuntimeError):
            config = ""
        out["hip_runtime"] = _show_config_value(config, "HIP Runtime")
        out["miopen"] = _show_config_value(config, "MIOpen")
    return out


def python_build() -> dict:
    """collect_env's "Python version" and "Python platform" strings."""
    return {"version_full": sys.version.replace("\n", " "),
            "bits": sys.maxsize.bit_length() + 1,
            "platform": _platform.platform()}


def allocator_config(env: Mapping[str, str]) -> dict:
    """{VAR: value} for the caching-allocator variables that are set (collect_env's dict), from the system
    probe's allowlisted environment, whose secret-looking values are already masked (report.redact)."""
    return {k: v for k, v in env.items() if k in ALLOC_CONF_VARS and v}


def _best_effort(what: str, read, empty: dict) -> dict:
    """read(), or `empty` with a reason: one unreadable fact must not cost `gpudiag env` (which
    would print a traceback) or the report's system probe (which would fail whole)."""
    try:
        return read()
    except Exception as exc:  # best-effort fact on an unusual machine: say why, keep the rest
        return dict(empty, reason=f"{what} not read: {type(exc).__name__}: {exc}")


def collect(environ: Optional[Mapping[str, str]] = None, kind: str = "linux", torch_cuda: Optional[str] = None,
            import_torch: bool = False, pending: Optional[toolchain.Pending] = None, root: str = "/",
            reg: Any = None, api: Any = None) -> dict:
    """The inventory; `pending` is a handle from start() (started early by the caller), else started here."""
    environ = os.environ if environ is None else environ
    pending = pending or start(environ, kind)
    build = torch_build()
    tdir = build.get("dir")
    cpu = _best_effort("CPU features", lambda: cpu_features.facts(kind, root=root, reg=reg, api=api),
                       {"isa": None, "isa_summary": None, "flags": [], "caches": {}, "numa": {}, "rows": [],
                        "source": None})
    libs = {name: _best_effort(f"{name} libraries", lambda name=name: libraries.find_cuda_lib(
        name, kind, root=root, environ=environ, torch_dir=tdir), {}) for name in ("cudnn", "cudart")}
    libs["rocm"] = _best_effort("ROCm", lambda: cuda_libs.rocm(environ, root=root), {})
    pkgs = _best_effort("packages", lambda: packages.collect(environ=environ, torch_cuda=torch_cuda), {})
    tools = pending.result()
    tools["libc"] = toolchain.libc_version(kind)
    return {
        "toolchain": tools,
        "cuda_libs": libs,
        "cpu_features": cpu,
        "packages": pkgs,
        "python_build": python_build(),
        "torch_build": build,
        "torch_runtime": torch_runtime(import_torch),
    }
