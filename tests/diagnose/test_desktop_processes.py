"""The desktop itself is never an app to close, and a process NVML lists as compute and graphics (every
desktop program under WDDM) appears once: on recorded Windows and Linux process lists, through the real
driver probe (FakeNvml) into the real recommendation rules."""

from gpudiag.backends.nvml import Nvml
from gpudiag.diagnose.recommend import recommend
from gpudiag.diagnose.verdicts.gpu_sharing import gpu_processes
from gpudiag.probes import driver
from gpudiag.report import contract as report_mod
from gpudiag.runner import result
from tests.fakes import FakeNvml, FakeProcess, capture_sections, parse_smi_table_processes, read_data

WINDOWS = capture_sections(read_data("driver_smi_table_windows_wddm.txt"))
LINUX = capture_sections(read_data("driver_smi_table_linux_desktop.txt"))
# On the GPU loop these recommendations are for (a GPU strategy: GPU advice applies)
GPU_CYCLE = {"workload": {"device": "cuda:0", "logical_cores": 8},
             "strategies": [{"name": "serial", "status": "ok", "workers": 1, "cycles_per_s": 40.0},
                            {"name": "batched", "status": "ok", "workers": 8, "cycles_per_s": 80.0,
                             "speedup_vs_serial": 2.0, "speedup_ci95": [1.9, 2.1]}],
             "load": {"other_busy_cores": 0.0, "usable_cores": 8, "widest_workers": 1}}


def _report(fake, host):
    fake.nvmlInit()
    data = driver.collect(Nvml(fake), host=host, procs={})
    probes = {"driver": result("ok", data=data, findings=driver.analyze(data)),
              "cycle": result("ok", data=GPU_CYCLE)}
    return report_mod.build_report(probes, "quick", created_at="2026-11-28T00:00:00Z")


def _close_change(rec):
    return next((c for c in rec["environment_changes"] if c["code"] == "CLOSE_GPU_APPS"), None)


def _gpu_shared(rec):
    return next(v for v in rec["verdicts"] if v["cause"] == "gpu_shared")


def test_windows_wddm_every_desktop_program_is_c_and_g_and_only_apps_are_named():
    # nvidia-smi on Windows (capture B): shell components, Chrome, VS Code, Settings, Calculator, all C+G.
    procs = parse_smi_table_processes(WINDOWS["B"]) + parse_smi_table_processes(WINDOWS["D"])
    assert all(p.kind == "C+G" for p in procs)
    rep = _report(FakeNvml.windows_wddm(processes=procs), "windows")
    rec = recommend(rep)
    change = _close_change(rec)["change"]
    for app in ("chrome.exe", "Code.exe", "SystemSettings.exe", "CalculatorApp.exe"):
        assert app in change, (app, change)
    for desktop in ("dwm.exe", "explorer.exe", "StartMenuExperienceHost.exe", "TextInputHost.exe",
                    "SearchApp.exe", "SearchUI.exe", "ShellExperienceHost.exe", "LogonUI.exe"):
        assert desktop not in change, (desktop, change)
    shared = _gpu_shared(rec)
    names = shared["figures"]["processes"]
    assert len(names) == len({p.pid for p in procs})  # each process once, though listed as C and as G
    assert shared["summary"].count("chrome.exe") == 1 and "compute+graphics" in shared["summary"]
    assert "the desktop itself: " in shared["summary"] and "dwm.exe" in shared["summary"].split("the desktop itself")[1]


def test_windows_shell_only_is_not_advice_to_close_anything():
    procs = parse_smi_table_processes(WINDOWS["A"])  # ShellHost.exe and explorer.exe only
    rec = recommend(_report(FakeNvml.windows_wddm(processes=procs), "windows"))
    assert _close_change(rec) is None
    assert "Only the desktop itself draws on it" in _gpu_shared(rec)["summary"]


def test_linux_desktop_session_services_stay_and_apps_and_jobs_are_named():
    procs = parse_smi_table_processes(LINUX["A"])
    rec = recommend(_report(FakeNvml.gtx1650_desktop(processes=procs), "linux"))
    change = _close_change(rec)["change"]
    for app in ("code", "firefox", "nautilus", "gnome-clocks", "python3"):
        assert app in change, (app, change)
    for desktop in ("Xorg", "gnome-shell", "xdg-desktop-portal-gnome", "snapd-desktop-integration"):
        assert desktop not in change, (desktop, change)
    assert change.count("python3") == 1  # C+G: one process, one mention


def test_compositors_beyond_the_big_desktops_are_the_desktop_too():
    procs = [FakeProcess(10 + i, name, "G", 40 * 2**20)
             for i, name in enumerate(("cosmic-comp", "picom", "gamescope", "Hyprland", "sway", "kwin_wayland"))]
    procs.append(FakeProcess(99, "obs", "G", 80 * 2**20))
    rec = recommend(_report(FakeNvml.gtx1650_desktop(processes=procs), "linux"))
    change = _close_change(rec)["change"]
    assert "obs" in change
    for comp in ("cosmic-comp", "picom", "gamescope", "Hyprland", "sway", "kwin_wayland"):
        assert comp not in change


def test_the_driver_probes_own_category_decides_over_the_name():
    rep = {"probes": {"driver": {"status": "ok", "data": {"gpus": [{"index": 0, "processes": {
        "graphics": [{"pid": 5, "name": "mycompositor", "category": "display"},
                     {"pid": 6, "name": "Xorg", "category": "app"}],
        "compute": [{"pid": 5, "name": "mycompositor", "category": "display"}]}}]}}}}
    procs, sources = gpu_processes(rep)
    assert [(p["name"], p["kind"], p["desktop"]) for p in procs] == [
        ("mycompositor", "compute+graphics", True), ("Xorg", "graphics", False)]
    assert len(sources) == 2


def test_gpu_advice_is_left_out_when_the_recommended_loop_ran_on_the_cpu():
    fake = FakeNvml.gtx1650_desktop(throttle_reasons=["sw_thermal_slowdown"],
                                    processes=parse_smi_table_processes(LINUX["A"]))
    fake.nvmlInit()
    data = driver.collect(Nvml(fake), host="linux", procs={})
    cpu_cycle = dict(GPU_CYCLE, workload={"device": "cpu", "logical_cores": 8})
    probes = {"driver": result("ok", data=data, findings=driver.analyze(data)), "cycle": result("ok", data=cpu_cycle)}
    rec = recommend(report_mod.build_report(probes, "quick", created_at="2026-11-28T00:00:00Z"))
    assert rec["device"] == "cpu" and rec["environment_changes"] == []
