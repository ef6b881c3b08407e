"""Where cuDNN and the CUDA runtime are on this machine, and their versions, read from files.

    find("cudnn", search) -> {torch: [lib], wheels: [lib], system: [lib], headers: [hdr], system_source, reason}
    rocm(environ)         -> {rocm, miopen, source, reason}

`lib` is {path, version, version_source}. Three places are looked at, because torch may load any:
  torch   - libraries inside the torch package (torch/lib: Windows wheels, older Linux wheels);
  wheels  - NVIDIA's pip wheels (site-packages/nvidia/<component>/{lib,bin}, CUDA 13: nvidia/cu13);
  system  - the machine's own copies, in the places platform.libraries.cuda_search names for this OS
            (/etc/ld.so.cache on Linux, as collect_env's `ldconfig -p | grep libcudnn`; %CUDA_PATH%\\bin, as
            its `where /R`, and NVIDIA's cuDNN installer folder on Windows; /usr/local/cuda/lib on macOS).
Versions come from backends.libversions (DLL version resource, file name, headers); the package
that installed a wheel library says its version too (system.packages).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from gpudiag.backends import libversions

LIBS: Dict[str, dict] = {
    # so: ELF/dylib name prefix; dll: DLL name prefix; main: the library itself (not its sub-libraries)
    "cudnn": {"so": "libcudnn", "dll": "cudnn", "main": ("libcudnn.", "cudnn64_", "cudnn32_"),
              "headers": ("cudnn_version.h", "cudnn.h"), "header_kind": "cudnn"},
    "cudart": {"so": "libcudart", "dll": "cudart", "main": ("libcudart.", "libcudart-", "cudart64_", "cudart32_"),
               "headers": ("cuda_runtime_api.h",), "header_kind": "cudart"},
}
_MAX_WALK_FILES = 5000  # a mis-set CUDA_PATH pointing at C:\ must not make `env` crawl a disk


def _is_lib(name: str, spec: dict, main_only: bool) -> bool:
    """True when file `name` belongs to the library (.so*, .dylib, .dll by prefix); main_only
    keeps the library itself, not its sub-libraries (libcudnn_ops...)."""
    low = name.lower()
    if low.endswith(".dll"):
        ok = low.startswith(spec["dll"])
    elif ".so" in low or low.endswith(".dylib"):
        ok = low.startswith(spec["so"])
    else:
        return False
    return ok and (not main_only or low.startswith(spec["main"]))


def _describe(path: str) -> dict:
    """{path, version, version_source} of one library file."""
    version, source = None, None
    if path.lower().endswith(".dll"):
        version = libversions.pe_file_version(path)
        source = "DLL version resource" if version else None
    if version is None:
        version = libversions.version_from_filename(path)
        source = "file name" if version else None
    return {"path": path, "version": version, "version_source": source}


def _listdir(folder: str) -> List[str]:
    """Sorted names in a folder, or [] when it is missing or unreadable: every location is optional."""
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _unique_files(paths: Sequence[str]) -> List[str]:
    """Real files behind `paths`, symlinks resolved, de-duplicated, sorted (collect_env's treatment)."""
    out = set()
    for p in paths:
        real = os.path.realpath(p)
        if os.path.isfile(real):
            out.add(real)
    return sorted(out)


def torch_libs(lib: str, torch_dir: Optional[str]) -> List[dict]:
    """The main `lib` libraries shipped inside the torch package (torch/lib)."""
    if not torch_dir:
        return []
    folder = os.path.join(torch_dir, "lib")
    return [_describe(os.path.join(folder, n)) for n in _listdir(folder) if _is_lib(n, LIBS[lib], True)]


def wheel_dirs(paths: Optional[Sequence[str]] = None) -> List[str]:
    """site-packages/nvidia/<component> folders on sys.path (NVIDIA's CUDA wheels install there)."""
    out = []
    for entry in (sys.path if paths is None else paths):
        base = os.path.join(entry, "nvidia") if entry else ""
        if base and os.path.isdir(base):
            out += [os.path.join(base, n) for n in _listdir(base) if os.path.isdir(os.path.join(base, n))]
    return out


def wheel_libs(lib: str, dirs: Sequence[str]) -> List[dict]:
    """The main `lib` libraries in NVIDIA wheel folders, with the version their headers declare."""
    spec, out = LIBS[lib], []
    for d in dirs:
        header = next((os.path.join(d, "include", h) for h in spec["headers"]
                       if os.path.isfile(os.path.join(d, "include", h))), None)
        for sub in ("lib", "bin"):
            folder = os.path.join(d, sub)
            for n in _listdir(folder):
                if _is_lib(n, spec, True):
                    row = _describe(os.path.join(folder, n))
                    hv = libversions.read_header_version(header, spec["header_kind"]) if header else None
                    if hv:  # the header's full version beats the file name's major
                        row.update(version=hv, version_source=os.path.basename(header))
                    out.append(row)
    return out


def _walk(folder: str, spec: dict) -> List[str]:
    """`where /R folder <lib>*.dll`: matching files under folder, bounded."""
    found, seen = [], 0
    for dirpath, _dirs, files in os.walk(folder):
        for n in files:
            seen += 1
            if _is_lib(n, spec, False):
                found.append(os.path.join(dirpath, n))
        if seen > _MAX_WALK_FILES:
            break
    return found


def system_libs(lib: str, search: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> dict:
    """{libs: [lib], source, reason}: the machine's own copies, all of them (as collect_env lists), in the
    places `search` names (platform.libraries.cuda_search: this OS's linker cache or folders)."""
    environ = os.environ if environ is None else environ
    spec = LIBS[lib]
    if search.get("paths") is None:
        return {"libs": [], "source": None, "reason": search.get("reason")}
    paths: List[str] = list(search["paths"])
    for folder in search.get("walk") or ():
        paths += _walk(folder, spec)
    for folder in search.get("listed") or ():
        paths += [os.path.join(folder, n) for n in _listdir(folder) if _is_lib(n, spec, False)]
    source = search.get("source")
    if not paths and lib == "cudnn" and environ.get("CUDNN_LIBRARY") and os.path.isfile(environ["CUDNN_LIBRARY"]):
        paths = [environ["CUDNN_LIBRARY"]]  # collect_env's fallback
        source = "CUDNN_LIBRARY"
    return {"libs": [_describe(p) for p in _unique_files(paths)], "source": source, "reason": None}


def toolkit_headers(lib: str, toolkits: Sequence[str]) -> List[dict]:
    """[{path, version}] from headers of installed toolkits (system cuDNN/CUDA development files) in the
    `toolkits` folders (CUDA_HOME, CUDA_PATH, and where this OS installs them)."""
    spec = LIBS[lib]
    out, seen = [], set()
    for base in filter(None, toolkits):
        for sub in ("include", os.path.join("include", "x86_64-linux-gnu"), os.path.join("include", "aarch64-linux-gnu")):
            for h in spec["headers"]:
                path = os.path.join(base, sub, h)
                real = os.path.realpath(path)
                if real in seen or not os.path.isfile(real):
                    continue
                seen.add(real)
                version = libversions.read_header_version(real, spec["header_kind"])
                if version:
                    out.append({"path": path, "version": version})
    return out


def find(lib: str, search: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None,
         paths: Optional[Sequence[str]] = None, torch_dir: Optional[str] = None) -> dict:
    """Everything known about `lib` ("cudnn" or "cudart") from files only: inside torch, in NVIDIA's wheels on
    `paths` (default sys.path), and in the machine's own places `search` names (platform.libraries)."""
    system = system_libs(lib, search, environ)
    return {"torch": torch_libs(lib, torch_dir), "wheels": wheel_libs(lib, wheel_dirs(paths)),
            "system": system["libs"], "system_source": system["source"], "system_reason": system["reason"],
            "headers": toolkit_headers(lib, search.get("toolkits") or ())}


def _read_first_line(path: str) -> Optional[str]:
    """The first line of a text file, stripped, or None when missing or empty: ROCm's
    .info/version holds only the release."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() or None
    except OSError:
        return None


def rocm(environ: Optional[Mapping[str, str]] = None, root: str = "/") -> dict:
    """{rocm, miopen, source, reason}: the installed ROCm release (.info/version) and MIOpen's
    version header, for ROCm torch builds (collect_env asks torch._C._show_config())."""
    environ = os.environ if environ is None else environ
    base = environ.get("ROCM_PATH") or os.path.join(root, "opt/rocm")
    version = _read_first_line(os.path.join(base, ".info", "version"))
    miopen = None
    try:
        with open(os.path.join(base, "include", "miopen", "version.h"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        parts = [re.search(rf"#define\s+MIOPEN_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
        miopen = ".".join(m.group(1) for m in parts) if all(parts) else None
    except OSError:
        pass
    reason = None if version or miopen else f"no ROCm installation at {base}"
    return {"rocm": version, "miopen": miopen, "source": base if not reason else None, "reason": reason}
