"""The gil probe's analysis on recorded timings: rows, memory arithmetic, findings; and the scaling rule it applies
(gpudiag.diagnose.gil_scaling): classification with noise tolerance."""

import pytest

from gpudiag.diagnose import gil_scaling
from gpudiag.probes.gil import analysis as gil_analysis

GIB = 1024 ** 3
MIB = 1024 ** 2


def m(workload, mode, workers, items, walls):
    return {"workload": workload, "mode": mode, "workers": workers, "items": items, "wall_s": walls}


# Recorded on the 2-core CPU-only Linux VM (quick mode, 3 repeats; wall seconds per repeat).
RECORDED_2CORE = [
    m("python", "threads", 1, 1040802, [0.0489, 0.0485, 0.0497]),
    m("python", "threads", 2, 1040802, [0.0515, 0.0499, 0.0535]),
    m("python", "processes", 1, 1040802, [0.0525, 0.0521, 0.0530]),
    m("python", "processes", 2, 1040802, [0.0260, 0.0252, 0.0271]),
    m("torch_op", "threads", 1, 234, [0.0530, 0.0522, 0.0540]),
    m("torch_op", "threads", 2, 234, [0.0293, 0.0270, 0.0318]),
    m("torch_op", "processes", 1, 234, [0.0522, 0.0518, 0.0529]),
    m("torch_op", "processes", 2, 234, [0.0282, 0.0278, 0.0292]),
    m("torch_dispatch", "threads", 1, 21586, [0.0497, 0.0490, 0.0508]),
    m("torch_dispatch", "threads", 2, 21586, [0.1033, 0.1001, 0.1068]),
    m("torch_dispatch", "processes", 1, 21586, [0.0466, 0.0450, 0.0482]),
    m("torch_dispatch", "processes", 2, 21586, [0.0243, 0.0229, 0.0256]),
]


def recorded_data(**extra):
    data = {"scaling": gil_analysis.scaling_rows(RECORDED_2CORE),
            "python": {"free_threaded_build": False, "gil_enabled": True, "switch_interval_s": 0.005},
            "absent": {"cuda_launch": "the installed torch 2.13.0+cpu is a CPU-only build"},
            "memory": {}, "startup": {}}
    data.update(extra)
    return data


def codes(findings):
    return [f["code"] for f in findings]


# ------------------------------------------------------------------------------------- rows
def test_rows_median_throughput_speedup_vs_same_mode_one_worker_and_spread():
    rows = gil_analysis.scaling_rows([m("python", "threads", 1, 100, [1.0, 2.0, 4.0]),
                            m("python", "threads", 2, 100, [0.5, 0.5, 0.5]),
                            m("python", "processes", 2, 100, [0.25])])
    one, two, proc = rows
    assert one["throughput_per_s"] == 50.0 and one["speedup"] == 1.0 and one["repeats"] == 3
    assert one["wall_s"] == 2.0
    assert one["spread_fraction"] == pytest.approx((90 - 30) / 50, abs=1e-3)  # p10 30, p90 90 of 25/50/100
    assert two["throughput_per_s"] == 200.0 and two["speedup"] == 4.0 and two["spread_fraction"] == 0.0
    assert proc["speedup"] is None  # no 1-process baseline: never borrowed from the threads row


def test_rows_are_sorted_and_zero_walls_ignored():
    rows = gil_analysis.scaling_rows([m("torch_op", "processes", 2, 10, [1.0]), m("python", "threads", 1, 10, [0.0, 1.0])])
    assert [(r["workload"], r["mode"]) for r in rows] == [("python", "threads"), ("torch_op", "processes")]
    assert rows[0]["repeats"] == 1


def test_worker_points_and_split_work():
    assert gil_analysis.worker_points(2, quick=True) == [1, 2]
    assert gil_analysis.worker_points(1, quick=True) == [1]
    assert gil_analysis.worker_points(16, quick=False) == [1, 2, 4, 8]
    assert gil_analysis.worker_points(6, quick=False) == [1, 2, 4, 6]
    assert gil_analysis.worker_points(16, quick=True) == [1, 2, 4]
    assert gil_analysis.worker_points(12, quick=True, quick_cap=8) == [1, 2, 8]
    assert gil_analysis.split_work(10, 3) == [4, 3, 3] and sum(gil_analysis.split_work(7, 4)) == 7


# ----------------------------------------------------------------------------- classification
def test_recorded_two_core_run_gives_the_expected_verdicts():
    data = recorded_data()
    out = gil_analysis.analyse(data, usable_cores=2)
    v = out["verdict"]
    assert v["python"]["verdict"] == gil_scaling.ONLY_PROCESSES
    assert v["python"]["threads_speedup"] == pytest.approx(0.95, abs=0.05)
    assert v["python"]["processes_speedup"] == pytest.approx(2.0, abs=0.1)
    assert v["torch_op"]["verdict"] == gil_scaling.BOTH_SCALE
    assert v["torch_dispatch"]["verdict"] == gil_scaling.ONLY_PROCESSES
    assert v["cuda_launch"]["verdict"] == gil_scaling.NOT_MEASURED and "CPU-only" in v["cuda_launch"]["reason"]
    assert codes(out["findings"]) == ["GIL_BOUND_PYTHON", "TORCH_RELEASES_GIL", "DISPATCH_BOUND_UNDER_GIL"]
    gil = out["findings"][0]
    assert gil["message"].startswith("GIL-bound: 2 threads run pure-Python work at 0.95x the speed of 1 thread; "
                                     "2 processes at 2.02x.")
    assert gil["evidence"]["workers"] == 2


def test_classify_thresholds_on_two_and_four_workers():
    assert gil_scaling.classify(1.03, 3.7, 4, 0.2) == gil_scaling.ONLY_PROCESSES
    assert gil_scaling.classify(3.4, 3.6, 4, 0.2) == gil_scaling.BOTH_SCALE
    assert gil_scaling.classify(1.9, 1.1, 2, 0.2) == gil_scaling.ONLY_THREADS
    assert gil_scaling.classify(1.1, 1.05, 2, 0.2) == gil_scaling.NEITHER
    assert gil_scaling.classify(1.35, 1.9, 2, 0.2) == gil_scaling.INCONCLUSIVE  # threads partly scale: no claim
    assert gil_scaling.classify(1.0, 2.0, 2, 0.7) == gil_scaling.INCONCLUSIVE  # too noisy to judge


def test_noise_widens_the_tolerance_so_near_one_is_still_flat():
    # Threads at 1.3x would not count as flat with the 0.2 floor, but with 18% spread (tolerance 0.36) it does.
    noisy = [m("python", "threads", 1, 100, [1.0, 0.85, 1.15]), m("python", "threads", 2, 100, [0.77, 0.70, 0.84]),
             m("python", "processes", 1, 100, [1.0, 1.0, 1.0]), m("python", "processes", 2, 100, [0.52, 0.5, 0.54])]
    v = gil_scaling.compare_modes(gil_analysis.scaling_rows(noisy), "python")
    assert v["tolerance"] > 0.3 and v["verdict"] == gil_scaling.ONLY_PROCESSES


def test_very_noisy_timings_are_inconclusive_with_the_reason():
    noisy = [m("python", "threads", 1, 100, [1.0, 0.4, 2.0]), m("python", "threads", 2, 100, [1.0, 1.0, 1.0]),
             m("python", "processes", 1, 100, [1.0, 1.0, 1.0]), m("python", "processes", 2, 100, [0.5, 0.5, 0.5])]
    out = gil_analysis.analyse({"scaling": gil_analysis.scaling_rows(noisy)})
    assert out["verdict"]["python"]["verdict"] == gil_scaling.INCONCLUSIVE
    assert "too noisy" in out["verdict"]["python"]["reason"]
    assert "GIL_BOUND_PYTHON" not in codes(out["findings"])


def test_one_core_machine_has_no_scaling_verdict():
    rows = gil_analysis.scaling_rows([m("python", "threads", 1, 100, [1.0]), m("python", "processes", 1, 100, [1.0])])
    v = gil_scaling.compare_modes(rows, "python")
    assert v["verdict"] == gil_scaling.NOT_MEASURED and "1 worker" in v["reason"]


def test_cpu_quota_machine_where_nothing_scales_is_flagged():
    rows = gil_analysis.scaling_rows([m("python", "threads", 1, 100, [1.0] * 3), m("python", "threads", 4, 100, [1.0] * 3),
                            m("python", "processes", 1, 100, [1.0] * 3), m("python", "processes", 4, 100, [0.95] * 3)])
    assert codes(gil_analysis.analyse({"scaling": rows})["findings"]) == ["CPU_PARALLELISM_LIMITED"]


def test_torch_op_threads_not_scaling_is_a_warning():
    rows = gil_analysis.scaling_rows([m("torch_op", "threads", 1, 100, [1.0] * 3), m("torch_op", "threads", 4, 100, [0.98] * 3),
                            m("torch_op", "processes", 1, 100, [1.0] * 3), m("torch_op", "processes", 4, 100, [0.27] * 3)])
    f = gil_analysis.analyse({"scaling": rows})["findings"]
    assert codes(f) == ["TORCH_OP_THREADS_DO_NOT_SCALE"] and f[0]["severity"] == "warning"


def test_cuda_launch_bound_under_gil_recorded_gpu_shape():
    # Shape of a launch-bound GPU loop: threads 1.1x, processes 3.2x at 4 workers.
    rows = gil_analysis.scaling_rows([m("cuda_launch", "threads", 1, 4000, [0.2] * 3), m("cuda_launch", "threads", 4, 4000, [0.18] * 3),
                            m("cuda_launch", "processes", 1, 4000, [0.2] * 3),
                            m("cuda_launch", "processes", 4, 4000, [0.0625] * 3)])
    f = gil_analysis.analyse({"scaling": rows})["findings"]
    assert codes(f) == ["DISPATCH_BOUND_UNDER_GIL"] and "(cuda_launch)" in f[0]["message"]
    assert "1.11x" in f[0]["message"] and "3.20x" in f[0]["message"]


# ------------------------------------------------------------------------------------- memory
def test_fits_and_fit_check_arithmetic():
    assert gil_analysis.fits(1.9 * GIB, 6 * GIB) == 3
    assert gil_analysis.fits(None, 6 * GIB) is None and gil_analysis.fits(1 * GIB, None) is None
    assert gil_analysis.process_fit_check(4, 1.9 * GIB, 6 * GIB) is not None  # the Kali story: 4 x 1.9 GiB > 6 GiB
    assert "4 processes would need 7.6 GiB" in gil_analysis.process_fit_check(4, 1.9 * GIB, 6 * GIB)
    assert gil_analysis.process_fit_check(4, 1.9 * GIB, 6 * GIB, already_running=1) is None  # 3 more x 1.9 = 5.7 GiB
    assert gil_analysis.process_fit_check(2, None, 6 * GIB) is None


def test_host_budget_prefers_system_probe_then_tightest_limit():
    assert gil_analysis.host_budget(5 * GIB, 20 * GIB, None, None) == {"bytes": 5 * GIB, "source": "system probe memory.budget_bytes"}
    assert gil_analysis.host_budget(None, 20 * GIB, 8 * GIB, 3 * GIB)["bytes"] == 5 * GIB
    assert gil_analysis.host_budget(None, 2 * GIB, 8 * GIB, 3 * GIB)["source"] == "available RAM (psutil)"
    assert gil_analysis.host_budget(None, None, None, None)["bytes"] is None


def kali_memory():
    return {"per_worker_host_bytes": int(1.9 * GIB), "budget_host_bytes": 6 * GIB,
            "rss_after_cuda_bytes": int(2.2 * GIB), "per_worker_device_bytes": 300 * MIB,
            "budget_device_bytes": 3600 * MIB, "per_thread_host_bytes": 8 * MIB,
            "fits": {"processes": 3, "threads": 768}}


def test_worker_memory_limits_explains_four_workers_oom_on_kali():
    out = gil_analysis.analyse({"scaling": [], "memory": kali_memory()}, usable_cores=4)
    (f,) = [x for x in out["findings"] if x["code"] == "WORKER_MEMORY_LIMITS"]
    assert f["severity"] == "warning"
    assert "1.9 GiB of host memory (after import torch and CUDA init)" in f["message"]
    assert "6 GiB available 3 workers fit in RAM" in f["message"]
    assert "300 MiB of GPU memory per CUDA context and 3.5 GiB free, 12 fit on the GPU" in f["message"]
    assert "4 workers (one per usable core) would need 7.6 GiB" in f["message"]
    assert f["evidence"]["fits"] == {"processes": 3, "threads": 768} and "at most 3" in f["fix"]


def test_worker_memory_critical_when_two_do_not_fit_and_info_when_plenty():
    mem = dict(kali_memory(), budget_host_bytes=3 * GIB, fits={"processes": 1, "threads": 300})
    (f,) = gil_analysis.analyse({"memory": mem}, usable_cores=4)["findings"]
    assert f["severity"] == "critical" and "OOM killer" in f["message"]
    mem = {"per_worker_host_bytes": 141 * MIB, "budget_host_bytes": 23 * GIB, "fits": {"processes": 167, "threads": 20000}}
    (f,) = gil_analysis.analyse({"memory": mem}, usable_cores=2)["findings"]
    assert f["severity"] == "info" and f["fix"] is None and "167 workers fit" in f["message"]


# ---------------------------------------------------------------------------- python build
def test_free_threaded_with_gil_disabled_reports_thread_scaling():
    rows = gil_analysis.scaling_rows([m("python", "threads", 1, 100, [1.0] * 3), m("python", "threads", 4, 100, [0.28] * 3),
                            m("python", "processes", 1, 100, [1.0] * 3), m("python", "processes", 4, 100, [0.27] * 3)])
    out = gil_analysis.analyse({"scaling": rows, "python": {"free_threaded_build": True, "gil_enabled": False},
                      "memory": {"per_worker_host_bytes": 400 * MIB}})
    (f,) = out["findings"]
    assert f["code"] == "FREE_THREADED" and f["severity"] == "info"
    assert "4 threads 3.57x" in f["message"] and "400 MiB" in f["message"]


def test_free_threaded_build_with_gil_re_enabled_by_torch_is_a_warning():
    out = gil_analysis.analyse({"python": {"free_threaded_build": True, "gil_enabled": True}})
    (f,) = out["findings"]
    assert f["code"] == "FREE_THREADED" and f["severity"] == "warning" and "re-enabled" in f["message"]


def test_startup_cost_finding_quotes_the_measured_parts():
    out = gil_analysis.analyse({"startup": {"spawn_s": 0.09, "import_torch_s": 0.99, "total_s": 1.08}})
    (f,) = out["findings"]
    assert f["code"] == "PROCESS_STARTUP_COST"
    assert "1.08 s (spawn 0.09 s, import torch 0.99 s)" in f["message"]


def test_findings_codes_are_stable_upper_snake():
    out = gil_analysis.analyse(recorded_data(memory=kali_memory(), startup={"spawn_s": 0.1, "import_torch_s": 1.0, "total_s": 1.2}),
                     usable_cores=4)
    for f in out["findings"]:
        assert f["code"].isupper() and " " not in f["code"]
        assert f["severity"] in ("info", "warning", "critical")


def test_contended_thread_row_spread_is_not_mistaken_for_noise():
    # Recorded shape (full mode, loaded 2-core VM): 2 threads of tiny ops convoy on the GIL, so their
    # repeats vary 0.3-0.8 s; the 1-worker baselines are steady, so the verdict still stands.
    rec = [m("torch_dispatch", "threads", 1, 100, [0.215, 0.2228, 0.230, 0.22, 0.226]),
           m("torch_dispatch", "threads", 2, 100, [0.30, 0.435, 0.80, 0.40, 0.50]),
           m("torch_dispatch", "processes", 1, 100, [0.216, 0.20, 0.24, 0.21, 0.22]),
           m("torch_dispatch", "processes", 2, 100, [0.14, 0.10, 0.20, 0.13, 0.15])]
    rows = gil_analysis.scaling_rows(rec)
    assert [r["spread_fraction"] > 0.4 for r in rows if r["workers"] == 2] == [True, True]
    v = gil_scaling.compare_modes(rows, "torch_dispatch")
    assert v["verdict"] == gil_scaling.ONLY_PROCESSES and v["tolerance"] < 0.5


def test_tolerance_wide_enough_to_overlap_scaling_threshold_is_inconclusive():
    assert gil_scaling.classify(1.0, 1.9, 2, 0.5) == gil_scaling.INCONCLUSIVE  # flat up to 1.5 = scales from 1.5
    assert gil_scaling.classify(1.0, 3.7, 4, 0.5) == gil_scaling.ONLY_PROCESSES  # at 4 workers the bands are apart


def test_a_busy_machine_is_named_instead_of_blaming_the_cpu():
    # Recorded shape on the shared 2-core VM while another job ran: nothing scales, 0.9 cores were taken.
    rows = gil_analysis.scaling_rows([m("python", "threads", 1, 100, [1.0] * 3), m("python", "threads", 2, 100, [1.0] * 3),
                            m("python", "processes", 1, 100, [1.0] * 3), m("python", "processes", 2, 100, [0.9] * 3)])
    out = gil_analysis.analyse({"scaling": rows, "other_busy_cores": {"python": 0.9, "torch_op": 0.1}}, usable_cores=2)
    assert codes(out["findings"]) == ["MACHINE_BUSY_DURING_MEASUREMENT"]
    f = out["findings"][0]
    assert "0.9 of 2 cores busy while `python`" in f["message"] and f["severity"] == "warning"
    v = out["verdict"]["python"]
    assert v["other_busy_cores"] == 0.9 and "0.9 cores busy" in v["reason"]
    assert out["verdict"]["torch_op"]["other_busy_cores"] == 0.1


def test_a_quiet_machine_has_no_busy_finding():
    out = gil_analysis.analyse(recorded_data(other_busy_cores={"python": 0.05, "torch_op": 0.1, "torch_dispatch": None}))
    assert "MACHINE_BUSY_DURING_MEASUREMENT" not in codes(out["findings"])
