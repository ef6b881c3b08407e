"""Where this OS keeps shared libraries: the NVML library (found without loading it) and the places searched
for the CUDA runtime and cuDNN. backends.cuda_libs reads what it finds there; it never asks which OS this is.

    nvml_library(kind)                       -> path (or loader name) of the NVML library present, else None
    nvml_library_name(kind)                  -> its file name, for messages
    cuda_search(so_prefix, kind, root, environ) -> {paths, walk, listed, source, reason, toolkits}
    find_cuda_lib(lib, kind, root, environ, paths, torch_dir) -> backends.cuda_libs.find's answer
"""

from __future__ import annotations

import ctypes.util
import os
from typing import Any, Dict, Mapping, Optional, Sequence

from gpudiag.backends import cuda_libs
from gpudiag.platform import KIND, ldcache

_LINUX_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib", "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib")
_WSL_NVML = "/usr/lib/wsl/lib/libnvidia-ml.so.1"  # WSL2's driver folder, ahead of any Linux copy


def nvml_library_name(kind: Optional[str] = None) -> str:
    """The NVML library's file name on this OS."""
    return "nvml.dll" if (kind or KIND) == "windows" else "libnvidia-ml.so.1"


def nvml_library(kind: Optional[str] = None) -> Optional[str]:
    """Path or name of the NVML shared library if one is present, without loading it."""
    kind = kind or KIND
    if kind == "windows":
        candidates = [
            os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "System32", "nvml.dll"),
            os.path.join(os.environ.get("ProgramFiles", r"C:\Program Files"),
                         "NVIDIA Corporation", "NVSMI", "nvml.dll"),
        ]
        return next((p for p in candidates if os.path.exists(p)), None)
    if os.path.exists(_WSL_NVML):
        return _WSL_NVML
    if kind == "linux":
        return _linux_library("libnvidia-ml.so")
    return ctypes.util.find_library("nvidia-ml")


def _linux_library(stem: str) -> Optional[str]:
    """A shared library by the usual folders and the loader's cache (read as a file).

    Not ctypes.util.find_library: when the loader's cache misses, it runs gcc, which takes a
    second and leaves ccXXXXXX temp files in /tmp when Ctrl-C reaches it.
    """
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(_LINUX_LIB_DIRS)
    for d in dirs:
        for name in (stem + ".1", stem):
            path = os.path.join(d, name)
            if os.path.exists(path):
                return path
    cached = ldcache.find(stem)
    return cached[0] if cached else None


def cuda_search(so_prefix: str, kind: Optional[str] = None, root: str = "/",
                environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Where the machine's own copies of a CUDA library are looked for, as collect_env looks:

    paths    - library files already found (Linux: /etc/ld.so.cache entries named `so_prefix`*), or None
               with `reason` when there is no cache to ask (musl, an unusual system);
    walk     - folders searched recursively (Windows: `where /R %CUDA_PATH%\\bin`, NVIDIA's cuDNN folder);
    listed   - folders whose files are listed (macOS: /usr/local/cuda/lib);
    toolkits - toolkit folders whose include/ may hold the version headers;
    source   - the places in words.
    """
    kind = kind or KIND
    environ = os.environ if environ is None else environ
    out: Dict[str, Any] = {"paths": [], "walk": [], "listed": [], "source": None, "reason": None,
                           "toolkits": [environ.get(k) for k in ("CUDA_HOME", "CUDA_PATH") if environ.get(k)]}
    if kind == "windows":
        folders = [os.path.join(environ["CUDA_PATH"], "bin")] if environ.get("CUDA_PATH") else []
        folders.append(os.path.join(environ.get("ProgramFiles", r"C:\Program Files"), "NVIDIA", "CUDNN"))
        out.update(walk=[f for f in folders if os.path.isdir(f)],
                   source="%CUDA_PATH%\\bin and %ProgramFiles%\\NVIDIA\\CUDNN (recursive)")
    elif kind == "macos":
        out.update(listed=[os.path.join(root, "usr/local/cuda/lib")], source="/usr/local/cuda/lib")
    else:
        cached = ldcache.find(so_prefix, root)
        if cached is None:
            out.update(paths=None, reason="no readable /etc/ld.so.cache (musl-based or unusual system): not searched")
        else:
            # ld.so.cache paths are absolute on the real machine; a test root prefixes them
            out.update(paths=[p if root == "/" else os.path.join(root, p.lstrip("/")) for p in cached],
                       source="/etc/ld.so.cache")
    if kind == "linux":
        out["toolkits"] += [os.path.join(root, "usr/local/cuda"), os.path.join(root, "usr")]
    return out


def find_cuda_lib(lib: str, kind: Optional[str] = None, root: str = "/", environ: Optional[Mapping[str, str]] = None,
                  paths: Optional[Sequence[str]] = None, torch_dir: Optional[str] = None) -> dict:
    """Everything known about `lib` ("cudnn" or "cudart") on this machine, from files only
    (backends.cuda_libs.find over this OS's places)."""
    search = cuda_search(cuda_libs.LIBS[lib]["so"], kind, root, environ)
    return cuda_libs.find(lib, search, environ=environ, paths=paths, torch_dir=torch_dir)

