"""Every preflight check through fact dicts built to docs/report-contract.md (`system.memory`, `driver`).

`make_facts()` is a healthy Linux machine with one idle GTX 1650 (values in the shape the driver probe
writes, from research/captures); each test changes the one fact it is about.
"""

import contextlib
import copy
import json
import os

import pytest

import gpudiag
from gpudiag.diagnose import preflight
from gpudiag.diagnose.preflight import facts as facts_mod
from gpudiag.diagnose.preflight import gpu_checks, model, needs
from gpudiag.report.contract import build_report, dumps

GiB, MiB = 2**30, 2**20
OWN_PID = 4242


def make_gpu(index=0, **over):
    gpu = {
        "index": index, "name": "NVIDIA GeForce GTX 1650",
        "memory_total_bytes": 4 * GiB, "memory_used_bytes": 300 * MiB, "memory_free_bytes": 4 * GiB - 300 * MiB,
        "driver_model": {"current": None, "pending": None},
        "persistence_mode": True, "compute_mode": "default", "mig_mode": {"current": "n/a", "pending": "n/a"},
        "display_active": False,
        "pcie": {"gen_current": 3, "gen_max_system": 3, "gen_max_card": 3, "width_current": 16, "width_max": 16},
        "clock_event_reasons": {"active": ["gpu_idle"], "raw": 1},
        "temperature_c": 41, "power_draw_w": 3.5, "power_limit_w": 50.0, "utilization_gpu_percent": 0,
        "processes": {"compute": [], "graphics": []},
    }
    gpu.update(over)
    return gpu


def make_facts(gpus=None, host="linux", env=None, memory=None, torch=None, windows=None, **over):
    facts = {
        "platform": "windows" if host == "windows" else "linux",
        "pid": OWN_PID,
        "env": dict(env or {}),
        "nvml": {"reachable": True, "reason": None},
        "driver": {
            "host": host, "driver_version": "550.54.14", "cuda_driver_version": "12.4",
            "windows": windows, "gpus": gpus if gpus is not None else [make_gpu()],
        },
        "memory": dict({"total_bytes": 16 * GiB, "available_bytes": 12 * GiB, "swap_total_bytes": 2 * GiB,
                        "swap_used_bytes": 0, "cgroup_limit_bytes": None, "cgroup_usage_bytes": None,
                        "wsl_memory_cap_bytes": None, "oom_kills_since_boot": 0, "budget_bytes": None},
                       **(memory or {})),
        "torch": dict({"version": "2.3.0+cu121", "cuda": "12.1", "hip": None}, **(torch or {})),
        "start_method": "spawn", "start_method_source": "set by this program",
        "saved_report": None,
        "cpu_limit": {"affinity_cores": 8, "cpuset_cpus": 8, "quota_cpus": None, "quota_period_us": None,
                      "quota_source": None, "cgroup_version": 2, "usable_cpus": 8.0, "usable_cores": 8,
                      "limited_by": None},
        "logical_cpus": 8,
    }
    facts.update(over)
    return facts


def no_nvml(reason="NVML library (libnvidia-ml.so.1 / nvml.dll) not found: no NVIDIA driver is installed"):
    return make_facts(nvml={"reachable": False, "reason": reason}, driver=None)


def run(facts, strict=False, **plan):
    checks, need = preflight.run_checks(facts, preflight.Plan(**plan))
    return preflight.PreflightResult(checks, plan.get("workers", 1), plan.get("strategy", "processes"), need, 0.01,
                              strict=strict)


def status(result, name):
    return result.check(name).status


# ----------------------------------------------------------------------------- the whole set

def test_a_healthy_machine_is_ready_and_every_check_has_the_contract_fields():
    r = run(make_facts(), workers=2)
    assert r.ready, r.format_text()
    names = [c.name for c in r.checks]
    assert names == ["nvml", "gpu_visible", "torch_cuda", "gpu_processes", "vram", "cpu_limit", "host_ram", "swap",
                     "oom_kills", "clocks", "pcie_link", "persistence_mode", "windows_hags", "windows_tdr",
                     "environment", "disk"]
    for c in r.checks:
        assert c.status in model.STATUSES and c.message and "\n" not in c.message
        assert isinstance(c.evidence, dict)
    assert {c.status for c in r.checks} <= {"pass", "skip"}
    assert r.check("windows_hags").status == "skip" and r.check("disk").status == "skip"
    json.dumps(r.to_dict())  # evidence is plain data


def test_no_nvidia_driver_is_not_ready_and_names_nvml():
    r = run(no_nvml())
    assert not r.ready
    assert status(r, "nvml") == "fail"
    assert r.check("nvml").message.startswith("NVIDIA driver/NVML not reachable: NVML library")
    assert any(x.startswith("nvml: NVIDIA driver/NVML not reachable") for x in r.reasons())
    for name in ("gpu_visible", "gpu_processes", "vram", "clocks", "pcie_link", "persistence_mode"):
        assert status(r, name) == "skip", name
    assert status(r, "host_ram") == "pass"  # host checks still run


# ----------------------------------------------------------------------------- GPU visibility

def test_empty_cuda_visible_devices_fails_even_without_nvml():
    for facts in (make_facts(env={"CUDA_VISIBLE_DEVICES": ""}), dict(no_nvml(), env={"CUDA_VISIBLE_DEVICES": " "})):
        r = run(facts)
        assert status(r, "gpu_visible") == "fail"
        assert "CUDA_VISIBLE_DEVICES is set but empty" in r.check("gpu_visible").message
        assert not r.ready
        # the GPU checks have no GPU to look at
        assert status(r, "vram") == "skip"


def test_cuda_visible_devices_out_of_range_hides_every_gpu():
    r = run(make_facts(env={"CUDA_VISIBLE_DEVICES": "1"}))
    assert status(r, "gpu_visible") == "fail" and "hides every GPU" in r.check("gpu_visible").message


def test_cuda_visible_devices_reorders_and_device_picks_the_nvml_gpu():
    busy = make_gpu(1, name="NVIDIA RTX A4000", memory_free_bytes=1 * GiB, memory_total_bytes=16 * GiB)
    facts = make_facts(gpus=[make_gpu(0), busy], env={"CUDA_VISIBLE_DEVICES": "1,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    r = run(facts, device=0)
    assert r.check("gpu_visible").evidence["nvml_index"] == 1
    assert "RTX A4000" in r.check("gpu_visible").message
    assert status(r, "vram") == "pass" and r.check("vram").evidence["gpu"] == 1
    r2 = run(facts, device=1)
    assert r2.check("gpu_visible").evidence["nvml_index"] == 0


def test_device_index_beyond_the_visible_gpus_fails():
    r = run(make_facts(), device=1)
    assert status(r, "gpu_visible") == "fail"
    assert "CUDA device 1 does not exist (1 visible)" in r.check("gpu_visible").message


def test_visible_indices_follow_cuda_parsing_rules():
    assert gpu_checks.visible_nvml_indices(None, 2) == ([0, 1], "CUDA_VISIBLE_DEVICES not set: every GPU is visible")
    assert gpu_checks.visible_nvml_indices("1,0", 2)[0] == [1, 0]
    assert gpu_checks.visible_nvml_indices("0,7,1", 2)[0] == [0]  # CUDA stops at the first invalid entry
    assert gpu_checks.visible_nvml_indices("0,0", 2)[0] == [0]
    assert gpu_checks.visible_nvml_indices("-1", 2)[0] == []
    assert gpu_checks.visible_nvml_indices("GPU-8a6f0c1e-aaaa-bbbb-cccc-0123456789ab", 2)[0] is None


def test_uuid_selection_maps_to_the_only_gpu_but_not_to_one_of_two():
    uuid = {"CUDA_VISIBLE_DEVICES": "GPU-8a6f0c1e-aaaa-bbbb-cccc-0123456789ab"}
    assert status(run(make_facts(env=uuid)), "gpu_visible") == "pass"
    r = run(make_facts(gpus=[make_gpu(0), make_gpu(1)], env=uuid))
    assert status(r, "gpu_visible") == "fail" and "by UUID" in r.check("gpu_visible").message


def test_no_gpu_listed_fails():
    r = run(make_facts(gpus=[]))
    assert status(r, "gpu_visible") == "fail" and "lists no GPU" in r.check("gpu_visible").message


def test_a_gpu_nvml_cannot_read_fails_visibility():
    r = run(make_facts(gpus=[{"index": 0, "error": "NVMLError_GpuIsLost: GPU is lost"}]))
    assert status(r, "gpu_visible") == "fail" and "GpuIsLost" in r.check("gpu_visible").message


# ----------------------------------------------------------------------------- torch build vs driver

@pytest.mark.parametrize("torch_cuda, driver_cuda, expected", [
    ("12.1", "12.4", "pass"),
    ("12.4", "12.4", "pass"),
    ("11.8", "12.4", "pass"),
    ("12.4", "12.1", "warn"),   # minor version compatibility within CUDA 12
    ("12.8", "12.0", "warn"),
    ("13.0", "12.8", "fail"),   # a newer major needs a newer driver
    ("12.1", "11.8", "fail"),
    ("10.2", "10.1", "fail"),   # no minor version compatibility before CUDA 11
])
def test_torch_cuda_against_the_driver(torch_cuda, driver_cuda, expected):
    facts = make_facts(torch={"cuda": torch_cuda})
    facts["driver"]["cuda_driver_version"] = driver_cuda
    r = run(facts)
    assert status(r, "torch_cuda") == expected, r.check("torch_cuda").message
    assert r.check("torch_cuda").evidence["driver_cuda"] == driver_cuda


def test_torch_newer_than_the_driver_says_what_to_do():
    facts = make_facts(torch={"version": "2.8.0+cu129", "cuda": "12.9"})
    facts["driver"]["cuda_driver_version"] = "12.2"
    msg = run(facts).check("torch_cuda").message
    assert "CUDA 12.9" in msg and "CUDA 12.2" in msg and "minor version compatibility" in msg and "driver" in msg


def test_cpu_only_and_rocm_torch_fail_and_missing_torch_skips():
    r = run(make_facts(torch={"version": "2.13.0+cpu", "cuda": None}))
    assert status(r, "torch_cuda") == "fail" and "CPU-only build" in r.check("torch_cuda").message
    r = run(make_facts(torch={"version": "2.4.0+rocm6.1", "cuda": None, "hip": "6.1"}))
    assert status(r, "torch_cuda") == "fail" and "ROCm" in r.check("torch_cuda").message
    r = run(make_facts(torch={"version": None, "cuda": None}))
    assert status(r, "torch_cuda") == "skip" and "not installed" in r.check("torch_cuda").message


def test_torch_cuda_skips_when_the_driver_version_is_unknown():
    facts = make_facts()
    facts["driver"]["cuda_driver_version"] = "n/a"
    assert status(run(facts), "torch_cuda") == "skip"
    r = run(no_nvml())
    assert status(r, "torch_cuda") == "skip" and "NVML not reachable" in r.check("torch_cuda").message


# ----------------------------------------------------------------------------- other processes

def proc(pid, name, used=None, category=None, label=None):
    return {"pid": pid, "name": name, "used_memory_bytes": used, "category": category, "label": label}


def test_a_gpu_held_by_graphics_processes_warns_with_their_names():
    gpu = make_gpu(display_active=True, processes={"compute": [], "graphics": [
        proc(2825, "Xorg", 390 * MiB, "display", "the X server"),
        proc(3058, "gnome-shell", 28 * MiB, "display", "GNOME Shell"),
        proc(4064, "code", 67 * MiB, "app", "VS Code")]})
    r = run(make_facts(gpus=[gpu]))
    c = r.check("gpu_processes")
    assert c.status == "warn"
    assert "graphics: Xorg, gnome-shell, code (VS Code)" in c.message
    assert "desktop" in c.message
    assert [p["name"] for p in c.evidence["graphics"]] == ["Xorg", "gnome-shell", "code"]
    assert r.ready and not run(make_facts(gpus=[gpu]), strict=True).ready


def test_other_compute_processes_warn_with_memory_and_own_process_is_ignored():
    gpu = make_gpu(processes={
        "compute": [proc(OWN_PID, "python3", 300 * MiB), proc(9001, "python3", 1200 * MiB)],
        # Windows lists a C+G process in both lists
        "graphics": [proc(OWN_PID, "python3"), proc(9001, "python3")]})
    c = run(make_facts(gpus=[gpu])).check("gpu_processes")
    assert c.status == "warn"
    assert "compute: python3 (1.2 GiB)" in c.message and "graphics" not in c.message
    assert [p["pid"] for p in c.evidence["compute"]] == [9001] and c.evidence["graphics"] == []


def test_windows_c_plus_g_desktop_processes_count_as_graphics():
    both = [proc(5120, "explorer.exe", None, "display", "the Windows shell (explorer.exe)"),
            proc(7712, "Code.exe", None, "app", "VS Code"), proc(9001, "trainer.exe")]
    gpu = make_gpu(processes={"compute": both, "graphics": both})
    c = run(make_facts(gpus=[gpu], host="windows")).check("gpu_processes")
    assert c.status == "warn"
    assert "compute: trainer.exe; graphics: explorer.exe, Code.exe (VS Code)" in c.message
    assert [p["pid"] for p in c.evidence["compute"]] == [9001]


def test_only_our_own_process_on_the_gpu_passes():
    gpu = make_gpu(processes={"compute": [proc(OWN_PID, "python3", 300 * MiB)], "graphics": []})
    assert status(run(make_facts(gpus=[gpu])), "gpu_processes") == "pass"


def test_process_list_not_available_skips():
    gpu = make_gpu(processes={"compute": "n/a", "graphics": "n/a"})
    c = run(make_facts(gpus=[gpu], host="wsl2")).check("gpu_processes")
    assert c.status == "skip" and "WSL2" in c.message


# ----------------------------------------------------------------------------- memory

def test_ram_too_small_for_the_workers_fails_with_the_arithmetic():
    facts = make_facts(memory={"available_bytes": 6 * GiB})
    r = run(facts, workers=4, ram_per_worker=int(1.9 * GiB))
    c = r.check("host_ram")
    assert c.status == "fail" and not r.ready
    assert "4 workers x 1.9 GiB (--ram-per-worker) = 7.6 GiB does not fit in 6 GiB (available RAM)" in c.message
    assert "OOM killer" in c.message
    assert c.evidence["need_bytes"] == 4 * int(1.9 * GiB)


def test_ram_that_barely_fits_warns_and_threads_need_less():
    facts = make_facts(memory={"available_bytes": 8.5 * GiB})
    assert status(run(facts, workers=4), "host_ram") == "warn"  # 4 x 2 GiB default in 8.5 GiB
    r = run(facts, workers=4, strategy="threads")  # 2 GiB + 4 x 128 MiB
    c = r.check("host_ram")
    assert c.status == "pass"
    assert c.message.startswith("1 process 2 GiB (conservative default, no saved report) + 4 threads x 128 MiB")
    assert r.per_worker["total_host_bytes"] == 2 * GiB + 4 * 128 * MiB


def test_the_cgroup_limit_binds_before_free_ram():
    facts = make_facts(memory={"available_bytes": 60 * GiB, "cgroup_limit_bytes": 8 * GiB,
                               "cgroup_usage_bytes": 3 * GiB})
    c = run(facts, workers=3).check("host_ram")
    assert c.status == "fail"
    assert "5 GiB (cgroup limit 8 GiB, 3 GiB used)" in c.message


def test_the_budget_from_memory_facts_wins_and_the_wsl_cap_is_named():
    facts = make_facts(memory={"available_bytes": 10 * GiB, "budget_bytes": 3 * GiB, "wsl_memory_cap_bytes": 8 * GiB})
    c = run(facts, workers=2).check("host_ram")
    assert c.status == "fail" and "WSL2 caps this Linux at 8 GiB" in c.message
    assert c.evidence["budget_bytes"] == 3 * GiB


def test_unknown_memory_skips():
    assert status(run(make_facts(memory=None, memory_reason="psutil failed") | {"memory": None}), "host_ram") == "skip"


def test_vram_fits_barely_fits_and_does_not_fit():
    gpu = make_gpu(memory_free_bytes=3 * GiB)
    assert status(run(make_facts(gpus=[gpu]), workers=2), "vram") == "pass"        # 2 x 768 MiB
    assert status(run(make_facts(gpus=[gpu]), workers=2, vram_per_worker=1.4 * GiB), "vram") == "warn"
    r = run(make_facts(gpus=[gpu]), workers=4, vram_per_worker=800 * MiB)
    c = r.check("vram")
    assert c.status == "fail" and not r.ready
    assert "4 workers x 800 MiB (--vram-per-worker) = 3.1 GiB does not fit in 3 GiB free of 4 GiB on GPU 0" \
        == c.message
    assert status(run(make_facts(gpus=[make_gpu(memory_free_bytes="n/a")])), "vram") == "skip"


def test_threads_share_one_cuda_context():
    need = needs.worker_needs(make_facts(), preflight.Plan(workers=4, strategy="threads"))
    assert need["shared_device_bytes"] == model.DEFAULT_PROCESS_DEVICE_BYTES
    assert need["total_device_bytes"] == model.DEFAULT_PROCESS_DEVICE_BYTES + 4 * model.DEFAULT_THREAD_DEVICE_BYTES
    procs = needs.worker_needs(make_facts(), preflight.Plan(workers=4, strategy="processes"))
    assert procs["total_device_bytes"] == 4 * model.DEFAULT_PROCESS_DEVICE_BYTES
    assert procs["shared_host_bytes"] == 0 and procs["source"] == model.DEFAULT_LABEL


def test_saved_report_figures_are_used_and_named_and_flags_win():
    rep = {"file": "gpudiag-report-2026-01-02-abc123.json", "created_at": "2026-01-02T10:00:00Z",
           "host_bytes": 1.5 * GiB, "device_bytes": 300 * MiB, "thread_host_bytes": 40 * MiB,
           "host_without_cuda": False}
    facts = make_facts(saved_report=rep, memory={"available_bytes": 5 * GiB})
    r = run(facts, workers=4)
    assert r.per_worker["host_bytes"] == int(1.5 * GiB)
    assert r.per_worker["source"] == "report gpudiag-report-2026-01-02-abc123.json"
    assert "(report gpudiag-report-2026-01-02-abc123.json)" in r.check("host_ram").message
    assert status(r, "host_ram") == "fail"  # 6 GiB in 5
    flags = run(facts, workers=4, ram_per_worker=GiB)
    assert flags.per_worker["host_source"] == "--ram-per-worker"
    assert flags.per_worker["device_source"] == "report gpudiag-report-2026-01-02-abc123.json"
    assert flags.per_worker["source"].startswith("host: --ram-per-worker; device: report")
    threads = run(facts, workers=4, strategy="threads")
    assert threads.per_worker["host_bytes"] == 40 * MiB  # the report's per-thread figure
    cpu_only = dict(rep, host_without_cuda=True)
    msg = run(make_facts(saved_report=cpu_only), workers=2).check("host_ram").message
    assert "measured without CUDA initialised" in msg


def write_report(path, created_at, host=None, device=None, gil=True):
    gil_res = {"status": "ok", "reason": "", "duration_s": 1.0, "findings": [],
               "data": {"memory": {"per_worker_host_bytes": host, "per_worker_device_bytes": device,
                                   "rss_after_cuda_bytes": None}}}
    rep = build_report({"gil": gil_res} if gil else {}, "quick", created_at=created_at)
    path.write_text(dumps(rep))
    return path


def test_find_saved_report_takes_the_newest_with_figures(tmp_path):
    write_report(tmp_path / "gpudiag-report-2026-01-01-aaaaaa.json", "2026-01-01T00:00:00Z", host=900 * MiB)
    write_report(tmp_path / "gpudiag-report-2026-03-01-bbbbbb.json", "2026-03-01T00:00:00Z", host=1100 * MiB)
    write_report(tmp_path / "gpudiag-report-2026-04-01-cccccc.json", "2026-04-01T00:00:00Z", gil=False)
    (tmp_path / "gpudiag-report-2026-05-01-broken.json").write_text("{not json")
    found = facts_mod.find_saved_report(str(tmp_path))
    assert found["saved_report"]["host_bytes"] == 1100 * MiB
    assert found["saved_report"]["file"].endswith("gpudiag-report-2026-03-01-bbbbbb.json")
    assert found["saved_report"]["host_without_cuda"] is True
    assert found["reports_seen"] == 3 and found["reports_unreadable"] == 1


def test_explicit_report_is_used_and_a_bad_one_is_an_error(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    mine = write_report(other / "mine.json", "2020-01-01T00:00:00Z", host=700 * MiB, device=290 * MiB)
    write_report(tmp_path / "gpudiag-report-2026-03-01-bbbbbb.json", "2026-03-01T00:00:00Z", host=1100 * MiB)
    found = facts_mod.find_saved_report(str(tmp_path), [str(mine)])
    assert found["saved_report"]["host_bytes"] == 1100 * MiB  # newest created_at wins
    found = facts_mod.find_saved_report(None, [str(mine)])
    assert found["saved_report"]["device_bytes"] == 290 * MiB
    bad = tmp_path / "bad.json"
    bad.write_text("")
    with pytest.raises(ValueError, match="--report bad.json: file is empty"):
        facts_mod.find_saved_report(None, [str(bad)])
    assert facts_mod.find_saved_report(str(tmp_path / "nothing-here"))["saved_report"] is None


def test_swap_checks():
    assert status(run(make_facts()), "swap") == "pass"
    tight = make_facts(memory={"swap_total_bytes": 0, "swap_used_bytes": 0, "available_bytes": 9 * GiB})
    c = run(tight, workers=4).check("swap")  # 8 GiB of 9 GiB with no swap
    assert c.status == "warn" and "OOM killer" in c.message
    assert status(run(tight, workers=1), "swap") == "pass"
    used = make_facts(memory={"swap_total_bytes": 4 * GiB, "swap_used_bytes": 3 * GiB})
    c = run(used).check("swap")
    assert c.status == "warn" and "75 % used" in c.message
    assert status(run(make_facts(memory={"swap_total_bytes": None})), "swap") == "skip"


def test_oom_kills_since_boot_warn():
    c = run(make_facts(memory={"oom_kills_since_boot": 3})).check("oom_kills")
    assert c.status == "warn" and "killed 3 processes since boot" in c.message
    c = run(make_facts(memory={"oom_kills_since_boot": 0, "cgroup_oom_kills": 1})).check("oom_kills")
    assert c.status == "warn" and "1 in this cgroup" in c.message
    assert status(run(make_facts()), "oom_kills") == "pass"
    assert status(run(make_facts(memory={"oom_kills_since_boot": None})), "oom_kills") == "skip"


# ----------------------------------------------------------------------------- clocks, link, persistence

def test_a_throttled_gpu_warns_with_the_reason_and_numbers():
    gpu = make_gpu(clock_event_reasons={"active": ["sw_power_cap", "hw_thermal_slowdown"], "raw": 0x44},
                   temperature_c=87, power_draw_w=49.8, power_limit_w=50.0, utilization_gpu_percent=99)
    c = run(make_facts(gpus=[gpu])).check("clocks")
    assert c.status == "warn"
    assert "held down right now by sw_power_cap, hw_thermal_slowdown (87 C, 49.8 W of 50.0 W)" in c.message
    assert c.evidence["raw"] == 0x44


def test_clocks_idle_pass_and_unknown_skip():
    assert run(make_facts()).check("clocks").message.endswith("(GPU idle)")
    gpu = make_gpu(clock_event_reasons={"active": ["applications_clocks_setting"], "raw": 2})
    assert status(run(make_facts(gpus=[gpu])), "clocks") == "pass"
    gpu = make_gpu(clock_event_reasons={"active": "n/a", "raw": "n/a"})
    assert status(run(make_facts(gpus=[gpu])), "clocks") == "skip"


def link(**kw):
    p = {"gen_current": 4, "gen_max_system": 4, "gen_max_card": 4, "width_current": 16, "width_max": 16}
    p.update(kw)
    return p


def test_a_degraded_link_warns():
    c = run(make_facts(gpus=[make_gpu(pcie=link(width_current=8))])).check("pcie_link")
    assert c.status == "warn" and "x8 of x16 lanes" in c.message
    assert "idle link may downtrain" in c.message  # the GPU is idle in make_gpu
    c = run(make_facts(gpus=[make_gpu(pcie=link(gen_current=3, gen_max_system=3))])).check("pcie_link")
    assert c.status == "warn" and "slot/CPU allows Gen3 but the card supports Gen4" in c.message


def test_a_lower_generation_is_power_saving_at_idle_but_not_under_load():
    idle = make_gpu(pcie=link(gen_current=1))
    c = run(make_facts(gpus=[idle])).check("pcie_link")
    assert c.status == "pass" and "normal power saving" in c.message
    busy = make_gpu(pcie=link(gen_current=1), clock_event_reasons={"active": [], "raw": 0},
                    utilization_gpu_percent=95)
    c = run(make_facts(gpus=[busy])).check("pcie_link")
    assert c.status == "warn" and "Gen1 of Gen4 while the GPU is busy" in c.message
    assert run(make_facts(gpus=[make_gpu(pcie=link())])).check("pcie_link").message == "link Gen4 x16 at its maximum"
    nolink = make_gpu(pcie={k: "n/a" for k in link()})
    assert status(run(make_facts(gpus=[nolink])), "pcie_link") == "skip"


def test_persistence_mode():
    assert status(run(make_facts()), "persistence_mode") == "pass"
    off = make_facts(gpus=[make_gpu(persistence_mode=False)])
    c = run(off).check("persistence_mode")
    assert c.status == "warn" and "nvidia-smi -pm 1" in c.message
    display = make_facts(gpus=[make_gpu(persistence_mode=False, display_active=True)])
    assert status(run(display), "persistence_mode") == "pass"
    assert status(run(make_facts(gpus=[make_gpu(persistence_mode="n/a")], host="windows")), "persistence_mode") == "skip"
    c = run(make_facts(host="wsl2")).check("persistence_mode")
    assert c.status == "skip" and "WSL2" in c.message


# ----------------------------------------------------------------------------- Windows

def win(hags, tdr=None):
    return {"hags": hags, "tdr": dict({"level": 3, "delay_s": 2, "ddi_delay_s": 5, "level_name": "recover",
                                       "defaults": ["level", "delay_s", "ddi_delay_s"]}, **(tdr or {}))}


WDDM_DISPLAY = make_gpu(driver_model={"current": "WDDM", "pending": "WDDM"}, display_active=True,
                        persistence_mode="n/a")


@pytest.mark.parametrize("hags, words", [
    ({"raw": 2, "enabled": True}, "scheduling on (HwSchMode=2)"),
    ({"raw": 1, "enabled": False}, "scheduling off (HwSchMode=1)"),
    ({"raw": None, "enabled": None, "reason": "HwSchMode is not set: Windows applies its default"},
     "HwSchMode not set: Windows uses its default"),
])
def test_windows_hags_values_are_reported(hags, words):
    c = run(make_facts(gpus=[WDDM_DISPLAY], host="windows", windows=win(hags))).check("windows_hags")
    assert c.status == "pass" and words in c.message
    assert c.evidence["hags"] == hags


def test_windows_hags_unreadable_skips_and_linux_skips():
    hags = {"raw": None, "enabled": None, "reason": "could not read HwSchMode: PermissionError: denied"}
    c = run(make_facts(gpus=[WDDM_DISPLAY], host="windows", windows=win(hags))).check("windows_hags")
    assert c.status == "skip" and "could not read" in c.message
    assert run(make_facts()).check("windows_hags").message == "Windows only"


def test_default_tdr_on_a_display_gpu_warns_that_long_kernels_are_killed():
    facts = make_facts(gpus=[WDDM_DISPLAY], host="windows", windows=win({"raw": 2, "enabled": True}))
    r = run(facts)
    c = r.check("windows_tdr")
    assert c.status == "warn"
    assert "TdrDelay 2 s (the default) on a GPU that drives a display" in c.message
    assert "longer than 2 s is killed" in c.message
    assert status(r, "persistence_mode") == "skip"


def test_tdr_cases_that_pass():
    hags = {"raw": 1, "enabled": False}
    longer = make_facts(gpus=[WDDM_DISPLAY], host="windows", windows=win(hags, {"delay_s": 60, "defaults": []}))
    assert run(longer).check("windows_tdr").message == "TdrDelay 60 s"
    off = make_facts(gpus=[WDDM_DISPLAY], host="windows", windows=win(hags, {"level": 0}))
    assert "detection off" in run(off).check("windows_tdr").message
    tcc = make_gpu(driver_model={"current": "TCC", "pending": "TCC"})
    assert "runs TCC" in run(make_facts(gpus=[tcc], host="windows", windows=win(hags))).check("windows_tdr").message
    headless = make_gpu(driver_model={"current": "WDDM", "pending": "WDDM"}, display_active=False)
    c = run(make_facts(gpus=[headless], host="windows", windows=win(hags))).check("windows_tdr")
    assert c.status == "pass" and "no display" in c.message


# ----------------------------------------------------------------------------- environment, disk

def test_cuda_launch_blocking_fails():
    r = run(make_facts(env={"CUDA_LAUNCH_BLOCKING": "1"}))
    c = r.check("environment")
    assert c.status == "fail" and not r.ready
    assert c.message.startswith("CUDA_LAUNCH_BLOCKING=1 makes every kernel launch synchronous")
    assert c.evidence["env"]["CUDA_LAUNCH_BLOCKING"] == "1"
    assert status(run(make_facts(env={"CUDA_LAUNCH_BLOCKING": "0"})), "environment") == "pass"


def test_fork_start_method_warns_only_for_several_processes():
    fork = make_facts(start_method="fork", start_method_source="the platform default")
    c = run(fork, workers=4, strategy="processes").check("environment")
    assert c.status == "warn" and "fork" in c.message and "spawn" in c.message
    assert status(run(fork, workers=4, strategy="threads"), "environment") == "pass"
    assert status(run(fork, workers=1), "environment") == "pass"


def test_environment_collects_several_problems_worst_first():
    env = {"CUDA_MODULE_LOADING": "EAGER", "PYTORCH_NO_CUDA_MEMORY_CACHING": "1", "CUDA_LAUNCH_BLOCKING": "1"}
    c = run(make_facts(env=env)).check("environment")
    assert c.status == "fail"
    assert c.message.startswith("CUDA_LAUNCH_BLOCKING") and "EAGER" in c.message and "caching allocator" in c.message
    assert [p["status"] for p in c.evidence["problems"]] == ["fail", "warn", "warn"]


def test_disk_space_against_the_minimum():
    disk = {"path": "ckpt", "free_bytes": 5 * GiB, "total_bytes": 100 * GiB, "writable": True}
    facts = make_facts(disk=disk)
    c = run(facts, checkpoint_dir="ckpt", min_free_disk=10 * GiB).check("disk")
    assert c.status == "fail" and "5 GiB free at ckpt, less than the 10 GiB" in c.message
    assert status(run(facts, checkpoint_dir="ckpt", min_free_disk=GiB), "disk") == "pass"
    assert "no --min-free-disk" in run(facts, checkpoint_dir="ckpt").check("disk").message
    ro = make_facts(disk=dict(disk, writable=False))
    assert "not writable" in run(ro, checkpoint_dir="ckpt").check("disk").message


# ----------------------------------------------------------------------------- result object

def test_strict_turns_warnings_into_not_ready_and_raise_if_failed():
    facts = make_facts(gpus=[make_gpu(persistence_mode=False)])
    relaxed, strict = run(facts), run(facts, strict=True)
    assert relaxed.ready and relaxed.raise_if_failed() is relaxed
    assert "READY (1 warning: persistence_mode)" in relaxed.format_text()
    assert not strict.ready
    with pytest.raises(preflight.PreflightFailed) as exc:
        strict.raise_if_failed()
    assert exc.value.result is strict
    assert "NOT READY: persistence_mode: persistence mode off" in str(exc.value)
    assert "NOT READY (--strict: warnings count)" in strict.format_text()


def test_text_output_one_line_per_check_then_the_verdict():
    r = run(no_nvml(), workers=2)
    lines = r.format_text().splitlines()
    assert lines[0] == "gpudiag preflight: 2 workers, processes, CUDA device 0"
    assert len([ln for ln in lines if ln.startswith("  ") and not ln.startswith("  - ")]) == len(r.checks)
    verdict = next(i for i, ln in enumerate(lines) if ln.startswith("NOT READY"))
    assert lines[verdict + 1].startswith("  - nvml: NVIDIA driver/NVML not reachable")


def test_to_dict_is_the_json_contract():
    d = run(make_facts(), workers=3, strategy="threads").to_dict()
    assert set(d) >= {"ready", "checks", "workers", "strategy", "per_worker", "duration_s"}
    assert d["workers"] == 3 and d["strategy"] == "threads" and d["ready"] is True
    assert set(d["per_worker"]) >= {"host_bytes", "device_bytes", "source"}
    for c in d["checks"]:
        assert set(c) == {"name", "status", "message", "evidence"}


# ----------------------------------------------------------------------------- gathering, API

class FakeNvml:
    """Stands in for the Nvml wrapper: the driver_collect seam reads nothing from it here."""


def session_ok():
    @contextlib.contextmanager
    def session():
        yield FakeNvml()
    return session


def session_unavailable(reason):
    from gpudiag.backends.nvml import NvmlUnavailable

    @contextlib.contextmanager
    def session():
        raise NvmlUnavailable(reason)
        yield  # pragma: no cover
    return session


def driver_data():
    d = copy.deepcopy(make_facts()["driver"])
    d["gpus"][0]["processes"]["graphics"] = [proc(2825, "Xorg", 390 * MiB)]
    return d


def memory_facts():
    return copy.deepcopy(make_facts()["memory"])


def test_gather_facts_through_the_seams(tmp_path):
    seen = []

    def collect(n):
        seen.append(n)
        return driver_data()

    facts = facts_mod.gather_facts(preflight.Plan(checkpoint_dir=str(tmp_path)), environ={"CUDA_LAUNCH_BLOCKING": "1", "HOME": "x"},
                            nvml_session=session_ok(), driver_collect=collect, memory_facts=memory_facts,
                            search_dir=str(tmp_path))
    assert isinstance(seen[0], FakeNvml)
    assert facts["nvml"] == {"reachable": True, "reason": None}
    assert facts["env"] == {"CUDA_LAUNCH_BLOCKING": "1"}  # allowlisted names only
    assert facts["memory"] == memory_facts()
    assert facts["disk"]["free_bytes"] > 0 and facts["disk"]["writable"] is True
    assert facts["start_method"] in ("fork", "spawn", "forkserver")
    assert facts["saved_report"] is None


def test_gather_facts_records_nvml_unavailable_with_its_reason():
    facts = facts_mod.gather_facts(preflight.Plan(), environ={}, nvml_session=session_unavailable("no NVIDIA driver here"),
                            memory_facts=memory_facts, search_dir=None)
    assert facts["nvml"] == {"reachable": False, "reason": "no NVIDIA driver here"}
    assert facts["driver"] is None


def test_gather_facts_survives_a_failing_driver_collect():
    def collect(n):
        raise KeyError("boom")

    facts = facts_mod.gather_facts(preflight.Plan(), environ={}, nvml_session=session_ok(), driver_collect=collect,
                            memory_facts=memory_facts, search_dir=None)
    assert facts["nvml"]["reachable"] and facts["driver"] is None
    assert "KeyError" in facts["driver_reason"]
    r = run(facts)
    assert status(r, "nvml") == "pass" and "driver details unavailable" in r.check("nvml").message
    assert status(r, "vram") == "skip"


def test_unreadable_memory_facts_skip_the_ram_check_with_the_reason():
    def broken():
        raise OSError("no /sys")

    facts = facts_mod.gather_facts(preflight.Plan(), environ={}, nvml_session=session_unavailable("x"), memory_facts=broken,
                                   search_dir=None)
    assert facts["memory"] is None and facts["memory_reason"] == "OSError: no /sys"
    assert status(run(facts), "host_ram") == "skip" and "no /sys" in run(facts).check("host_ram").message


def _inject(monkeypatch, **seams):
    """Route gpudiag.preflight's fact gathering through test seams (the public API has no test hooks)."""
    real = facts_mod.gather_facts
    monkeypatch.setattr(facts_mod, "gather_facts", lambda plan, **kw: real(plan, **seams, **kw))


def test_preflight_api_end_to_end_through_the_seams(tmp_path, monkeypatch):
    write_report(tmp_path / "gpudiag-report-2026-03-01-bbbbbb.json", "2026-03-01T00:00:00Z",
                 host=1100 * MiB, device=290 * MiB)
    _inject(monkeypatch, environ={}, nvml_session=session_ok(), driver_collect=lambda n: driver_data(),
            memory_facts=memory_facts)
    r = gpudiag.preflight(workers=2, strategy="processes", vram_per_worker="800M", search_dir=str(tmp_path))
    assert isinstance(r, preflight.PreflightResult)
    assert r.per_worker["device_bytes"] == 800 * MiB and r.per_worker["device_source"] == "--vram-per-worker"
    assert r.per_worker["host_bytes"] == 1100 * MiB
    assert "gpudiag-report-2026-03-01-bbbbbb.json" in r.per_worker["host_source"]
    assert status(r, "gpu_processes") == "warn"
    # the real torch build is read from its files: a CPU build here fails torch_cuda, nothing else blocks
    assert {c.name for c in r.blocking()} <= {"torch_cuda"}
    assert r.duration_s >= 0


def test_preflight_api_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="workers must be"):
        gpudiag.preflight(workers=0)
    with pytest.raises(ValueError, match="strategy must be one of threads, processes"):
        gpudiag.preflight(strategy="fibers")
    with pytest.raises(ValueError, match="cannot read size '12Q'"):
        gpudiag.preflight(ram_per_worker="12Q")
    with pytest.raises(ValueError, match="min_free_disk needs checkpoint_dir"):
        gpudiag.preflight(min_free_disk="1G")
    with pytest.raises(ValueError, match="no such folder"):
        gpudiag.preflight(checkpoint_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="device must be"):
        gpudiag.preflight(device=-1)


def test_start_method_is_read_without_being_fixed():
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    method, _ = facts_mod._start_method()
    assert method in multiprocessing.get_all_start_methods()
    assert multiprocessing.get_start_method(allow_none=True) == before


def test_display_path_hides_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    home = os.path.expanduser("~")
    assert model.display_path(os.path.join(tmp_path, "a.json")) == "a.json"
    if os.path.isdir(home) and not str(tmp_path).startswith(home):
        assert model.display_path(os.path.join(home, "runs")) == os.path.join("~", "runs")


# ----------------------------------------------------------------------------- with the real driver probe

def _through_driver_probe(tmp_path, fake, host="linux", reg=None, **kwargs):
    from gpudiag.backends import nvml
    from gpudiag.probes import driver

    with pytest.MonkeyPatch.context() as mp:
        _inject(mp, environ=kwargs.pop("environ", {}), nvml_session=lambda: nvml.session(fake),
                driver_collect=lambda n: driver.collect(n, root=str(tmp_path), reg=reg, host=host, procs={}),
                memory_facts=memory_facts)
        return gpudiag.preflight(search_dir=None, **kwargs)


def _fakes():
    from tests import fakes

    return fakes


def test_recorded_linux_desktop_through_the_driver_probe(tmp_path):
    f = _fakes()
    r = _through_driver_probe(tmp_path, f.FakeNvml.gtx1650_desktop(), workers=2)
    c = r.check("gpu_processes")
    assert c.status == "warn" and "Xorg" in c.message and "code (VS Code)" in c.message
    assert status(r, "nvml") == "pass" and status(r, "gpu_visible") == "pass"
    assert status(r, "pcie_link") == "warn" and "x8 of x16" in r.check("pcie_link").message
    assert status(r, "persistence_mode") == "warn"


def test_recorded_throttled_gpu_through_the_driver_probe(tmp_path):
    f = _fakes()
    r = _through_driver_probe(tmp_path, f.FakeNvml.gtx1650_desktop(throttle_reasons=["sw_thermal_slowdown"]))
    assert status(r, "clocks") == "warn" and "sw_thermal_slowdown" in r.check("clocks").message


@pytest.mark.parametrize("values, words", [
    ({"HwSchMode": 2}, "scheduling on"), ({"HwSchMode": 1}, "scheduling off"), ({}, "HwSchMode not set")])
def test_recorded_windows_machine_through_the_driver_probe(tmp_path, values, words):
    f = _fakes()
    r = _through_driver_probe(tmp_path, f.FakeNvml.windows_wddm(), host="windows", reg=f.FakeWinreg(values))
    assert words in r.check("windows_hags").message
    assert status(r, "windows_tdr") == "warn" and "TdrDelay 2 s (the default)" in r.check("windows_tdr").message
    assert "graphics:" in r.check("gpu_processes").message


def test_recorded_missing_driver_through_the_nvml_seam(tmp_path):
    f = _fakes()
    r = _through_driver_probe(tmp_path, f.FakeNvml.no_driver())
    assert status(r, "nvml") == "fail" and "NVML library" in r.check("nvml").message and not r.ready
