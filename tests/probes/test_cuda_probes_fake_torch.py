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
               "kernel_device_us", "sync_latency_us", "graph")
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
    assert data["kernel_device_us"]["n"] == data["plan"]["latency_repeats"]
    assert data["launch_overhead_us"]["n"] == data["plan"]["launch_repeats"]
    g = data["graph"]
    assert set(g) == GRAPH_KEYS and g["ops_per_graph"] == launch.GRAPH_OPS and g["reason"] == ""
    assert g["eager_per_op_us"] > 0 and g["graph_per_op_us"] > 0 and g["graph_device_per_op_us"] > 0
    assert g["speedup"] is not None and g["speedup"] > 0
    assert "graph" in torch.calls
    # Units, against the fake's clock (not a measurement): an add_ takes 0.003 ms and an event record
    # 0.0005 ms, so one kernel between two events reads 3.5 us and a 100-op graph 3.005 us per op.
    assert data["kernel_device_us"]["median"] == pytest.approx(3.5, rel=1e-3)
    assert g["graph_device_per_op_us"] == pytest.approx(3.005, rel=1e-3)
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

CONTENTION_KEYS = ("device", "kernel", "kernel_ms", "solo_ms", "threads", "processes", "processes_skipped",
                   "context", "mps_active")
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
    assert torch.calls.count("init") == 2  # one context per worker
    # The fake takes context_bytes per context: the parent's before/after free memory must see it.
    assert data["context"]["device_bytes"] == 300 * MiB and data["context"]["reason"] == ""
    assert data["context"]["create_s"] >= 0  # rounded to 0.1 ms; the fake creates a context in no time
    _findings(out.findings)


# ------------------------------------------------------------------------------- pcie

PCIE_KEYS = ("device", "sizes_bytes", "points", "pinned_reason", "link", "theoretical_gbps_per_direction",
             "theoretical_reason", "theoretical_max_gbps_per_direction", "peak", "efficiency", "numa")
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
    # Units: the fake copies at 12 GB/s pinned, 6 GB/s pageable (1e9 bytes/s), plus ~5.5 us per copy,
    # so the largest size must read just under those rates (bidir counts both directions' bytes).
    top = max(sizes)
    by = {(p["direction"], p["memory"]): p["gbps"]["median"] for p in data["points"] if p["size_bytes"] == top}
    assert by[("h2d", "pageable")] == pytest.approx(6.0, rel=0.05)
    if pinned:
        assert by[("h2d", "pinned")] == pytest.approx(12.0, rel=0.05)
        assert by[("bidir", "pinned")] == pytest.approx(12.0, rel=0.05)  # 2x bytes over 2 serial fake copies


class _NvmlWithBusId(FakeNvml):
    """FakeNvml that also finds a GPU by PCI bus id, as pynvml does (FakeNvml itself lacks the call)."""

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        self.bus_ids.append(bus_id)
        return self.nvmlDeviceGetHandleByIndex(0)


@pytest.mark.parametrize("matched_by", ["index", "pci_bus_id"])
def test_pcie_with_nvml_link_sampled_under_load(fake_torch, monkeypatch, pcie_env, matched_by):
    if matched_by == "pci_bus_id":
        lib = _NvmlWithBusId.h100()
        lib.bus_ids = []
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # index matching would be refused
    else:
        lib = FakeNvml.h100()
    _use_nvml(monkeypatch, lib)
    fake_torch(pci=(0, 0x41, 0))
    out = pcie.PROBE.run(ProbeContext(mode="quick"))
    data = out.data
    _pcie_common(data)
    assert data["pinned_reason"] == ""
    link = data["link"]
    # Plain FakeNvml has no nvmlDeviceGetHandleByPciBusId: one GPU, no renumbering, so by index.
    assert link["matched_by"] == matched_by and link["read_under_load"] is True and link["samples"] > 0
    if matched_by == "pci_bus_id":
        assert lib.bus_ids == ["0000:41:00.0"]  # from the torch device's pci_domain/bus/device ids
    assert (link["gen"], link["width"]) == (5, 16) and link["reason"] == ""
    assert data["theoretical_gbps_per_direction"] > 0 and data["theoretical_reason"] == ""
    assert data["theoretical_max_gbps_per_direction"] > 0
    assert all(v is None or v > 0 for v in data["efficiency"].values())
    assert data["efficiency"]["h2d_pinned"] is not None
    assert data["numa"]["gpu_node"] is None and "numa_node" in data["numa"]["reason"]
    _findings(out.findings)


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
