"""The CUDA probes `launch`, `contention`, `pcie`: skipped with a reason where CUDA is missing,
their NVML/sysfs plumbing on fakes, and `gpu`-marked sanity checks on a real GPU."""

from __future__ import annotations

import pytest

from gpudiag import capabilities, runner
from gpudiag.backends import nvml
from gpudiag.capabilities import Capability
from gpudiag.probes import all_probes
from gpudiag.probes.base import ProbeContext
from gpudiag.probes.cuda import contention, launch, pcie
from tests.fakes import FakeNvml

CUDA_PROBES = (launch.PROBE, contention.PROBE, pcie.PROBE)
HAS_CUDA = capabilities.detect()["cuda"].available


def test_registered_after_driver_needing_cuda_and_isolated():
    names = [p.name for p in all_probes()]
    i = names.index("launch")
    assert names[i:i + 3] == ["launch", "contention", "pcie"]
    assert names.index("driver") < i < names.index("cycle")  # GPU facts first; the tournament last
    for p in CUDA_PROBES:
        assert p.needs == ("cuda",) and p.isolate and p.timeout_s <= p.default_timeout("full")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("probe", CUDA_PROBES, ids=lambda p: p.name)
def test_skipped_here_naming_what_is_missing(probe):
    res = runner.run_probe(probe, ProbeContext(timeout_s=30))
    assert res["status"] == "skipped", res
    reason = capabilities.detect()["cuda"].reason
    assert res["reason"] == reason and ("torch" in reason or "driver" in reason), res


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("probe", CUDA_PROBES, ids=lambda p: p.name)
def test_in_its_child_the_probe_itself_skips_without_a_device(probe):
    # Capabilities claim CUDA, so the isolated child runs run() and must find out itself.
    caps = {"cuda": Capability(True, "")}
    res = runner.run_probe(probe, ProbeContext(timeout_s=60), caps)
    assert res["status"] == "skipped", res
    assert "CUDA" in res["reason"] and ("CPU-only" in res["reason"] or "no usable CUDA device" in res["reason"]
                                        or "torch is not installed" in res["reason"]), res


# ----------------------------------------------------------------------- pcie plumbing

class Props:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_pci_bus_id_from_torch_properties():
    assert nvml.pci_bus_id(Props(pci_domain_id=0, pci_bus_id=0xdc, pci_device_id=0)) == "0000:dc:00.0"
    assert nvml.pci_bus_id(Props(name="old torch")) is None


class BusIdNvml(FakeNvml):
    """A fake that also answers nvmlDeviceGetHandleByPciBusId, as pynvml does."""

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        self._enter("nvmlDeviceGetHandleByPciBusId")
        if bus_id != "0000:01:00.0":
            raise type("NVMLError_NotFound", (Exception,), {})()
        return self.nvmlDeviceGetHandleByIndex(0)


def test_nvml_handle_by_bus_id_then_by_index_only_when_safe():
    with nvml.session(BusIdNvml.h100()) as n:
        h, how = nvml.cuda_device_handle(n, "0000:01:00.0", 0, {"CUDA_VISIBLE_DEVICES": "3"})
        assert h is not None and how == "pci_bus_id"
    with nvml.session(FakeNvml.h100()) as n:  # no bus-id lookup: one GPU, no remapping -> index
        h, how = nvml.cuda_device_handle(n, None, 0, {})
        assert how == "index" and pcie.read_link(n, h) == {"gen": 5, "width": 16}
        assert pcie.link_limits(n, h)["width_max"] == 16
        h, why = nvml.cuda_device_handle(n, None, 0, {"CUDA_VISIBLE_DEVICES": "1"})
        assert h is None and "CUDA_VISIBLE_DEVICES" in why
    two = FakeNvml.h100()
    two.gpus.append(FakeNvml.wsl2().gpus[0])
    with nvml.session(two) as n:
        h, why = nvml.cuda_device_handle(n, None, 0, {})
        assert h is None and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in why
        assert nvml.cuda_device_handle(n, None, 0, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})[1] == "index"


def test_link_sampler_collects_until_stopped():
    import threading
    import time

    reads = iter(range(10 ** 6))
    three = threading.Event()

    def read():
        n = next(reads)
        if n == 2:
            three.set()
        return {"gen": 1 + (n > 2) * 3, "width": 16}

    with pcie.LinkSampler(read) as s:
        assert three.wait(30)  # the third reading, however busy the machine
    assert len(s.samples) >= 3 and s.error == ""
    n = len(s.samples)
    time.sleep(0.02)
    assert len(s.samples) == n  # stopped


def _sysfs(tmp_path, gpu_node: str, nodes):
    dev = tmp_path / "sys/bus/pci/devices/0000:dc:00.0"
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text(gpu_node + "\n")
    for i, cpus in nodes.items():
        d = tmp_path / f"sys/devices/system/node/node{i}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
    return str(tmp_path)


def test_numa_facts_from_a_fake_sysfs(tmp_path):
    root = _sysfs(tmp_path, "1", {0: "0-7", 1: "8-15"})
    remote = pcie.numa_facts("0000:dc:00.0", root, process_cpus={0, 1})
    assert remote == {"gpu_node": 1, "process_nodes": [0], "local": False, "reason": ""}
    assert pcie.numa_facts("0000:dc:00.0", root, process_cpus={8})["local"] is True
    assert pcie.numa_facts("0000:01:00.0", root, process_cpus={0})["local"] is None
    assert pcie.numa_facts(None, root)["reason"].startswith("torch gives no PCI bus id")


def test_numa_single_node_machine(tmp_path):
    root = _sysfs(tmp_path, "-1", {0: "0-3"})
    facts = pcie.numa_facts("0000:dc:00.0", root, process_cpus={0})
    assert facts["local"] is None and facts["gpu_node"] is None


# ------------------------------------------------------------------------- real GPU

def _run_real(probe, mode="quick"):
    res = runner.run_probe(probe, ProbeContext(mode=mode, timeout_s=probe.default_timeout(mode)))
    assert res["status"] == "ok", res
    return res["data"], res["findings"]


def _positive_stats(s):
    assert s["n"] > 0 and s["min"] > 0 and s["p10"] <= s["median"] <= s["p90"], s


@pytest.mark.gpu
def test_real_launch_probe():
    data, findings = _run_real(launch.PROBE)
    for key in ("launch_overhead_us", "kernel_latency_us", "kernel_device_us", "sync_latency_us"):
        _positive_stats(data[key])
    # Waiting for a kernel costs at least its launch.
    assert data["kernel_latency_us"]["median"] >= 0.5 * data["launch_overhead_us"]["median"]
    g = data["graph"]
    assert g["ops_per_graph"] == launch.GRAPH_OPS
    if g["speedup"] is not None:
        assert g["eager_per_op_us"] > 0 and g["graph_per_op_us"] > 0 and g["speedup"] > 0
    else:
        assert g["reason"]
    assert all(f["code"].isupper() for f in findings)


@pytest.mark.gpu
def test_real_contention_probe():
    data, _ = _run_real(contention.PROBE)
    assert 0.2 < data["kernel_ms"] < 2.0  # calibrated to ~0.5 ms
    _positive_stats(data["solo_ms"])
    assert [r["workers"] for r in data["threads"]][:2] == [1, 2]
    assert all(r["wall_s"] > 0 and r["throughput_vs_one"] > 0 for r in data["threads"])
    assert data["processes"] or data["processes_skipped"]
    for r in data["processes"]:
        assert r["wall_s"] > 0 and r["stretch"] > 0 and 0 <= r["overhead_fraction"] < 1
    if data["processes"]:
        assert data["context"]["create_s"] > 0
    assert data["mps_active"] in (True, False, None)
    # Every worker was reaped.
    import psutil
    assert not [c for c in psutil.Process().children(recursive=True) if "contention" in " ".join(c.cmdline())]


@pytest.mark.gpu
def test_real_pcie_probe():
    data, findings = _run_real(pcie.PROBE)
    assert data["points"]
    for p in data["points"]:
        assert p["direction"] in ("h2d", "d2h", "bidir") and p["memory"] in ("pinned", "pageable")
        _positive_stats(p["gbps"])
    theory = data["theoretical_gbps_per_direction"]
    if theory is not None:
        assert data["link"]["read_under_load"]
        for key, val in data["peak"].items():
            if val is not None:
                limit = theory * (2 if key.startswith("bidir") else 1) * 1.1
                assert 0 < val < limit, (key, val, theory)
    else:
        assert data["theoretical_reason"]
    assert all(f["code"].isupper() for f in findings)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_contention_workers_failing_are_reported_and_reaped():
    # Real spawned workers, which fail at torch.cuda.init() on this CPU-only machine: the parent
    # must turn that into an error naming the worker and leave no process behind.
    import time
    from types import SimpleNamespace

    import psutil

    parent_torch = SimpleNamespace(cuda=SimpleNamespace(mem_get_info=lambda i: (8 * 2 ** 30, 16 * 2 ** 30),
                                                        synchronize=lambda: None))
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    with pytest.raises(RuntimeError, match=r"worker \d failed: .*"):
        contention._run_processes(parent_torch, 1000, 5, 2, time.monotonic() + 60)
    left = [c for c in psutil.Process().children(recursive=True) if c.pid not in before and c.is_running()
            and c.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(c.cmdline())]  # multiprocessing's own helper
    assert left == [], [c.cmdline() for c in left]
