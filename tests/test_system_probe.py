import json

from gpudiag import runner
from gpudiag.probes import system
from gpudiag.probes.base import ProbeContext


def codes(findings):
    return [f["code"] for f in findings]


def test_real_system_probe_runs_isolated_and_fills_the_contract():
    res = runner.run_probe(system.PROBE, ProbeContext(timeout_s=120))
    assert res["status"] == "ok", res["reason"]
    d = res["data"]
    assert d["os"]["name"] == "Linux" and d["os"]["kernel"]
    assert isinstance(d["python"]["gil_enabled"], bool) and d["python"]["switch_interval_s"] > 0
    assert d["cpu"]["logical_cores"] >= 1
    assert d["memory"]["total_bytes"] > 0 and 0 < d["memory"]["budget_bytes"] <= d["memory"]["total_bytes"]
    assert set(d["torch"]) >= {"version", "cuda_build"}
    json.dumps(d)  # plain data only


def test_cuda_launch_blocking_is_critical(monkeypatch):
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    out = system.run(ProbeContext(options={"fast_cpu": True}))
    f = next(f for f in out.findings if f["code"] == "CUDA_LAUNCH_BLOCKING_ON")
    assert f["severity"] == "critical" and f["evidence"]["CUDA_LAUNCH_BLOCKING"] == "1"
    assert out.data["env"]["CUDA_LAUNCH_BLOCKING"] == "1"


def test_env_is_allowlisted_and_secrets_masked(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    monkeypatch.setenv("NCCL_IB_AUTH_TOKEN", "abc")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    data = system.collect(check_torch=False, detailed_cpu=False)
    assert "AWS_SECRET_ACCESS_KEY" not in data["env"]
    assert data["env"]["NCCL_SOCKET_IFNAME"] == "eth0"
    assert data["env"]["NCCL_IB_AUTH_TOKEN"].startswith("[redacted")
    assert data["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_env_findings():
    assert codes(system.env_findings({"CUDA_LAUNCH_BLOCKING": "0"})) == []
    assert codes(system.env_findings({"CUDA_VISIBLE_DEVICES": ""})) == ["CUDA_VISIBLE_DEVICES_EMPTY"]
    assert codes(system.env_findings({"CUDA_VISIBLE_DEVICES": "0,1"})) == []
    assert codes(system.env_findings({"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})) == ["CUDA_CACHING_ALLOCATOR_OFF"]
    assert codes(system.dcgm_env_finding({"CUDA_INJECTION64_PATH": "/x.so"})) == ["PERFORMANCE_LIMITING_ENV"]


def test_memory_findings_explain_oom_kills_and_limits():
    mem = {"oom_kills_since_boot": 4, "cgroup_oom_kills": 1, "cgroup_limit_bytes": 6 * 2**30,
           "total_bytes": 32 * 2**30, "overcommit_memory": 2, "swap_total_bytes": 0, "wsl_memory_cap_bytes": None}
    got = {f["code"]: f for f in system.memory_findings(mem, None)}
    assert set(got) == {"OOM_KILLS_SINCE_BOOT", "CGROUP_OOM_KILLS", "CGROUP_MEMORY_LIMIT", "OVERCOMMIT_STRICT", "NO_SWAP"}
    assert "4 process" in got["OOM_KILLS_SINCE_BOOT"]["message"]
    assert got["CGROUP_MEMORY_LIMIT"]["severity"] == "warning"  # under half of RAM
    wsl = system.memory_findings({"wsl_memory_cap_bytes": 8 * 2**30, "swap_total_bytes": 2**30}, 2)
    assert codes(wsl) == ["WSL_MEMORY_CAP"]


def test_python_findings():
    assert codes(system.python_findings({"free_threaded_build": True, "gil_enabled": True,
                                         "gil_checked_after_torch": True}, {})) == ["GIL_REENABLED"]
    assert codes(system.python_findings({"free_threaded_build": True, "gil_enabled": False}, {})) == ["FREE_THREADED_PYTHON"]
    assert codes(system.python_findings({"mp_start_method": "fork"}, {"cuda_build": "12.1"})) == ["FORK_START_METHOD"]
    assert codes(system.python_findings({"mp_start_method": "fork"}, {"cuda_build": None})) == []


def test_start_method_is_the_platform_default_even_in_a_spawned_probe():
    import multiprocessing

    res = runner.run_probe(system.PROBE, ProbeContext(timeout_s=120, options={"fast_cpu": True}))
    assert res["data"]["python"]["mp_start_method"] == multiprocessing.get_all_start_methods()[0]
