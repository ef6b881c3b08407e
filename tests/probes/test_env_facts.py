"""probes/env_facts.py: what `gpudiag env` collects (NVML through the driver probe's collector, inside one
session); the Markdown it becomes is tested in tests/views/test_env_summary.py."""

from __future__ import annotations

import contextlib
import functools

from gpudiag.backends import nvml
from gpudiag.probes import driver, env_facts
from gpudiag.views import env_summary
from tests.fakes import FakeNvml
from tests.views.test_env_summary import DRIVER_DATA, LINUX_DRIVER, fast_system


def test_no_nvidia_driver_is_said_plainly(monkeypatch):
    @contextlib.contextmanager
    def no_nvml():
        raise nvml.NvmlUnavailable("NVML library (libnvidia-ml.so.1 / nvml.dll) not found: no NVIDIA driver is installed")
        yield  # pragma: no cover

    monkeypatch.setattr(driver, "collect", lambda n: DRIVER_DATA)
    drv = env_facts.collect_driver(session_factory=no_nvml)
    assert drv["unavailable"].startswith("no NVIDIA driver: NVML library")
    md = env_summary.render(fast_system(), drv, [], "0.1.0")
    assert "| **NVIDIA driver** | no NVIDIA driver: NVML library" in md


def test_driver_collect_is_called_inside_a_session(monkeypatch):
    calls = []

    @contextlib.contextmanager
    def session():
        calls.append("open")
        yield "nvml-handle"
        calls.append("close")

    monkeypatch.setattr(driver, "collect", lambda n: dict(LINUX_DRIVER, seen=n))
    monkeypatch.setattr(driver, "analyze", lambda data: [{"code": "GPU_SHARED_WITH_DISPLAY", "severity": "warning",
                                                          "message": "x", "evidence": {}, "fix": None}])
    drv = env_facts.collect_driver(session_factory=session)
    assert calls == ["open", "close"] and drv["data"]["seen"] == "nvml-handle"
    assert drv["findings"][0]["code"] == "GPU_SHARED_WITH_DISPLAY"


def test_collect_gives_both_halves(monkeypatch):
    @contextlib.contextmanager
    def no_nvml():
        raise nvml.NvmlUnavailable("no driver here")
        yield  # pragma: no cover

    facts = env_facts.collect(environ={"CUDA_VISIBLE_DEVICES": "0"}, session_factory=no_nvml)
    assert facts["driver"] == {"unavailable": "no NVIDIA driver: no driver here"}
    assert facts["system"]["env"] == {"CUDA_VISIBLE_DEVICES": "0"} and "findings" in facts["system"]
    assert "toolchain" in facts["system"]  # the compilers started first were collected


def test_env_with_the_real_driver_probe_on_recorded_gpus(monkeypatch):
    """driver.collect on the recorded GTX 1650 desktop (Xorg, VS Code), rendered."""
    real_collect = driver.collect
    # pin host/procs so the answer does not depend on this machine
    monkeypatch.setattr(driver, "collect", lambda n: real_collect(n, host="linux", procs={}, reg=None))
    drv = env_facts.collect_driver(session_factory=functools.partial(nvml.session, FakeNvml.gtx1650_desktop()))
    md = env_summary.render(fast_system(), drv, [], "0.1.0")
    assert "| **NVIDIA driver** | driver 575.57.08" in md
    assert "NVIDIA GeForce GTX 1650" in md and "PCIe Gen" in md
    assert "Xorg" in md and "code" in md
    assert "`GPU_SHARED_WITH_DISPLAY`" in md


def test_allocator_config_is_the_allowlisted_env_masked_and_sorted():
    from gpudiag.report.redact import SECRET_MARK

    s = env_facts.collect_system(environ={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
                                          "PYTORCH_ALLOC_CONF": "ghp_" + "a" * 36, "PYTORCH_HIP_ALLOC_CONF": "",
                                          "HOME": "/x"})
    assert s["allocator_config"] == {"PYTORCH_ALLOC_CONF": SECRET_MARK,
                                     "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert list(s["allocator_config"]) == sorted(s["allocator_config"])
