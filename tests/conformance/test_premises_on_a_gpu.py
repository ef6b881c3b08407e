"""On a real NVIDIA GPU (scripts/gpu-check.sh runs `pytest -m gpu`): the behaviour the fakes give the hardware,
where gpudiag's measurements depend on it (issue 25), checked against the hardware itself. Skipped here.

- an event recorded on an idle stream takes its timestamp at once, so it times the host's launch too, and
  a spin-kernel lead removes that (tests/fake_torch.py's event semantics);
- torch's device 0 is found in NVML by its PCI bus id, and is the same GPU (the fakes' matching);
- NVML's utilisation ring buffer samples 1/6 s to 1 s apart (the window tests/fakes.trailing_utilization
  and the tournament's crediting assume).
"""

from __future__ import annotations

import os
import statistics

import pytest

from gpudiag import capabilities

pytestmark = pytest.mark.gpu
HAS_CUDA = capabilities.detect()["cuda"].available


@pytest.fixture(scope="module")
def torch():
    if not HAS_CUDA:
        pytest.skip("needs an NVIDIA GPU with a CUDA build of torch")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return torch


def test_an_idle_stream_event_times_the_launch_and_the_lead_does_not(torch):
    from gpudiag.probes.cuda.device import DeviceTimer

    x = torch.zeros(1, device="cuda")
    for _ in range(200):
        x.add_(1)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    naive = []
    for _ in range(200):
        torch.cuda.synchronize()
        start.record()
        x.add_(1)
        end.record()
        end.synchronize()
        naive.append(start.elapsed_time(end) * 1e3)
    timer = DeviceTimer(torch)
    led = [ms * 1e3 for ms in timer.samples(lambda: x.add_(1), 200)]
    assert len(led) >= 150, timer.info()
    # The lead's figure is the kernel alone: below the idle-start figure, which adds the host's launch.
    assert statistics.median(led) < statistics.median(naive), (statistics.median(led), statistics.median(naive))


def test_torch_device_0_is_found_in_nvml_by_its_pci_bus_id(torch):
    from gpudiag.backends import nvml

    bus_id = nvml.pci_bus_id(torch.cuda.get_device_properties(0))
    if bus_id is None:
        pytest.skip(f"torch {torch.__version__} gives no PCI bus id")
    with nvml.session() as n:
        h, how = nvml.cuda_device_handle(n, bus_id, 0, os.environ)
        assert how == "pci_bus_id", how
        index = nvml.nvml_index_of(n, bus_id)
        assert isinstance(index, int)
        name = n.call("nvmlDeviceGetName", h)
    assert isinstance(name, str) and name.strip()
    assert name.strip() == torch.cuda.get_device_properties(0).name.strip()


def test_the_utilisation_ring_buffer_samples_within_nvmls_period(torch):
    import time

    from gpudiag.backends import nvml
    from gpudiag.probes.cycle.timeline import NVML_PERIOD_MAX_S, NVML_PERIOD_MIN_S

    x = torch.randn(2048, 2048, device="cuda")
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:  # keep the GPU busy so the buffer fills
        x @ x
    torch.cuda.synchronize()
    with nvml.session() as n:
        h, _ = nvml.cuda_device_handle(n, nvml.pci_bus_id(torch.cuda.get_device_properties(0)), 0, os.environ)
        ring = nvml.utilization_samples(n, h, 0)
    if ring == nvml.NA or len(ring) < 3:
        pytest.skip(f"this GPU keeps no utilisation ring buffer ({ring!r})")
    stamps = sorted(ts for ts, _ in ring)
    spacing = statistics.median(b - a for a, b in zip(stamps, stamps[1:])) / 1e6
    assert NVML_PERIOD_MIN_S * 0.5 <= spacing <= NVML_PERIOD_MAX_S * 1.5, spacing
