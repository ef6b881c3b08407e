"""Conformance of gpudiag's code to the real torch and pynvml (issue 25): every name it uses exists, every call
binds, every fallback list has a spelling that exists, and the NVML constants it copies have NVML's values.

What is checked against what: tests/conformance/usage.py walks gpudiag/ and scripts/ (ast) for the names;
tests/conformance/reference.py reads the installed libraries - torch's CPU build (CI installs
torch==2.13.0; its torch.cuda Python API exists without CUDA) and nvidia-ml-py (importable without a
driver). A failure names the name, the library version and the file:line that uses it.

pyproject.toml allows torch>=1.13 and nvidia-ml-py>=12.535. Names newer than those floors are listed
below with how the code guards them; the floor binding's missing names were read from nvidia-ml-py
12.535.161's pynvml.py.
"""

from __future__ import annotations

import os
from typing import Dict, List

import pynvml
import pytest

from tests.conformance import reference as ref
from tests.conformance.usage import ROOT, Use, all_uses

USES: List[Use] = all_uses()
TORCH = [u for u in USES if u.lib == "torch"]
NVML = [u for u in USES if u.lib == "pynvml"]

# nvidia-ml-py 12.535.161 (the floor) has no wrapper of these names: each may only be one spelling of a fallback
# list that also has a name the floor binding has (Nvml.first skips spellings the binding lacks).
NVML_ABSENT_AT_FLOOR = {
    "nvmlDeviceGetDriverModel_v1", "nvmlDeviceGetDriverModel_v2",
    "nvmlDeviceGetComputeRunningProcesses_v2", "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetMPSComputeRunningProcesses_v2",
}

# torch names newer than the torch>=1.13 floor that gpudiag uses, and how each use is guarded: "getattr" (read
# with getattr(..., default)/hasattr and a fallback), or the test that runs the code on the older API.
TORCH_NEWER_THAN_FLOOR = {
    "torch.OutOfMemoryError": ("2.x (torch.cuda.OutOfMemoryError is 1.13)", "getattr"),
    "torch.distributed.all_gather_single": ("2.13", "getattr"),
    "torch.distributed.reduce_scatter_single": ("2.13", "getattr"),
    "torch.xpu": ("2.1", "getattr"),
    "torch.backends.cpu": ("2.0", "getattr"),
    "torch.cuda.is_bf16_supported(including_emulation)": (
        "2.3", "tests/fleet/test_fleet.py::test_bf16_only_where_the_gpu_runs_it_natively"),
}
# Also newer than 1.13, read where the walk cannot type the object: the device properties' pci_domain_id,
# pci_bus_id and pci_device_id (gpudiag.backends.nvml.pci_bus_id reads them with getattr and a None
# default; tests/probes/test_cuda_probes_fake_torch.py::test_pcie_with_nvml_link_sampled_under_load runs
# the code with a torch that has none; the fake's names are checked in test_fakes_match_the_libraries.py).


def _fail(problems: List[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what} ({ref.versions()}):\n" + "\n".join(sorted(set(problems))), pytrace=False)


# ----------------------------------------------------------------------------- pynvml

def test_every_nvml_name_exists_in_pynvml():
    problems = []
    for u in NVML:
        if u.value is not None:
            continue
        name = u.path.split(".", 1)[1]
        if u.fallbacks:
            if not any(ref.exists(f"pynvml.{f}") for f in u.fallbacks):
                problems.append(f"{u.where}: none of the fallback spellings {', '.join(u.fallbacks)} exists in pynvml")
        elif not ref.exists(u.path):
            problems.append(f"{u.where}: pynvml has no {name}")
    _fail(problems, "NVML names gpudiag uses do not exist")


def test_names_missing_from_the_floor_binding_are_only_fallback_spellings():
    problems = []
    for u in NVML:
        name = u.path.split(".", 1)[1]
        if name not in NVML_ABSENT_AT_FLOOR:
            continue
        if not u.fallbacks or all(f in NVML_ABSENT_AT_FLOOR for f in u.fallbacks):
            problems.append(f"{u.where}: {name} is missing from nvidia-ml-py 12.535 (pyproject's floor) and has no "
                            "fallback spelling that older binding has")
    _fail(problems, "NVML names newer than the floor are used without a fallback")


def test_every_nvml_call_binds_to_pynvmls_signature():
    problems, checked = [], 0
    for u in NVML:
        if u.call is None:
            continue
        for name in u.fallbacks or (u.path.split(".", 1)[1],):
            if not ref.exists(f"pynvml.{name}"):
                continue
            sig, bound = ref.signature(f"pynvml.{name}")
            assert sig is not None, f"pynvml.{name}: a Python wrapper whose signature cannot be read"
            checked += 1
            why = ref.binds(sig, u.call[0], u.call[1], bound)
            if why:
                problems.append(f"{u.where}: pynvml.{name}{sig} called with {u.call[0]} positional argument(s)"
                                f"{' and ' + ', '.join(u.call[1]) if u.call[1] else ''}: {why}")
    assert checked >= 40, checked  # the seam's calls were found: a walk that finds nothing would pass vacuously
    _fail(problems, "NVML calls do not bind")


def test_nvml_constants_gpudiag_copies_have_nvmls_values():
    problems = []
    consts = [u for u in NVML if u.value is not None]
    assert len(consts) >= 10
    for u in consts:
        name = u.path.split(".", 1)[1]
        real = getattr(pynvml, name, None)
        if real != u.value:
            problems.append(f"{u.where}: {name} = {u.value} in gpudiag, {real!r} in pynvml")
    _fail(problems, "NVML constants differ")


def test_clock_event_reason_bits_match_pynvml():
    from gpudiag.backends.nvml import CLOCK_EVENT_REASONS

    names = {"gpu_idle": "GpuIdle", "applications_clocks_setting": "ApplicationsClocksSetting",
             "sw_power_cap": "SwPowerCap", "hw_slowdown": "HwSlowdown", "sync_boost": "SyncBoost",
             "sw_thermal_slowdown": "SwThermalSlowdown", "hw_thermal_slowdown": "HwThermalSlowdown",
             "hw_power_brake_slowdown": "HwPowerBrakeSlowdown", "display_clock_setting": "DisplayClockSetting"}
    for bit, name in CLOCK_EVENT_REASONS:
        assert getattr(pynvml, f"nvmlClocksEventReason{names[name]}", None) == bit, name


# ----------------------------------------------------------------------------- torch

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed: the torch names are checked where it is")


def test_every_torch_name_gpudiag_uses_exists(torch):
    problems = []
    for u in TORCH:
        if u.fallbacks:
            if not any(ref.exists(f) for f in u.fallbacks):
                problems.append(f"{u.where}: none of {', '.join(u.fallbacks)} exists in torch")
        elif not ref.exists(u.path):
            problems.append(f"{u.where}: {u.path} does not exist in torch")
    assert len({u.path for u in TORCH}) >= 80  # the walk found the code's torch names
    _fail(problems, "torch names gpudiag uses do not exist")


def test_every_torch_call_binds_where_its_signature_can_be_read(torch):
    problems, checked = [], 0
    for u in TORCH:
        if u.call is None or not ref.exists(u.path):
            continue
        sig, bound = ref.signature(u.path)
        if sig is None:
            continue
        checked += 1
        why = ref.binds(sig, u.call[0], u.call[1], bound)
        if why:
            problems.append(f"{u.where}: {u.path}{sig} called with {u.call[0]} positional argument(s)"
                            f"{' and ' + ', '.join(u.call[1]) if u.call[1] else ''}: {why}")
    assert checked >= 150, checked
    _fail(problems, "torch calls do not bind")


def _guarded_by_getattr(path: str) -> List[str]:
    """file:line of each use of `path` that is not read with getattr(..., default) or hasattr."""
    owner, name = path.rsplit(".", 1)
    out = []
    for u in TORCH:
        if u.path != path:
            continue
        with open(os.path.join(ROOT, u.file), encoding="utf-8") as fh:
            line = fh.read().splitlines()[u.line - 1]
        if f'"{name}"' not in line or not ("getattr(" in line or "hasattr(" in line):
            out.append(u.where)
    return out


def test_torch_names_newer_than_the_floor_are_guarded(torch):
    problems = []
    tests_text: Dict[str, str] = {}
    for key, (since, guard) in TORCH_NEWER_THAN_FLOOR.items():
        path = key.split("(")[0]
        if not any(u.path == path for u in TORCH):
            problems.append(f"{key}: listed as newer than torch 1.13 but gpudiag no longer uses it: drop it here")
            continue
        if guard == "getattr":
            problems += [f"{w}: {path} (torch {since}) read without getattr/hasattr and a fallback"
                         for w in _guarded_by_getattr(path)]
        else:
            file, test = guard.split("::")
            if file not in tests_text:
                with open(os.path.join(ROOT, file), encoding="utf-8") as fh:
                    tests_text[file] = fh.read()
            if f"def {test}(" not in tests_text[file]:
                problems.append(f"{key}: the test {guard} that runs it on the older API is gone")
    _fail(problems, "torch names newer than the 1.13 floor are not guarded")


# ----------------------------------------------------------------------------- the walk itself

def test_the_walk_finds_uses_through_aliases_objects_and_strings():
    code = '''
import torch
from gpudiag.backends import nvml

def f(n, h, stream):
    sync = torch.cuda.synchronize
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    x = torch.zeros(1, device="cuda")[:1].pin_memory()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    for a, b in zip(starts, starts):
        a.elapsed_time(b)
    start.record(stream)
    x.add_(1)
    sync()
    n.call("nvmlDeviceGetTemperature", h, 0, default=None)
    n.first(["nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"], h)
    return getattr(torch.version, "hip", None)
'''
    import tempfile

    from tests.conformance import usage

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(code)
        found = {(u.path, u.call, u.fallbacks) for u in usage.uses_in(path, root=d)}
    paths = {p for p, _, _ in found}
    assert {"torch.cuda.synchronize", "torch.cuda.Event", "torch.Tensor.pin_memory", "torch.Tensor.add_",
            "torch.cuda.Event.elapsed_time", "torch.cuda.Event.record", "torch.version.hip"} <= paths
    assert ("torch.cuda.synchronize", (0, ()), ()) in found  # called through the alias `sync`
    assert ("torch.cuda.Event", (0, ("enable_timing",)), ()) in found
    assert ("pynvml.nvmlDeviceGetTemperature", (2, ()), ()) in found  # default= is the seam's, not NVML's
    pair = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
    assert ("pynvml.nvmlDeviceGetCurrentClocksThrottleReasons", (1, ()), pair) in found


def test_usage_is_read_from_every_source_file():
    files = {u.file for u in USES}
    for f in ("gpudiag/backends/nvml.py", "gpudiag/platform/gpu_driver.py", "gpudiag/probes/cuda/launch.py",
              "gpudiag/probes/cuda/pcie.py", "gpudiag/fleet/measure.py", "gpudiag/watch/gpu.py",
              "scripts/gpu_crosscheck.py"):
        assert f in files, f
