"""CPU instruction sets, caches, topology and NUMA: Linux from fake roots, Windows through a fake
registry and a fake kernel32, macOS through a fake sysctl (platform/cpu_features.py and friends)."""

from __future__ import annotations

import os
import struct

import tests
from gpudiag.platform import _cpu_windows, _darwin, _windows, cpu_features
from tests.platform.test_platform_windows import WIN11, FakeWinreg

DATA = os.path.join(tests.TESTS, "data")
XEON = os.path.join(DATA, "fakeroot_xeon2s")


def rows(facts):
    return dict((k, v) for k, v in facts["rows"])


# ------------------------------------------------------------------ Linux

def test_two_socket_xeon_caches_numa_and_amx():
    f = cpu_features.linux_facts(XEON)
    assert f["reason"] is None
    # per-core L1/L2 shared by 2 SMT siblings -> 4 instances; per-socket L3 -> 2 instances
    assert f["caches"]["L1d"] == {"bytes_each": 48 * 1024, "instances": 4, "bytes_total": 192 * 1024}
    assert f["caches"]["L2"] == {"bytes_each": 2 * 2 ** 20, "instances": 4, "bytes_total": 8 * 2 ** 20}
    assert f["caches"]["L3"]["instances"] == 2 and f["caches"]["L3"]["bytes_total"] == 2 * 107520 * 1024
    assert f["numa"] == {"nodes": 2, "cpus": {"0": "0-3", "1": "4-7"}, "source": "/sys/devices/system/node",
                         "reason": None}
    isa = f["isa"]
    assert isa["avx2"] is True and isa["avx512f"] is True and isa["fma"] is True and isa["avx_vnni"] is True
    assert isa["amx"] == ["bf16", "int8", "tile"]
    assert isa["avx512"][:5] == ["f", "cd", "bw", "dq", "vl"] and "fp16" in isa["avx512"]
    assert "AMX: bf16, int8, tile" in f["isa_summary"] and "AVX2 yes" in f["isa_summary"]
    r = rows(f)
    assert r["Socket(s)"] == "2" and r["Core(s) per socket"] == "2" and r["Thread(s) per core"] == "2"
    assert r["CPU(s)"] == "8" and r["On-line CPU(s) list"] == "0-7" and "Off-line CPU(s) list" not in r
    assert r["L1d cache"] == "192 KiB (4 instances)" and r["L3 cache"] == "210 MiB (2 instances)"
    assert r["NUMA node(s)"] == "2" and r["NUMA node1 CPU(s)"] == "4-7"
    assert r["CPU max MHz"] == "3800.0000" and r["CPU min MHz"] == "800.0000" and r["CPU(s) scaling MHz"] == "50%"
    assert r["Model name"] == "Intel(R) Xeon(R) Platinum 8480+" and r["Vendor ID"] == "GenuineIntel"
    assert r["CPU family"] == "6" and r["Model"] == "143" and r["Stepping"] == "8"
    assert r["Virtualization"] == "VT-x" and "Hypervisor vendor" not in r  # bare metal: no hypervisor flag
    assert r["Vulnerability Spectre v1"].startswith("Mitigation: usercopy")
    assert r["Vulnerability Spec store bypass"].startswith("Mitigation")
    assert r["CPU op-mode(s)"] == "32-bit, 64-bit" and r["Address sizes"] == "46 bits physical, 57 bits virtual"
    labels = [k for k, _ in f["rows"]]
    assert labels.index("Architecture") == 0 and labels.index("Flags") < labels.index("L1d cache")


def test_existing_fake_roots_without_sysfs_say_why():
    f = cpu_features.linux_facts(os.path.join(DATA, "fakeroot_ubuntu2204"))
    assert f["caches"] == {} and f["numa"]["nodes"] is None and "NUMA" in f["numa"]["reason"]
    assert rows(f)["NUMA node(s)"].startswith("no /sys/devices/system/node")


def test_no_cpuinfo_is_a_reason_not_an_error(tmp_path):
    f = cpu_features.linux_facts(str(tmp_path))
    assert f["isa"] is None and f["rows"] == [] and "/proc/cpuinfo" in f["reason"]


def test_kvm_guest_names_its_hypervisor_from_the_clock_source(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
                                           "flags\t\t: fpu lm avx2 hypervisor\n\n")
    clk = tmp_path / "sys/devices/system/clocksource/clocksource0"
    clk.mkdir(parents=True)
    (clk / "available_clocksource").write_text("tsc kvm-clock \n")
    r = rows(cpu_features.linux_facts(str(tmp_path)))
    assert r["Hypervisor vendor"].startswith("KVM") and r["Virtualization type"] == "full"


def test_arm_cpuinfo(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes sve sve2 bf16 i8mm\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd4f\n\n")
    f = cpu_features.linux_facts(str(tmp_path))
    assert f["isa"]["family"] == "arm" and f["isa"]["sve2"] is True and f["isa"]["sme"] is False
    assert f["isa_summary"].startswith("NEON yes · SVE yes · SVE2 yes")
    r = rows(f)
    assert r["Vendor ID"] == "ARM" and "0xd4f" in r["Model name"] and r["BogoMIPS"] == "50.00"


def test_helpers():
    assert cpu_features.parse_cpulist("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert cpu_features.parse_cpulist("") == [] and cpu_features.parse_cpulist("x,2") == [2]
    assert cpu_features.parse_size("32768K") == 32 * 2 ** 20 and cpu_features.parse_size("1M") == 2 ** 20
    assert cpu_features.cache_row({"bytes_total": 96 * 1024, "instances": 2}) == "96 KiB (2 instances)"
    assert cpu_features.cache_row({"bytes_total": int(1.5 * 2 ** 20), "instances": 1}) == "1.5 MiB (1 instance)"
    assert cpu_features.isa_summary(None) is None


# ------------------------------------------------------------------ Windows

def slpi(entries, pointer_size=8):
    """SYSTEM_LOGICAL_PROCESSOR_INFORMATION records as GetLogicalProcessorInformation returns them."""
    out = b""
    for mask, relation, union in entries:
        head = struct.pack("<Q" if pointer_size == 8 else "<I", mask) + struct.pack("<i", relation)
        if pointer_size == 8:
            head += b"\0" * 4  # the union is 8-byte aligned
        out += head + union.ljust(16, b"\0")
    return out


def cache(level, ctype, size):
    return struct.pack("<BBHIi", level, 8, 64, size, ctype)


# 4 cores with SMT, one package, one NUMA node: L1d/L1i/L2 per core, one L3
TOPOLOGY = ([(0b11 << (2 * c), 0, b"\x01") for c in range(4)] + [(0xFF, 3, b""), (0xFF, 1, b"")]
            + [(0b11 << (2 * c), 2, cache(1, 2, 48 * 1024)) for c in range(4)]
            + [(0b11 << (2 * c), 2, cache(1, 1, 32 * 1024)) for c in range(4)]
            + [(0b11 << (2 * c), 2, cache(2, 0, 1280 * 1024)) for c in range(4)]
            + [(0xFF, 2, cache(3, 0, 12 * 2 ** 20))])


class FakeKernel32:
    """The three kernel32 answers _cpu_windows needs, recorded for an 8-thread Core i7 (AVX2, no AVX-512)."""

    def __init__(self, features=(10, 13, 36, 37, 38, 39, 40, 42, 60), raw=None, pointer_size=8, numa_highest=0):
        self.features = set(features)
        self.raw = slpi(TOPOLOGY, pointer_size) if raw is None else raw
        self.pointer_size = pointer_size
        self.numa_highest = numa_highest

    def feature_present(self, n):
        return n in self.features

    def logical_processor_information(self):
        return self.raw

    def numa_highest_node(self):
        return self.numa_highest


WIN_CPU = dict(WIN11)
WIN_CPU[_windows.CPU0] = dict(WIN11[_windows.CPU0], VendorIdentifier="GenuineIntel",
                              Identifier="Intel64 Family 6 Model 165 Stepping 5")


def test_windows_cpu_block_without_wmic():
    f = _cpu_windows.facts(reg=FakeWinreg(WIN_CPU), api=FakeKernel32(), logical=8, physical=4, arch="AMD64")
    assert f["reason"] is None
    assert f["isa"]["avx2"] is True and f["isa"]["avx512f"] is False
    assert f["isa"]["amx"] is None and f["isa"]["fma"] is None  # Windows does not report them
    assert "AMX: not reported" in f["isa_summary"] and "AVX-512F no" in f["isa_summary"]
    assert f["caches"]["L1d"] == {"bytes_each": 48 * 1024, "instances": 4, "bytes_total": 192 * 1024}
    assert f["caches"]["L3"] == {"bytes_each": 12 * 2 ** 20, "instances": 1, "bytes_total": 12 * 2 ** 20}
    r = rows(f)
    assert r["Model name"] == "Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz" and r["Vendor ID"] == "GenuineIntel"
    assert (r["CPU family"], r["Model"], r["Stepping"]) == ("6", "165", "5")
    assert r["Thread(s) per core"] == "2" and r["Core(s) per socket"] == "4" and r["Socket(s)"] == "1"
    assert r["CPU max MHz"] == "2904.0000" and r["L2 cache"] == "5 MiB (4 instances)"
    assert r["NUMA node(s)"] == "1" and "avx2" in r["Flags"].split()


def test_windows_32bit_records_and_numa_fallback():
    api = FakeKernel32(raw=slpi([e for e in TOPOLOGY if e[1] != 1], pointer_size=4), pointer_size=4, numa_highest=1)
    f = _cpu_windows.facts(reg=FakeWinreg(WIN_CPU), api=api, logical=8, physical=4, arch="x86")
    assert f["caches"]["L2"]["instances"] == 4
    assert f["numa"]["nodes"] == 2 and f["numa"]["source"] == "GetNumaHighestNodeNumber"


def test_windows_arm64_features():
    api = FakeKernel32(features=(29, 30, 34, 43, 46, 68), raw=b"")
    f = _cpu_windows.facts(reg=FakeWinreg({}), api=api, logical=12, physical=12, arch="ARM64")
    assert f["isa"]["family"] == "arm" and f["isa"]["sve"] is True and f["isa"]["sve2"] is False
    assert f["isa"]["bf16"] is True and rows(f)["Model name"].startswith("unknown")


def test_windows_without_kernel32_says_so(monkeypatch):
    monkeypatch.setattr(_cpu_windows, "_default_api", lambda: None)
    f = _cpu_windows.facts(reg=FakeWinreg(WIN_CPU), api=None, logical=8, physical=4, arch="AMD64")
    assert "kernel32 is not available" in f["reason"] and f["isa"]["avx2"] is None
    assert rows(f)["Model name"].startswith("Intel(R) Core(TM) i7-10700")


def test_dispatch_goes_through_the_windows_seams():
    f = cpu_features.facts("windows", reg=FakeWinreg(WIN_CPU), api=FakeKernel32())
    assert f["caches"]["L1i"]["instances"] == 4


# ------------------------------------------------------------------ macOS

def test_macos_from_sysctl():
    values = {"hw.optional.neon": 1, "hw.optional.arm.FEAT_BF16": 1, "hw.optional.arm.FEAT_SME": 0,
              "hw.l1dcachesize": 65536, "hw.l2cachesize": 4 * 2 ** 20, "hw.logicalcpu": 10, "hw.physicalcpu": 10,
              "hw.packages": 1, "machdep.cpu.brand_string": "Apple M4"}
    f = _darwin.cpu_features(sysctl=values.get)
    assert f["isa"]["family"] == "arm" and f["isa"]["bf16"] is True and f["isa"]["sme"] is False
    r = rows(f)
    assert r["Model name"] == "Apple M4" and r["L2 cache"].startswith("4 MiB") and r["NUMA node(s)"].startswith("1")
