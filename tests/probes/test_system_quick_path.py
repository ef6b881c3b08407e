"""--quick reads the system without py-cpuinfo or an `import torch` (the speed-up of the report);
--full reads both; a free-threaded build still checks the GIL after importing torch."""

from gpudiag import platform
from gpudiag.probes import system
from gpudiag.probes.base import ProbeContext


def _spy(monkeypatch):
    seen = {}

    def cpu_facts(detailed=False, **kw):
        seen["detailed_cpu"] = detailed
        return {"logical_cores": 2, "brand": "x", "source": "py-cpuinfo" if detailed else "fast"}

    def python_facts(check_torch=False):
        seen["check_torch"] = check_torch
        return {"free_threaded_build": False, "gil_enabled": True, "gil_checked_after_torch": check_torch}

    def torch_facts(import_torch=False):
        seen["import_torch"] = import_torch
        return {"version": None, "reason_missing": "test"}

    monkeypatch.setattr(platform, "cpu_facts", cpu_facts)
    monkeypatch.setattr(platform, "python_facts", python_facts)
    monkeypatch.setattr(platform, "torch_facts", torch_facts)
    return seen


def test_quick_takes_the_fast_path(monkeypatch):
    import sysconfig

    seen = _spy(monkeypatch)
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 0)
    system.run(ProbeContext(mode="quick"))
    assert seen == {"detailed_cpu": False, "check_torch": False, "import_torch": False}


def test_full_reads_py_cpuinfo_and_imports_torch(monkeypatch):
    seen = _spy(monkeypatch)
    system.run(ProbeContext(mode="full"))
    assert seen == {"detailed_cpu": True, "check_torch": True, "import_torch": True}


def test_a_free_threaded_build_checks_the_gil_after_torch_even_in_quick(monkeypatch):
    import sysconfig

    seen = _spy(monkeypatch)
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 1 if name == "Py_GIL_DISABLED" else None)
    system.run(ProbeContext(mode="quick"))
    assert seen["check_torch"] is True and seen["import_torch"] is False and seen["detailed_cpu"] is False
