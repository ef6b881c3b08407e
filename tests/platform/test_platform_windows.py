"""Windows facts through a fake winreg (same four names as the real module), run on Linux."""

from __future__ import annotations

import pytest

from gpudiag import platform
from gpudiag.platform import _windows

HKLM = object()


class FakeWinreg:
    """winreg's surface as gpudiag uses it: OpenKey/QueryValueEx/CloseKey on HKEY_LOCAL_MACHINE."""

    HKEY_LOCAL_MACHINE = HKLM

    def __init__(self, keys, denied=()):
        self.keys = keys  # {subkey: {name: value}}
        self.denied = set(denied)
        self.closed = 0

    def OpenKey(self, hive, subkey):
        assert hive is HKLM
        if subkey in self.denied:
            raise PermissionError(5, "Access is denied")
        if subkey not in self.keys:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return subkey

    def QueryValueEx(self, key, name):
        values = self.keys[key]
        if name not in values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        value = values[name]
        return value, (4 if isinstance(value, int) else 1)  # REG_DWORD / REG_SZ

    def CloseKey(self, key):
        self.closed += 1


# Values as a Windows 11 23H2 desktop reports them (ProductName still says Windows 10;
# ProcessorNameString carries trailing spaces; ~MHz is a DWORD).
WIN11 = {
    _windows.CURRENT_VERSION: {"ProductName": "Windows 10 Pro", "DisplayVersion": "23H2",
                               "CurrentBuildNumber": "22631", "CurrentBuild": "22631", "UBR": 2861},
    _windows.CPU0: {"ProcessorNameString": "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz   ", "~MHz": 2904},
    _windows.BIOS: {"SystemManufacturer": "Micro-Star International Co., Ltd.", "SystemProductName": "MS-7C91"},
}


def test_windows_11_os_facts_from_registry():
    reg = FakeWinreg(WIN11)
    o = platform.os_facts(reg=reg, kind="windows")
    assert o["name"] == "Windows"
    assert o["pretty"] == "Windows 11 Pro 23H2 (build 22631)"
    assert o["kernel"] == "10.0.22631.2861"
    assert o["distro_version"] == "23H2"
    assert o["wsl"] is None and o["container"] is None and o["virtualization"] is None
    assert reg.closed > 0  # every opened key was closed


def test_windows_10_keeps_its_name_and_uses_release_id():
    keys = {_windows.CURRENT_VERSION: {"ProductName": "Windows 10 Home", "ReleaseId": "1909",
                                       "CurrentBuild": "18363"}}
    o = _windows.os_facts(FakeWinreg(keys))
    assert o["pretty"] == "Windows 10 Home 1909 (build 18363)"
    assert o["kernel"] == "10.0.18363"


def test_hyperv_guest_from_bios_strings():
    keys = dict(WIN11)
    keys[_windows.BIOS] = {"SystemManufacturer": "Microsoft Corporation", "SystemProductName": "Virtual Machine"}
    assert _windows.os_facts(FakeWinreg(keys))["virtualization"] == "hyper-v"


def test_cpu_brand_and_mhz_from_registry():
    reg = FakeWinreg(WIN11)
    assert _windows.cpu_brand(reg) == "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz"
    assert _windows.cpu_mhz(reg) == 2904.0
    c = platform.cpu_facts(detailed=False, reg=reg, kind="windows")
    assert c["brand"] == "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz"
    assert isinstance(c["logical_cores"], int)


@pytest.mark.parametrize("reg", [
    FakeWinreg({}),                                        # keys missing
    FakeWinreg(WIN11, denied=set(WIN11)),                  # access denied everywhere
    None,                                                  # no winreg at all (not Windows)
])
def test_missing_or_denied_registry_gives_nulls(reg, monkeypatch):
    monkeypatch.setattr(_windows, "safe_default_reg", lambda: None)
    assert _windows.reg_value(reg, _windows.CPU0, "ProcessorNameString") is None
    assert _windows.cpu_brand(reg) is None and _windows.cpu_mhz(reg) is None
    o = _windows.os_facts(reg)
    assert o["name"] == "Windows" and o["virtualization"] is None


def test_windows_memory_has_contract_keys_and_no_linux_only_values():
    m = platform.memory_facts(kind="windows")
    for key in ("total_bytes", "available_bytes", "swap_total_bytes", "swap_used_bytes",
                "cgroup_limit_bytes", "cgroup_usage_bytes", "cgroup_oom_kills", "wsl_memory_cap_bytes",
                "overcommit_memory", "oom_kills_since_boot", "budget_bytes"):
        assert key in m
    assert m["cgroup_limit_bytes"] is None and m["overcommit_memory"] is None and m["oom_kills_since_boot"] is None
    assert m["budget_bytes"] == m["available_bytes"] > 0
