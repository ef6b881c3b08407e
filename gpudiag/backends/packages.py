"""Installed packages that matter for GPU work, read from disk: pip's dist-info folders and
conda's `conda-meta` records. Never runs pip or conda (each costs a second or more).

    pip_packages(paths)        -> [{name, version, source}]  for every distribution matching PATTERNS
    conda_packages(prefixes)   -> {prefixes: [...], packages: [...], reason}
    metadata_pins(text)        -> {normalised name: {version, extras, marker}} from Requires-Dist `==` pins
    cuda_package_checks(...)   -> installed CUDA wheels/conda packages against torch's build CUDA

The patterns are a superset of `torch.utils.collect_env`'s (COMMON, NVIDIA, ONEAPI, PIP and CONDA
pattern lists there), plus every `nvidia-*` and `cuda-*` package and the GPU libraries gpudiag's
users run with torch; a test reads collect_env's own lists from its source so they cannot drift.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# Substrings, matched case-insensitively against the package name (collect_env matches them
# case-sensitively against "name==version", so this finds at least what it finds).
COLLECT_ENV_PATTERNS = (
    # COMMON_PATTERNS
    "torch", "numpy", "triton", "optree",
    # NVIDIA_PATTERNS
    "cuda-cudart", "cuda-cupti", "cuda-libraries", "cuda-opencl", "cuda-nvrtc", "cuda-runtime",
    "cublas", "cudnn", "cufft", "curand", "cusolver", "cusparse", "nccl", "nvjitlink", "nvtx",
    # ONEAPI_PATTERNS
    "dpcpp-cpp-rt", "intel-cmplr-lib-rt", "intel-cmplr-lib-ur", "intel-cmplr-lic-rt",
    "intel-opencl-rt", "intel-sycl-rt", "mkl", "onemkl-sycl-blas", "onemkl-sycl-dft",
    "onemkl-sycl-lapack", "onemkl-sycl-rng", "onemkl-sycl-sparse", "intel-openmp", "tbb",
    "impi-rt", "impi-devel", "oneccl", "oneccl-devel", "intel-pti", "umf", "tcmlib",
    # PIP_PATTERNS and CONDA_PATTERNS
    "mypy", "flake8", "onnx", "cudatoolkit", "soumith", "magma",
)
GPUDIAG_PATTERNS = (
    "nvidia-", "nvidia_", "cuda", "cupy", "jax", "tensorflow", "tensorrt", "accelerate",
    "transformers", "deepspeed", "xformers", "flash-attn", "flash_attn", "flashinfer",
    "bitsandbytes", "vllm", "apex", "numba", "pycuda", "lightning", "nvml", "psutil",
    "py-cpuinfo", "gpudiag", "blas", "openmp",
)
PATTERNS = COLLECT_ENV_PATTERNS + GPUDIAG_PATTERNS
# ROCm names (hipblas, rocm-smi, pytorch-triton-rocm): only where a name part starts with them,
# so that "hip" inside "ship" or "relationship" does not match.
_WORD_PATTERNS = re.compile(r"(^|[-_.])(hip|rocm|amdsmi|miopen|rccl)", re.I)


def normalise(name: str) -> str:
    """PEP 503 form ("Nvidia_CUDNN.cu12" -> "nvidia-cudnn-cu12"), used to compare names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def relevant(name: str) -> bool:
    """True for a package gpudiag lists: any collect_env pattern, any nvidia-*/cuda-*, GPU libraries."""
    low = name.lower()
    return any(p in low for p in PATTERNS) or bool(_WORD_PATTERNS.search(low))


# ------------------------------------------------------------------ pip (dist-info on sys.path)

_DIST_INFO = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)\.dist-info$")
_EGG_INFO = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(-py\d[\d.]*)?(-[^-]+)?\.egg-info$")


def _header(path: str, field: str) -> Optional[str]:
    """One `Field: value` header from a METADATA/PKG-INFO file (headers end at the first blank line)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    return None
                key, _, value = line.partition(":")
                if key.strip().lower() == field.lower():
                    return value.strip()
    except OSError:
        return None
    return None


def _parse_folder(entry: str, folder: str) -> Optional[Tuple[str, str, str]]:
    """(display name, version, metadata path) of one *.dist-info / *.egg-info folder name."""
    for pattern, meta in ((_DIST_INFO, "METADATA"), (_EGG_INFO, "PKG-INFO")):
        m = pattern.match(folder)
        if m:
            # Folder names escape '-' as '_'; pip shows the project name with '-'.
            return m.group("name").replace("_", "-"), m.group("version"), os.path.join(entry, folder, meta)
    if folder.endswith((".dist-info", ".egg-info")):  # a develop-mode egg-info without a version
        path = os.path.join(entry, folder)
        meta = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
        name = _header(meta, "Name")
        version = _header(meta, "Version")
        if name and version:
            return name, version, meta
    return None


def scan_distributions(paths: Optional[Sequence[str]] = None) -> List[dict]:
    """Every distribution on `paths` (sys.path by default) as {name, version, metadata}, the first
    of a name winning as for imports. Reads folder names only, so it costs one listdir per entry."""
    seen: Dict[str, dict] = {}
    for entry in (sys.path if paths is None else paths):
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = sorted(os.listdir(entry))
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            parsed = _parse_folder(entry, folder)
            if parsed is None:
                continue
            name, version, meta = parsed
            seen.setdefault(normalise(name), {"name": name, "version": version, "metadata": meta})
    return list(seen.values())


def pip_packages(paths: Optional[Sequence[str]] = None,
                 dists: Optional[List[dict]] = None) -> List[dict]:
    """The relevant pip-visible distributions, sorted by name: [{name, version, source: "pip"}]."""
    dists = scan_distributions(paths) if dists is None else dists
    rows = [{"name": d["name"], "version": d["version"], "source": "pip"} for d in dists if relevant(d["name"])]
    return sorted(rows, key=lambda r: normalise(r["name"]))


def read_metadata(dists: Iterable[dict], name: str) -> Optional[str]:
    """The METADATA text of distribution `name` among scanned `dists`, or None."""
    want = normalise(name)
    for d in dists:
        if normalise(d["name"]) == want:
            try:
                with open(d["metadata"], encoding="utf-8", errors="replace") as fh:
                    return fh.read()
            except OSError:
                return None
    return None


# Requires-Dist: nvidia-cudnn-cu12==9.1.0.70; platform_system == "Linux"
# Requires-Dist: nvidia-cuda-runtime-cu12 (==12.4.127) ; platform_system == "Linux"   (older wheels)
# Requires-Dist: cuda-toolkit[cublas,cudart]==13.0.2                                     (CUDA 13 wheels)
_PIN = re.compile(r"^Requires-Dist:\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
                  r"\s*\(?\s*==\s*(?P<version>[^\s;,()]+)\s*\)?\s*(?:;\s*(?P<marker>.*))?$", re.MULTILINE)


def metadata_pins(text: Optional[str]) -> Dict[str, dict]:
    """Exact `==` pins in a METADATA text: {normalised name: {name, version, extras, marker}}."""
    out: Dict[str, dict] = {}
    for m in _PIN.finditer(text or ""):
        out[normalise(m.group("name"))] = {
            "name": m.group("name"), "version": m.group("version"),
            "extras": [e.strip() for e in (m.group("extras") or "").split(",") if e.strip()],
            "marker": (m.group("marker") or "").strip() or None,
        }
    return out


# ------------------------------------------------------------------ conda (conda-meta on disk)

def conda_prefixes(environ: Optional[Mapping[str, str]] = None, prefix: Optional[str] = None) -> List[str]:
    """Conda environments to read: this Python's prefix and the active CONDA_PREFIX, when they hold
    a conda-meta folder (collect_env's `conda list` reads the active one)."""
    environ = os.environ if environ is None else environ
    out = []
    for p in (prefix if prefix is not None else sys.prefix, environ.get("CONDA_PREFIX")):
        if p and os.path.isdir(os.path.join(p, "conda-meta")) and os.path.realpath(p) not in map(os.path.realpath, out):
            out.append(p)
    return out


_CHANNEL = re.compile(rb'"channel"\s*:\s*"([^"]*)"')


def _conda_channel(path: str) -> Optional[str]:
    """The record's channel, from its first 8 KiB (records of big packages run to megabytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return None
    m = _CHANNEL.search(head)
    if not m:
        return None
    channel = m.group(1).decode("utf-8", "replace").rstrip("/")
    return channel.rsplit("/", 1)[-1] or None  # "https://conda.anaconda.org/pytorch" -> "pytorch"


def parse_conda_record_name(filename: str) -> Optional[Tuple[str, str, str]]:
    """(name, version, build) from a conda-meta file name "cuda-cudart-12.1.105-0.json".

    Conda versions and build strings never contain '-', so the last two '-' split them off.
    """
    if not filename.endswith(".json"):
        return None
    parts = filename[:-5].rsplit("-", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def conda_packages(prefixes: Optional[Sequence[str]] = None,
                   environ: Optional[Mapping[str, str]] = None) -> dict:
    """{prefixes, packages: [{name, version, build, channel, source: "conda"}], reason}.

    Names come from the record file names; only matching records are opened (for the channel).
    """
    prefixes = conda_prefixes(environ) if prefixes is None else list(prefixes)
    if not prefixes:
        return {"prefixes": [], "packages": [],
                "reason": "not a conda environment: no conda-meta folder in this Python's prefix or CONDA_PREFIX"}
    rows: Dict[str, dict] = {}
    for prefix in prefixes:
        meta = os.path.join(prefix, "conda-meta")
        try:
            names = sorted(os.listdir(meta))
        except OSError:
            continue
        for fn in names:
            parsed = parse_conda_record_name(fn)
            if parsed is None or not relevant(parsed[0]):
                continue
            name, version, build = parsed
            rows.setdefault(normalise(name), {"name": name, "version": version, "build": build,
                                              "channel": _conda_channel(os.path.join(meta, fn)),
                                              "source": "conda"})
    return {"prefixes": prefixes, "packages": sorted(rows.values(), key=lambda r: normalise(r["name"])),
            "reason": None}


# ------------------------------------------------------------------ CUDA packages vs torch's build

# Components whose version numbers follow the CUDA toolkit's (12.4.127 ships with CUDA 12.4).
# cuBLAS, cuFFT, cuDNN, NCCL ... number themselves and are checked by their -cuXX suffix only.
TRACKS_CUDA = ("cuda-runtime", "cuda-cudart", "cuda-nvrtc", "cuda-cupti", "cuda-nvcc", "nvjitlink",
               "cuda-cccl", "cuda-crt", "cuda-nvvm", "cuda-version", "cuda-toolkit", "cudatoolkit",
               "pytorch-cuda")
_SUFFIX = re.compile(r"-cu(\d+)$")


def _mm(version: Optional[str]) -> Optional[Tuple[int, int]]:
    """(major, minor) of a version ("12.4.127" -> (12, 4)), or None: CUDA packages are matched
    with torch's build by major.minor."""
    m = re.match(r"^(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _component(norm: str) -> Optional[str]:
    """The TRACKS_CUDA component a normalised package name is, or None."""
    bare = _SUFFIX.sub("", norm)
    bare = bare[len("nvidia-"):] if bare.startswith("nvidia-") else bare
    bare = bare[len("lib"):] if bare.startswith("lib") and bare[3:] in TRACKS_CUDA else bare
    return bare if bare in TRACKS_CUDA else None


def is_cuda_package(name: str) -> bool:
    """A CUDA library package: an nvidia-* wheel, a conda cuda-*/lib* CUDA package, cudatoolkit, cudnn, nccl."""
    n = normalise(name)
    return (n.startswith(("nvidia-", "cuda-", "libcu", "libnvjitlink", "libnccl", "libcudnn"))
            or n in ("cudatoolkit", "cudnn", "nccl", "pytorch-cuda", "cuda-toolkit")) and n not in ("nvidia-ml-py",)


def cuda_package_checks(packages: Sequence[dict], torch_cuda: Optional[str],
                        pins: Optional[Mapping[str, dict]] = None) -> dict:
    """Compare installed CUDA packages with torch's build CUDA (`torch_cuda`, "12.4") and the exact
    pins in torch's (and cuda-toolkit's) metadata.

    Rules, each a mismatch: a pinned package at another version; a `-cuXX` wheel whose XX is not
    torch's CUDA major; a component that follows the toolkit's numbering (TRACKS_CUDA) with another
    major, or an older minor than torch was built with (newer minors are compatible within a major).
    Returns {torch_cuda, checked: [{name, version, source}], mismatches: [{name, installed,
    expected, rule, source}], cuda_packages_without_cuda_torch: [names]}.
    """
    pins = dict(pins or {})
    build = _mm(torch_cuda)
    checked, mismatches, stray = [], [], []
    for p in packages:
        name, version, source = p.get("name") or "", p.get("version") or "", p.get("source")
        if not is_cuda_package(name):
            continue
        norm = normalise(name)
        checked.append({"name": name, "version": version, "source": source})
        if torch_cuda is None:
            stray.append(name)
            continue
        pin = pins.get(norm)
        if pin is not None and source == "pip":
            if version != pin["version"]:
                mismatches.append({"name": name, "installed": version, "expected": f"=={pin['version']}",
                                   "rule": "pinned in torch's metadata", "source": source})
            continue  # an exact pin says it all
        suffix = _SUFFIX.search(norm)
        if suffix and build and int(suffix.group(1)) != build[0]:
            mismatches.append({"name": name, "installed": version, "expected": f"a -cu{build[0]} package",
                               "rule": f"built for CUDA {suffix.group(1)}, torch for CUDA {torch_cuda}",
                               "source": source})
            continue
        comp, have = _component(norm), _mm(version)
        if comp and build and have:
            if comp == "pytorch-cuda" and have != build:
                mismatches.append({"name": name, "installed": version, "expected": f"{build[0]}.{build[1]}",
                                   "rule": "pytorch-cuda must equal torch's build CUDA", "source": source})
            elif have[0] != build[0]:
                mismatches.append({"name": name, "installed": version, "expected": f"{build[0]}.x",
                                   "rule": f"CUDA {have[0]} component, torch built for CUDA {torch_cuda}",
                                   "source": source})
            elif have[1] < build[1] and comp not in ("cudatoolkit", "cuda-version"):
                mismatches.append({"name": name, "installed": version, "expected": f">={build[0]}.{build[1]}",
                                   "rule": f"older than the CUDA {torch_cuda} torch was built with",
                                   "source": source})
    return {"torch_cuda": torch_cuda, "checked": checked, "mismatches": mismatches,
            "cuda_packages_without_cuda_torch": stray}


def collect(environ: Optional[Mapping[str, str]] = None, paths: Optional[Sequence[str]] = None,
            conda_prefix_list: Optional[Sequence[str]] = None, torch_cuda: Optional[str] = None) -> dict:
    """The `system.packages` data: pip and conda lists and the CUDA package check."""
    dists = scan_distributions(paths)
    pip = pip_packages(dists=dists)
    conda = conda_packages(conda_prefix_list, environ)
    pins = metadata_pins(read_metadata(dists, "torch"))
    # CUDA 13 torch pins the cuda-toolkit metapackage, which pins the components; torch's own pins win
    for k, v in metadata_pins(read_metadata(dists, "cuda-toolkit")).items():
        pins.setdefault(k, v)
    torch_pins = {k: v for k, v in pins.items() if is_cuda_package(v["name"])}
    check = cuda_package_checks(pip + conda["packages"], torch_cuda, torch_pins)
    check["pins"] = {v["name"]: v["version"] for v in torch_pins.values()}
    return {"pip": pip, "conda": conda, "cuda_check": check,
            "pip_label": "pip3" if sys.version_info[0] == 3 else "pip"}
