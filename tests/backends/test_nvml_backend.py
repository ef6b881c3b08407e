"""The NVML seam: guarded calls, API spellings across driver versions, init failures in words."""

import pytest

from gpudiag.backends import nvml
from gpudiag.backends.nvml import NA
from tests.fakes import NOT_SUPPORTED, FakeNvml, FakeProcess, encode_clock_event_reasons, read_data


def test_clock_event_reasons_decode_and_encode():
    assert nvml.decode_clock_event_reasons(0) == []
    assert nvml.decode_clock_event_reasons(0x1) == ["gpu_idle"]
    assert nvml.decode_clock_event_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert nvml.decode_clock_event_reasons(0x100 | 0x2000) == ["display_clock_setting", "unknown_0x2000"]
    assert nvml.decode_clock_event_reasons(NA) == []
    every = [name for _, name in nvml.CLOCK_EVENT_REASONS]
    assert nvml.decode_clock_event_reasons(encode_clock_event_reasons(every)) == every  # the fakes' encoder
    with pytest.raises(ValueError, match="unknown clock event reason"):
        encode_clock_event_reasons(["too_hot"])


def test_throttling_reasons_exclude_idle_app_clocks_and_display():
    assert not {"gpu_idle", "applications_clocks_setting", "display_clock_setting", "sync_boost"} \
        & nvml.THROTTLING_REASONS


def test_cuda_version_string():
    assert nvml.cuda_version_string(12040) == "12.4"
    assert nvml.cuda_version_string(11020) == "11.2"
    assert nvml.cuda_version_string(12090) == "12.9"
    assert nvml.cuda_version_string(NA) == NA
    assert nvml.cuda_version_string(0) == NA


def test_not_supported_is_na_and_a_name_the_binding_lacks_is_a_bug():
    with nvml.session(FakeNvml.gtx1650_desktop()) as n:
        h = n.handle(0)
        assert n.call("nvmlDeviceGetMigMode", h) == NA  # NotSupported on GeForce
        assert n.errors["nvmlDeviceGetMigMode"] == "NVMLError_NotSupported"
        assert n.call("nvmlDeviceGetMigMode", h, default=None) is None
        # A misspelt name (or a binding older than the floor) is not "n/a": it raises, naming the name.
        with pytest.raises(nvml.NvmlMissingFunction, match="'nvmlDeviceGetUtilisationRates'"):
            n.call("nvmlDeviceGetUtilisationRates", h)
        with pytest.raises(AttributeError):  # NvmlMissingFunction is an AttributeError, as the typo is
            n.first(["nvmlDeviceGetNoSuchThing_v2", "nvmlDeviceGetNoSuchThing"], h)


def test_an_old_driver_without_the_function_is_na_and_says_so():
    # The binding has the wrapper; the driver's library lacks the C symbol: pynvml raises FunctionNotFound.
    with nvml.session(FakeNvml.h100(missing={"nvmlDeviceGetMigMode"})) as n:
        assert n.call("nvmlDeviceGetMigMode", n.handle(0)) == NA
        assert n.errors["nvmlDeviceGetMigMode"] == "NVMLError_FunctionNotFound"


def test_a_spelling_newer_than_the_binding_is_skipped_in_a_fallback_list():
    fake = FakeNvml.h100()
    with nvml.session(fake) as n:  # FakeNvml has no nvmlDeviceGetCurrentClocksEventReasons_v9
        assert n.first(["nvmlDeviceGetCurrentClocksEventReasons_v9", "nvmlDeviceGetCurrentClocksEventReasons"],
                       n.handle(0)) == 0x1


def test_foreign_exceptions_are_not_swallowed():
    class Lib:
        def nvmlInit(self):
            pass

        def nvmlShutdown(self):
            pass

        def nvmlDeviceGetName(self, h):
            raise ZeroDivisionError("a bug, not an NVML answer")

    with nvml.session(Lib()) as n:
        with pytest.raises(ZeroDivisionError):
            n.call("nvmlDeviceGetName", 0)


def test_old_driver_uses_the_deprecated_throttle_name():
    fake = FakeNvml.windows_wddm()  # driver 462.31: "Clocks Throttle Reasons"
    with nvml.session(fake) as n:
        assert n.clock_event_reasons(n.handle(0)) == 0x1
    assert fake.calls.index("nvmlDeviceGetCurrentClocksEventReasons") < \
        fake.calls.index("nvmlDeviceGetCurrentClocksThrottleReasons")


def test_new_driver_answers_the_new_name_first():
    fake = FakeNvml.h100()
    with nvml.session(fake) as n:
        assert n.clock_event_reasons(n.handle(0)) == 0x1
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" not in fake.calls


@pytest.mark.parametrize("factory,expected,first_fn", [
    (FakeNvml.windows_wddm, ["WDDM", "WDDM"], "nvmlDeviceGetDriverModel"),  # 462.31 has no _v2
    (FakeNvml.wsl2, ["WDDM", "WDDM"], "nvmlDeviceGetDriverModel_v2"),
    (FakeNvml.h100, NA, None),  # Linux: NotSupported
])
def test_driver_model_spellings(factory, expected, first_fn):
    fake = factory()
    with nvml.session(fake) as n:
        assert n.driver_model(n.handle(0)) == expected
    if first_fn:
        answered = [c for c in fake.calls if c.startswith("nvmlDeviceGetDriverModel")]
        assert answered[-1] == first_fn


def test_driver_model_mcdm_tcc_and_unknown_values():
    for pair, names in (((2, 2), ["MCDM", "MCDM"]), ((1, 2), ["TCC", "MCDM"]), ((7, 0), ["unknown(7)", "WDDM"])):
        with nvml.session(FakeNvml.windows_wddm(driver_model=pair)) as n:
            assert n.driver_model(n.handle(0)) == names


def test_processes_fall_back_to_v2_when_the_binding_wants_v3():
    class NVMLLibraryMismatchError(Exception):
        pass

    class Lib(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, h):  # pynvml's @throwOnVersionMismatch wrapper
            raise NVMLLibraryMismatchError("driver lacks _v3")

        def nvmlDeviceGetComputeRunningProcesses_v2(self, h):
            return FakeNvml.nvmlDeviceGetComputeRunningProcesses(self, h)

    fake = Lib.from_smi_q(read_data("driver_smi_q_linux_h100sxm_545.23.08.txt"),
                          processes=[FakeProcess(4242, "python3", "C", 300 * 2**20)])
    with nvml.session(fake) as n:
        assert n.processes(n.handle(0), "compute") == [{"pid": 4242, "used_memory_bytes": 300 * 2**20}]
        assert n.processes(n.handle(0), "graphics") == []


def test_processes_under_wddm_have_no_memory_and_not_supported_is_na():
    with nvml.session(FakeNvml.windows_wddm()) as n:
        rows = n.processes(n.handle(0), "graphics")
        assert rows and all(r["used_memory_bytes"] is None for r in rows)
    fake = FakeNvml.wsl2()
    fake.missing |= {"nvmlDeviceGetGraphicsRunningProcesses"}
    with nvml.session(fake) as n:
        assert n.processes(n.handle(0), "graphics") == NA


def test_process_name_none_when_nvml_cannot_say():
    with nvml.session(FakeNvml.windows_wddm()) as n:
        assert n.process_name(924) is None  # "Insufficient Permissions" in the capture
        assert n.process_name(12068) == r"C:\Windows\explorer.exe"


@pytest.mark.parametrize("error,words", [
    ("LibraryNotFound", "NVML library (libnvidia-ml.so.1 / nvml.dll) not found"),
    ("DriverNotLoaded", "kernel driver is not loaded"),
    ("LibRmVersionMismatch", "different versions"),
    ("NoPermission", "denied access"),
    ("GpuIsLost", "NVML failed to initialise: NVMLError_GpuIsLost"),
])
def test_init_failures_become_nvml_unavailable_in_words(error, words):
    with pytest.raises(nvml.NvmlUnavailable) as info:
        with nvml.session(FakeNvml.no_driver(error)):
            pass
    assert words in str(info.value)


def test_real_pynvml_on_a_machine_without_driver_names_the_library():
    pytest.importorskip("pynvml")
    from gpudiag.platform import libraries

    if libraries.nvml_library() is not None:
        pytest.skip("this machine has an NVML library")
    with pytest.raises(nvml.NvmlUnavailable, match="NVML library"):
        with nvml.session():
            pass


def test_session_always_shuts_down():
    fake = FakeNvml.h100()
    with pytest.raises(RuntimeError):
        with nvml.session(fake):
            raise RuntimeError("probe bug")
    assert fake.calls[-1] == "nvmlShutdown" and not fake.initialised


def test_not_supported_marker_in_overrides():
    with nvml.session(FakeNvml.h100(temperature_c=NOT_SUPPORTED)) as n:
        assert n.call("nvmlDeviceGetTemperature", n.handle(0), 0) == NA


def test_fake_uses_only_real_pynvml_names():
    pynvml = pytest.importorskip("pynvml")
    fake_names = [n for n in dir(FakeNvml) if n.startswith("nvml")]
    assert fake_names
    assert [n for n in fake_names if not hasattr(pynvml, n)] == []
    for err in ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_LibraryNotFound",
                "NVMLError_NoPermission", "NVMLError_DriverNotLoaded", "NVMLError_LibRmVersionMismatch"):
        assert hasattr(pynvml, err)


def test_every_nvml_function_the_backend_and_probe_call_exists_in_pynvml():
    import re

    pynvml = pytest.importorskip("pynvml")
    import gpudiag.backends.nvml as backend
    import gpudiag.platform.gpu_driver as collector
    import gpudiag.probes.driver as probe

    names = set()
    for mod in (backend, collector, probe):
        with open(mod.__file__, encoding="utf-8") as fh:
            names |= set(re.findall(r'"(nvml[A-Z]\w+)"', fh.read()))
    assert len(names) > 25
    assert sorted(n for n in names if not hasattr(pynvml, n)) == []
