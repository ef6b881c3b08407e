"""Skip `gpu`-marked tests unless a CUDA device is usable, decided without importing torch
or initialising CUDA in the pytest process (probes do that in their own children)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    from gpudiag import capabilities

    cuda = capabilities.detect()["cuda"]
    if cuda.available:
        return
    skip = pytest.mark.skip(reason=f"needs CUDA: {cuda.reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
