"""The `system` probe: run for real through the runner, findings on recorded data, and the
python/torch facts it relies on (free-threading detection, GIL after torch, no CUDA init)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig

import pytest

import tests
from gpudiag import platform
from gpudiag.backends import torch_meta
from gpudiag.capabilities import TORCH_HINT
from gpudiag.probes import _MODULES, system
from gpudiag.probes.base import ProbeContext
from gpudiag.runner import run_probe

GIB = 2 ** 30


def codes(findings):
    return {f["code"]: f for f in findings}


# ------------------------------------------------------------------ the probe, for real

def test_system_is_registered_first_and_needs_nothing():
    assert _MODULES[0] == "system" and "driver" in _MODULES
    assert system.PROBE.name == "system" and system.PROBE.needs == () and system.PROBE.isolate is True


def test_system_probe_runs_ok_on_this_machine():
    res = run_probe(system.PROBE, ProbeContext(mode="quick", timeout_s=120))
    assert res["status"] == "ok", res["reason"]
    d = res["data"]
    assert set(d) >= {"os", "python", "cpu", "memory", "torch", "env"}
    assert d["os"]["name"] in ("Linux", "Windows", "Darwin") and isinstance(d["os"]["pretty"], str)
    assert d["os"]["wsl"] in (None, 1, 2)
    assert isinstance(d["python"]["gil_enabled"], bool)
    assert isinstance(d["python"]["free_threaded_build"], bool)
    # quick mode imports torch only where it can change the answer (a free-threaded build)
    assert d["python"]["gil_checked_after_torch"] is (torch_meta.torch_version() is not None
                                                      and d["python"]["free_threaded_build"])
    assert d["python"]["mp_start_method"] in ("fork", "spawn", "forkserver")
    assert isinstance(d["cpu"]["logical_cores"], int) and d["cpu"]["logical_cores"] >= 1
    assert isinstance(d["cpu"]["brand"], str) and d["cpu"]["brand"]
    m = d["memory"]
    assert isinstance(m["total_bytes"], int) and m["total_bytes"] > 0
    assert isinstance(m["budget_bytes"], int) and 0 <= m["budget_bytes"] <= m["total_bytes"]
    assert m["overcommit_memory"] in (None, 0, 1, 2)
    assert isinstance(d["env"], dict)
    if torch_meta.torch_version() is not None:
        assert d["torch"]["version"] == torch_meta.torch_version() and d["torch"]["source"] == "files"
        assert d["cpu"]["source"] == "fast"
    for f in res["findings"]:
        assert f["code"].isupper() and f["severity"] in ("info", "warning", "critical") and f["evidence"]


def test_cuda_launch_blocking_is_critical_inline(monkeypatch):
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "a" * 30)  # not allowlisted: must not appear
    # the slow parts (py-cpuinfo, torch import) are covered by the real run above
    monkeypatch.setattr(system, "collect", lambda detailed_cpu, import_torch, environ=None:
                        _real_collect(False, False, environ))
    out = system.run(ProbeContext())
    found = codes(out.findings)
    assert found["CUDA_LAUNCH_BLOCKING_ON"]["severity"] == "critical"
    assert found["CUDA_LAUNCH_BLOCKING_ON"]["evidence"]["value"] == "1"
    assert out.data["env"]["CUDA_LAUNCH_BLOCKING"] == "1"
    assert out.data["env"]["NCCL_DEBUG"] == "INFO"
    assert "HF_TOKEN" not in out.data["env"]


_real_collect = system.collect


# ------------------------------------------------------------------ findings on recorded data

def _data(**sections):
    base = {"os": {"name": "Linux"}, "python": {"mp_start_method": "spawn", "free_threaded_build": False,
                                                  "gil_enabled": True},
            "memory": {"total_bytes": 16 * GIB, "swap_total_bytes": GIB}, "env": {}}
    for k, v in sections.items():
        base[k] = dict(base.get(k, {}), **v)
    return base


def test_clean_machine_has_no_findings():
    assert system.findings_for(_data()) == []


@pytest.mark.parametrize("env,code,severity", [
    ({"CUDA_LAUNCH_BLOCKING": "1"}, "CUDA_LAUNCH_BLOCKING_ON", "critical"),
    ({"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES_EMPTY", "critical"),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, "CUDA_VISIBLE_DEVICES_EMPTY", "critical"),
    ({"CUDA_PROFILE": "1"}, "PERF_LIMITING_ENV_VARS", "warning"),
    ({"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}, "CUDA_CACHING_ALLOCATOR_OFF", "warning"),
    ({"CUDA_MODULE_LOADING": "EAGER"}, "CUDA_MODULE_LOADING_EAGER", "info"),
])
def test_env_findings(env, code, severity):
    found = codes(system.findings_for(_data(env=env)))
    assert found[code]["severity"] == severity
    assert found[code]["evidence"]["source"].startswith("environment")


@pytest.mark.parametrize("env", [{"CUDA_LAUNCH_BLOCKING": "0"}, {"CUDA_VISIBLE_DEVICES": "0,1"},
                                 {"CUDA_MODULE_LOADING": "LAZY"}])
def test_harmless_env_values_are_quiet(env):
    assert system.findings_for(_data(env=env)) == []


def test_memory_findings_carry_numbers_and_sources():
    d = _data(memory={"cgroup_limit_bytes": 100 * 2 ** 20, "cgroup_usage_bytes": 528384, "cgroup_version": 2,
                      "cgroup_limit_source": "/sys/fs/cgroup/memory.max", "cgroup_oom_kills": 1,
                      "oom_kills_since_boot": 3, "overcommit_memory": 2, "swap_total_bytes": 0,
                      "wsl_memory_cap_bytes": 8 * GIB})
    found = codes(system.findings_for(d))
    assert found["CGROUP_MEMORY_LIMIT"]["evidence"]["cgroup_limit_bytes"] == 100 * 2 ** 20
    assert found["CGROUP_MEMORY_LIMIT"]["evidence"]["source"] == "/sys/fs/cgroup/memory.max"
    assert found["OOM_KILLS_SINCE_BOOT"]["severity"] == "warning"
    assert found["OOM_KILLS_SINCE_BOOT"]["evidence"] == {"oom_kills_since_boot": 3, "source": "/proc/vmstat oom_kill"}
    assert "3 process" in found["OOM_KILLS_SINCE_BOOT"]["message"]
    assert found["CGROUP_OOM_KILLS"]["evidence"]["cgroup_oom_kills"] == 1
    assert found["OVERCOMMIT_STRICT"]["severity"] == "warning"
    assert found["NO_SWAP"]["severity"] == "info"
    assert found["WSL_MEMORY_CAP"]["evidence"]["wsl_memory_cap_bytes"] == 8 * GIB


def test_python_findings():
    assert "FREE_THREADED_PYTHON" in codes(system.findings_for(
        _data(python={"free_threaded_build": True, "gil_enabled": False})))
    reen = codes(system.findings_for(_data(python={"free_threaded_build": True, "gil_enabled": True,
                                                   "gil_checked_after_torch": True})))
    assert "GIL_REENABLED" in reen and "after importing torch" in reen["GIL_REENABLED"]["message"]
    assert "FORK_START_METHOD" in codes(system.findings_for(_data(python={"mp_start_method": "fork"})))


def test_findings_from_fake_roots_end_to_end():
    import os

    from gpudiag.platform import _linux

    data_dir = os.path.join(tests.TESTS, "data")
    kali = os.path.join(data_dir, "fakeroot_kali")
    mem = _linux.memory_facts(kali, wsl=None)
    found = codes(system.findings_for(_data(memory=mem)))
    assert found["OOM_KILLS_SINCE_BOOT"]["evidence"]["oom_kills_since_boot"] == 3
    assert {"OVERCOMMIT_STRICT", "NO_SWAP"} <= set(found)
    docker = _linux.memory_facts(os.path.join(data_dir, "fakeroot_debian12_docker"), wsl=None)
    found = codes(system.findings_for(_data(memory=docker)))
    assert found["CGROUP_MEMORY_LIMIT"]["evidence"]["cgroup_limit_bytes"] == 104857600
    assert found["CGROUP_OOM_KILLS"]["evidence"]["cgroup_oom_kills"] == 1


def test_env_allowlist_masks_secret_looking_values():
    env = system.collect_env({"NCCL_IB_HCA": "mlx5", "NCCL_SECRET": "x", "NCCL_X": "ghp_" + "b" * 36,
                              "AWS_SECRET_ACCESS_KEY": "abc", "CUDA_VISIBLE_DEVICES": "0", "PATH": "/usr/bin",
                              "CUDA_INJECTION64_PATH": "/opt/nsight/lib.so"})
    assert env["NCCL_IB_HCA"] == "mlx5" and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["NCCL_SECRET"].startswith("[redacted") and env["NCCL_X"].startswith("[redacted")
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PATH" not in env
    assert env["CUDA_INJECTION64_PATH"] == "/opt/nsight/lib.so"


# ------------------------------------------------------------------ python / torch facts


@pytest.mark.parametrize("value,expected", [(None, False), (0, False), (1, True)])
def test_free_threaded_build_uses_truthiness(monkeypatch, value, expected):
    # Regular Windows builds define Py_GIL_DISABLED as 0: `is not None` would call them free-threaded.
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var",
                        lambda name: value if name == "Py_GIL_DISABLED" else real(name))
    assert platform.free_threaded_build() is expected


def test_gil_enabled_reads_runtime_check(monkeypatch):
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert platform.gil_enabled() is False
    monkeypatch.delattr(sys, "_is_gil_enabled")
    assert platform.gil_enabled() is True  # before 3.13 there is always a GIL


def test_python_facts_shape_and_types():
    p = platform.python_facts(check_torch=False)
    assert p["implementation"] and p["version"].count(".") == 2
    assert isinstance(p["free_threaded_build"], bool) and isinstance(p["gil_enabled"], bool)
    assert p["gil_checked_after_torch"] is False
    assert isinstance(p["switch_interval_s"], float) and p["switch_interval_s"] > 0
    assert p["mp_start_method"] in ("fork", "spawn", "forkserver")
    assert p["executable"] == sys.executable


def test_default_start_method_does_not_fix_the_context():
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    platform.default_start_method()
    assert multiprocessing.get_start_method(allow_none=True) == before


def test_torch_missing_gives_nulls_and_install_hint(monkeypatch):
    monkeypatch.setattr(torch_meta, "torch_version", lambda: None)
    t = platform.torch_facts(import_torch=True)
    assert t["version"] is None and t["cuda_build"] is None and t["cudnn"] is None and t["hip"] is None
    assert TORCH_HINT in t["reason_missing"]


@pytest.mark.torch
def test_torch_fast_path_reads_files_only():
    code = ("import sys; from gpudiag import platform; t = platform.torch_facts(import_torch=False); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(t['version'], t['source'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "files"


@pytest.mark.torch
def test_torch_import_path_never_initialises_cuda():
    code = ("from gpudiag import platform; import json; t = platform.torch_facts(import_torch=True); "
            "p = platform.python_facts(check_torch=True); import torch; "
            "print(json.dumps([t, p['gil_checked_after_torch'], torch.cuda.is_initialized()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    t, after_torch, cuda_initialized = json.loads(out.stdout.strip().splitlines()[-1])
    assert t["source"] == "import" and t["version"] == torch_meta.torch_version()
    assert t["cuda_build"] == torch_meta.torch_cuda_version()
    assert after_torch is True
    assert cuda_initialized is False


# ------------------------------------------------------------------ one dispatch, one shape

def test_every_os_gives_the_same_keys():
    import os

    from tests.platform.test_platform_windows import WIN11, FakeWinreg

    fake = os.path.join(tests.TESTS, "data", "fakeroot_ubuntu2204")
    linux_os = platform.os_facts(fake, environ={}, kind="linux")
    win_os = platform.os_facts(reg=FakeWinreg(WIN11), kind="windows")
    mac_os = platform.os_facts(kind="macos")  # on Linux: sysctl is absent, values fall back to None
    assert set(linux_os) == set(win_os) == set(mac_os)
    assert mac_os["name"] == "Darwin" and win_os["name"] == "Windows"
    linux_mem = platform.memory_facts(fake, kind="linux", environ={})
    assert set(linux_mem) == set(platform.memory_facts(kind="windows")) == set(platform.memory_facts(kind="macos"))
    for kind in ("linux", "windows", "macos"):
        cpu = platform.cpu_facts(detailed=False, root=fake, reg=FakeWinreg(WIN11), kind=kind)
        assert {"brand", "arch", "physical_cores", "logical_cores", "freq_current_mhz", "freq_max_mhz",
                "affinity_cores"} <= set(cpu)
