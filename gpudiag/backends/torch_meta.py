"""Facts about the installed torch read from its package files, without importing it.

Importing torch costs seconds and may initialise CUDA-adjacent state; `env`, `probes` and
`preflight` must stay fast, so they read `torch/version.py` as text instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from typing import Dict, Optional, Tuple

# How to get torch, said wherever its absence is (capabilities, the system probe's facts, the views).
TORCH_HINT = (
    "install torch (`pip install 'gpudiag[torch]'`, or your CUDA build from pytorch.org "
    "so as not to replace it)"
)
# A torch fact only an imported torch gives (debug build, XNNPACK, HIP runtime...), when torch was not imported.
NOT_IMPORTED = "not checked: needs importing torch (`gpudiag env` never does); `gpudiag report` records it"
# The variables torch's caching allocator reads (collect_env's "Caching allocator config").
ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


@functools.lru_cache(maxsize=1)
def torch_dir() -> Optional[str]:
    """The installed torch package folder (found without importing torch), or None."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


@functools.lru_cache(maxsize=1)
def _version_py() -> Dict[str, Optional[str]]:
    """torch/version.py's fields, read once as text (cached), or {} without torch: the
    fast path that spares importing torch."""
    folder = torch_dir()
    if folder is None:
        return {}
    path = os.path.join(folder, "version.py")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return {}
    return parse_version_py(text)


def parse_version_py(text: str) -> Dict[str, Optional[str]]:
    """Parse torch/version.py: `__version__ = '2.3.0+cu121'`, `cuda = '12.1'`, `hip = None`.

    A key the file does not have (older torch has no `xpu`) is absent from the result, so callers
    can tell "not an XPU build" (None) from "this torch does not say" (missing).
    """
    out: Dict[str, Optional[str]] = {}
    for key in ("__version__", "cuda", "hip", "rocm", "xpu", "git_version", "debug"):
        m = re.search(rf"^{key}\s*(?::\s*[\w\[\], .]+)?=\s*(.+)$", text, re.MULTILINE)
        if not m:
            continue
        raw = m.group(1).strip()
        if raw in ("None", "''", '""'):
            out[key] = None
        else:
            out[key] = raw.strip("'\"")
    return out


def torch_version() -> Optional[str]:
    """The installed torch's version ("2.3.0+cu121") from version.py, else its
    distribution metadata; None when torch is not installed."""
    v = _version_py().get("__version__")
    if v:
        return v
    import importlib.metadata  # only when version.py is unreadable: the import costs ~7 ms

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda_version() -> Optional[str]:
    """CUDA version torch was built with ('12.1'), or None for CPU/ROCm builds or no torch."""
    return _version_py().get("cuda")


def torch_hip_version() -> Optional[str]:
    """The HIP (ROCm) version torch was built with, or None for CUDA/CPU builds or no torch."""
    return _version_py().get("hip")


def build_field(key: str) -> Tuple[bool, Optional[str]]:
    """(present, value) of one torch/version.py field ("debug", "xpu", "rocm"...): present is False
    when no torch is installed or its version.py predates the field."""
    v = _version_py()
    return (key in v, v.get(key))
