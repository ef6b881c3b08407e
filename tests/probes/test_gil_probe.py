"""The real `gil` probe at its smallest size (timings are never asserted, only their shape)."""

import pytest

from gpudiag import capabilities, platform, runner
from gpudiag.probes.base import ProbeContext
from gpudiag.probes.gil import probe as gil
from tests.measure.test_workers import _live_children

TINY = {"gil_sizes": "tiny"}
HAS_CUDA = capabilities.detect()["cuda"].available
CPU_WORKLOADS = ("python", "torch_op", "torch_dispatch")




def assert_rows_well_formed(rows):
    for r in rows:
        assert set(r) >= {"workload", "mode", "workers", "throughput_per_s", "speedup", "spread_fraction", "repeats"}
        assert r["mode"] in ("threads", "processes") and r["workers"] >= 1
        assert r["throughput_per_s"] > 0 and r["repeats"] == r["samples"] == gil.SIZES["tiny"]["rounds"].min_rounds
        if r["workers"] == 1:
            assert r["speedup"] == 1.0


@pytest.mark.torch
def test_real_probe_through_the_runner_at_tiny_size():
    before = _live_children()
    res = runner.run_probe(gil.PROBE, ProbeContext(mode="quick", timeout_s=60, options=TINY))
    assert res["status"] == "ok", res["reason"]
    data = res["data"]
    points = data["cpu"]["worker_points"]
    assert points == ([1, 2] if data["cpu"]["usable_cores"] >= 2 else [1])
    rows = data["scaling"]
    assert_rows_well_formed(rows)
    for w in CPU_WORKLOADS:
        for mode in ("threads", "processes"):
            assert sorted(r["workers"] for r in rows if r["workload"] == w and r["mode"] == mode) == points
    if not HAS_CUDA:
        assert "cuda_launch" in data["absent"] and data["absent"]["cuda_launch"]
        assert not [r for r in rows if r["workload"] == "cuda_launch"]
    mem = data["memory"]
    assert 0 < mem["rss_before_torch_bytes"] < mem["rss_after_torch_bytes"]
    assert mem["per_worker_host_bytes"] > 0 and mem["budget_host_bytes"] > 0
    assert mem["fits"]["processes"] >= 1
    assert data["startup"]["import_torch_s"] > 0 and data["startup"]["total_s"] >= data["startup"]["import_torch_s"]
    assert data["python"]["gil_checked_after_torch"] is True
    assert set(data["verdict"]) == {"python", "torch_op", "torch_dispatch", "cuda_launch"}
    assert set(data["other_busy_cores"]) == set(CPU_WORKLOADS)
    assert "WORKER_MEMORY_LIMITS" in [f["code"] for f in res["findings"]]
    assert _live_children() - before == set()  # every worker was cleaned up


@pytest.mark.torch
@pytest.mark.skipif(not platform.start_server_supported(), reason="the start server is Linux's")
def test_forked_from_the_start_server_its_workers_are_forked_and_cost_what_a_spawned_one_does():
    before = _live_children()
    res = runner.run_probes([gil.PROBE], options=TINY)["results"]["gil"]
    assert res["status"] == "ok", res["reason"]
    data = res["data"]
    st, mem = data["startup"], data["memory"]
    assert st["method"] == "fork" and "start server" in st["note"]
    # A spawned worker's start-up and memory, measured in the start server's fresh interpreter: a forked worker's
    # own memory is mostly pages it shares with the server (a few MiB of its own).
    assert st["import_torch_s"] > 0 and st["spawn_s"] is not None and st["total_s"] > st["forked_ready_s"]
    assert mem["per_worker_host_bytes"] > 64 * 2**20
    assert 0 < mem["rss_before_torch_bytes"] < mem["rss_after_torch_bytes"]
    assert {r["workload"] for r in data["scaling"]} == set(CPU_WORKLOADS)
    assert _live_children() - before == set()


def test_pure_python_is_measured_without_torch_and_torch_workloads_say_why():
    before = _live_children()
    out = gil.run(ProbeContext(mode="quick", timeout_s=60, options=dict(TINY, gil_without_torch=True)))
    data = out.data
    assert {r["workload"] for r in data["scaling"]} == {"python"}
    assert {r["mode"] for r in data["scaling"]} == {"threads", "processes"}
    for w in ("torch_op", "torch_dispatch", "cuda_launch"):
        assert "torch" in data["absent"][w]
    assert data["memory"]["per_worker_host_source"].endswith("plain Python worker")
    assert data["memory"]["rss_after_torch_bytes"] is None
    assert data["startup"]["import_torch_s"] is None and data["startup"]["total_s"] > 0
    assert _live_children() - before == set()


def test_too_little_memory_means_no_process_workers_but_threads_still_run():
    ctx = ProbeContext(mode="quick", timeout_s=60, options=dict(TINY, gil_without_torch=True),
                       results={"system": {"memory": {"budget_bytes": 100 * 1024 * 1024}}})
    data = gil.run(ctx).data
    assert {r["mode"] for r in data["scaling"]} == {"threads"}
    (skip,) = data["skipped_points"]
    assert skip["mode"] == "processes" and "100 MiB" in skip["reason"]
    assert data["memory"]["budget_host_source"] == "system probe memory.budget_bytes"


@pytest.mark.skipif(platform.usable_cores() < 2, reason="needs 2 usable cores to have a second worker to refuse")
def test_larger_worker_counts_that_do_not_fit_are_not_spawned(monkeypatch):
    # Pretend each worker costs 300 MiB and 400 MiB are available: 1 fits, 2 must not be spawned.
    real = gil._memory_figures

    def heavy(*args):
        out = real(*args)
        out["per_worker_host_bytes"] = 300 * 2**20
        return out

    monkeypatch.setattr(gil, "_memory_figures", heavy)
    monkeypatch.setattr(gil, "MIN_HOST_BUDGET_BYTES", 0)
    ctx = ProbeContext(mode="quick", timeout_s=60, options=dict(TINY, gil_without_torch=True),
                       results={"system": {"memory": {"budget_bytes": 400 * 2**20}}})
    data = gil.run(ctx).data
    assert data["memory"]["fits"]["processes"] == 1 and data["cpu"]["process_points"] == [1]
    assert sorted(r["workers"] for r in data["scaling"] if r["mode"] == "processes") == [1]
    assert sorted(r["workers"] for r in data["scaling"] if r["mode"] == "threads") == [1, 2]
    (skip,) = data["skipped_points"]
    assert skip == {"mode": "processes", "workers": 2,
                    "reason": "2 processes x 300 MiB do not fit in the 400 MiB host memory budget (fits 1)"}


def test_run_threads_releases_all_threads_and_reraises_errors():
    assert gil.run_threads(gil.work_python, [(1000,), (1000,)]) > 0

    def boom(x):
        raise ValueError(x)

    with pytest.raises(ValueError):
        gil.run_threads(boom, [("bad",)])


def test_calibrate_scales_to_the_target_and_thread_cost_is_measured():
    n = gil.calibrate(gil.work_python, lambda k: (k,), 0.01)
    assert n > 256
    assert gil.measure_thread_cost(2, gil.work_python, (100,)) >= 0


def test_python_facts_on_this_interpreter():
    facts = gil.python_facts()
    assert isinstance(facts["free_threaded_build"], bool) and isinstance(facts["gil_enabled"], bool)
    assert facts["switch_interval_s"] > 0


class _FakeCudaTensor:
    def __add__(self, other):
        return self

    def sum(self):
        return self

    def item(self):
        return 2.0


class _FakeCuda:
    """Just enough of torch.cuda for the memory accounting, with NVML absent (pynvml finds no library)."""

    def __init__(self):
        self.initialised = False

    def init(self):
        self.initialised = True

    def synchronize(self):
        pass

    def mem_get_info(self):
        return (3_000 * 2**20, 4_096 * 2**20)

    def current_device(self):
        return 0

    def get_device_properties(self, i):
        class P:
            uuid = "01234567-89ab-cdef-0123-456789abcdef"
        return P()


class _FakeTorch:
    def __init__(self):
        self.cuda = _FakeCuda()

    def ones(self, n, device=None):
        assert device == "cuda"
        return _FakeCudaTensor()


def test_cuda_memory_accounting_without_nvml_falls_back_to_torch_free_memory(monkeypatch):
    # NVML unavailable here: no per-process value, no free delta -> device bytes null with the reason.
    monkeypatch.setattr(gil, "_nvml_free_by_uuid", lambda: {})
    monkeypatch.setattr(gil, "_nvml_own_usage", lambda uuid: None)
    out = gil._cuda_init_cost(_FakeTorch())
    assert out["device_bytes_per_context"] is None and "NVML" in out["reason_device"]
    assert out["device_budget_bytes"] == 3_000 * 2**20 and out["device_total_bytes"] == 4_096 * 2**20
    assert out["rss_after_cuda_bytes"] > 0 and out["cuda_init_s"] >= 0


def test_cuda_memory_accounting_prefers_nvml_per_process_then_free_delta(monkeypatch):
    frees = iter([{"GPU-01234567-89ab-cdef-0123-456789abcdef": 3_500 * 2**20},
                  {"GPU-01234567-89ab-cdef-0123-456789abcdef": 3_200 * 2**20}])
    monkeypatch.setattr(gil, "_nvml_free_by_uuid", lambda: next(frees))
    monkeypatch.setattr(gil, "_nvml_own_usage", lambda uuid: None)
    out = gil._cuda_init_cost(_FakeTorch())
    assert out["device_bytes_per_context"] == 300 * 2**20
    assert out["device_bytes_source"] == "NVML free-memory delta across CUDA init"
    assert out["device_budget_bytes"] == 3_500 * 2**20  # free before this context existed
    frees = iter([{"GPU-01234567-89ab-cdef-0123-456789abcdef": 3_500 * 2**20}] * 2)
    monkeypatch.setattr(gil, "_nvml_free_by_uuid", lambda: next(frees))
    monkeypatch.setattr(gil, "_nvml_own_usage",
                        lambda uuid: 290 * 2**20 if uuid == "GPU-01234567-89ab-cdef-0123-456789abcdef" else None)
    out = gil._cuda_init_cost(_FakeTorch())
    assert out["device_bytes_per_context"] == 290 * 2**20
    assert out["device_bytes_source"] == "NVML per-process used memory"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with a CUDA build of torch")
def test_real_probe_on_a_gpu_measures_cuda_launch_and_context_memory():
    res = runner.run_probe(gil.PROBE, ProbeContext(mode="quick", timeout_s=120, options=TINY))
    assert res["status"] == "ok", res["reason"]
    data = res["data"]
    assert "cuda_launch" not in data["absent"]
    assert {r["mode"] for r in data["scaling"] if r["workload"] == "cuda_launch"} == {"threads", "processes"}
    mem = data["memory"]
    assert mem["rss_after_cuda_bytes"] > mem["rss_after_torch_bytes"]
    assert mem["per_worker_device_bytes"] is None or mem["per_worker_device_bytes"] > 0
    assert mem["budget_device_bytes"] > 0
