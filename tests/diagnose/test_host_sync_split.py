"""The host-sync verdict tells the GPU's idle time apart: round trips (syncs), host compute, waiting on
large copies, launch overhead - and is supported only for the first."""

from gpudiag.diagnose.verdicts.transfer import verdict_host_sync_idle


def rep(busy, host, sync, copy, launch, deferred=None):
    rows = [{"name": "serial", "status": "ok", "workers": 1, "cycles_per_s": 40.0, "speedup_vs_serial": 1.0}]
    if deferred:
        rows.append({"name": "deferred_sync", "status": "ok", "workers": 8, "cycles_per_s": 40.0 * deferred,
                     "speedup_vs_serial": deferred})
    idle = {"serial": {"method": "profiler", "busy_fraction": busy,
                       "breakdown_ms": {"host_wait": host, "sync_wait": sync, "copy_wait": copy,
                                        "launch_overhead": launch, "unattributed": 0.0}}}
    return {"probes": {"cycle": {"status": "ok", "data": {"workload": {"device": "cuda:0"}, "strategies": rows,
                                                          "idle": idle}}}}


def test_round_trips_dominating_the_idle_time_support_it():
    v = verdict_host_sync_idle(rep(0.45, host=300.0, sync=700.0, copy=50.0, launch=100.0))
    assert v["verdict"] == "supported" and v["figures"]["largest_idle_part"] == "sync waits"
    assert "sync waits 700 ms" in v["summary"] and "host compute 300 ms" in v["summary"]


def test_host_compute_is_not_a_round_trip():
    v = verdict_host_sync_idle(rep(0.4, host=900.0, sync=150.0, copy=20.0, launch=80.0))
    assert v["verdict"] == "refuted" and "waits for Python to launch the next op (host compute)" in v["summary"]
    assert "Host round trips" not in v["summary"]


def test_waiting_on_copies_points_at_the_link():
    v = verdict_host_sync_idle(rep(0.35, host=100.0, sync=120.0, copy=800.0, launch=40.0))
    assert v["verdict"] == "refuted" and "waits on copies" in v["summary"] and "pcie_bandwidth" in v["summary"]


def test_deferring_the_syncs_measured_faster_supports_it_whatever_the_split():
    v = verdict_host_sync_idle(rep(0.8, host=100.0, sync=50.0, copy=0.0, launch=40.0, deferred=1.25))
    assert v["verdict"] == "supported" and "1.25x" in v["summary"]


def test_a_busy_gpu_is_refuted_without_advice():
    v = verdict_host_sync_idle(rep(0.93, host=10.0, sync=20.0, copy=0.0, launch=5.0))
    assert v["verdict"] == "refuted" and "Python" not in v["summary"] and "copies," not in v["summary"]
