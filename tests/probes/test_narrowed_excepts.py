"""The excepts issue 10 narrowed in probes/gil and probes/cycle: what they still catch (the failures NVML,
torch and old builds really raise) and what now propagates (a bug is no longer swallowed)."""

import sys

import pytest

from gpudiag.probes.cycle import probe as cycle_probe
from gpudiag.probes.gil import probe as gil
from tests.fakes import FakeNvml


def test_nvml_free_by_uuid_reads_every_gpu_and_is_empty_without_a_driver(monkeypatch):
    fake = FakeNvml.h100()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    free = gil._nvml_free_by_uuid()
    assert len(free) == 1 and all(k.startswith("GPU-") and v > 0 for k, v in free.items())
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml.no_driver())
    assert gil._nvml_free_by_uuid() == {}  # NvmlUnavailable: the other measurements still stand


def test_nvml_helpers_answer_nothing_when_a_handle_cannot_be_had(monkeypatch):
    fake = FakeNvml.h100()
    fake.nvmlDeviceGetHandleByIndex = lambda index: (_ for _ in ()).throw(fake.NVMLError_GpuIsLost())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gil._nvml_free_by_uuid() == {}  # NvmlError from handle()
    assert gil._nvml_own_usage("GPU-x") is None


def test_a_bug_inside_the_nvml_helpers_is_no_longer_swallowed(monkeypatch):
    fake = FakeNvml.h100()
    fake.nvmlDeviceGetHandleByIndex = lambda index: 1 / 0
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(ZeroDivisionError):
        gil._nvml_free_by_uuid()


class _NoUuidCuda:
    """torch.cuda whose device properties have no uuid (older torch): the NVML figures are skipped."""

    def init(self):
        pass

    def synchronize(self):
        pass

    def mem_get_info(self):
        return (3_000 * 2**20, 4_096 * 2**20)

    def current_device(self):
        return 0

    def get_device_properties(self, i):
        return object()


class _Tensor:
    def __add__(self, other):
        return self

    def sum(self):
        return self

    def item(self):
        return 2.0


class _NoUuidTorch:
    def __init__(self):
        self.cuda = _NoUuidCuda()

    def ones(self, n, device=None):
        return _Tensor()


def test_cuda_init_cost_without_a_device_uuid_reports_torch_figures_only(monkeypatch):
    monkeypatch.setattr(gil, "_nvml_free_by_uuid", lambda: {})
    monkeypatch.setattr(gil, "_nvml_own_usage", lambda uuid: pytest.fail("no uuid: NVML per-process not asked"))
    out = gil._cuda_init_cost(_NoUuidTorch())  # AttributeError on .uuid is caught
    assert out["device_bytes_per_context"] is None and out["device_budget_bytes"] == 3_000 * 2**20


@pytest.mark.torch
def test_profiler_support_says_why_when_torch_has_no_profiler(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.profiler", None)  # import raises ImportError
    ok, reason = cycle_probe._profiler_support()
    assert ok is False and reason.startswith("torch.profiler unavailable: ModuleNotFoundError")


@pytest.mark.torch
def test_profiler_support_on_a_cpu_build_names_the_missing_cuda_activity():
    ok, reason = cycle_probe._profiler_support()
    assert ok is False and "CUDA activity" in reason
