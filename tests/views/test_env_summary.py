"""`gpudiag env`: Markdown rendered from the fast collectors' facts (probes/env_facts.py; its own tests are in
tests/probes/test_env_facts.py), GPU facts from stand-ins of the driver probe's data."""

from __future__ import annotations

import subprocess
import sys

from gpudiag.probes import env_facts
from gpudiag.views import env_summary

UUID = "GPU-5a8f1c2e-1234-4bcd-9ef0-0123456789ab"

# A stand-in for driver.collect() output (docs/report-contract.md `driver`), shaped after the
# Windows/WDDM GTX 1660 SUPER capture with VS Code and a browser holding the GPU.
DRIVER_DATA = {
    "host": "windows", "driver_version": "462.31", "cuda_driver_version": "11.2", "nvml_version": "11.462.31",
    "kernel_module": None, "mps_daemon_running": None,
    "windows": {"hags": {"raw": 2, "enabled": True}, "tdr": {"delay_s": 2, "ddi_delay_s": 5, "level": 3}},
    "gpus": [{
        "index": 0, "name": "NVIDIA GeForce GTX 1660 SUPER", "uuid": UUID,
        "memory_total_bytes": 6 * 2 ** 30, "memory_used_bytes": 2 ** 30, "memory_free_bytes": 5 * 2 ** 30,
        "driver_model": {"current": "WDDM", "pending": "WDDM"}, "persistence_mode": "n/a",
        "compute_mode": "Default", "mig_mode": {"current": "n/a", "pending": "n/a"},
        "display_active": True,
        "pcie": {"gen_current": 1, "gen_max_system": 3, "gen_max_card": 3, "width_current": 16, "width_max": 16},
        "clock_event_reasons": {"active": ["gpu_idle"], "raw": 1},
        "temperature_c": 38, "power_draw_w": 15.2, "power_limit_w": 125.0, "utilization_gpu_percent": 3,
        "processes": {"compute": [],
                      "graphics": [{"pid": 4242, "name": "Code.exe", "used_memory_bytes": None},
                                   {"pid": 5151, "name": "firefox.exe", "used_memory_bytes": None}]},
    }],
}
LINUX_DRIVER = {
    "host": "linux", "driver_version": "575.57.08", "cuda_driver_version": "12.9",
    "kernel_module": {"flavour": "open", "version": "575.57.08", "source": "/proc/driver/nvidia/version"},
    "mps_daemon_running": False, "windows": None,
    "gpus": [{"index": 0, "name": "NVIDIA GeForce GTX 1650", "memory_total_bytes": 4 * 2 ** 30,
              "driver_model": {"current": "n/a", "pending": "n/a"}, "persistence_mode": False,
              "pcie": {"gen_current": 3, "gen_max_card": 3, "width_current": 8, "width_max": 16},
              "processes": {"compute": [{"pid": 7, "name": "python3", "used_memory_bytes": 2 ** 30}],
                            "graphics": "n/a"}}],
}


def fast_system():
    return env_facts.collect_system(environ={"CUDA_LAUNCH_BLOCKING": "1", "NCCL_DEBUG": "WARN",
                                             "GITHUB_TOKEN": "ghp_" + "x" * 36})


def test_render_covers_more_than_collect_env_with_wddm_gpu():
    system = fast_system()
    del system["packages"]  # what this machine has installed (torch or not): the stand-in list is shown instead
    md = env_summary.render(system, {"data": DRIVER_DATA, "findings": []}, [("torch", "2.13.0+cpu")], "0.1.0")
    for needle in ("| **OS** |", "| **WSL** |", "| **Container / VM** |", "| **Python** |", "| **CPU** |",
                   "| **RAM** |", "| **Memory budget for new workers** |", "| **torch** |",
                   "driver 462.31", "CUDA driver API 11.2", "driver model WDDM", "PCIe Gen1 x16 (max Gen3 x16",
                   "HAGS on", "TDR delay 2 s", "graphics: Code.exe, firefox.exe", "compute: none",
                   "<details><summary>Environment variables", "`CUDA_LAUNCH_BLOCKING` | `1`",
                   "`CUDA_LAUNCH_BLOCKING_ON`", "<details><summary>GPU details", "clock event reasons gpu_idle",
                   "torch==2.13.0+cpu"):
        assert needle in md, needle
    assert "GITHUB_TOKEN" not in md  # not allowlisted
    assert md.count("<details>") == md.count("</details>")
    # every table row has exactly three unescaped pipes
    for line in md.splitlines():
        if line.startswith("| **"):
            assert line.replace("\\|", "").count("|") == 3, line


def test_render_linux_open_module_and_processes():
    md = env_summary.render(fast_system(), {"data": LINUX_DRIVER, "findings": []}, [], "0.1.0")
    assert "open kernel module 575.57.08" in md
    assert "compute: python3 (1 GiB); graphics: not reported by NVML" in md
    assert "persistence off" in md and "PCIe Gen3 x8 (max Gen3 x16; idle links downtrain)" in md


def test_render_pcie_max_falls_back_to_system_max_and_wsl2_module_reason():
    d = dict(LINUX_DRIVER, kernel_module={"flavour": None, "version": None, "source": None,
                                          "reason": "WSL2: the GPU is paravirtualised through /dev/dxg"})
    d["gpus"] = [dict(d["gpus"][0], pcie={"gen_current": 1, "gen_max_card": "n/a", "gen_max_system": 4,
                                           "width_current": 8, "width_max": "n/a"})]
    md = env_summary.render(fast_system(), {"data": d, "findings": []}, [], "0.1.0")
    assert "PCIe Gen1 x8 (max Gen4; idle links downtrain)" in md
    assert "no Linux kernel module (WSL2" in md


def test_env_markdown_is_fast_path_and_redacted():
    # In a fresh interpreter: no torch, no py-cpuinfo imported; UUIDs and tokens never printed.
    code = ("import sys, os; os.environ['NCCL_X'] = 'ghp_' + 'z' * 36; "
            "from gpudiag.probes import env_facts; from gpudiag.views.env_summary import env_markdown; "
            "md = env_markdown(env_facts.collect()); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'cpuinfo' not in sys.modules, 'py-cpuinfo imported'; "
            "assert 'ghp_' not in md; print(md)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("### Environment (`gpudiag env`")
    assert "| **NVIDIA driver** |" in out.stdout
    assert "`NCCL_X` | `[redacted" in out.stdout


def test_uuid_in_driver_data_never_printed():
    md = env_summary.render(fast_system(), {"data": DRIVER_DATA, "findings": []}, [], "0.1.0")
    from gpudiag.report.redact import redact

    assert UUID not in redact(md)


def test_cli_env_prints_markdown():
    out = subprocess.run([sys.executable, "-m", "gpudiag", "env"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "| **Python** |" in out.stdout and "| **Memory budget for new workers** |" in out.stdout
