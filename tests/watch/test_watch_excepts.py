"""The watch's narrowed except clauses: what they catch is handled as documented, anything else (a bug)
propagates instead of being swallowed (issue 10)."""

from __future__ import annotations

import dataclasses
import os

import psutil
import pytest

from gpudiag.backends import nvml as nvml_backend
from gpudiag.watch import access
from gpudiag.watch.gpu import GpuSampler
from gpudiag.watch.procs import ProcessSampler
from tests.fakes import FakeNvml


def _scope1_root(tmp_path) -> str:
    d = tmp_path / "proc/sys/kernel/yama"
    d.mkdir(parents=True)
    (d / "ptrace_scope").write_text("1\n")
    return str(tmp_path)


@pytest.mark.parametrize("error", [psutil.NoSuchProcess(4242), psutil.AccessDenied(4242), psutil.ZombieProcess(4242)])
def test_denied_advice_without_the_owner_stays_general(tmp_path, monkeypatch, error):
    def refuse(pid):
        raise error

    monkeypatch.setattr(psutil, "Process", refuse)
    advice = access.denied_advice(4242, False, "linux", _scope1_root(tmp_path), euid=1000)
    assert "another user" not in advice and "gpudiag watch -- <command>" in advice


def test_denied_advice_does_not_hide_a_bug(tmp_path, monkeypatch):
    def broken(pid):
        raise KeyError("a bug, not a refusal")

    monkeypatch.setattr(psutil, "Process", broken)
    with pytest.raises(KeyError):
        access.denied_advice(4242, False, "linux", _scope1_root(tmp_path), euid=1000)


def _two_gpus_first_lost(error_name: str = "NVMLError_GpuIsLost") -> FakeNvml:
    base = FakeNvml.h100()
    fake = FakeNvml(gpus=[dataclasses.replace(base.gpus[0]), dataclasses.replace(base.gpus[0])],
                    driver_version=base.driver_version, cuda_version=base.cuda_version)
    by_index = fake.nvmlDeviceGetHandleByIndex

    def handle(index):
        if index == 0:
            raise getattr(fake, error_name)() if error_name.startswith("NVML") else RuntimeError("a bug")
        return by_index(index)

    fake.nvmlDeviceGetHandleByIndex = handle
    return fake


def test_gpu_sampler_leaves_out_a_lost_gpu_and_samples_the_other():
    fake = _two_gpus_first_lost()
    with nvml_backend.session(fake) as n:
        s = GpuSampler(n, 0.5, lambda: 0.0)
        s.tick(0.0)
        assert [d["index"] for d in s.devices] == [1]
        assert len(s.devices[0]["samples"]) == 1
        s.close()


def test_gpu_sampler_does_not_hide_a_bug():
    fake = _two_gpus_first_lost(error_name="bug")
    with nvml_backend.session(fake) as n:
        with pytest.raises(RuntimeError, match="a bug"):
            GpuSampler(n, 0.5, lambda: 0.0)


class _NoProcStat:
    """psutil, except that the machine's CPU times cannot be read (a /proc without stat)."""

    def __getattr__(self, name):
        return getattr(psutil, name)

    def cpu_times(self, percpu=False):
        raise FileNotFoundError(2, "No such file or directory", "/proc/stat")


def test_process_sampler_keeps_sampling_the_tree_without_machine_load():
    s = ProcessSampler(os.getpid(), 0.5, lambda: 0.0, psutil=_NoProcStat())
    s.tick(0.0)
    assert s.machine == []
    assert s.procs[os.getpid()]["samples"], "the job's own process must still be sampled"
