"""The `driver` probe through fakes built from real captures (Linux, Windows/WDDM, WSL2, no driver)."""

import json
import os

import pytest

from gpudiag import runner
from gpudiag.backends import nvml
from gpudiag.backends.nvml import NA
from gpudiag.capabilities import Capability
from gpudiag.probes import driver
from gpudiag.probes.base import ProbeContext, ProbeSkip
from tests.fakes import (
    NOT_SUPPORTED,
    FakeNvml,
    FakeProcess,
    FakeWinreg,
    MiB,
    NVMLError_GpuIsLost,
    capture_sections,
    parse_smi_table_processes,
    read_data,
)

NVRM = capture_sections(read_data("driver_proc_nvidia_version.txt"))


def collect(fake, host, root="/nonexistent-gpudiag-root", reg=None, procs=None):
    with nvml.session(fake) as n:
        return driver.collect(n, root=root, reg=reg, host=host, procs=procs if procs is not None else {})


def codes(findings):
    return [f["code"] for f in findings]


def by_code(findings, code):
    hits = [f for f in findings if f["code"] == code]
    assert len(hits) == 1, codes(findings)
    return hits[0]


def proc_root(tmp_path, section):
    path = tmp_path / "proc/driver/nvidia/version"
    path.parent.mkdir(parents=True)
    path.write_text(NVRM[section])
    return str(tmp_path)


# ------------------------------------------------------------------ Linux desktop laptop (GTX 1650)

def test_linux_gtx1650_desktop_values_come_from_the_capture(tmp_path):
    data = collect(FakeNvml.gtx1650_desktop(), "linux", root=proc_root(tmp_path, "B"))
    assert data["host"] == "linux"
    assert (data["driver_version"], data["cuda_driver_version"]) == ("575.57.08", "12.9")
    assert data["kernel_module"] == {"flavour": "open", "version": "565.57.01",
                                     "source": "/proc/driver/nvidia/version"}
    assert data["mps_daemon_running"] is False and data["windows"] is None
    g = data["gpus"][0]
    assert g["name"] == "NVIDIA GeForce GTX 1650"
    assert g["memory_total_bytes"] == 4096 * MiB and g["memory_free_bytes"] == 3713 * MiB
    assert g["memory_used_bytes"] == (4096 - 3713) * MiB  # NVML v1 "used" includes the reserved part
    assert g["driver_model"]["current"] is None and "Windows" in g["driver_model"]["reason"]
    assert g["persistence_mode"] is False and g["compute_mode"] == "Default"
    assert g["display_active"] is False
    assert g["pcie"] == {"gen_current": 1, "gen_max_system": 3, "gen_max_card": 3,
                         "width_current": 8, "width_max": 16}
    assert g["clock_event_reasons"] == {"raw": 1, "active": ["gpu_idle"], "throttling": []}
    assert (g["temperature_c"], g["power_draw_w"], g["power_limit_w"]) == (39, 2.66, 50.0)
    assert g["utilization_gpu_percent"] == 0
    graphics = g["processes"]["graphics"]
    assert [(p["pid"], p["name"], p["category"]) for p in graphics] == [
        (2023, "gnome-shell", "display"), (2825, "Xorg", "display"),
        (4064, "code", "app"), (1417650, "firefox", "app")]
    assert graphics[0]["used_memory_bytes"] == 1 * MiB
    assert g["processes"]["compute"] == []


def test_not_supported_values_are_na_not_failures():
    g = collect(FakeNvml.gtx1650_desktop(), "linux")["gpus"][0]
    assert g["mig_mode"] == {"current": NA, "pending": NA}  # "N/A" on GeForce
    assert g["display_attached"] == NA  # "Requested functionality has been deprecated"
    assert g["ecc"]["enabled"] == NA and g["ecc"]["volatile_uncorrected"] == NA
    assert g["ecc"]["remapped_rows"] == NA and g["ecc"]["retired_pages_pending"] == NA
    w = collect(FakeNvml.windows_wddm(), "windows", reg=FakeWinreg())["gpus"][0]
    assert w["persistence_mode"] == NA  # Linux-only NVML call
    assert w["pcie"]["gen_max_card"] == NA  # driver 462.31 predates the call


def test_linux_desktop_findings_explain_the_dead_gpu_while_vs_code_runs(tmp_path):
    data = collect(FakeNvml.gtx1650_desktop(), "linux", root=proc_root(tmp_path, "C"))
    assert data["kernel_module"]["flavour"] == "proprietary"
    found = driver.analyze(data, own_pids=())
    assert codes(found) == ["GPU_SHARED_WITH_DISPLAY", "GPU_SHARED_WITH_APP", "PCIE_LINK_BELOW_MAX",
                            "PERSISTENCE_MODE_OFF"]
    app = by_code(found, "GPU_SHARED_WITH_APP")
    assert app["severity"] == "warning" and "VS Code" in app["message"] and "Firefox" in app["message"]
    assert {p["name"] for p in app["evidence"]["processes"]} == {"code", "firefox"}
    disp = by_code(found, "GPU_SHARED_WITH_DISPLAY")
    assert {p["name"] for p in disp["evidence"]["processes"]} == {"Xorg", "gnome-shell"}
    link = by_code(found, "PCIE_LINK_BELOW_MAX")
    assert link["severity"] == "info" and "confirmed under load" in link["message"]
    assert "Gen1 of Gen3" in link["message"] and "x8 of x16" in link["message"]
    assert by_code(found, "PERSISTENCE_MODE_OFF")["severity"] == "info"


def test_every_finding_is_well_formed():
    for fake, host in ((FakeNvml.gtx1650_desktop(), "linux"), (FakeNvml.windows_wddm(), "windows"),
                       (FakeNvml.wsl2(), "wsl2"), (FakeNvml.h100(), "linux")):
        data = collect(fake, host, reg=FakeWinreg() if host == "windows" else None)
        for f in driver.analyze(data, own_pids=()):
            assert f["code"].isupper() and f["severity"] in ("info", "warning", "critical")
            assert f["message"] and f["evidence"] is not None
            json.dumps(f)


# ------------------------------------------------------------------ H100 datacenter node

def test_h100_persistence_on_mig_off_ecc_clean_gives_no_findings(tmp_path):
    data = collect(FakeNvml.h100(), "linux", root=proc_root(tmp_path, "A"))
    g = data["gpus"][0]
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["memory_total_bytes"] == 81559 * MiB
    assert g["persistence_mode"] is True
    assert g["mig_mode"] == {"current": False, "pending": False}
    assert g["pcie"]["gen_current"] == 5 and g["pcie"]["width_current"] == 16
    assert g["ecc"]["enabled"] is True and g["ecc"]["aggregate_uncorrected"] == 0
    assert g["ecc"]["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False}
    assert (g["power_draw_w"], g["power_limit_w"]) == (72.02, 700.0)
    assert driver.analyze(data, own_pids=()) == []


def test_h100_ecc_errors_row_remap_and_mig():
    data = collect(FakeNvml.h100(ecc_errors={"volatile_uncorrected": 2, "volatile_corrected": 5,
                                             "aggregate_uncorrected": 3, "aggregate_corrected": 9},
                                 remapped_rows=(0, 1, 1, 0), mig_mode=(1, 1)), "linux")
    found = driver.analyze(data, own_pids=())
    ecc = by_code(found, "ECC_ERRORS")
    assert ecc["severity"] == "critical" and ecc["evidence"]["ecc"]["volatile_uncorrected"] == 2
    assert by_code(found, "GPU_RESET_PENDING")["severity"] == "warning"
    assert by_code(found, "MIG_ENABLED")["severity"] == "info"


def test_remap_failure_alone_is_critical():
    found = driver.analyze(collect(FakeNvml.h100(remapped_rows=(0, 0, 0, 1)), "linux"), own_pids=())
    assert codes(found) == ["ECC_ERRORS"]


# ------------------------------------------------------------------ throttling, link, modes

@pytest.mark.parametrize("reasons,expected", [
    (["sw_thermal_slowdown"], ["sw_thermal_slowdown"]),
    (["hw_slowdown", "hw_thermal_slowdown"], ["hw_slowdown", "hw_thermal_slowdown"]),
    (["sw_power_cap"], ["sw_power_cap"]),
    (["hw_power_brake_slowdown"], ["hw_power_brake_slowdown"]),
    (["gpu_idle"], []),
    (["applications_clocks_setting"], []),
    (["gpu_idle", "display_clock_setting", "sync_boost"], []),
])
def test_clocks_throttled_only_for_heat_and_power(reasons, expected):
    data = collect(FakeNvml.h100(throttle_reasons=reasons, temperature_c=88), "linux")
    assert data["gpus"][0]["clock_event_reasons"]["throttling"] == expected
    found = driver.analyze(data, own_pids=())
    if expected:
        f = by_code(found, "CLOCKS_THROTTLED")
        assert f["severity"] == "warning" and f["evidence"]["reasons"] == expected
        assert f["evidence"]["temperature_c"] == 88
    else:
        assert "CLOCKS_THROTTLED" not in codes(found)


def test_throttle_reasons_not_supported_is_na():
    g = collect(FakeNvml.h100(throttle_reasons=NOT_SUPPORTED), "linux")["gpus"][0]
    assert g["clock_event_reasons"] == {"raw": NA, "active": NA, "throttling": NA}


def test_pcie_link_at_max_no_finding_and_under_load_a_warning():
    full = collect(FakeNvml.gtx1650_desktop(pcie_gen_current=3, pcie_width_current=16), "linux")
    assert "PCIE_LINK_BELOW_MAX" not in codes(driver.analyze(full, own_pids=()))
    busy = collect(FakeNvml.gtx1650_desktop(utilization_gpu=97), "linux")
    f = by_code(driver.analyze(busy, own_pids=()), "PCIE_LINK_BELOW_MAX")
    assert f["severity"] == "warning" and "97% busy" in f["message"] and f["fix"]


def test_slot_below_the_cards_generation():
    data = collect(FakeNvml.h100(pcie_gen_max=4, pcie_gen_current=4), "linux")
    f = by_code(driver.analyze(data, own_pids=()), "PCIE_SLOT_LIMITS_CARD")
    assert f["evidence"] == {"gpu": 0, "gen_max_card": 5, "gen_max_system": 4}


@pytest.mark.parametrize("mode,name,severity", [(3, "Exclusive_Process", "warning"), (2, "Prohibited", "critical")])
def test_restricted_compute_modes(mode, name, severity):
    data = collect(FakeNvml.h100(compute_mode=mode), "linux")
    assert data["gpus"][0]["compute_mode"] == name
    assert by_code(driver.analyze(data, own_pids=()), "COMPUTE_MODE_RESTRICTED")["severity"] == severity


def test_persistence_finding_is_linux_only():
    data = collect(FakeNvml.h100(persistence_mode=0), "linux")
    assert "PERSISTENCE_MODE_OFF" in codes(driver.analyze(data, own_pids=()))
    wsl = collect(FakeNvml.wsl2(persistence_mode=0), "wsl2")
    assert "PERSISTENCE_MODE_OFF" not in codes(driver.analyze(wsl, own_pids=()))


# ------------------------------------------------------------------ other processes

def test_other_compute_processes_and_own_pid_excluded():
    procs = [FakeProcess(4242, "/usr/bin/python3", "C", 1200 * MiB), FakeProcess(os.getpid(), "python", "C", 300 * MiB)]
    data = collect(FakeNvml.h100(processes=procs), "linux")
    f = by_code(driver.analyze(data), "OTHER_COMPUTE_PROCESSES")  # default own pids: this process
    assert f["severity"] == "warning"
    assert f["evidence"]["processes"] == [{"pid": 4242, "name": "python3", "used_memory_bytes": 1200 * MiB}]
    assert "(1.2 GiB)" in f["message"]
    assert "OTHER_COMPUTE_PROCESSES" not in codes(driver.analyze(data, own_pids=[4242, os.getpid()]))


def test_linux_c_plus_g_process_counts_as_compute():
    table = capture_sections(read_data("driver_smi_table_linux_desktop.txt"))["A"]
    py = [p for p in parse_smi_table_processes(table) if p.name == "python3"]
    assert py and py[0].kind == "C+G" and py[0].used_memory_bytes == 24 * MiB
    data = collect(FakeNvml.gtx1650_desktop(processes=py), "linux")
    found = driver.analyze(data, own_pids=())
    assert "OTHER_COMPUTE_PROCESSES" in codes(found) and "GPU_SHARED_WITH_APP" not in codes(found)


def test_mps_daemon_from_the_process_snapshot():
    data = collect(FakeNvml.h100(), "linux", procs={77: "nvidia-cuda-mps-control", 78: "bash"})
    assert data["mps_daemon_running"] is True
    assert by_code(driver.analyze(data, own_pids=()), "MPS_ACTIVE")["severity"] == "info"


def test_names_nvml_cannot_give_come_from_the_snapshot():
    data = collect(FakeNvml.windows_wddm(), "windows", reg=FakeWinreg(), procs={924: "dwm.exe"})
    row = next(p for p in data["gpus"][0]["processes"]["graphics"] if p["pid"] == 924)
    assert (row["name"], row["category"]) == ("dwm.exe", "display")


def test_no_gpu_visible():
    fake = FakeNvml.h100()
    fake.gpus.clear()
    data = collect(fake, "linux")
    assert data["gpus"] == [] and data["gpu_count"] == 0
    assert codes(driver.analyze(data, own_pids=())) == ["NO_GPU_VISIBLE"]


def test_two_gpus_are_both_reported():
    fake = FakeNvml.h100()
    fake.gpus.append(FakeNvml.gtx1650_desktop().gpus[0])
    data = collect(fake, "linux")
    assert [g["index"] for g in data["gpus"]] == [0, 1]
    assert data["gpus"][1]["name"] == "NVIDIA GeForce GTX 1650"


# ------------------------------------------------------------------ Windows / WDDM

def test_windows_wddm_data_and_findings():
    reg = FakeWinreg.from_reg_query(capture_sections(read_data("driver_reg_query_graphicsdrivers.txt"))["B"])
    data = collect(FakeNvml.windows_wddm(), "windows", reg=reg)
    assert data["kernel_module"] is None and data["mps_daemon_running"] is None
    assert data["windows"]["hags"] == {"raw": 2, "enabled": True}
    assert data["windows"]["tdr"]["delay_s"] == 2 and "delay_s" in data["windows"]["tdr"]["defaults"]
    g = data["gpus"][0]
    assert g["name"] == "GeForce GTX 1660 SUPER"
    assert g["driver_model"] == {"current": "WDDM", "pending": "WDDM"}
    assert g["display_active"] is True
    assert (data["driver_version"], data["cuda_driver_version"]) == ("462.31", "11.2")
    names = {p["name"] for p in g["processes"]["graphics"]}
    assert names == {None, "explorer.exe", "SearchHost.exe", "chrome.exe", "Code.exe"}
    assert all(p["used_memory_bytes"] is None for p in g["processes"]["compute"])  # WDDM: not attributable
    found = driver.analyze(data, own_pids=())
    assert codes(found) == ["GPU_SHARED_WITH_DISPLAY", "GPU_SHARED_WITH_APP", "PCIE_LINK_BELOW_MAX",
                            "DRIVER_MODEL_WDDM", "HAGS_ENABLED", "TDR_DELAY_SHORT"]
    app = by_code(found, "GPU_SHARED_WITH_APP")
    assert "VS Code" in app["message"] and "Chrome" in app["message"] and "pid 924" in app["message"]
    assert "WDDM" in by_code(found, "GPU_SHARED_WITH_DISPLAY")["fix"]
    tdr = by_code(found, "TDR_DELAY_SHORT")
    assert tdr["severity"] == "warning" and "the default" in tdr["message"]
    assert tdr["evidence"]["display_gpus"] == [0]


def test_windows_long_tdr_delay_and_tdr_off():
    data = collect(FakeNvml.windows_wddm(), "windows", reg=FakeWinreg({"TdrDelay": 60, "TdrLevel": 0}))
    found = codes(driver.analyze(data, own_pids=()))
    assert "TDR_DELAY_SHORT" not in found and "TDR_DISABLED" in found and "HAGS_ENABLED" not in found


def test_tdr_short_is_info_without_a_display():
    data = collect(FakeNvml.windows_wddm(display_active=0), "windows", reg=FakeWinreg({"TdrDelay": 2}))
    f = by_code(driver.analyze(data, own_pids=()), "TDR_DELAY_SHORT")
    assert f["severity"] == "info" and "the default" not in f["message"]


def test_windows_tcc_and_pending_change():
    data = collect(FakeNvml.windows_wddm(driver_model=(1, 2), display_active=0, processes=[]), "windows",
                   reg=FakeWinreg({"TdrDelay": 10}))
    g = data["gpus"][0]
    assert g["driver_model"] == {"current": "TCC", "pending": "MCDM"}
    found = codes(driver.analyze(data, own_pids=()))
    assert "DRIVER_MODEL_WDDM" not in found and "DRIVER_MODEL_CHANGE_PENDING" in found
    assert "TDR_DELAY_SHORT" not in found  # TDR applies to WDDM GPUs


# ------------------------------------------------------------------ WSL2

def test_wsl2_paravirtualized():
    data = collect(FakeNvml.wsl2(), "wsl2")
    assert data["kernel_module"]["flavour"] is None and "WSL2" in data["kernel_module"]["reason"]
    assert data["windows"] is None and data["mps_daemon_running"] is None
    g = data["gpus"][0]
    assert g["name"] == "NVIDIA GeForce RTX 4070 Laptop GPU"
    assert g["driver_model"]["current"] == "WDDM" and g["persistence_mode"] is True
    assert g["pcie"]["width_current"] == 8 and g["power_limit_w"] == 61.24
    assert data["driver_version"] == "566.36"  # the Windows driver's version
    found = driver.analyze(data, own_pids=())
    assert codes(found) == ["WSL2_GPU_PARAVIRTUALIZED"]
    assert found[0]["evidence"]["driver_model"] == ["WDDM"]


# ------------------------------------------------------------------ privacy

@pytest.mark.parametrize("factory,host", [(FakeNvml.gtx1650_desktop, "linux"), (FakeNvml.h100, "linux"),
                                          (FakeNvml.windows_wddm, "windows"), (FakeNvml.wsl2, "wsl2")])
def test_no_uuid_serial_paths_or_command_lines_in_the_data(factory, host):
    fake = factory()
    uuid, serial = fake.gpus[0].uuid, fake.gpus[0].serial
    assert uuid.startswith("GPU-")
    data = collect(fake, host, reg=FakeWinreg() if host == "windows" else None)
    found = driver.analyze(data, own_pids=())
    text = json.dumps({"data": data, "findings": found})
    assert uuid not in text and uuid[4:] not in text
    if serial is not NOT_SUPPORTED:
        assert serial not in text
    assert "uuid" not in text.lower() and "serial" not in text.lower()
    assert "nvmlDeviceGetUUID" not in fake.calls and "nvmlDeviceGetSerial" not in fake.calls
    for g in data["gpus"]:
        for rows in g["processes"].values():
            for p in rows:
                assert p["name"] is None or ("/" not in p["name"] and "\\" not in p["name"] and " " not in p["name"])


def test_h100_capture_has_a_serial_that_stays_out():
    fake = FakeNvml.h100()
    assert fake.gpus[0].serial == "1654123038646"
    assert "1654123038646" not in json.dumps(collect(fake, "linux"))


# ------------------------------------------------------------------ run(): skip, and the real probe

def test_run_with_a_fake_library_returns_data_and_findings():
    out = driver.run(ProbeContext(results={"system": {"os": {"name": "Linux", "wsl": 2}}}),
                     lib=FakeNvml.wsl2())
    assert out.data["host"] == "wsl2" and codes(out.findings) == ["WSL2_GPU_PARAVIRTUALIZED"]


def test_run_without_driver_is_a_skip_naming_the_library():
    with pytest.raises(ProbeSkip, match=r"NVML library \(libnvidia-ml.so.1 / nvml.dll\) not found"):
        driver.run(ProbeContext(), lib=FakeNvml.no_driver())
    with pytest.raises(ProbeSkip, match="kernel driver is not loaded"):
        driver.run(ProbeContext(), lib=FakeNvml.no_driver("DriverNotLoaded"))


def test_probe_definition():
    p = driver.PROBE
    assert (p.name, p.needs, p.isolate, p.timeout_s) == ("driver", ("nvml",), True, 30)


def _has_nvml():
    from gpudiag.platform import libraries

    return libraries.nvml_library() is not None


@pytest.mark.skipif(_has_nvml(), reason="this machine has an NVIDIA driver")
def test_real_probe_on_this_gpu_less_machine_is_skipped_naming_nvml():
    res = runner.run_probe(driver.PROBE, ProbeContext(timeout_s=30))
    assert res["status"] == "skipped" and "NVML library" in res["reason"], res


@pytest.mark.skipif(_has_nvml(), reason="this machine has an NVIDIA driver")
def test_real_probe_in_its_child_skips_when_nvml_cannot_init():
    # Capabilities say yes (pynvml is installed), so the isolated child runs and nvmlInit fails.
    caps = {"nvml": Capability(True, "")}
    res = runner.run_probe(driver.PROBE, ProbeContext(timeout_s=30), caps)
    assert res["status"] == "skipped", res
    assert "NVML library (libnvidia-ml.so.1 / nvml.dll) not found" in res["reason"]


def test_snapshot_opens_and_closes_nvml():
    fake = FakeNvml.h100()
    data = driver.snapshot(fake, host="linux", procs={})
    assert data["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"
    with pytest.raises(nvml.NvmlUnavailable, match="NVML library"):
        driver.snapshot(FakeNvml.no_driver())


def test_one_unreadable_gpu_does_not_hide_the_others():
    class Lib(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            if index == 0:
                raise NVMLError_GpuIsLost()
            return super().nvmlDeviceGetHandleByIndex(index)

    fake = Lib.from_smi_q(read_data("driver_smi_q_linux_h100sxm_545.23.08.txt"))
    fake.gpus.append(FakeNvml.wsl2().gpus[0])
    data = collect(fake, "linux")
    assert data["gpus"][0] == {"index": 0, "error": "NVMLError_GpuIsLost: GPU is lost"}
    assert data["gpus"][1]["name"] == "NVIDIA GeForce RTX 4070 Laptop GPU"
    assert codes(driver.analyze(data, own_pids=()))[0] == "GPU_UNREADABLE"


@pytest.mark.gpu
@pytest.mark.skipif(not _has_nvml(), reason="needs an NVIDIA driver (NVML library)")
def test_real_driver_probe_on_a_gpu_machine():
    import re

    res = runner.run_probe(driver.PROBE, ProbeContext(timeout_s=30))
    assert res["status"] == "ok", res
    data = res["data"]
    assert data["gpu_count"] >= 1 and isinstance(data["driver_version"], str)
    assert re.match(r"^\d+\.\d+$", data["cuda_driver_version"])
    for g in data["gpus"]:
        assert isinstance(g["name"], str) and g["name"]
        assert isinstance(g["memory_total_bytes"], int) and g["memory_total_bytes"] > 0
        assert g["clock_event_reasons"]["raw"] == NA or isinstance(g["clock_event_reasons"]["raw"], int)
        for rows in g["processes"].values():
            assert rows == NA or all(set(r) == {"pid", "name", "used_memory_bytes", "category", "label"}
                                     for r in rows)
    text = json.dumps(res)
    assert not re.search(r"(?i)\bGPU-[0-9a-f]{8}-", text), "a GPU UUID leaked into the driver data"
