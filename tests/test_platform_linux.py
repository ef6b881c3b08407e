"""Linux/WSL facts through fake /proc, /sys and /etc trees built from real captures."""

import os

import pytest

from gpudiag import platform
from gpudiag.platform import _linux, _windows

DATA = os.path.join(os.path.dirname(__file__), "data")


def capture(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as fh:
        return fh.read()


def proc_version_lines(marker):
    """The /proc/version lines of one section of the recorded capture."""
    text = capture("driver_proc_version.txt")
    return [l for l in text.splitlines() if l.startswith("Linux version") and marker in l]


def fake_root(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("fname,distro,version,pretty", [
    ("system_os-release_ubuntu-22.04.txt", "ubuntu", "22.04", "Ubuntu 22.04"),
    ("system_os-release_kali-rolling-2023.4.txt", "kali", "2023.4", "Kali GNU/Linux Rolling"),
    ("system_os-release_debian-12.txt", "debian", "12", "Debian GNU/Linux 12 (bookworm)"),
])
def test_distro_from_recorded_os_release(tmp_path, fname, distro, version, pretty):
    root = fake_root(tmp_path, {"/etc/os-release": capture(fname),
                                "/proc/version": proc_version_lines("kali")[0]})
    facts = platform.os_facts(root, environ={}, system="Linux")
    assert facts["distro_id"] == distro and facts["distro_version"] == version
    assert facts["pretty"].startswith(pretty)
    assert facts["wsl"] is None


def test_os_release_falls_back_to_usr_lib(tmp_path):
    root = fake_root(tmp_path, {"/usr/lib/os-release": 'ID=arch\nPRETTY_NAME="Arch Linux"\n'})
    assert platform.os_facts(root, environ={}, system="Linux")["pretty"] == "Arch Linux"


def test_wsl2_and_wsl1_from_recorded_kernels():
    for line in proc_version_lines("microsoft-standard"):
        assert _linux.detect_wsl(line, None, {}) == 2, line
    for line in proc_version_lines("-Microsoft "):
        assert _linux.detect_wsl(line, None, {}) == 1, line
    for line in proc_version_lines("kali") + proc_version_lines("generic"):
        assert _linux.detect_wsl(line, None, {}) is None, line
    assert _linux.detect_wsl("Linux version 6.1.0", None, {"WSL_DISTRO_NAME": "Ubuntu"}, has_dxg=True) == 2


def test_wsl2_root_reports_cap_and_virtualization(tmp_path):
    root = fake_root(tmp_path, {"/etc/os-release": capture("system_os-release_ubuntu-22.04.txt"),
                                "/proc/version": proc_version_lines("microsoft-standard-WSL2")[0],
                                "/dev/dxg": ""})
    facts = platform.os_facts(root, environ={"WSL_DISTRO_NAME": "Ubuntu"}, system="Linux")
    assert facts["wsl"] == 2 and facts["virtualization"].startswith("wsl2")
    mem = platform.memory_facts(root, system="Linux", wsl=2)
    assert mem["wsl_memory_cap_bytes"] == mem["total_bytes"]


def test_cgroup_v2_limit_usage_and_oom_kills(tmp_path):
    root = fake_root(tmp_path, {
        "/proc/self/cgroup": "0::/ecstasks.slice\n",
        "/sys/fs/cgroup/ecstasks.slice/memory.max": "104857600\n",
        "/sys/fs/cgroup/ecstasks.slice/memory.current": "528384\n",
        # the recorded memory.events of capture (A)
        "/sys/fs/cgroup/ecstasks.slice/memory.events": "low 0\nhigh 0\nmax 21\noom 1\noom_kill 1\n",
        "/proc/vmstat": "nr_free_pages 100\noom_kill 3\n",
        "/proc/sys/vm/overcommit_memory": "0\n",
    })
    mem = platform.memory_facts(root, system="Linux", wsl=None)
    assert (mem["cgroup_version"], mem["cgroup_limit_bytes"], mem["cgroup_usage_bytes"]) == (2, 104857600, 528384)
    assert mem["cgroup_oom_kills"] == 1 and mem["oom_kills_since_boot"] == 3
    assert mem["budget_bytes"] == 104857600 - 528384  # the cgroup headroom is tighter than free RAM


def test_cgroup_v2_unlimited_and_namespace_root(tmp_path):
    root = fake_root(tmp_path, {"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "max\n",
                                "/sys/fs/cgroup/memory.current": "397312\n"})
    mem = platform.memory_facts(root, system="Linux", wsl=None)
    assert mem["cgroup_version"] == 2 and mem["cgroup_limit_bytes"] is None
    assert mem["budget_bytes"] == mem["available_bytes"]


def test_cgroup_v1(tmp_path):
    root = fake_root(tmp_path, {
        "/proc/self/cgroup": "12:cpuset:/\n4:memory:/docker/abc\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "67108864\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "1048576\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    })
    mem = platform.memory_facts(root, system="Linux", wsl=None)
    assert (mem["cgroup_version"], mem["cgroup_limit_bytes"], mem["cgroup_oom_kills"]) == (1, 67108864, 2)
    # v1 "unlimited" is a huge number
    assert _linux._limit("9223372036854771712") is None


def test_strict_overcommit_tightens_the_budget(tmp_path):
    root = fake_root(tmp_path, {"/proc/sys/vm/overcommit_memory": "2\n",
                                "/proc/meminfo": "MemTotal: 1000 kB\nCommitLimit: 4000 kB\nCommitted_AS: 3000 kB\n"})
    mem = platform.memory_facts(root, system="Linux", wsl=None)
    assert mem["overcommit_memory"] == 2
    assert mem["budget_bytes"] == min(mem["available_bytes"], 1000 * 1024)


def test_container_and_cpu_brand(tmp_path):
    root = fake_root(tmp_path, {"/.dockerenv": "", "/proc/cpuinfo": "processor\t: 0\nmodel name\t: AMD Ryzen 7 5800H\n"
                                                                       "flags\t\t: fpu hypervisor\n"})
    assert _linux.container_hint(root, {}) == "docker"
    assert _linux.container_hint(str(tmp_path / "none"), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    assert _linux.cpu_brand(root) == "AMD Ryzen 7 5800H"
    assert _linux.virtualization_hint(root).startswith("virtual machine")
    assert platform.cpu_facts(root=root, system="Linux")["brand"] == "AMD Ryzen 7 5800H"


class FakeReg:
    HKEY_LOCAL_MACHINE = "HKLM"

    def __init__(self, values):
        self.values = values

    class _Key:
        def __init__(self, path):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def OpenKey(self, hive, path):
        if path not in self.values:
            raise FileNotFoundError(path)
        return self._Key(path)

    def QueryValueEx(self, key, name):
        try:
            return self.values[key.path][name], 1
        except KeyError:
            raise FileNotFoundError(name) from None


def test_windows_cpu_and_version_through_a_fake_registry():
    reg = FakeReg({_windows.CPU_KEY: {"ProcessorNameString": "Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz  "}})
    assert _windows.cpu_brand(reg) == "Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz"
    assert _windows.cpu_brand(FakeReg({})) is None
    assert platform.cpu_facts(system="Windows", reg=reg)["brand"].startswith("Intel(R) Core(TM) i7")
    assert _windows.os_pretty("10", "10.0.22631") == "Windows 11 (build 22631)"
    assert _windows.os_pretty("10", "10.0.19045") == "Windows 10 (build 19045)"


def test_python_and_torch_facts_never_initialise_cuda():
    py = platform.python_facts(check_torch=False)
    assert py["implementation"] and isinstance(py["free_threaded_build"], bool)
    assert py["switch_interval_s"] > 0
    t = platform.torch_facts(import_torch=False)
    assert "version" in t and "cuda_build" in t
