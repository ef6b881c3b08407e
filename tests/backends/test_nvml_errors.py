"""What the NVML seam catches: pynvml's errors (told by their "NVML" class name) become "n/a", NvmlError or
NvmlUnavailable; any other exception is a bug and reaches the caller."""

import pytest

from gpudiag.backends import nvml
from gpudiag.backends.nvml import NA
from gpudiag.diagnose.preflight import facts as facts_mod
from gpudiag.diagnose.preflight.model import Plan
from gpudiag.probes import driver
from tests.fakes import FakeNvml, NVMLError_GpuIsLost, NVMLError_InvalidArgument, NVMLError_Uninitialized


class _Lib(FakeNvml):
    """The H100 fake, with one call made to misbehave per test (None: it answers as recorded)."""

    def __init__(self, init=None, shutdown=None, handle=None, name=None):
        base = FakeNvml.h100()
        super().__init__(base.gpus, base.driver_version, base.cuda_version, base.nvml_version)
        self._init, self._shutdown, self._handle, self._name = init, shutdown, handle, name
        self.shut = False

    @staticmethod
    def _maybe(exc):
        if exc is not None:
            raise exc

    def nvmlInit(self):
        self._maybe(self._init)
        super().nvmlInit()

    def nvmlShutdown(self):
        self.shut = True
        self._maybe(self._shutdown)
        super().nvmlShutdown()

    def nvmlDeviceGetHandleByIndex(self, index):
        self._maybe(self._handle)
        return super().nvmlDeviceGetHandleByIndex(index)

    def nvmlDeviceGetName(self, h):
        self._maybe(self._name)
        return super().nvmlDeviceGetName(h)


def test_library_mismatch_error_is_na():
    # pynvml's unversioned wrappers raise NVMLLibraryMismatchError, a plain Exception subclass.
    import pynvml

    with nvml.session(_Lib(name=pynvml.NVMLLibraryMismatchError("use a versioned function"))) as n:
        assert n.call("nvmlDeviceGetName", n.handle(0)) == NA


def test_foreign_error_named_like_an_nvml_answer_is_not_swallowed():
    # Before narrowing, any class name containing "NotFound", "Unknown"... was taken for an NVML answer.
    with nvml.session(_Lib(name=FileNotFoundError("a bug in a reader"))) as n:
        with pytest.raises(FileNotFoundError):
            n.call("nvmlDeviceGetName", n.handle(0))


def test_handle_raises_the_seams_error_with_pynvmls_name():
    with nvml.session(_Lib(handle=NVMLError_GpuIsLost())) as n:
        with pytest.raises(nvml.NvmlError) as info:
            n.handle(0)
    assert info.value.name == "NVMLError_GpuIsLost"
    assert str(info.value) == "NVMLError_GpuIsLost: GPU is lost"
    assert isinstance(info.value.__cause__, NVMLError_GpuIsLost)


def test_handle_lets_a_foreign_exception_through():
    with nvml.session(_Lib(handle=ZeroDivisionError("bug"))) as n:
        with pytest.raises(ZeroDivisionError):
            n.handle(0)
        with pytest.raises(ZeroDivisionError):
            nvml.cuda_device_handle(n, None, 0, {})
        with pytest.raises(ZeroDivisionError):
            driver.collect(n, host="linux", procs={})


def test_cuda_device_handle_by_index_names_the_nvml_error():
    with nvml.session(_Lib(handle=NVMLError_InvalidArgument())) as n:
        assert nvml.cuda_device_handle(n, None, 0, {}) == (None, "NVML has no GPU 0: NVMLError_InvalidArgument")


def test_init_nvml_error_becomes_unavailable_but_a_foreign_one_propagates():
    with pytest.raises(nvml.NvmlUnavailable, match=r"^NVML failed to initialise: NVMLError_InvalidArgument: "
                                                  r"Invalid Argument$"):
        with nvml.session(_Lib(init=NVMLError_InvalidArgument())):
            pass
    with pytest.raises(TypeError, match="bug"):
        with nvml.session(_Lib(init=TypeError("bug"))):
            pass


def test_shutdown_nvml_error_is_suppressed_a_foreign_one_is_not():
    lib = _Lib(shutdown=NVMLError_Uninitialized())
    with nvml.session(lib) as n:
        assert n.device_count() == 1
    assert lib.shut
    with pytest.raises(KeyError):
        with nvml.session(_Lib(shutdown=KeyError("bug"))):
            pass


def test_preflight_reports_a_foreign_init_failure_as_nvml_unreachable():
    # nvmlInit failing with a non-NVML error no longer turns into NvmlUnavailable in the seam; preflight's
    # best-effort guard still turns it into a reason instead of a crash.
    facts = facts_mod.gather_facts(Plan(), environ={}, nvml_session=lambda: nvml.session(_Lib(init=TypeError("odd"))),
                                   memory_facts=lambda: {}, search_dir=None)
    assert facts["nvml"] == {"reachable": False, "reason": "TypeError: odd"}
    assert facts["driver"] is None


def test_driver_probe_still_marks_a_lost_gpu_and_reads_the_rest():
    fake = FakeNvml.h100()
    fake.gpus.append(FakeNvml.h100().gpus[0])
    real = fake.nvmlDeviceGetHandleByIndex

    def handle(index):
        if index == 0:
            raise NVMLError_GpuIsLost()
        return real(index)

    fake.nvmlDeviceGetHandleByIndex = handle
    with nvml.session(fake) as n:
        data = driver.collect(n, host="linux", procs={})
    assert data["gpus"][0] == {"index": 0, "error": "NVMLError_GpuIsLost: GPU is lost"}
    assert data["gpus"][1]["index"] == 1 and "error" not in data["gpus"][1]
