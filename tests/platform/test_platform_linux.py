"""Linux platform facts from fake /proc, /etc and /sys trees (tests/data/fakeroot_*)."""

from __future__ import annotations

import os

import pytest

import tests
from gpudiag import platform
from gpudiag.platform import _cgroup, _linux

DATA = os.path.join(tests.TESTS, "data")
GIB = 2 ** 30


def root(name: str) -> str:
    return os.path.join(DATA, f"fakeroot_{name}")


def test_ubuntu_2204():
    o = platform.os_facts(root("ubuntu2204"), environ={}, kind="linux")
    assert o["name"] == "Linux"
    assert o["pretty"] == "Ubuntu 22.04.3 LTS"
    assert (o["distro_id"], o["distro_version"], o["distro_like"], o["distro_codename"]) == \
        ("ubuntu", "22.04", "debian", "jammy")
    assert o["kernel"] == "5.15.0-113-generic"
    assert o["wsl"] is None and o["container"] is None and o["virtualization"] is None
    assert o["signals"]["os_release"] == "/etc/os-release"


def test_kali_rolling_reads_usr_lib_fallback():
    o = platform.os_facts(root("kali"), environ={}, kind="linux")
    assert o["pretty"] == "Kali GNU/Linux Rolling"
    assert (o["distro_id"], o["distro_version"], o["distro_like"], o["distro_codename"]) == \
        ("kali", "2023.4", "debian", "kali-rolling")
    assert o["kernel"] == "6.5.0-kali1-amd64"
    assert o["signals"]["os_release"] == "/usr/lib/os-release"
    assert o["wsl"] is None


def test_debian12_docker_on_hyperv():
    o = platform.os_facts(root("debian12_docker"), environ={}, kind="linux")
    assert o["pretty"] == "Debian GNU/Linux 12 (bookworm)"
    assert o["distro_id"] == "debian" and o["distro_like"] is None and o["distro_version"] == "12"
    assert o["container"] == "docker"
    assert "/.dockerenv present" in o["signals"]["container"]
    assert o["virtualization"] == "hyper-v"  # DMI wins over the cpu flag


def test_wsl2_detected_from_kernel_and_dxg():
    o = platform.os_facts(root("wsl2"), environ={}, kind="linux")
    assert o["wsl"] == 2
    assert o["kernel"] == "5.15.153.1-microsoft-standard-WSL2"
    assert o["virtualization"] == "wsl2 (hyper-v)"
    assert any("dxg" in s for s in o["signals"]["wsl"])


@pytest.mark.parametrize("kernel,expected", [
    ("6.6.87.2-microsoft-standard-WSL2", 2),
    ("4.19.128-microsoft-standard", 2),          # old WSL2 kernel without the -WSL2 suffix
    ("6.1.21.1-microsoft-standard-WSL2+", 2),    # custom build
    ("4.4.0-19041-Microsoft", 1),                # WSL1
    ("6.5.0-kali1-amd64", None),
    ("5.15.0-113-generic", None),
])
def test_wsl_version_from_kernel_strings(kernel, expected):
    assert _linux.wsl_version(kernel, None, {}, has_dxg=False)[0] == expected


def test_wsl_env_without_microsoft_kernel_means_wsl2_custom_kernel():
    version, signals = _linux.wsl_version("6.9.0-custom", None, {"WSL_DISTRO_NAME": "Ubuntu"}, has_dxg=False)
    assert version == 2 and signals


@pytest.mark.parametrize("environ,files,expected", [
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, {}, "kubernetes"),
    ({}, {"run/.containerenv": ""}, "podman"),
    ({}, {"proc/1/cgroup": "0::/system.slice/lxc@c1.service\n"}, "lxc"),
    ({}, {"proc/1/cgroup": "12:memory:/kubepods/burstable/pod1/abc\n"}, "kubernetes"),
    ({}, {"proc/1/cgroup": "11:devices:/lxc/c1\n"}, "lxc"),
    ({"container": "systemd-nspawn"}, {}, "systemd-nspawn"),
    ({}, {}, None),
])
def test_container_kinds(tmp_path, environ, files, expected):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    kind, signals = _linux.container_kind(str(tmp_path), environ)
    assert kind == expected
    assert bool(signals) == (expected is not None)


def test_os_release_parser_quotes_and_comments():
    parsed = _linux.parse_os_release('# c\nNAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\nX=\'single\'\n\nbad line\n')
    assert parsed == {"NAME": "Arch Linux", "ID": "arch", "BUILD_ID": "rolling", "X": "single"}


def test_missing_root_gives_nulls_not_errors(tmp_path):
    o = platform.os_facts(str(tmp_path), environ={}, kind="linux")
    assert o["distro_id"] is None and o["kernel"] is None and o["wsl"] is None
    m = platform.memory_facts(str(tmp_path), kind="linux", wsl=None)
    assert m["total_bytes"] is None and m["budget_bytes"] is None and m["cgroup_version"] is None


# ------------------------------------------------------------------ memory

def test_memory_ubuntu_cgroup_v2_no_limit():
    m = platform.memory_facts(root("ubuntu2204"), kind="linux", environ={})
    assert m["total_bytes"] == 16231084 * 1024
    assert m["available_bytes"] == 12210456 * 1024
    assert m["swap_total_bytes"] == 2097148 * 1024 and m["swap_used_bytes"] == 0
    assert m["cgroup_version"] == 2 and m["cgroup_limit_bytes"] is None
    assert m["cgroup_usage_bytes"] == 2147483648 and m["cgroup_oom_kills"] == 0
    assert m["overcommit_memory"] == 0 and m["oom_kills_since_boot"] == 0
    assert m["wsl_memory_cap_bytes"] is None
    assert m["budget_bytes"] == m["available_bytes"] and m["budget_source"] == "ram_available"


def test_memory_kali_strict_overcommit_and_oom_kills():
    m = platform.memory_facts(root("kali"), kind="linux", environ={})
    assert m["overcommit_memory"] == 2
    assert m["oom_kills_since_boot"] == 3
    assert m["swap_total_bytes"] == 0
    assert m["commit_limit_bytes"] == 4020800 * 1024 and m["committed_bytes"] == 3500000 * 1024
    # strict overcommit: the commit headroom (~508 MiB) is tighter than available RAM (~1.8 GiB)
    assert m["budget_bytes"] == (4020800 - 3500000) * 1024
    assert m["budget_source"] == "commit_limit_minus_committed"


def test_memory_docker_cgroup_v2_limit_and_oom_kill():
    m = platform.memory_facts(root("debian12_docker"), kind="linux", environ={})
    assert m["cgroup_version"] == 2
    assert m["cgroup_limit_bytes"] == 104857600
    assert m["cgroup_limit_source"] == "cgroup v2 memory.max (own cgroup)"
    assert m["cgroup_usage_bytes"] == 528384
    assert m["cgroup_oom_kills"] == 1
    assert m["budget_bytes"] == 104857600 - 528384
    assert m["budget_source"] == "cgroup_limit_minus_usage"


def test_memory_wsl2_cap_is_vm_memtotal():
    m = platform.memory_facts(root("wsl2"), kind="linux", environ={})
    assert m["wsl_memory_cap_bytes"] == 16318412 * 1024 == m["total_bytes"]
    assert m["overcommit_memory"] == 1
    assert m["cgroup_version"] == 2 and m["cgroup_limit_bytes"] is None  # root cgroup has no memory.max


def test_memory_cgroup_v1_limit_and_oom_control():
    m = platform.memory_facts(root("cgroupv1"), kind="linux", environ={})
    assert m["cgroup_version"] == 1
    assert m["cgroup_limit_bytes"] == 4 * GIB
    assert m["cgroup_limit_source"] == "cgroup v1 memory.limit_in_bytes (own cgroup)"  # by kind: never the path
    assert m["cgroup_usage_bytes"] == 1000747008
    assert m["cgroup_oom_kills"] == 2
    assert m["budget_bytes"] == 4 * GIB - 1000747008


def _write(base, rel, text):
    p = base / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_cgroup_v1_unlimited_sentinel_is_no_limit(tmp_path):
    _write(tmp_path, "proc/self/cgroup", "4:memory:/\n0::/\n")
    _write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    _write(tmp_path, "sys/fs/cgroup/memory/memory.usage_in_bytes", "12673024\n")
    cg = _cgroup.cgroup_memory(str(tmp_path))
    assert cg["version"] == 1 and cg["limit_bytes"] is None and cg["usage_bytes"] == 12673024


def test_cgroup_v2_parent_slice_tighter_than_leaf(tmp_path):
    _write(tmp_path, "proc/self/cgroup", "0::/ecstasks.slice/task.slice/docker-1.scope\n")
    _write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "memory\n")
    leaf = "sys/fs/cgroup/ecstasks.slice/task.slice/docker-1.scope"
    _write(tmp_path, f"{leaf}/memory.max", "max\n")
    _write(tmp_path, f"{leaf}/memory.current", "1000\n")
    _write(tmp_path, f"{leaf}/memory.events", "low 0\nhigh 0\nmax 38\noom 1\noom_kill 1\n")
    _write(tmp_path, "sys/fs/cgroup/ecstasks.slice/task.slice/memory.max", "4294967296\n")
    _write(tmp_path, "sys/fs/cgroup/ecstasks.slice/memory.max", "2147483648\n")
    cg = _cgroup.cgroup_memory(str(tmp_path))
    assert cg["limit_bytes"] == 2147483648
    assert cg["limit_source"] == "cgroup v2 memory.max (2 levels up)"  # by kind, never the path
    assert cg["oom_kills"] == 1 and cg["usage_bytes"] == 1000


def test_cgroup_v2_namespaced_path_falls_back_to_mount_root(tmp_path):
    # Inside a container with its own cgroup namespace the host path does not exist.
    _write(tmp_path, "proc/self/cgroup", "0::/system.slice/docker-abc.scope\n")
    _write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "memory\n")
    _write(tmp_path, "sys/fs/cgroup/memory.max", "67108864\n")
    assert _cgroup.cgroup_memory(str(tmp_path))["limit_bytes"] == 67108864


def test_meminfo_without_memavailable_estimates_like_psutil():
    ram = _linux._ram_from_meminfo({"MemTotal": 100, "MemFree": 10, "Buffers": 5, "Cached": 20})
    assert ram["available_bytes"] == 35 and ram["swap_used_bytes"] is None


# ------------------------------------------------------------------ CPU

def test_cpu_brand_from_fake_cpuinfo():
    assert _linux.cpu_brand(root("ubuntu2204")) == "Intel(R) Core(TM) i7-8750H CPU @ 2.20GHz"
    assert _linux.cpu_brand(root("wsl2")) == "13th Gen Intel(R) Core(TM) i9-13950HX"


def test_cpu_brand_arm_board():
    assert _linux.cpu_brand_from_cpuinfo("processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n") \
        == "Raspberry Pi 4 Model B Rev 1.4"


def test_cpu_facts_fast_path_through_dispatch():
    c = platform.cpu_facts(detailed=False, root=root("ubuntu2204"), kind="linux")
    assert c["brand"] == "Intel(R) Core(TM) i7-8750H CPU @ 2.20GHz"
    assert isinstance(c["logical_cores"], int) and c["logical_cores"] >= 1
    assert c["source"] == "fast"


def test_cpu_facts_detailed_falls_back_when_py_cpuinfo_fails(monkeypatch):
    def boom():
        raise RuntimeError("no cpuid here")

    monkeypatch.setattr(platform, "_detailed_cpu", boom)
    c = platform.cpu_facts(detailed=True, root=root("wsl2"), kind="linux")
    assert c["brand"] == "13th Gen Intel(R) Core(TM) i9-13950HX"
    assert c["source"] == "fast" and "no cpuid here" in c["detailed_reason"]


def test_virtualization_cpu_flag_only(tmp_path):
    assert _linux.virtualization(str(tmp_path), None, "flags\t: fpu hypervisor avx\n") == "hypervisor (cpu flag)"
    assert _linux.virtualization(str(tmp_path), None, "flags\t: fpu avx\n") is None
    assert _linux.virtualization_from_dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)") == "qemu"
    assert _linux.virtualization_from_dmi("innotek GmbH", "VirtualBox") == "virtualbox"


# ------------------------------------------------------------------ fork safety, process age

def _fake_self(tmp_path, tasks=1, maps="7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n", stat=None):
    proc = tmp_path / "proc" / "self"
    (proc / "task").mkdir(parents=True)
    for t in range(tasks):
        (proc / "task" / str(100 + t)).mkdir()
    if maps is not None:
        (proc / "maps").write_text(maps)
    if stat is not None:
        (proc / "stat").write_text(stat)
    return str(tmp_path)


def test_fork_is_safe_with_one_thread_and_no_gpu_driver(tmp_path):
    assert platform.fork_is_safe(_fake_self(tmp_path), kind="linux") is True


@pytest.mark.parametrize("lib", ["libcuda.so.1", "libamdhip64.so.6"])
def test_a_loaded_gpu_driver_makes_fork_unsafe(tmp_path, lib):
    maps = f"7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/{lib}\n"
    assert platform.fork_is_safe(_fake_self(tmp_path, maps=maps), kind="linux") is False


def test_a_second_thread_or_an_unreadable_proc_makes_fork_unsafe(tmp_path):
    assert platform.fork_is_safe(_fake_self(tmp_path / "a", tasks=2), kind="linux") is False
    assert platform.fork_is_safe(_fake_self(tmp_path / "b", maps=None), kind="linux") is False
    assert platform.fork_is_safe(str(tmp_path / "nothing"), kind="linux") is False
    assert platform.fork_is_safe(kind="windows") is False


@pytest.mark.skipif(not hasattr(__import__("time"), "CLOCK_BOOTTIME"), reason="Linux's boot clock")
def test_process_age_from_proc_stat(tmp_path):
    import time

    ticks = os.sysconf("SC_CLK_TCK")
    started = int((time.clock_gettime(time.CLOCK_BOOTTIME) - 5.0) * ticks)
    fields = ["S"] + ["0"] * 18 + [str(started)] + ["0"] * 10  # field 22 is the 20th after "comm)"
    age = _linux.process_age_s(_fake_self(tmp_path, stat="123 (python (x) y) " + " ".join(fields)))
    assert 4.9 <= age <= 6.0
    assert _linux.process_age_s(_fake_self(tmp_path / "bad", stat="garbage")) is None
    assert 0 <= platform.process_age_s() < 3600  # this test process, for real


def test_descendant_pids_walk_every_threads_children(tmp_path):
    def proc(pid, children_by_tid):
        for tid, kids in children_by_tid.items():
            d = tmp_path / "proc" / str(pid) / "task" / str(tid)
            d.mkdir(parents=True)
            (d / "children").write_text(" ".join(map(str, kids)) + (" " if kids else ""))

    proc(10, {10: [11], 12: [13]})  # the second thread started a child too
    proc(11, {11: [14]})
    proc(13, {13: []})
    # 14 ended during the walk: no /proc entry, still listed (the caller finds it gone)
    assert sorted(_linux.descendant_pids(10, str(tmp_path))) == [11, 13, 14]
    assert _linux.descendant_pids(99, str(tmp_path)) is None  # unreadable: ask psutil instead
    assert platform.descendant_pids(10, str(tmp_path), kind="macos") is None


def test_descendant_pids_of_this_process_match_psutil():
    import subprocess
    import sys
    import time

    import psutil

    if platform.descendant_pids(os.getpid()) is None:
        pytest.skip("no /proc/PID/task/TID/children on this kernel")
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process().children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(platform.descendant_pids(os.getpid())) == sorted(
            p.pid for p in psutil.Process().children(recursive=True))
    finally:
        for p in psutil.Process(child.pid).children(recursive=True) + [psutil.Process(child.pid)]:
            p.kill()
        child.wait()
