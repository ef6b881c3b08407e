"""`gpudiag preflight` on the command line: exit codes, --json contract, --strict, no torch import."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import tests
from gpudiag.cli import main
from gpudiag.diagnose import preflight
from gpudiag.diagnose.preflight import facts as facts_mod
from gpudiag.diagnose.preflight.model import ENV_NAMES
from tests.diagnose.test_preflight_checks import GiB, make_facts, make_gpu, no_nvml, write_report

ROOT = tests.ROOT


def nvml_reachable_here() -> bool:
    from gpudiag.backends import nvml

    try:
        with nvml.session():
            return True
    except nvml.NvmlUnavailable:
        return False


def cli(args, facts=None, monkeypatch=None):
    """Run the command in-process; `facts` replaces what gather_facts would find on this machine."""
    if facts is not None:
        seen = {}

        def fake_gather(plan, **kwargs):
            seen["plan"], seen["kwargs"] = plan, kwargs
            return facts
        monkeypatch.setattr(facts_mod, "gather_facts", fake_gather)
        result = CliRunner().invoke(main, ["preflight"] + args)
        result.seen = seen
        return result
    return CliRunner().invoke(main, ["preflight"] + args)


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for name in ENV_NAMES:
        env.pop(name, None)
    return env


# ----------------------------------------------------------------------------- exit codes

def ready_facts():
    return make_facts(torch={"cuda": "12.1"})


def test_exit_0_when_ready(monkeypatch):
    r = cli(["--workers", "2"], ready_facts(), monkeypatch)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1].startswith("READY")
    assert r.seen["plan"].workers == 2 and r.seen["plan"].strategy == "processes"


def test_exit_1_when_a_check_fails(monkeypatch):
    facts = make_facts(memory={"available_bytes": 6 * GiB})
    r = cli(["--workers", "4", "--ram-per-worker", "1.9G"], facts, monkeypatch)
    assert r.exit_code == 1
    assert "NOT READY" in r.output
    assert "  - host_ram: 4 workers x 1.9 GiB (--ram-per-worker) = 7.6 GiB does not fit in 6 GiB" in r.output


def test_strict_makes_a_warning_exit_1(monkeypatch):
    facts = make_facts(gpus=[make_gpu(clock_event_reasons={"active": ["hw_thermal_slowdown"], "raw": 0x40})])
    relaxed = cli([], facts, monkeypatch)
    assert relaxed.exit_code == 0 and "READY (1 warning: clocks)" in relaxed.output
    strict = cli(["--strict"], facts, monkeypatch)
    assert strict.exit_code == 1
    assert "  - clocks: GPU 0 (NVIDIA GeForce GTX 1650) clocks are held down right now" in strict.output


def test_sizes_and_options_reach_the_plan(monkeypatch, tmp_path):
    r = cli(["--workers", "3", "--strategy", "threads", "--vram-per-worker", "800M", "--ram-per-worker", "1.5G",
             "--checkpoint-dir", str(tmp_path), "--min-free-disk", "512K", "--device", "0"],
            ready_facts(), monkeypatch)
    plan = r.seen["plan"]
    assert (plan.workers, plan.strategy, plan.vram_per_worker, plan.ram_per_worker, plan.min_free_disk) == \
        (3, "threads", 800 * 2**20, 3 * 2**29, 512 * 1024)
    assert plan.checkpoint_dir == str(tmp_path)


@pytest.mark.parametrize("args, words", [
    (["--ram-per-worker", "1.5X"], "cannot read size '1.5X'"),
    (["--vram-per-worker", "-1G"], "negative"),
    (["--workers", "0"], "--workers"),
    (["--strategy", "fibers"], "--strategy"),
    (["--device", "-1"], "--device"),
    (["--checkpoint-dir", "/no/such/folder/here"], "does not exist"),
    (["--min-free-disk", "1G"], "--min-free-disk needs --checkpoint-dir"),
    (["--report", "/no/such/report.json"], "does not exist"),
])
def test_usage_errors_exit_2(args, words, monkeypatch):
    r = cli(args, ready_facts(), monkeypatch)
    assert r.exit_code == 2, r.output
    assert words in r.output
    assert "Traceback" not in r.output


def test_a_bad_report_file_is_a_one_line_error_exit_2(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"schema_version": 99}')
    r = CliRunner().invoke(main, ["preflight", "--report", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "gpudiag: error: --report r.json: written by a newer gpudiag (schema 99; this gpudiag 0.1.0 reads up to 1): "
        "upgrade with `pip install -U gpudiag`"]


# ----------------------------------------------------------------------------- JSON contract

def test_json_contract(monkeypatch):
    facts = make_facts(env={"CUDA_LAUNCH_BLOCKING": "1"})
    r = cli(["--json", "--workers", "2", "--strategy", "threads"], facts, monkeypatch)
    assert r.exit_code == 1
    doc = json.loads(r.output)  # nothing but JSON on stdout
    assert doc["ready"] is False and doc["workers"] == 2 and doc["strategy"] == "threads"
    assert isinstance(doc["duration_s"], float)
    assert set(doc["per_worker"]) >= {"host_bytes", "device_bytes", "source"}
    assert all(set(c) == {"name", "status", "message", "evidence"} for c in doc["checks"])
    assert all(c["status"] in ("pass", "warn", "fail", "skip") for c in doc["checks"])
    env = next(c for c in doc["checks"] if c["name"] == "environment")
    assert env["status"] == "fail" and "CUDA_LAUNCH_BLOCKING=1" in env["message"]


def test_json_ready_exit_0(monkeypatch):
    r = cli(["--json"], ready_facts(), monkeypatch)
    assert r.exit_code == 0 and json.loads(r.output)["ready"] is True


def test_the_report_option_and_folder_search_reach_gather(monkeypatch, tmp_path):
    rep = write_report(tmp_path / "mine.json", "2026-03-01T00:00:00Z", host=GiB)
    r = cli(["--report", str(rep)], ready_facts(), monkeypatch)
    assert r.seen["kwargs"]["reports"] == [str(rep)] and r.seen["kwargs"]["search_dir"] == "."


# ----------------------------------------------------------------------------- end to end on this machine

@pytest.mark.skipif(nvml_reachable_here(), reason="this machine has an NVIDIA driver")
def test_end_to_end_without_a_gpu_is_not_ready_and_names_nvml(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gpudiag", "preflight", "--workers", "2"], cwd=str(tmp_path),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NOT READY" in proc.stdout
    assert "  - nvml: NVIDIA driver/NVML not reachable: " in proc.stdout
    assert proc.stderr == ""

    proc = subprocess.run([sys.executable, "-m", "gpudiag", "preflight", "--json"], cwd=str(tmp_path),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    nvml = doc["checks"][0]
    assert nvml["name"] == "nvml" and nvml["status"] == "fail" and "NVML" in nvml["message"]


@pytest.mark.skipif(nvml_reachable_here(), reason="this machine has an NVIDIA driver")
def test_end_to_end_uses_a_saved_report_in_the_current_folder(tmp_path):
    write_report(tmp_path / "gpudiag-report-2026-03-01-bbbbbb.json", "2026-03-01T00:00:00Z", host=GiB)
    proc = subprocess.run([sys.executable, "-m", "gpudiag", "preflight", "--json"], cwd=str(tmp_path),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    doc = json.loads(proc.stdout)
    assert doc["per_worker"]["host_bytes"] == GiB
    assert doc["per_worker"]["host_source"].startswith("report gpudiag-report-2026-03-01-bbbbbb.json")


def test_preflight_never_imports_torch(tmp_path):
    code = ("import sys, gpudiag\n"
            "r = gpudiag.preflight(workers=2)\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n"
            "print('checks', len(r.checks))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"checks {len(preflight.run_checks(no_nvml(), preflight.Plan())[0])}"


def test_the_cli_never_imports_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpudiag", "preflight", "--json"],
                          cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "gpudiag.diagnose.preflight.gpu_checks" in imported  # the import log is real
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
