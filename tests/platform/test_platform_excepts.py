"""platform's narrowed except clauses: the failures psutil, winreg and torch really raise are facts
("unknown", a reason), anything else (a bug) propagates instead of being swallowed (issue 10)."""

from __future__ import annotations

import os
import sys
import types

import psutil
import pytest

from gpudiag import platform
from gpudiag.backends import torch_meta
from gpudiag.platform import _windows


@pytest.mark.parametrize("error", [
    NotImplementedError("can't find current frequency file"),  # Linux VMs without cpufreq
    RuntimeError("'pmgr' entry was not found in AppleARMIODevice service"),  # psutil #2382, Apple silicon
    FileNotFoundError(2, "No such file or directory"),
])
def test_cpu_frequency_psutil_cannot_read_is_unknown(tmp_path, monkeypatch, error):
    def refuse():
        raise error

    monkeypatch.setattr(psutil, "cpu_freq", refuse)
    c = platform.cpu_facts(root=str(tmp_path), kind="linux")
    assert c["freq_current_mhz"] is None and c["freq_max_mhz"] is None
    assert c["logical_cores"] == psutil.cpu_count(logical=True)


def test_cpu_frequency_bug_propagates(tmp_path, monkeypatch):
    def broken():
        raise KeyError("a bug")

    monkeypatch.setattr(psutil, "cpu_freq", broken)
    with pytest.raises(KeyError):
        platform.cpu_facts(root=str(tmp_path), kind="linux")


class _Proc:
    def __init__(self, affinity):
        self.affinity = affinity

    def cpu_affinity(self):
        if isinstance(self.affinity, BaseException):
            raise self.affinity
        return self.affinity


@pytest.mark.parametrize("proc, expected", [
    (_Proc([0, 1, 2]), 3),                              # Windows: psutil's answer
    (_Proc(psutil.AccessDenied(1)), None),              # a sandbox refuses it
    (types.SimpleNamespace(), None),                    # macOS: no cpu_affinity at all
])
def test_affinity_cores_without_sched_getaffinity(monkeypatch, proc, expected):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(psutil, "Process", lambda pid=None: proc)
    assert platform._affinity_cores() == expected


class _Reg:
    """winreg's four names, with a CloseKey that fails."""

    HKEY_LOCAL_MACHINE = "HKLM"

    def OpenKey(self, hive, subkey):  # noqa: N802 - winreg's names
        return subkey

    def QueryValueEx(self, key, name):  # noqa: N802
        return "Intel(R) Xeon(R)", 1

    def CloseKey(self, key):  # noqa: N802
        raise OSError(6, "The handle is invalid")


def test_registry_value_survives_a_failing_close():
    assert _windows.reg_value(_Reg(), _windows.CPU0, "ProcessorNameString") == "Intel(R) Xeon(R)"


def _fake_torch(monkeypatch, cudnn):
    monkeypatch.setattr(torch_meta, "torch_version", lambda: "2.4.0")
    monkeypatch.setattr(torch_meta, "torch_cuda_version", lambda: "12.1")
    monkeypatch.setattr(torch_meta, "torch_hip_version", lambda: None)
    backends = types.SimpleNamespace(cudnn=cudnn) if cudnn is not None else types.SimpleNamespace()
    fake = types.SimpleNamespace(__version__="2.4.0", version=types.SimpleNamespace(cuda="12.1", hip=None),
                                 backends=backends)
    monkeypatch.setitem(sys.modules, "torch", fake)


def _raising(error):
    def version():
        raise error
    return types.SimpleNamespace(version=version)


@pytest.mark.parametrize("cudnn, kind", [
    (_raising(RuntimeError("cuDNN version incompatibility: PyTorch was compiled against (9, 1, 0)")), "RuntimeError"),
    (_raising(OSError("libcudnn.so.9: cannot open shared object file")), "OSError"),
    (None, "AttributeError"),  # a build without torch.backends.cudnn
])
def test_cudnn_version_failure_is_a_reason(monkeypatch, cudnn, kind):
    _fake_torch(monkeypatch, cudnn)
    t = platform.torch_facts(import_torch=True)
    assert t["source"] == "import" and t["cudnn"] is None
    assert t["cudnn_reason"] == f"torch.backends.cudnn.version() failed: {kind}"


def test_cudnn_version_bug_propagates(monkeypatch):
    _fake_torch(monkeypatch, _raising(KeyError("a bug")))
    with pytest.raises(KeyError):
        platform.torch_facts(import_torch=True)
