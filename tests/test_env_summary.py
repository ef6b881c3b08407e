import os
import socket
import subprocess
import sys

from gpudiag import env_summary
from tests.fakes import FakeNvml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_env_markdown_on_this_machine_without_torch_import():
    code = ("import sys, gpudiag.env_summary as e; md = e.env_markdown(); "
            "assert 'torch' not in sys.modules, 'env imported torch'; "
            "assert 'cpuinfo' not in sys.modules, 'env ran py-cpuinfo'; print(md)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    md = out.stdout
    for needle in ("| OS |", "| Kernel |", "| WSL |", "| Python |", "standard build (GIL)", "| RAM |",
                   "| torch |", "| NVIDIA driver | not reachable: NVML library"):
        assert needle in md, needle
    host = socket.gethostname()
    if len(host) > 3:
        assert host not in md


def test_env_markdown_with_a_gpu_shows_model_link_module_and_processes():
    from gpudiag.probes import driver, system

    fake = FakeNvml.gtx1650_desktop()
    data = {"system": system.collect(check_torch=False, detailed_cpu=False),
            "driver": driver.collect(_open(fake), host="linux", procs={}),
            "driver_reason": None}
    md = env_summary.to_markdown(data)
    assert "### GPU 0: NVIDIA GeForce GTX 1650" in md
    assert "| PCIe link | Gen" in md and "max Gen" in md
    assert "Xorg" in md and "| Kernel module |" in md


def _open(fake):
    from gpudiag.backends.nvml import Nvml

    fake.nvmlInit()
    return Nvml(fake)
