"""collect_env's fields as gpudiag rows (views/env_fields.py) on stand-in data: a Linux CUDA
machine with pip wheels, a Windows machine through the registry/kernel32 fakes, a report from
before the inventory existed; the package findings; and the report's system section."""

from __future__ import annotations

import copy

from gpudiag.platform import _cpu_windows
from gpudiag.probes import system
from gpudiag.views import env_fields, env_summary
from gpudiag.views import sections
from tests.fakes import read_data
from tests.platform.test_cpu_features import WIN_CPU, FakeKernel32
from tests.views.test_env_vs_collect_env import parse_collect_env
from tests.platform.test_platform_windows import FakeWinreg

LINUX_CUDA = {
    "os": {"name": "Linux", "pretty": "Ubuntu 22.04.4 LTS", "kernel": "6.5.0-35-generic", "wsl": None},
    "python": {"version": "3.10.12", "implementation": "CPython", "bits": 64},
    "cpu": {"brand": "AMD Ryzen 9 7950X", "arch": "x86_64", "physical_cores": 16, "logical_cores": 32},
    "memory": {"total_bytes": 64 * 2 ** 30},
    "torch": {"version": "2.6.0+cu124", "cuda_build": "12.4", "cudnn": None, "hip": None, "source": "files",
              "cudnn_reason": "not read: torch was not imported (fast path)"},
    "env": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUDA_MODULE_LOADING": "LAZY"},
    "toolchain": {"gcc": {"version": "(Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0", "path": "/usr/bin/gcc"},
                  "clang": {"version": None, "reason": "not found: no `clang` on PATH"},
                  "cmake": {"version": "version 3.30.2"},
                  "nvcc": {"version": None, "reason": "not found: no `nvcc` on PATH and no CUDA toolkit under "
                                                      "CUDA_HOME / CUDA_PATH / /usr/local/cuda"},
                  "libc": {"version": "glibc-2.35"}},
    "cuda_libs": {"cudnn": {"torch": [], "wheels": [{"path": "/venv/site-packages/nvidia/cudnn/lib/libcudnn.so.9",
                                                      "version": "9.1.0", "version_source": "cudnn_version.h"}],
                            "system": [], "system_source": "/etc/ld.so.cache", "headers": []},
                  "cudart": {"torch": [], "wheels": [], "system": [], "system_source": "/etc/ld.so.cache", "headers": []},
                  "rocm": {"rocm": None, "miopen": None, "reason": "no ROCm installation at /opt/rocm"}},
    "cpu_features": {"isa_summary": "AVX yes · AVX2 yes · FMA yes · AVX-512: f, bw · AMX: no",
                     "caches": {"L3": {"bytes_each": 32 * 2 ** 20, "instances": 2, "bytes_total": 64 * 2 ** 20}},
                     "numa": {"nodes": 1, "cpus": {"0": "0-31"}}, "rows": [["Architecture", "x86_64"]]},
    "packages": {"pip": [{"name": "nvidia-cudnn-cu12", "version": "9.1.0.70", "source": "pip"},
                         {"name": "nvidia-cuda-runtime-cu12", "version": "12.4.127", "source": "pip"},
                         {"name": "torch", "version": "2.6.0+cu124", "source": "pip"}],
                 "conda": {"prefixes": [], "packages": [], "reason": "not a conda environment: no conda-meta folder"},
                 "cuda_check": {"torch_cuda": "12.4", "checked": [{"name": "nvidia-cudnn-cu12"}], "mismatches": [],
                                "cuda_packages_without_cuda_torch": [], "pins": {}},
                 "pip_label": "pip3"},
    "python_build": {"version_full": "3.10.12 (main, Nov 20 2023, 15:14:05) [GCC 11.4.0]", "bits": 64,
                     "platform": "Linux-6.5.0-35-generic-x86_64-with-glibc2.35"},
    "torch_build": {"present": True, "debug": False, "debug_known": True, "xpu": None, "xpu_known": True},
    "torch_runtime": {"checked": False, "reason": "not checked: needs importing torch"},
}
DRIVER = {"data": {"driver_version": "550.54.14", "cuda_driver_version": "12.4",
                   "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 4090"}, {"index": 1, "name": "NVIDIA GeForce RTX 4090"}]},
          "findings": []}


def rows(system_data, driver=DRIVER):
    return dict(env_fields.collect_env_rows(system_data, driver))


def test_every_label_once_with_values_for_a_cuda_machine():
    r = env_fields.collect_env_rows(LINUX_CUDA, DRIVER)
    labels = [k for k, _ in r]
    assert [k for k in labels if k in env_fields.COLLECT_ENV_LABELS] == list(env_fields.COLLECT_ENV_LABELS)
    assert len(labels) == len(set(labels))
    d = dict(r)
    assert d["CUDA used to build PyTorch"] == "12.4"
    assert d["GPU models and configuration"] == "GPU 0: NVIDIA GeForce RTX 4090; GPU 1: NVIDIA GeForce RTX 4090"
    assert d["Nvidia driver version"] == "550.54.14"
    assert d["Is CUDA available"].startswith("not checked") and "NVML sees 2 GPU(s)" in d["Is CUDA available"]
    assert "nvidia-cudnn-cu12 9.1.0.70" in d["cuDNN version"]
    assert d["CUDA runtime version"].startswith("Could not collect: not found: no `nvcc`")
    assert "nvidia-cuda-runtime-cu12 12.4.127" in d["CUDA runtime libraries (gpudiag)"]
    assert d["CUDA_MODULE_LOADING set to"] == "LAZY"
    assert d["Caching allocator config"] == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert d["Is debug build"] == "False (torch/version.py)" and d["Is XPU available"].startswith("False")
    assert d["Is XNNPACK available"].startswith("not checked: needs importing torch")
    assert d["HIP runtime version"] == "N/A (not a ROCm build)"
    assert "CUDA packages match torch's build" in d["Versions of relevant libraries"]


def test_labels_of_real_collect_env_outputs_are_all_covered():
    # Windows (wmic era and newer format) and WSL2 outputs from public issues
    for name in ("collect_env_windows.txt", "collect_env_wsl2.txt"):
        labels, _cpu, _libs = parse_collect_env(read_data(name))
        assert labels, name
        ours = set(rows(LINUX_CUDA))
        assert set(labels) <= ours, (name, set(labels) - ours)


def test_rocm_and_xpu_builds_say_what_is_not_checked():
    d = copy.deepcopy(LINUX_CUDA)
    d["torch"].update(cuda_build=None, hip="6.2.41133")
    d["cuda_libs"]["rocm"] = {"rocm": "6.2.0-66", "miopen": "3.2.0", "source": "/opt/rocm"}
    d["torch_build"].update(xpu="20250101", xpu_known=True)
    r = rows(d, None)
    assert r["ROCM used to build PyTorch"] == "6.2.41133" and r["CUDA used to build PyTorch"] == "N/A (ROCm build)"
    assert "ROCm 6.2.0-66 installed at /opt/rocm" in r["HIP runtime version"]
    assert r["MIOpen runtime version"] == "3.2.0 (installed headers)"
    assert r["Is XPU available"].startswith("XPU build (20250101)") and r["XPU used to build PyTorch"] == "20250101"
    assert r["Intel GPU models detected"].startswith("not checked")
    assert r["GPU models and configuration"] == "see the NVIDIA driver section of this report"


def test_imported_torch_answers_replace_the_reasons():
    d = copy.deepcopy(LINUX_CUDA)
    d["torch_runtime"] = {"checked": True, "debug": False, "xnnpack": True, "xpu_available": False,
                          "cpu_capability": "AVX512", "hip_runtime": None, "miopen": None}
    d["torch"]["cudnn"] = 90100
    r = rows(d)
    assert r["Is XNNPACK available"] == "True" and r["Is debug build"] == "False" and r["Is XPU available"] == "False"
    assert r["CPU capability torch uses (gpudiag)"] == "AVX512"
    assert r["cuDNN version"].startswith("torch.backends.cudnn.version() = 90100")


def test_a_report_from_before_the_inventory_still_has_every_label():
    old = {k: LINUX_CUDA[k] for k in ("os", "python", "cpu", "memory", "torch", "env")}
    r = rows(old, None)
    assert set(env_fields.COLLECT_ENV_LABELS) <= set(r)
    assert r["GCC version"] == "not collected by this gpudiag version"
    assert env_fields.report_tables(old) == [] and env_fields.cpu_rows(old) == []
    assert sections._view_system(old)["kv"]  # the old view still renders


def test_report_system_section_has_the_collect_env_tables():
    view = sections._view_system(LINUX_CUDA)
    titles = [t["title"] for t in view["tables"]]
    assert titles[:3] == ["Environment variables (allowlisted)", "Field by field: torch.utils.collect_env",
                          "CPU (lscpu fields)"]
    assert "Versions of relevant libraries" in titles
    kv = dict(view["kv"])
    assert kv["CPU instruction sets"].startswith("AVX yes") and kv["NUMA"].startswith("1 node(s)")


def test_markdown_for_a_windows_machine_built_from_the_fakes():
    d = copy.deepcopy(LINUX_CUDA)
    d["os"] = {"name": "Windows", "pretty": "Windows 11 Pro 23H2 (build 22631)", "kernel": "10.0.22631.2861"}
    d["cpu_features"] = _cpu_windows.facts(reg=FakeWinreg(WIN_CPU), api=FakeKernel32(), logical=8, physical=4,
                                           arch="AMD64")
    d["toolchain"]["libc"] = {"version": None, "reason": "N/A: Windows has no libc with a version to report"}
    md = env_summary.render(d, DRIVER, None, "0.1.0")
    assert "| Model name | Intel(R) Core(TM) i7-10700 CPU @ 2.90GHz |" in md
    assert "| L2 cache | 5 MiB (4 instances) |" in md and "| NUMA node(s) | 1 |" in md
    assert "| **Libc version** | N/A: Windows" in md
    assert "| **OS** | Windows 11 Pro 23H2 (build 22631) (x86_64), kernel 10.0.22631.2861 |" in md
    assert "[pip3] nvidia-cudnn-cu12==9.1.0.70" in md and "[conda] none: not a conda environment" in md


# ------------------------------------------------------------------ findings

def _mismatch_data():
    d = copy.deepcopy(LINUX_CUDA)
    d["packages"]["cuda_check"]["mismatches"] = [
        {"name": "nvidia-nvjitlink-cu12", "installed": "12.1.105", "expected": "==12.4.127",
         "rule": "pinned in torch's metadata", "source": "pip"}]
    return d


def test_cuda_wheel_mismatch_is_a_warning_with_the_numbers():
    found = {f["code"]: f for f in system.findings_for(_mismatch_data())}
    f = found["CUDA_WHEEL_MISMATCH"]
    assert f["severity"] == "warning" and "nvidia-nvjitlink-cu12 12.1.105 (expected ==12.4.127" in f["message"]
    assert f["evidence"]["torch_cuda"] == "12.4" and f["evidence"]["mismatches"][0]["installed"] == "12.1.105"
    md = env_summary.render(dict(_mismatch_data(), findings=system.findings_for(_mismatch_data())), DRIVER, None, "x")
    assert "`CUDA_WHEEL_MISMATCH`" in md and "1 CUDA package mismatch(es)" in md
    assert "CUDA packages that do not match torch's build" in [t["title"] for t in sections._view_system(_mismatch_data())["tables"]]


def test_cuda_wheels_with_cpu_only_torch_is_info():
    d = copy.deepcopy(LINUX_CUDA)
    d["torch"].update(version="2.6.0+cpu", cuda_build=None)
    d["packages"]["cuda_check"].update(torch_cuda=None, cuda_packages_without_cuda_torch=[
        "nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12", "cuda-cudart"])
    found = {f["code"]: f for f in system.findings_for(d)}
    f = found["CUDA_WHEELS_WITH_CPU_TORCH"]
    assert f["severity"] == "info" and f["evidence"]["cuda_wheels"] == ["nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12"]
    assert "CUDA_WHEEL_MISMATCH" not in found and "CUDA_WHEELS_WITH_CPU_TORCH" not in {
        f["code"] for f in system.findings_for(LINUX_CUDA)}
