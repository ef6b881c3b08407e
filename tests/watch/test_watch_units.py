"""`gpudiag watch`: the pure parts, on literal inputs (stacks recorded from real py-spy dumps,
py-spy's real error messages, fake /proc trees) and NVML through the fake at its seam."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from gpudiag.backends import nvml as nvml_backend
from gpudiag.watch import access, analysis, growth, job, pyspy
from gpudiag.watch import diagnose as dg
from gpudiag.watch import recommend as wr
from gpudiag.watch.gpu import GpuSampler
from tests.fakes import FakeNvml, FakeProcess, MiB
from tests.fakes_watch import ScriptedNvml, Tick


def F(name, short, line=0):
    return {"name": name, "filename": short, "short_filename": short, "line": line}


# Stacks as py-spy 0.4.3 --native printed them for CPython 3.11 on this machine (innermost first).
SPIN_WAITING = [F("0x7ff81d4a3f16", "libc.so.6"), F("pthread_cond_timedwait", "libc.so.6"), F("spin", "mix.py", 5),
                F("Thread.run", "threading.py", 982)]
SPIN_WAITING_UNTIMED = [F("0x7ff81d4a3f16", "libc.so.6"), F("pthread_cond_wait", "libc.so.6"), F("spin", "mix.py", 5)]
SLEEP_RETAKING_GIL = [F("0x7ff81d4a3f16", "libc.so.6"), F("pthread_cond_timedwait", "libc.so.6"),
                      F("time_sleep", "libpython3.11.so.1.0"), F("sleeper", "mix.py", 8)]
SLEEPING = [F("clock_nanosleep", "libc.so.6"), F("time_sleep", "libpython3.11.so.1.0"), F("<module>", "mix.py", 13)]
QUEUE_GET = [F("0x7ff81d4a3f16", "libc.so.6"), F("0x7ff81d4aed90", "libc.so.6"),
             F("PyThread_acquire_lock_timed", "libpython3.11.so.1.0"), F("lock_PyThread_acquire_lock", "libpython3.11.so.1.0"),
             F("Condition.wait", "threading.py", 327)]
TORCH_POOL_WAIT = [F("pthread_cond_wait", "libc.so.6"), F("std::condition_variable::wait", "libstdc++.so.6"),
                   F("at::internal::ThreadPool::run", "libtorch_cpu.so"), F("step", "train.py", 40)]


@pytest.mark.parametrize("frames,expected", [
    (SPIN_WAITING, True), (SPIN_WAITING_UNTIMED, True), (SLEEP_RETAKING_GIL, True),
    (SLEEPING, False), (QUEUE_GET, False), (TORCH_POOL_WAIT, False), ([], False),
    ([F("take_gil", "python3.12"), F("PyEval_RestoreThread", "python3.12"), F("f", "a.py", 1)], True),
])
def test_gil_wait_is_told_from_sleep_locks_and_extension_waits(frames, expected):
    assert pyspy.waits_for_gil(frames) is expected


def test_thread_states_and_loader_frames():
    base = {"owns_gil": False, "active": False, "thread_name": "t"}
    assert pyspy.thread_state(dict(base, owns_gil=True, frames=SPIN_WAITING), True) == pyspy.HOLDS
    assert pyspy.thread_state(dict(base, frames=SPIN_WAITING), True) == pyspy.WAITS
    assert pyspy.thread_state(dict(base, frames=SPIN_WAITING), False) == pyspy.IDLE  # no native: not told
    assert pyspy.thread_state(dict(base, active=True, frames=TORCH_POOL_WAIT), True) == pyspy.RUNS
    wait = [F("Queue.get", "queue.py", 180), {"name": "_MultiProcessingDataLoaderIter._try_get_data",
            "filename": "/x/site-packages/torch/utils/data/dataloader.py", "line": 1133}]
    fetch = [{"name": "_MapDatasetFetcher.fetch", "filename": "/x/torch/utils/data/_utils/fetch.py", "line": 52}]
    assert pyspy.loader_state(wait) == "waiting"
    assert pyspy.loader_state(fetch) == "loading"
    assert pyspy.loader_state(SLEEPING) is None


@pytest.mark.parametrize("text,kind", [
    ("Permission Denied: Try running again with elevated permissions by going 'sudo env \"PATH=$PATH\" !!'", "denied"),
    ("Error: Failed to get process executable name. Check that the process is running.\n\nCaused by:\n"
     "    0: Permission denied (os error 13)\n", "denied"),
    ("Error: Failed to find python version from target process\n\nStack backtrace:\n   0: anyhow", "not_python"),
    ("Error: No such process (os error 3)", "gone"),
    ("Can't get native stack traces with the --nonblocking option.", "native_unsupported"),
    ("Error: something new", "other"),
])
def test_py_spy_errors_are_classified(text, kind):
    assert pyspy.classify_error(text) == kind
    assert "Stack backtrace" not in pyspy.short_error(text)


def _exe(path):
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(path)


def test_py_spy_is_found_next_to_the_interpreter_then_on_path(tmp_path):
    (tmp_path / "bin").mkdir()
    interp = tmp_path / "bin" / "python"
    spy = _exe(tmp_path / "bin" / "py-spy")
    assert pyspy.find_py_spy({}, str(interp), "linux", which=lambda n: None) == spy
    win = tmp_path / "venv"
    (win / "Scripts").mkdir(parents=True)
    wspy = _exe(win / "Scripts" / "py-spy.exe")
    assert pyspy.find_py_spy({}, str(win / "python.exe"), "windows", which=lambda n: None) == wspy
    assert pyspy.find_py_spy({}, str(tmp_path / "none" / "python"), "linux", which=lambda n: "/usr/bin/" + n) \
        == "/usr/bin/py-spy"
    assert pyspy.find_py_spy({}, str(tmp_path / "none" / "python"), "linux", which=lambda n: None) is None
    assert pyspy.find_py_spy({pyspy.ENV_BINARY: spy}, "/nowhere/python", "linux") == spy
    assert pyspy.find_py_spy({pyspy.ENV_BINARY: str(tmp_path / "missing")}, "/x/python", "linux") is None
    assert "pip install 'gpudiag[watch]'" in pyspy.missing_reason({})


def test_exit_codes_and_endings():
    assert job.exit_code_for(3) == 3
    assert job.exit_code_for(-15) == 143 and job.exit_code_for(-6) == 134
    assert job.describe_end(-6).startswith("crashed with signal 6 (SIGABRT)")
    assert "out-of-memory" in job.describe_end(-9)
    assert job.describe_end(0) == "exited with code 0"
    with pytest.raises(job.LaunchError) as e:
        job.resolve(["no-such-command-gpudiag-test"])
    assert e.value.code == job.EXIT_NOT_FOUND


def test_command_lines_lose_their_secrets():
    argv = ["python", "train.py", "--token", "abc123notatokenshape", "--hf", "hf_" + "a" * 30,
            "--password=hunter2", "--epochs", "3", "/home/alice/data"]
    out = job.redact_command(argv, identify=True)
    joined = " ".join(out)
    assert "abc123notatokenshape" not in joined and "hf_aaaa" not in joined and "hunter2" not in joined
    assert out[:2] == ["python", "train.py"] and "3" in out


def _root(tmp_path, scope=None, cap_eff=None):
    if scope is not None:
        d = tmp_path / "proc/sys/kernel/yama"
        d.mkdir(parents=True)
        (d / "ptrace_scope").write_text(f"{scope}\n")
    if cap_eff is not None:
        d = tmp_path / "proc/self"
        d.mkdir(parents=True)
        (d / "status").write_text(f"Name:\tpython\nCapEff:\t{cap_eff}\n")
    return str(tmp_path)


def test_access_advice_names_the_rule_that_denied(tmp_path):
    r1 = _root(tmp_path / "a", scope=1)
    assert access.ptrace_scope(r1) == 1 and access.ptrace_scope(str(tmp_path / "none")) is None
    assert "gpudiag watch -- <command>" in access.denied_advice(1, False, "linux", r1, euid=1000, target_uid=1000)
    assert "did not" in access.denied_advice(1, True, "linux", r1, euid=1000, target_uid=1000)
    assert "scope=2" in access.denied_advice(1, False, "linux", _root(tmp_path / "b", scope=2), 1000, 1000)
    assert "scope=3" in access.denied_advice(1, False, "linux", _root(tmp_path / "c", scope=3), 1000, 1000)
    no_cap = _root(tmp_path / "d", cap_eff="00000000a80425fb")  # Docker's default set: no CAP_SYS_PTRACE
    assert access.has_cap_sys_ptrace(no_cap) is False
    assert "--cap-add SYS_PTRACE" in access.denied_advice(1, False, "linux", no_cap, euid=0, target_uid=0)
    assert access.has_cap_sys_ptrace(_root(tmp_path / "e", cap_eff="000001ffffffffff")) is True
    assert "another user" in access.denied_advice(1, False, "linux", r1, euid=1000, target_uid=0)
    assert "sudo" in access.denied_advice(1, False, "macos")
    assert "administrator" in access.denied_advice(1, False, "windows")


def test_theil_sen_growth_within_its_interval_and_flat_is_flat():
    pts = [(t * 0.1, 100e6 + 20e6 * t * 0.1 + (3e6 if t % 7 == 0 else 0)) for t in range(40)]
    g = growth.growth(pts)
    assert g["growing"] and abs(g["growth_bytes_per_s"] - 20e6) / 20e6 < 0.05
    lo, hi = g["growth_ci95"]
    assert lo <= 20e6 <= hi
    flat = growth.growth([(t * 0.1, 50e6 + (1e5 if t % 2 else 0)) for t in range(40)])
    assert not flat["growing"]
    assert growth.growth([(0, 1), (1, 2)])["growth_bytes_per_s"] is None


def test_wilson_interval_stays_inside_zero_one():
    lo, hi = growth.wilson_interval(50, 50)
    assert 0.9 < lo < 1.0 and hi == pytest.approx(1.0)
    lo, hi = growth.wilson_interval(5, 50)
    assert lo < 0.1 < hi
    assert growth.wilson_interval(0, 0) is None


def test_projection_names_the_first_killed():
    procs = [{"pid": 1, "role": "main", "alive": True, "growing": False, "growth_bytes_per_s": 0, "last_bytes": 500e6},
             {"pid": 2, "role": "worker", "alive": True, "growing": True, "growth_bytes_per_s": 1e6, "last_bytes": 400e6},
             {"pid": 3, "role": "worker", "alive": True, "growing": True, "growth_bytes_per_s": 2e6, "last_bytes": 300e6}]
    p = growth.project(procs, {"limit_bytes": 8e9, "limit_source": "ram", "headroom_bytes": 3e9})
    assert p["seconds_to_limit"] == pytest.approx(1000.0)
    assert p["first_to_hit"]["pid"] == 3  # 300 MB + 2 GB at the limit beats 1.4 GB and 500 MB
    assert growth.project(procs[:1], {"limit_bytes": 1, "limit_source": "ram", "headroom_bytes": 1})["seconds_to_limit"] is None
    limit = analysis.limit_from_facts({"total_bytes": 16e9, "available_bytes": 10 * 2**30,
                                       "cgroup_limit_bytes": 4 * 2**30, "cgroup_usage_bytes": 3 * 2**30})
    assert limit["limit_source"] == "cgroup" and limit["headroom_bytes"] == 2**30


def _gil_samples(n, pattern):
    """n dumps; pattern(i) -> list of (name, state) per thread."""
    return [{"t": i * 0.1, "native": True, "threads": [{"id": k, "tid": 100 + k, "name": name, "state": st,
                                                         "active": st == pyspy.HOLDS, "loader": None}
                                                        for k, (name, st) in enumerate(pattern(i))]} for i in range(n)]


def _data(gil=None, gpu=None, memory=None, inp=None):
    d = {"job": {"mode": "launch", "exit_code": 0, "duration_s": 10.0},
         "gil": gil or {"status": "skipped", "reason": "py-spy is not installed"},
         "input_wait": inp or {"status": "skipped", "reason": "needs the GIL part"},
         "memory": memory or {"status": "skipped", "reason": "denied"},
         "cpu": {"status": "ok", "logical_cores": 4, "background_cpu_cores": 0.1},
         "gpu": gpu or {"status": "skipped", "reason": "no NVML"},
         "machine": {"logical_cores": 4, "usable_cores": 4}}
    return d


def _three_spinners(i):
    holder = i % 3
    return [(f"spin{k}", pyspy.HOLDS if k == holder else pyspy.WAITS) for k in range(3)] + [("MainThread", pyspy.IDLE)]


def test_three_threads_sharing_the_gil_recommend_processes_clearly():
    gil = analysis.gil_section(_gil_samples(60, _three_spinners), {"pid": 1}, {})
    assert gil["held_fraction"] == 1.0 and gil["threads_wanting_gil"] == 3
    assert all(abs(t["gil_fraction"] - 1 / 3) < 0.05 for t in gil["threads"][:3])
    mem = {"status": "ok", "processes": [{"pid": 1, "role": "main", "peak_pss_bytes": 2 * 2**30}],
           "projection": {"headroom_bytes": 5 * 2**30, "seconds_to_limit": None}}
    data = _data(gil=gil, memory=mem)
    vs = dg.verdicts(data)
    assert {v["cause"]: v["verdict"] for v in vs}["gil_contention"] == "supported"
    rec = wr.recommend(data, vs)
    assert rec["strategy"] == "processes" and rec["confidence"] == "clear"
    assert rec["workers"] == 3  # 3 threads, 4 cores, 1 + 5 GiB // 2 GiB = 3 fit
    assert "3 threads want the GIL" in rec["headline"] and "3 fit" in rec["headline"]
    assert any(f["code"] == "WATCH_GIL_CONTENDED" for f in wr.findings(data, vs))


def test_a_sleeping_job_does_not_blame_the_gil():
    gil = analysis.gil_section(_gil_samples(50, lambda i: [("MainThread", pyspy.HOLDS if i % 10 == 0 else pyspy.IDLE)]),
                               {"pid": 1}, {})
    assert gil["held_fraction"] == pytest.approx(0.1)
    data = _data(gil=gil)
    vs = dg.verdicts(data)
    assert vs[0]["verdict"] == "refuted"
    rec = wr.recommend(data, vs)
    assert rec["strategy"] == "unchanged" and rec["confidence"] == "clear"


def test_confidence_too_noisy_none_and_tie():
    # held ~0.7 +- wide: 21 samples, the interval straddles the threshold
    borderline = analysis.gil_section(_gil_samples(21, lambda i: _three_spinners(i) if i % 4 else
                                                    [("spin0", pyspy.IDLE), ("spin1", pyspy.WAITS)]), {"pid": 1}, {})
    data = _data(gil=borderline)
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["confidence"] == "too_noisy" and "Too noisy" in rec["headline"]
    data = _data()
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["confidence"] == "none" and rec["strategy"] is None and rec["headline"].startswith("No recommendation")
    spin = analysis.gil_section(_gil_samples(60, _three_spinners), {"pid": 1}, {})
    inp = {"status": "ok", "loader_seen": True, "fraction": 0.5, "ci95": [0.4, 0.6], "samples": 60}
    data = _data(gil=spin, inp=inp)
    rec = wr.recommend(data, dg.verdicts(data))
    assert rec["confidence"] == "tie" and rec["strategy"] == "loader_workers" and rec["tied_with"] == ["processes"]
    assert set(rec) >= {"headline", "verdicts", "confidence", "source"}
    assert rec["confidence"] in dg.CONFIDENCES
    # gpudiag report's causes (diagnose.thresholds.CAUSES), in its order, then input_starvation
    assert [v["cause"] for v in rec["verdicts"]] == list(dg.WATCH_CAUSES)


def test_too_few_samples_judge_nothing():
    data = _data(gil=analysis.gil_section(_gil_samples(5, _three_spinners), {"pid": 1}, {}))
    v = dg.verdict_gil(data)
    assert v["verdict"] == "not_measured" and "only 5 samples" in v["reason"]


# ------------------------------------------------------------------ NVML through the fake

def _run_gpu(fake, n_ticks):
    clock = {"t": 0.0}
    with nvml_backend.session(fake) as n:
        s = GpuSampler(n, 0.5, lambda: clock["t"])
        for _ in range(n_ticks):
            s.tick(clock["t"])
            clock["t"] += 0.5
            fake.advance()
        devices, names = s.devices, s.names
        s.close()
    return devices, names


def test_gpu_sampler_sees_idle_gaps_throttling_and_vscode_appearing():
    job_pid = 4242
    me = FakeProcess(job_pid, "python", "C", 900 * MiB)
    desktop = [FakeProcess(2825, "/usr/lib/Xorg", "G", 40 * MiB)]
    vscode = FakeProcess(5555, "/usr/share/code/code", "G", 120 * MiB)
    ticks = [Tick(util=95, procs=[me] + desktop, ring=[95, 90, 97, 92, 96]),
             Tick(util=0, ring=[0, 0, 0, 0, 0]),
             Tick(util=0, ring=[0, 0, 0, 0, 0], reasons=["gpu_idle"]),
             Tick(util=93, procs=[me] + desktop + [vscode], ring=[93, 91, 94, 92, 95],
                  reasons=["sw_thermal_slowdown"], pcie_kbps=(12_000_000, 800_000)),
             Tick(util=94, ring=[94, 96, 92, 93, 95], reasons=["sw_thermal_slowdown"])]
    fake = ScriptedNvml.build(FakeNvml.gtx1650_desktop(), ticks)
    devices, names = _run_gpu(fake, len(ticks))
    dev = analysis.gpu_device_section(devices[0], {job_pid}, names, {})
    # The first read's older samples predate the watch (the driver keeps the recent past): 4 of 25 dropped.
    assert dev["utilization_source"] == "ring buffer" and dev["ring_buffer_samples"] == 21
    assert dev["idle_fraction"] == pytest.approx(10 / 21)
    assert dev["idle_gaps"]["count"] == 1 and dev["idle_gaps"]["longest"][0]["duration_s"] == pytest.approx(1.0)
    assert dev["job_processes"][0]["pid"] == job_pid
    assert dev["job_processes"][0]["used_memory_peak_bytes"] == 900 * MiB
    code = next(p for p in dev["other_processes"] if p["pid"] == 5555)
    assert code["appeared_mid_run"] and code["first_seen_s"] == pytest.approx(1.5)
    assert next(p for p in dev["other_processes"] if p["pid"] == 2825)["present_at_start"]
    assert dev["clock_event_reasons"]["sw_thermal_slowdown"] == pytest.approx(2 / 5)
    assert dev["throttled_fraction"] == pytest.approx(2 / 5)
    assert dev["pcie_tx_kbps"]["peak"] == 12_000_000
    data = _data(gpu={"status": "ok", "devices": [dev]})
    vs = {v["cause"]: v for v in dg.verdicts(data)}
    assert vs["gpu_shared"]["verdict"] == "supported" and "appeared at 1.5 s" in vs["gpu_shared"]["summary"]
    assert "Xorg" not in vs["gpu_shared"]["summary"]  # the desktop itself is never an app to close
    assert vs["context_switch"]["verdict"] == "refuted"
    codes = {f["code"] for f in wr.findings(data, list(vs.values()))}
    assert {"WATCH_GPU_SHARED", "WATCH_GPU_THROTTLED"} <= codes
    driver = {"gpus": [{"index": 0, "pcie": {"gen_max_system": 3, "width_max": 16}}]}
    pcie = dg.verdict_pcie(data, driver)
    assert pcie["verdict"] == "supported" and pcie["figures"]["peak_share_of_link"] > 0.7


def test_windows_wddm_says_per_process_memory_is_na():
    job_pid = 777
    ticks = [Tick(util=50, procs=[FakeProcess(job_pid, "python.exe", "C+G", None)]), Tick(util=60)]
    fake = ScriptedNvml.build(FakeNvml.windows_wddm(), ticks, ring_supported=False)
    devices, names = _run_gpu(fake, 2)
    dev = analysis.gpu_device_section(devices[0], {job_pid}, names, {})
    assert dev["driver_model"] == "WDDM"
    assert dev["utilization_source"] == "utilization rates" and dev["ring_buffer_samples"] is None
    assert dev["job_memory_reason"].startswith("n/a under WDDM")
    data = _data(gpu={"status": "ok", "devices": [dev]})
    vs = dg.verdicts(data)
    assert {v["cause"]: v["verdict"] for v in vs}["driver_model"] == "not_measured"
    assert any(f["code"] == "WATCH_GPU_MEMORY_PER_PROCESS_NA" for f in wr.findings(data, vs))


def test_no_driver_leaves_the_gpu_part_skipped_with_the_reason():
    with pytest.raises(nvml_backend.NvmlUnavailable) as e:
        with nvml_backend.session(FakeNvml.no_driver()):
            pass
    sec = analysis.gpu_section(None, str(e.value), set(), {}, {})
    assert sec["status"] == "skipped" and "no NVIDIA driver" in sec["reason"]
    assert json.dumps(sec)


def test_the_tracer_declaration_path_launches_the_job(monkeypatch):
    # Under Yama ptrace_scope=1 the job declares gpudiag its tracer between fork and exec; where Yama
    # is absent (this CI) prctl refuses and the job must still run normally.
    assert access.allow_tracer(os.getpid()) in (True, False)
    monkeypatch.setattr(access, "needs_tracer_declaration", lambda root="/": True)
    j = job.Job.launch([sys.executable, "-c", "import sys; sys.exit(5)"])
    assert j.tracer_declared and j.wait() == 5


def test_pcie_counters_of_many_gpus_take_turns_within_a_fifth_of_each_tick():
    # Issue 25: each nvmlDeviceGetPcieThroughput call waits out NVML's 20 ms counting window; two counters
    # on eight GPUs took 320 ms of every 0.5 s tick. Now at most 20 % of a tick goes to them.
    import dataclasses

    base = FakeNvml.h100()
    gpus = [dataclasses.replace(base.gpus[0], pcie_throughput_kbps=(1000 * i, 10 * i)) for i in range(8)]
    fake = FakeNvml(gpus, base.driver_version, base.cuda_version, base.nvml_version)
    with nvml_backend.session(fake) as n:
        s = GpuSampler(n, 0.5, lambda: 0.0)
        for tick in range(4):
            before = fake.blocked_s
            s.tick(tick * 0.5)
            assert fake.blocked_s - before <= 0.2 * 0.5 + 1e-9
        rows = [dev["samples"] for dev in s.devices]
        s.close()
    # Four ticks of two devices each: every GPU read once, with its own counters.
    assert [sum("pcie_tx_kbps" in r for r in dev_rows) for dev_rows in rows] == [1] * 8
    assert [next(r["pcie_tx_kbps"] for r in dev_rows if "pcie_tx_kbps" in r) for dev_rows in rows] == \
        [1000 * i for i in range(8)]
