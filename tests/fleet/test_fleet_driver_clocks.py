"""fleet's driver reader: a GPU whose NVML handle fails keeps its driver facts but no clocks.

Before issue 10 the clause tested the class name for "NVMLError", which the seam's NvmlError does
not start with, so the error escaped and preflight lost the driver facts of every GPU."""

from __future__ import annotations

import pytest

from gpudiag.backends import nvml as nvml_backend
from gpudiag.fleet import measure
from gpudiag.probes import driver
from tests.fakes import NVMLError_GpuIsLost


class _Nvml:
    """The seam's Nvml surface fleet's reader uses: handle() raising for the GPUs in `lost`, call() answering."""

    def __init__(self, lost=(), bug=False):
        self.lost, self.bug = set(lost), bug

    def handle(self, index):
        if self.bug:
            raise KeyError("a bug, not an NVML answer")
        if index in self.lost:
            raise nvml_backend.NvmlError(NVMLError_GpuIsLost())
        return ("handle", index)

    def call(self, fn, *args, default=None):
        return {"nvmlDeviceGetClockInfo": 1410, "nvmlDeviceGetMaxClockInfo": 1980}[fn]


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(driver, "collect", lambda n: {"gpus": [{"index": 0, "name": "A"}, {"index": 1, "name": "B"}]})


def test_a_lost_handle_costs_that_gpu_its_clocks_only(two_gpus):
    extra = {}
    data = measure._driver_collect(extra)(_Nvml(lost={0}))
    assert "clocks" not in data["gpus"][0]
    assert data["gpus"][1]["clocks"] == {"sm_mhz": 1410, "sm_max_mhz": 1980, "mem_mhz": 1410}
    assert extra["driver"] is data


def test_a_bug_in_the_reader_still_propagates(two_gpus):
    with pytest.raises(KeyError):
        measure._driver_collect({})(_Nvml(bug=True))
