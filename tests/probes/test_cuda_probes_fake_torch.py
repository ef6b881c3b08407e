"""The CUDA probes' in-process GPU code paths, run end to end against tests/fake_torch.py.

No GPU is needed: `torch` is replaced in sys.modules by a fake that implements exactly the calls
`launch`, `contention` and `pcie` make and checks how they are made. Its figures are made up, so
only shapes and consistency are asserted (docs/report-contract.md), never values. The multi-process
part of `contention` runs the real worker function in threads (its real spawned processes would
import the real torch); the `gpu`-marked tests in test_cuda_probes.py are the check on hardware.
"""

from __future__ import annotations

import functools
import json
import re
import sys

import pytest

from gpudiag.backends import nvml as nvml_backend
from gpudiag.probes.base import ProbeContext, ProbeSkip
from gpudiag.probes.cuda import contention, launch, pcie
from gpudiag.probes.cuda import device
from tests import fake_torch as fake_torch_mod
from tests.fake_mp import ThreadContext
from tests.fake_torch import FakeTorch, MiB
from tests.fakes import FakeNvml

STATS_KEYS = {"n", "median", "p10", "p90", "min", "max", "mean"}
DEVICE_KEYS = {"index", "name", "capability", "memory_total_bytes", "memory_free_bytes"}


@pytest.fixture
def fake_torch(monkeypatch):
    """A factory: fake_torch(**kw) builds a FakeTorch and makes it `import torch`."""
    def make(**kw):
        torch = FakeTorch(**kw)
        monkeypatch.setitem(sys.modules, "torch", torch)
        return torch
    return make


def _stats(s, positive=True):
    assert set(s) >= STATS_KEYS, s
    assert s["n"] > 0 and s["p10"] <= s["median"] <= s["p90"], s
    assert s["min"] > 0 if positive else s["min"] >= 0, s


def _findings(findings):
    assert isinstance(findings, list)
    for f in findings:
        assert set(f) == {"code", "severity", "message", "evidence", "fix"}, f
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", f["code"]) and f["severity"] in ("info", "warning", "critical"), f
        assert isinstance(f["message"], str) and f["message"], f
    json.dumps(findings)


def _common(data, keys):
    assert set(data) == set(keys), sorted(set(data) ^ set(keys))
    assert set(data["device"]) == DEVICE_KEYS and data["device"]["capability"] == "8.6"
    json.dumps(data, allow_nan=False)


# ----------------------------------------------------------------------------- launch

LAUNCH_KEYS = ("device", "cuda_launch_blocking", "plan", "launch_overhead_us", "kernel_latency_us",
               "kernel_device_us", "device_timing", "sync_latency_us", "graph")
GRAPH_KEYS = {"ops_per_graph", "eager_per_op_us", "graph_per_op_us", "graph_device_per_op_us", "speedup", "reason"}


def test_launch_runs_end_to_end_on_the_fake(fake_torch, monkeypatch):
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    torch = fake_torch()
    out = launch.PROBE.run(ProbeContext(mode="quick"))
    data = out.data
    _common(data, LAUNCH_KEYS)
    assert data["cuda_launch_blocking"] is False
    assert set(data["plan"]) == {"launches", "launch_repeats", "latency_repeats", "sync_repeats",
                                 "graph_repeats", "graph_ops"}
    for key in ("launch_overhead_us", "kernel_latency_us", "kernel_device_us"):
        _stats(data[key])
    _stats(data["sync_latency_us"], positive=False)  # a no-op synchronize may read 0 us on a fast clock
    assert 0 < data["kernel_device_us"]["n"] <= data["plan"]["latency_repeats"]
    assert data["launch_overhead_us"]["n"] == data["plan"]["launch_repeats"]
    assert data["plan"]["launches"] <= 1000  # a batch stays below CUDA's ~1024 queued launches
    g = data["graph"]
    assert set(g) == GRAPH_KEYS and g["ops_per_graph"] == launch.GRAPH_OPS and g["reason"] == ""
    assert g["eager_per_op_us"] > 0 and g["graph_per_op_us"] > 0 and g["graph_device_per_op_us"] > 0
    assert g["speedup"] is not None and g["speedup"] > 0
    assert "graph" in torch.calls
    # Against the fake's clock (not a measurement): an add_ runs 3 us on the device after 8 us of host
    # launch. The events sit behind a spin-kernel lead, so they frame the kernel alone (3 us, not 8 + 3),
    # and a 100-op graph replay 3 us per op.
    assert data["kernel_device_us"]["median"] == pytest.approx(fake_torch_mod.ADD_KERNEL_MS * 1e3, rel=1e-6)
    assert g["graph_device_per_op_us"] == pytest.approx(fake_torch_mod.ADD_KERNEL_MS * 1e3, rel=1e-3)
    assert data["device_timing"]["lead_ms"] >= device.LEAD_MS
    _findings(out.findings)


def test_launch_graph_capture_refused_gives_nulls_and_a_reason(fake_torch, monkeypatch):
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    fake_torch(graph_ok=False)
    out = launch.PROBE.run(ProbeContext(mode="quick"))
    g = out.data["graph"]
    assert set(g) == GRAPH_KEYS
    assert [g[k] for k in ("eager_per_op_us", "graph_per_op_us", "graph_device_per_op_us", "speedup")] == [None] * 4
    assert g["reason"].startswith("CUDA graph capture failed: RuntimeError")
    assert out.data["cuda_launch_blocking"] is True
    assert "LAUNCH_MEASURED_BLOCKING" in [f["code"] for f in out.findings]
    _findings(out.findings)
    json.dumps(out.data, allow_nan=False)


def test_launch_skips_without_cuda_torch(fake_torch):
    fake_torch(cuda_build=None)
    with pytest.raises(ProbeSkip, match="no CUDA support"):
        launch.PROBE.run(ProbeContext(mode="quick"))


# ------------------------------------------------------------------------- contention

CONTENTION_KEYS = ("device", "kernel", "kernel_ms", "solo_ms", "process_kernel", "threads", "processes",
                   "processes_skipped", "context", "mps_active")
PROCESS_ROW_KEYS = {"workers", "wall_s", "ideal_s", "stretch", "overhead_fraction", "switched_fraction",
                    "switch_cost_us_est", "timeslice_ms_est", "reason"}


def _contention_common(data):
    _common(data, CONTENTION_KEYS)
    assert set(data["kernel"]) == {"kind", "cycles", "target_ms"}
    assert isinstance(data["kernel"]["cycles"], int) and data["kernel"]["cycles"] > 0
    assert data["kernel"]["target_ms"] == contention.KERNEL_MS
    assert data["kernel_ms"] > 0
    _stats(data["solo_ms"])
    assert data["solo_ms"]["n"] == 200
    # The fake spins at 1 GHz: calibration must land on the 0.5 ms target (ms vs us vs s slips show here).
    assert data["kernel_ms"] == pytest.approx(contention.KERNEL_MS, rel=0.01)
    # The processes' kernel is a matmul sized to the same target (n^3 work: within a few % at a multiple of 64).
    pk = data["process_kernel"]
    assert set(pk) == {"kind", "matrix_n", "target_ms", "solo_ms"} and "matmul" in pk["kind"]
    assert pk["matrix_n"] % 64 == 0 and pk["solo_ms"]["median"] == pytest.approx(contention.KERNEL_MS, rel=0.1)
    kernels = contention._plan(True)["thread_kernels"]
    assert data["threads"][0]["ideal_s"] == pytest.approx(kernels * data["kernel_ms"] / 1e3, rel=1e-3)
    assert [r["workers"] for r in data["threads"]] == [1] + contention._plan(True)["thread_workers"]
    for r in data["threads"]:
        assert set(r) == {"workers", "wall_s", "ideal_s", "throughput_vs_one"}, r
        assert r["wall_s"] > 0 and r["ideal_s"] > 0 and r["throughput_vs_one"] > 0
    assert set(data["context"]) == {"create_s", "device_bytes", "reason"}
    assert data["mps_active"] in (True, False, None)


def test_contention_threads_and_solo_with_processes_skipped_for_memory(fake_torch):
    # 1.5 GiB free: enough for require_cuda (1 GiB), too little for two guessed 512 MiB contexts,
    # so no worker process is spawned (they would import the real torch).
    fake_torch(free_bytes=1536 * MiB)
    out = contention.PROBE.run(ProbeContext(mode="quick"))
    data = out.data
    _contention_common(data)
    assert data["processes"] == []
    assert [s["workers"] for s in data["processes_skipped"]] == [2]
    assert "GPU memory free" in data["processes_skipped"][0]["reason"]
    assert data["context"]["create_s"] is None and data["context"]["device_bytes"] is None
    assert data["context"]["reason"]
    _findings(out.findings)


def test_contention_process_path_with_workers_as_threads(fake_torch, monkeypatch):
    import multiprocessing

    contexts = []
    monkeypatch.setattr(multiprocessing, "get_context", lambda method: contexts.append(method) or ThreadContext)
    torch = fake_torch(free_bytes=8 * 2 ** 30, context_bytes=300 * MiB)
    out = contention.PROBE.run(ProbeContext(mode="quick"))
    data = out.data
    _contention_common(data)
    assert contexts == ["spawn"]  # CUDA does not survive fork
    assert data["processes_skipped"] == []
    assert [r["workers"] for r in data["processes"]] == [2]
    row = data["processes"][0]
    assert set(row) == PROCESS_ROW_KEYS
    assert row["wall_s"] > 0 and row["ideal_s"] > 0 and row["stretch"] > 0
    assert 0 <= row["overhead_fraction"] < 1 and 0 <= row["switched_fraction"] <= 1
    # Ideal sharing is counted in the processes' own kernel (matmuls of fixed work), not the spin kernel.
    kernels = contention._plan(True)["proc_kernels"]
    pk_ms = data["process_kernel"]["solo_ms"]["median"]
    assert row["ideal_s"] == pytest.approx(2 * kernels * pk_ms / 1e3, rel=1e-3)
    assert torch.calls.count("init") == 2  # one context per worker
    # The fake takes context_bytes per context: the parent's before/after free memory must see it.
    assert data["context"]["device_bytes"] == 300 * MiB and data["context"]["reason"] == ""
    assert data["context"]["create_s"] >= 0  # rounded to 0.1 ms; the fake creates a context in no time
    _findings(out.findings)


# ------------------------------------------------------------------------------- pcie

PCIE_KEYS = ("device", "sizes_bytes", "points", "pinned_reason", "link", "theoretical_gbps_per_direction",
             "theoretical_reason", "theoretical_max_gbps_per_direction", "theoretical_card_max_gbps_per_direction",
             "peak", "efficiency", "numa", "device_timing")
LINK_KEYS = {"gen", "width", "gen_max", "gen_max_card", "width_max", "gen_idle", "width_idle",
             "read_under_load", "samples", "matched_by", "reason", "source"}
PEAK_KEYS = {"h2d_pinned_gbps", "h2d_pageable_gbps", "d2h_pinned_gbps", "d2h_pageable_gbps", "bidir_pinned_gbps"}


@pytest.fixture
def pcie_env(monkeypatch, tmp_path):
    """No CUDA_VISIBLE_DEVICES from the test machine; NUMA read from an empty fake sysfs."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setattr(pcie, "numa_facts", functools.partial(pcie.numa_facts, root=str(tmp_path)))


def _use_nvml(monkeypatch, lib):
    real = nvml_backend.session
    monkeypatch.setattr(nvml_backend, "session", lambda _lib=None: real(lib))


def _pcie_common(data, pinned=True):
    _common(data, PCIE_KEYS)
    sizes = data["sizes_bytes"]
    assert sizes and sizes == sorted(sizes) and all(isinstance(s, int) and s > 0 for s in sizes)
    combos = {("h2d", "pinned"), ("d2h", "pinned"), ("bidir", "pinned"), ("h2d", "pageable"), ("d2h", "pageable")}
    if not pinned:
        combos = {c for c in combos if c[1] == "pageable"}
    assert len(data["points"]) == len(sizes) * len(combos)
    for p in data["points"]:
        assert set(p) == {"direction", "memory", "size_bytes", "repeats", "gbps"}, p
        assert (p["direction"], p["memory"]) in combos and p["size_bytes"] in sizes
        assert p["repeats"] == p["gbps"]["n"] > 0
        _stats(p["gbps"])
    assert set(data["link"]) == LINK_KEYS
    assert set(data["peak"]) == PEAK_KEYS
    for key, val in data["peak"].items():
        assert (val is None) == (not pinned and "pinned" in key), (key, val)
    assert set(data["efficiency"]) == {k[:-len("_gbps")] for k in PEAK_KEYS}
    assert set(data["numa"]) == {"gpu_node", "process_nodes", "local", "reason"}
    # Units: the fake copies at 12 GB/s pinned, 6 GB/s pageable (1e9 bytes/s), plus 5 us per copy,
    # so the largest size must read just under those rates (bidir counts both directions' bytes, which
    # move at once on two streams, as a GPU's two copy engines do).
    top = max(sizes)
    by = {(p["direction"], p["memory"]): p["gbps"]["median"] for p in data["points"] if p["size_bytes"] == top}
    assert by[("h2d", "pageable")] == pytest.approx(6.0, rel=0.05)
    if pinned:
        assert by[("h2d", "pinned")] == pytest.approx(12.0, rel=0.05)
        assert by[("bidir", "pinned")] == pytest.approx(24.0, rel=0.05)
        # The smallest pinned copy is timed without the host's 8 us launch (issue 25 item 3): its rate
        # follows from the copy alone, latency + size / 12 GB/s.
        small = min(sizes)
        want = small / 1e9 / ((fake_torch_mod.COPY_LATENCY_MS + small / 12e9 * 1e3) / 1e3)
        got = next(p["gbps"]["median"] for p in data["points"]
                   if (p["direction"], p["memory"], p["size_bytes"]) == ("h2d", "pinned", small))
        assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("matched_by", ["index", "pci_bus_id"])
def test_pcie_with_nvml_link_sampled_under_load(fake_torch, monkeypatch, pcie_env, matched_by):
    lib = FakeNvml.h100()  # the capture's GPU sits at PCI bus id 00000000:19:00.0
    if matched_by == "pci_bus_id":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # index matching would be refused
        fake_torch(pci=(0, 0x19, 0))
    else:
        fake_torch(pci=None)  # a torch that gives no PCI bus id: one GPU, no renumbering, so by index
    _use_nvml(monkeypatch, lib)
    out = pcie.PROBE.run(ProbeContext(mode="quick"))
    data = out.data
    _pcie_common(data)
    assert data["pinned_reason"] == ""
    link = data["link"]
    assert link["matched_by"] == matched_by and link["read_under_load"] is True and link["samples"] > 0
    assert ("nvmlDeviceGetHandleByPciBusId" in lib.calls) == (matched_by == "pci_bus_id")
    assert (link["gen"], link["width"]) == (5, 16) and link["reason"] == ""
    assert data["theoretical_gbps_per_direction"] > 0 and data["theoretical_reason"] == ""
    assert data["theoretical_max_gbps_per_direction"] > 0
    assert all(v is None or v > 0 for v in data["efficiency"].values())
    assert data["efficiency"]["h2d_pinned"] is not None
    assert data["numa"]["gpu_node"] is None
    assert ("numa_node" if matched_by == "pci_bus_id" else "no PCI bus id") in data["numa"]["reason"]
    _findings(out.findings)


def test_pcie_never_reads_nvml_for_a_gpu_nvml_does_not_know(fake_torch, monkeypatch, pcie_env):
    # torch's device sits at a PCI bus id NVML does not list (an AMD GPU under ROCm next to an NVIDIA one,
    # or a GPU NVML cannot see): no guess by index, no NVIDIA link facts about it.
    lib = FakeNvml.h100()
    _use_nvml(monkeypatch, lib)
    fake_torch(pci=(0, 0x41, 0))
    data = pcie.PROBE.run(ProbeContext(mode="quick")).data
    link = data["link"]
    assert link["matched_by"] is None and link["gen_max"] is None and link["read_under_load"] is False
    assert "NVML knows no GPU at the CUDA device's PCI bus id (NVMLError_NotFound)" in link["reason"]
    assert "nvmlDeviceGetMaxPcieLinkGeneration" not in lib.calls
    assert data["theoretical_max_gbps_per_direction"] is None


def test_pcie_without_nvml_and_pinned_memory(fake_torch, monkeypatch, pcie_env):
    def no_nvml(_lib=None):
        raise nvml_backend.NvmlUnavailable("the pynvml module is missing: `pip install nvidia-ml-py`")
    monkeypatch.setattr(nvml_backend, "session", no_nvml)
    fake_torch(pinned_ok=False)
    out = pcie.PROBE.run(ProbeContext(mode="quick"))
    data = out.data
    _pcie_common(data, pinned=False)
    assert data["pinned_reason"].startswith("pinned host memory unavailable: RuntimeError")
    assert data["link"]["read_under_load"] is False and data["link"]["gen"] is None
    assert data["theoretical_gbps_per_direction"] is None
    assert data["theoretical_max_gbps_per_direction"] is None
    assert "pynvml" in data["theoretical_reason"]
    assert all(v is None for v in data["efficiency"].values())
    _findings(out.findings)


def test_pcie_sweep_capped_by_free_memory_and_skipped_without_host_memory(fake_torch, monkeypatch, pcie_env):
    import psutil

    _use_nvml(monkeypatch, FakeNvml.no_driver())
    fake_torch(free_bytes=300 * MiB)  # passes require_cuda (256 MiB); the largest size <= 300/8 MiB
    out = pcie.PROBE.run(ProbeContext(mode="quick"))
    _pcie_common(out.data)
    assert out.data["sizes_bytes"] == [64 * 1024, MiB, 16 * MiB]
    assert out.data["theoretical_gbps_per_direction"] is None and out.data["theoretical_reason"]

    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=512 * 1024))
    with pytest.raises(ProbeSkip, match="too little free memory"):
        pcie.PROBE.run(ProbeContext(mode="quick"))


# -------------------------------------------------------------- runner, report, views

def test_fake_results_through_the_runner_report_and_every_view(fake_torch, monkeypatch, pcie_env):
    # The three probes inline (not isolated: a spawned child would import the real torch), then the
    # report is built, validated, dumped and rendered, so the views read the keys the probes write.
    import dataclasses
    import multiprocessing

    from gpudiag import runner
    from gpudiag.diagnose import recommend
    from gpudiag.report import contract as report
    from gpudiag.views import render

    monkeypatch.setattr(multiprocessing, "get_context", lambda method: ThreadContext)
    _use_nvml(monkeypatch, FakeNvml.no_driver())
    fake_torch(free_bytes=8 * 2 ** 30)
    results = {}
    for probe in (launch.PROBE, contention.PROBE, pcie.PROBE):
        inline = dataclasses.replace(probe, isolate=False, needs=())
        res = runner.run_probe(inline, ProbeContext(mode="quick", timeout_s=probe.default_timeout("quick")), caps={})
        assert set(res) == {"status", "reason", "duration_s", "data", "findings"}, res
        assert res["status"] == "ok" and res["reason"] == "", res
        _findings(res["findings"])
        results[probe.name] = res
    rep = report.build_report(results, "quick")
    rep["recommendation"] = recommend.recommend(rep)
    report.validate(rep)
    json.loads(report.dumps(rep))
    assert results["contention"]["data"]["processes"]  # the process rows are rendered too
    for view in (render.render_html, render.render_markdown, render.render_terminal):
        text = view(rep)
        assert isinstance(text, str) and text, view.__name__
        assert all(name in text for name in results), view.__name__


def test_contention_worker_failure_becomes_a_skipped_row(fake_torch, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_context", lambda method: ThreadContext)
    torch = fake_torch(free_bytes=8 * 2 ** 30)

    def init_fails():
        raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable")
    monkeypatch.setattr(torch.cuda, "init", init_fails)
    out = contention.PROBE.run(ProbeContext(mode="quick"))
    _contention_common(out.data)
    assert out.data["processes"] == []
    [skip] = out.data["processes_skipped"]
    assert skip["workers"] == 2 and re.match(r"RuntimeError: worker \d failed: RuntimeError: CUDA error", skip["reason"])
    assert out.data["context"]["create_s"] is None and out.data["context"]["reason"]
    _findings(out.findings)


# ------------------------------------------------------- timing with CUDA events (issue 25 item 3)

def test_an_event_on_an_idle_stream_times_the_launch_too_and_the_lead_removes_it(fake_torch):
    torch = fake_torch()
    x = torch.zeros(1, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()  # the GPU is idle: the event takes the host's time at once
    x.add_(1)
    end.record()
    end.synchronize()
    naive_us = start.elapsed_time(end) * 1e3
    kernel_us = fake_torch_mod.ADD_KERNEL_MS * 1e3
    assert naive_us == pytest.approx((fake_torch_mod.HOST_LAUNCH_MS + fake_torch_mod.ADD_KERNEL_MS) * 1e3)
    assert naive_us > 3 * kernel_us  # the host's launch, not the kernel, dominates the naive figure
    timer = device.DeviceTimer(torch)
    assert [ms * 1e3 for ms in timer.samples(lambda: x.add_(1), 3)] == [pytest.approx(kernel_us)] * 3
    assert timer.info()["dropped"] == 0


def test_a_sample_whose_lead_ran_out_is_dropped_and_the_lead_doubled(fake_torch, monkeypatch):
    torch = fake_torch()
    timer = device.DeviceTimer(torch)
    x = torch.zeros(1, device="cuda")
    ticks = iter([0.0, 1.0])  # the host took 1 s to enqueue the sample: far past a 0.2 ms lead
    monkeypatch.setattr(device.time, "perf_counter", lambda: next(ticks))
    assert timer.time(lambda: x.add_(1)) is None
    assert timer.info() == {"method": "CUDA events behind a torch.cuda._sleep lead",
                            "lead_ms": 2 * device.LEAD_MS, "dropped": 1}


def test_elapsed_time_before_the_device_reached_the_event_raises_as_cuda_does(fake_torch):
    torch = fake_torch()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(1_000_000)  # 1 ms of device work the host does not wait for
    end.record()
    with pytest.raises(RuntimeError, match="not ready"):
        start.elapsed_time(end)
    end.synchronize()
    assert start.elapsed_time(end) == pytest.approx(fake_torch_mod.HOST_LAUNCH_MS + 1.0)  # idle start: launch too
