"""Error paths as the real libraries raise them (issue 25): every GPU path measures or says why not, never
crashes, and never reports NVIDIA facts about a GPU NVML does not describe.

NVML's errors are pynvml's own classes, built the way pynvml builds them (`pynvml.NVMLError(code)` maps a
return code to NVMLError_NotSupported, _NoPermission, _GpuIsLost, _Uninitialized...). torch's are those of
tests/fake_torch.py, whose names and base classes tests/conformance/test_fakes_match_the_libraries.py checks
against the real torch: OutOfMemoryError (a RuntimeError), "Found no NVIDIA driver" from a CUDA build on
a machine without one, and a ROCm build (torch.version.hip set, torch.version.cuda None,
torch.cuda.is_available() True).
"""

from __future__ import annotations

import functools
import sys

import pynvml
import pytest

from gpudiag.backends import nvml as nvml_backend
from gpudiag.backends.nvml import NA
from gpudiag.diagnose import preflight
from gpudiag.diagnose.preflight.facts import gather_facts
from gpudiag.fleet import launcher
from gpudiag.fleet import measure as fleet_measure
from gpudiag.probes import driver
from gpudiag.probes.base import ProbeContext, ProbeSkip
from gpudiag.probes.cuda import contention, device, launch, pcie
from gpudiag.probes.cycle import timeline
from gpudiag.watch.gpu import GpuSampler
from tests.fake_torch import FakeTorch
from tests.fakes import FakeNvml

CODES = {
    "NotSupported": pynvml.NVML_ERROR_NOT_SUPPORTED,
    "NoPermission": pynvml.NVML_ERROR_NO_PERMISSION,
    "GpuIsLost": pynvml.NVML_ERROR_GPU_IS_LOST,
    "Uninitialized": pynvml.NVML_ERROR_UNINITIALIZED,
}


class FailingNvml(FakeNvml):
    """The H100 fake whose calls fail with pynvml's error for `code`: at nvmlInit ("init"), when a handle is asked
    for ("handle"), or on every call about a device once its handle was given ("device")."""

    def __init__(self, code: int, at: str):
        base = FakeNvml.h100()
        super().__init__(base.gpus, base.driver_version, base.cuda_version, base.nvml_version)
        self.code, self.at = code, at

    def _fail(self, where: str) -> None:
        if self.at == where:
            raise pynvml.NVMLError(self.code)

    def nvmlInit(self):
        self._fail("init")
        super().nvmlInit()

    def nvmlDeviceGetHandleByIndex(self, index):
        self._fail("handle")
        return super().nvmlDeviceGetHandleByIndex(index)

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId):
        self._fail("handle")
        return super().nvmlDeviceGetHandleByPciBusId(pciBusId)

    def _gpu(self, fn, handle):
        gpu = super()._gpu(fn, handle)
        self._fail("device")
        return gpu


def test_the_fake_raises_pynvmls_own_classes():
    for name, code in CODES.items():
        with pytest.raises(pynvml.NVMLError) as info:
            FailingNvml(code, "init").nvmlInit()
        assert type(info.value) is getattr(pynvml, f"NVMLError_{name}")


@pytest.fixture
def every_session(monkeypatch):
    """use(lib): every nvml.session() gpudiag opens (driver, preflight, fleet, pcie, samplers) talks to lib."""
    real = nvml_backend.session

    def use(lib):
        monkeypatch.setattr(nvml_backend, "session", lambda _lib=None: real(lib))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    return use


@pytest.mark.parametrize("name", sorted(CODES))
@pytest.mark.parametrize("at", ["init", "handle", "device"])
def test_nvml_errors_become_reasons_or_na_on_every_nvml_path(name, at, every_session, monkeypatch, tmp_path):
    every_session(FailingNvml(CODES[name], at))
    error = f"NVMLError_{name}"

    # The driver probe: skipped with the reason (init), the GPU marked with its error (handle), or n/a values.
    if at == "init":
        with pytest.raises(ProbeSkip, match="NVML|permission|NVIDIA"):
            driver.run(ProbeContext(mode="quick"), lib=FailingNvml(CODES[name], at))
    else:
        data = driver.run(ProbeContext(mode="quick"), lib=FailingNvml(CODES[name], at)).data
        gpu = data["gpus"][0]
        if at == "handle":
            assert gpu == {"index": 0, "error": f"{error}: {pynvml.NVMLError(CODES[name])}"}
        else:
            assert gpu["name"] == NA and gpu["memory_total_bytes"] == NA and gpu["pcie"]["gen_current"] == NA

    # Preflight: every check answers (pass, warn, fail or skip), none raises.
    facts = gather_facts(preflight.make_plan(1, "processes"), environ={}, memory_facts=lambda: {}, search_dir=None)
    results, _ = preflight.run_checks(facts, preflight.make_plan(1, "processes"))
    assert {c.status for c in results} <= {"pass", "warn", "fail", "skip"}
    if at == "init":
        assert facts["nvml"]["reachable"] is False and facts["nvml"]["reason"]

    # fleet: the rank's driver facts, or why not.
    out = fleet_measure.preflight_and_driver({"kind": "cuda", "index": 0}, bus_id="0000:19:00.0")
    assert out["driver"].get("reason") or out["driver"].get("name") == NA

    # pcie's link reading under load: facts or a reason, never an exception.
    torch = FakeTorch(pci=(0, 0x19, 0))
    dev, host = torch.empty(MIB, dtype=torch.uint8, device="cuda"), torch.ones(MIB, dtype=torch.uint8).pin_memory()
    link = pcie._measure_link(torch, dev, host, torch.cuda.Stream(), True, "0000:19:00.0", {})
    assert link["read_under_load"] is False and link["reason"]

    # The gil probe's per-context memory accounting: no figure, no exception.
    from gpudiag.probes.gil import probe as gil

    assert gil._nvml_free_by_uuid() == {}
    assert gil._nvml_own_usage("GPU-0") is None

    # The cycle probe's utilisation sampler and `gpudiag watch`'s sampler.
    r = timeline.UtilizationSampler("0000:19:00.0", interval_s=0.005).start().stop()
    assert r["n"] == 0 and r["reason"]
    if at != "init":
        with nvml_backend.session() as n:
            s = GpuSampler(n, 0.5, lambda: 0.0)
            s.tick(0.0)
            assert s.devices == [] if at == "handle" else "util" not in s.devices[0]["samples"][0]
            s.close()


MIB = 2 ** 20


# ----------------------------------------------------------------------------- torch's errors

@pytest.fixture
def fake_torch(monkeypatch):
    def make(**kw):
        torch = FakeTorch(**kw)
        monkeypatch.setitem(sys.modules, "torch", torch)
        return torch
    return make


@pytest.mark.parametrize("probe", [launch.PROBE, contention.PROBE, pcie.PROBE], ids=lambda p: p.name)
def test_out_of_memory_while_measuring_is_a_skip_with_the_reason(probe, fake_torch, monkeypatch, tmp_path):
    monkeypatch.setattr(pcie, "numa_facts", functools.partial(pcie.numa_facts, root=str(tmp_path)))
    every = lambda _lib=None: nvml_backend.session(FakeNvml.no_driver())  # noqa: E731
    monkeypatch.setattr(nvml_backend, "session", every)
    fake_torch(oom_over_bytes=2)  # another program took the memory: the first device buffer fails
    with pytest.raises(ProbeSkip, match=r"^the GPU ran out of memory while measuring \(CUDA out of memory\. Tried"):
        probe.run(ProbeContext(mode="quick"))


@pytest.mark.parametrize("probe", [launch.PROBE, contention.PROBE, pcie.PROBE], ids=lambda p: p.name)
def test_a_cuda_build_without_a_driver_skips_each_cuda_probe(probe, fake_torch):
    fake_torch(available=False)
    with pytest.raises(ProbeSkip, match="torch sees no usable CUDA device"):
        probe.run(ProbeContext(mode="quick"))


def test_a_cuda_build_without_a_driver_measures_fleet_figures_on_the_cpu():
    torch = FakeTorch(available=False)
    place = launcher.Place("torchrun", 0, 1, 0, 1, 0, None, None, None)
    assert fleet_measure.pick_device(torch, place)["reason"] == "torch sees no CUDA device"


def test_the_contention_worker_reports_a_missing_driver_as_an_error_message():
    import queue
    import threading

    torch = FakeTorch(available=False)
    ready, result = queue.Queue(), queue.Queue()
    saved = sys.modules.get("torch")
    sys.modules["torch"] = torch
    try:
        device.contention_worker(0, 256, 10, ready, threading.Event(), result, 1.0)
    finally:
        if saved is None:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = saved
    kind, index, message = result.get_nowait()
    assert (kind, index) == ("error", 0) and message.startswith("RuntimeError: Found no NVIDIA driver")


# ----------------------------------------------------------------------------- a ROCm build

def rocm_torch(**kw):
    return FakeTorch(cuda_build=None, hip="6.2.41133", name="AMD Instinct MI300X", capability=(9, 4),
                     pci=(0, 0xC1, 0), **kw)


@pytest.mark.parametrize("probe", [launch.PROBE, contention.PROBE, pcie.PROBE], ids=lambda p: p.name)
def test_rocm_skips_the_cuda_probes_naming_rocm(probe, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", rocm_torch())
    with pytest.raises(ProbeSkip, match=r"is a ROCm build \(HIP 6\.2\.41133\).*NVIDIA GPUs"):
        probe.run(ProbeContext(mode="quick"))


def test_rocm_capability_says_rocm_not_cpu_only(monkeypatch):
    from gpudiag import capabilities
    from gpudiag.backends import torch_meta

    monkeypatch.setattr(torch_meta, "torch_version", lambda: "2.5.1+rocm6.2")
    monkeypatch.setattr(torch_meta, "torch_cuda_version", lambda: None)
    monkeypatch.setattr(torch_meta, "torch_hip_version", lambda: "6.2.41133")
    cap = capabilities._cuda()
    assert not cap.available and "ROCm build (HIP 6.2.41133)" in cap.reason and "CPU-only" not in cap.reason


@pytest.mark.parametrize("nvml", ["absent", "an NVIDIA GPU next to it"])
def test_a_rocm_rank_measures_its_amd_gpu_and_reports_no_nvidia_facts_for_it(nvml, every_session):
    every_session(FakeNvml.no_driver() if nvml == "absent" else FakeNvml.h100())
    torch = rocm_torch()
    place = launcher.Place("torchrun", 0, 1, 0, 1, 0, None, None, None)
    entry = fleet_measure.measure_rank(torch, place)
    assert entry["device"]["kind"] == "cuda" and entry["device"]["name"] == "AMD Instinct MI300X"
    assert entry["driver"] == {"reason": fleet_measure.ROCM_REASON}
    assert entry["figures"]["matmul_gflops"]["value"] > 0  # measured, on the AMD GPU
    assert entry["figures"]["h2d_gbps"]["link_under_load"] == {"reason": fleet_measure.ROCM_REASON}
    assert not any(c["applies"] for c in entry["preflight"]["checks"] if c["name"] in fleet_measure.GPU_CHECKS)
    assert "H100" not in str(entry)


def test_rocm_cycle_probe_does_not_sample_nvml():
    from gpudiag.probes.cycle import probe as cycle_probe

    assert cycle_probe._nvml_locate(rocm_torch()) is None
    assert cycle_probe._nvml_locate(FakeTorch(pci=(0, 0x19, 0))) == "0000:19:00.0"


def test_an_amd_gpus_pci_bus_id_finds_no_nvidia_gpu():
    # Even where torch's device reached NVML's seam (a bus id of an AMD GPU), NVML never answers for it.
    with nvml_backend.session(FakeNvml.h100()) as n:
        h, why = nvml_backend.cuda_device_handle(n, "0000:c1:00.0", 0, {})
        assert h is None and "not an NVIDIA GPU NVML can read" in why
        assert nvml_backend.nvml_index_of(n, "0000:c1:00.0") is None
