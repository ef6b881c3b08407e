"""NVIDIA OS facts: /proc and /sys text, WSL detection, process names, the Windows registry seam."""

import os
import sys

import pytest

from gpudiag.platform import nvidia
from tests.fakes import FakeWinreg, capture_sections, go_string_literals, read_data

NVRM = capture_sections(read_data("driver_proc_nvidia_version.txt"))
REG = read_data("driver_reg_query_graphicsdrivers.txt")
REG_SECTIONS = capture_sections(REG)
REG_GO = go_string_literals(REG_SECTIONS["A"])


def _tree(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


# ------------------------------------------------------------------ kernel module

@pytest.mark.parametrize("section,flavour,version", [
    ("A", "open", "525.60.11"),  # Arch nvidia-open-dkms, trailing spaces
    ("B", "open", "565.57.01"),  # Ubuntu 24.04 nvidia-driver-565-open
    ("C", "proprietary", "515.76"),
])
def test_parse_nvrm_version_from_captures(section, flavour, version):
    assert nvidia.parse_nvrm_version(NVRM[section]) == {"flavour": flavour, "version": version}


def test_parse_nvrm_version_readme_lines_without_version():
    lines = [ln.split(":", 1)[1].strip() for ln in NVRM["D"].splitlines() if ln.startswith("# ")]
    proprietary, open_ = lines
    assert nvidia.parse_nvrm_version(proprietary) == {"flavour": "proprietary", "version": None}
    assert nvidia.parse_nvrm_version(open_) == {"flavour": "open", "version": None}
    assert nvidia.parse_nvrm_version("") == {"flavour": None, "version": None}
    assert nvidia.parse_nvrm_version("NVRM version: something else 1.2.3") == {"flavour": None, "version": "1.2.3"}


@pytest.mark.parametrize("section,flavour,version", [("B", "open", "565.57.01"), ("C", "proprietary", "515.76")])
def test_kernel_module_reads_proc_in_a_fake_tree(tmp_path, section, flavour, version):
    root = _tree(tmp_path, {"proc/driver/nvidia/version": NVRM[section]})
    assert nvidia.kernel_module(root) == {"flavour": flavour, "version": version,
                                      "source": "/proc/driver/nvidia/version"}


@pytest.mark.parametrize("taint,flavour", [("POE\n", "proprietary"), ("OE\n", "open"), ("O\n", "open")])
def test_kernel_module_falls_back_to_sys_module(tmp_path, taint, flavour):
    root = _tree(tmp_path, {"sys/module/nvidia/version": "555.42.02\n", "sys/module/nvidia/taint": taint})
    assert nvidia.kernel_module(root) == {"flavour": flavour, "version": "555.42.02", "source": "/sys/module/nvidia"}


def test_kernel_module_sys_version_without_taint_says_why(tmp_path):
    root = _tree(tmp_path, {"sys/module/nvidia/version": "550.54.14\n"})
    km = nvidia.kernel_module(root)
    assert km["flavour"] is None and km["version"] == "550.54.14" and "taint" in km["reason"]


def test_kernel_module_absent(tmp_path):
    km = nvidia.kernel_module(str(tmp_path))
    assert km["flavour"] is None and km["source"] is None and "not loaded" in km["reason"]


def test_kernel_module_unrecognised_proc_text(tmp_path):
    root = _tree(tmp_path, {"proc/driver/nvidia/version": "garbage\n"})
    km = nvidia.kernel_module(root)
    assert km["flavour"] is None and "unrecognised" in km["reason"]


# ------------------------------------------------------------------ which stack serves the GPU

PROC_VERSION = read_data("driver_proc_version.txt").splitlines()


def _line(prefix):
    return next(ln for ln in PROC_VERSION if ln.startswith(prefix))


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gpu_host reads the Linux tree")


@linux_only
@pytest.mark.parametrize("proc_version,expected", [
    (_line("Linux version 6.6.87.2-microsoft-standard-WSL2"), "wsl2"),
    (_line("Linux version 4.19.128-microsoft-standard"), "wsl2"),  # old WSL2 kernel: no "WSL2" suffix
    (_line("Linux version 6.1.21.1-microsoft-standard-WSL2+"), "wsl2"),
    (_line("Linux version 4.4.0-19041-Microsoft"), "wsl1"),
    (_line("Linux version 6.16.8+kali-amd64"), "linux"),
    (_line("Linux version 5.15.0-113-generic"), "linux"),
])
def test_gpu_host_from_proc_version(tmp_path, proc_version, expected):
    assert nvidia.gpu_host(_tree(tmp_path, {"proc/version": proc_version})) == expected


@linux_only
def test_gpu_host_dev_dxg_means_wsl2_and_a_registry_means_windows(tmp_path):
    root = _tree(tmp_path, {"dev/dxg": ""})
    assert nvidia.gpu_host(root) == "wsl2"
    assert nvidia.gpu_host(str(tmp_path), reg=FakeWinreg()) == "windows"


# ------------------------------------------------------------------ process names

@pytest.mark.parametrize("raw,clean", [
    ("/usr/lib/xorg/Xorg", "Xorg"),
    ("/usr/share/code/code", "code"),
    ("...irefox/7477/usr/lib/firefox/firefox", "firefox"),  # nvidia-smi's truncation
    ("python3", "python3"),
    ("/opt/google/chrome/chrome --type=gpu-process --field-trial-handle=1,2", "chrome"),
    (r"C:\Windows\System32\dwm.exe", "dwm.exe"),
    (r"...Programs\Microsoft VS Code\Code.exe", "Code.exe"),
    (r"C:\Users\alice\AppData\Local\Programs\Microsoft VS Code\Code.exe --type=gpu-process", "Code.exe"),
    ("/home/alice/.venv/bin/python /home/alice/train.py --token=abc", "python"),
    ("", None),
    (None, None),
])
def test_clean_process_name_keeps_only_the_base_name(raw, clean):
    assert nvidia.clean_process_name(raw) == clean


@pytest.mark.parametrize("name,category", [
    ("Xorg", "display"), ("gnome-shell", "display"), ("kwin_wayland", "display"), ("dwm.exe", "display"),
    ("explorer.exe", "display"), ("SearchHost.exe", "display"),
    ("code", "app"), ("Code.exe", "app"), ("firefox", "app"), ("chrome.exe", "app"), ("msedge.exe", "app"),
    ("nvidia-cuda-mps-server", "mps"), ("python3", "other"), (None, "other"),
])
def test_classify_process(name, category):
    assert nvidia.classify_process(name)[0] == category


def test_mps_daemon_running_from_a_snapshot():
    assert nvidia.mps_daemon_running({10: "bash", 11: "nvidia-cuda-mps-control"}) is True
    assert nvidia.mps_daemon_running(["/usr/bin/nvidia-cuda-mps-server"]) is True
    assert nvidia.mps_daemon_running({10: "bash", 12: "python3"}) is False


@linux_only
def test_mps_daemon_running_live_gives_a_bool_on_linux():
    assert nvidia.mps_daemon_running() in (True, False)


def test_process_snapshot_has_this_process_by_name_only():
    snap = nvidia.process_snapshot()
    assert os.getpid() in snap
    assert all(isinstance(v, str) for v in snap.values())


# ------------------------------------------------------------------ Windows registry

def test_hags_from_captured_reg_query_crlf_outputs():
    on = nvidia.windows_graphics_settings(FakeWinreg.from_reg_query(REG_GO["hagsQueryOutput"]))
    off = nvidia.windows_graphics_settings(FakeWinreg.from_reg_query(REG_GO["hagsDisabledOutput"]))
    assert "\r\n" in REG_GO["hagsQueryOutput"]
    assert on["hags"] == {"raw": 2, "enabled": True}
    assert off["hags"] == {"raw": 1, "enabled": False}


def test_hags_from_verbatim_console_outputs():
    assert nvidia.windows_graphics_settings(FakeWinreg.from_reg_query(REG_SECTIONS["B"]))["hags"]["enabled"] is True
    assert nvidia.windows_graphics_settings(FakeWinreg.from_reg_query(REG_SECTIONS["C"]))["hags"]["enabled"] is False


def test_value_missing_means_os_default_with_a_note():
    for text in (REG_GO["regMissingOutput"], REG_GO["regMissingOutputDE"], REG_GO["hagsKeyListing"]):
        w = nvidia.windows_graphics_settings(FakeWinreg.from_reg_query(text))
        assert w["hags"]["raw"] is None and w["hags"]["enabled"] is None
        assert "default" in w["hags"]["reason"]
        assert w["tdr"] == {"level": 3, "delay_s": 2, "ddi_delay_s": 5, "level_name": "recover",
                            "defaults": ["level", "delay_s", "ddi_delay_s"]}


def test_access_denied_is_null_with_the_error():
    w = nvidia.windows_graphics_settings(FakeWinreg.from_reg_query(REG_GO["regDeniedOutput"]))
    assert w["hags"]["enabled"] is None and "PermissionError" in w["hags"]["reason"]
    assert w["tdr"]["delay_s"] is None and "PermissionError" in w["tdr"]["reason"]
    assert w["tdr"]["defaults"] == []


def test_tdr_delay_from_runbook_capture():
    line = next(ln for ln in REG_SECTIONS["D"].splitlines() if "TdrDelay    REG_DWORD" in ln)
    reg = FakeWinreg.from_reg_query("    " + line.lstrip("# "))
    w = nvidia.windows_graphics_settings(reg)
    assert w["tdr"]["delay_s"] == 60
    assert w["tdr"]["defaults"] == ["level", "ddi_delay_s"]
    assert reg.opened == [nvidia.GRAPHICS_DRIVERS_KEY] and reg.closed == 1


def test_tdr_level_off_and_unknown_hags_value():
    w = nvidia.windows_graphics_settings(FakeWinreg({"TdrLevel": 0, "HwSchMode": 7}))
    assert w["tdr"]["level"] == 0 and w["tdr"]["level_name"] == "off"
    assert w["hags"]["enabled"] is None and "unrecognised" in w["hags"]["reason"]


def test_missing_key_gives_reasons_not_an_exception():
    w = nvidia.windows_graphics_settings(FakeWinreg(key_missing=True))
    assert w["hags"]["enabled"] is None and "FileNotFoundError" in w["hags"]["reason"]
    assert w["tdr"]["delay_s"] is None


@pytest.mark.skipif(sys.platform == "win32", reason="there is a real registry on Windows")
def test_no_registry_off_windows():
    assert nvidia.windows_graphics_settings() is None


def test_the_driver_stack_named_by_the_system_probe_os_facts():
    from gpudiag.platform import gpu_driver

    assert gpu_driver.host_from_os_facts({"name": "Windows", "wsl": None}) == "windows"
    assert gpu_driver.host_from_os_facts({"name": "Linux", "wsl": 2}) == "wsl2"
    assert gpu_driver.host_from_os_facts({"name": "Linux", "wsl": None}) is None  # detected where it runs
    assert gpu_driver.host_from_os_facts(None) is None and gpu_driver.host_from_os_facts("odd") is None


def test_gpu_numa_is_a_linux_sysfs_fact(tmp_path):
    away = nvidia.gpu_numa("0000:01:00.0", kind="windows")
    assert away["gpu_node"] is None and away["reason"].startswith("NUMA placement is read from Linux sysfs")
    dev = tmp_path / "sys/bus/pci/devices/0000:01:00.0"
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text("1\n")
    for n, cpus in ((0, "0-3"), (1, "4-7,12")):
        (tmp_path / f"sys/devices/system/node/node{n}").mkdir(parents=True)
        (tmp_path / f"sys/devices/system/node/node{n}/cpulist").write_text(cpus + "\n")
    here = nvidia.gpu_numa("0000:01:00.0", root=str(tmp_path), kind="windows")  # a fake tree is read on any OS
    assert here == {"gpu_node": 1, "node_cpus": {0: {0, 1, 2, 3}, 1: {4, 5, 6, 7, 12}}, "reason": None}
