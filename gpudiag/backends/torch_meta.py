"""Facts about the installed torch read from its package files, without importing it.

Importing torch costs seconds and may initialise CUDA-adjacent state; `env`, `probes` and
`preflight` must stay fast, so they read `torch/version.py` as text instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
from typing import Dict, Optional


@functools.lru_cache(maxsize=1)
def _version_py() -> Dict[str, Optional[str]]:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return {}
    return parse_version_py(text)


def parse_version_py(text: str) -> Dict[str, Optional[str]]:
    """Parse torch/version.py: `__version__ = '2.3.0+cu121'`, `cuda = '12.1'`, `hip = None`."""
    out: Dict[str, Optional[str]] = {}
    for key in ("__version__", "cuda", "hip", "git_version", "debug"):
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
    v = _version_py().get("__version__")
    if v:
        return v
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda_version() -> Optional[str]:
    """CUDA version torch was built with ('12.1'), or None for CPU/ROCm builds or no torch."""
    return _version_py().get("cuda")


def torch_hip_version() -> Optional[str]:
    return _version_py().get("hip")
