"""The real driver probe's output (on recorded NVML fakes) feeds the real recommendation rules:
field names and finding codes of the two sides must agree, not just each side's own fixtures."""

from gpudiag.backends.nvml import Nvml
from gpudiag.diagnose.recommend import recommend
from gpudiag.probes import driver
from gpudiag.report import contract as report_mod
from gpudiag.runner import result
from tests.fakes import FakeNvml


def _report_with_driver(fake, host="linux"):
    fake.nvmlInit()
    data = driver.collect(Nvml(fake), host=host, procs={})
    probes = {"driver": result("ok", data=data, findings=driver.analyze(data))}
    return report_mod.build_report(probes, "quick", created_at="2026-11-28T00:00:00Z")


def _verdict(rec, cause):
    return next(v for v in rec["verdicts"] if v["cause"] == cause)


def test_desktop_apps_on_the_gpu_support_the_gpu_shared_verdict():
    rec = recommend(_report_with_driver(FakeNvml.gtx1650_desktop()))
    v = _verdict(rec, "gpu_shared")
    assert v["verdict"] == "supported", v
    changes = " ".join(c["change"] for c in rec["environment_changes"])
    assert "code" in changes.lower() or "firefox" in changes.lower()


def test_throttled_gpu_becomes_an_environment_change():
    rec = recommend(_report_with_driver(FakeNvml.gtx1650_desktop(throttle_reasons=["sw_thermal_slowdown"])))
    codes = [c["code"] for c in rec["environment_changes"]]
    assert "FIX_GPU_THROTTLING" in codes, codes


def test_an_idle_downtrained_link_is_not_advice_to_reseat_the_card():
    rec = recommend(_report_with_driver(FakeNvml.gtx1650_desktop()))
    assert "FIX_PCIE_LINK" not in [c["code"] for c in rec["environment_changes"]]


def test_windows_wddm_driver_model_is_read():
    rec = recommend(_report_with_driver(FakeNvml.windows_wddm(), host="windows"))
    v = _verdict(rec, "driver_model")
    assert "WDDM" in v["summary"], v
