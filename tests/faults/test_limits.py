"""Resource limits and absurd numbers: a probe that cannot start is `failed` with the reason and the
report is still written; a limit or size no machine has is refused up front with one line.
"""

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import pytest
from click.testing import CliRunner

from gpudiag import cli, runner
from gpudiag.measure.sizes import parse_size
from tests import fixture_probes
from tests.faults import probes as fault_probes
from tests.faults._helpers import ROOT

CAPS = {}


def _eagain(*a, **k):
    raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def test_a_probe_child_that_cannot_be_forked_is_failed_with_the_reason(monkeypatch):
    from multiprocessing import util

    monkeypatch.setattr(util, "spawnv_passfds", _eagain)  # what fork() does under RLIMIT_NPROC
    out = runner.run_probes([fixture_probes.OK, fixture_probes.OK_INLINE], caps=CAPS)
    res = out["results"]["ok_probe"]
    assert res["status"] == "failed"
    assert "process limit" in res["reason"] and "RLIMIT_NPROC" in res["reason"]
    assert out["results"]["ok_inline"]["status"] == "ok"  # the rest still runs


def test_no_file_descriptor_left_is_failed_with_the_reason(monkeypatch):
    def emfile(*a, **k):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(runner.tempfile, "mkstemp", emfile)
    res = runner.run_probe(fixture_probes.OK, runner.ProbeContext(timeout_s=30), CAPS)
    assert res["status"] == "failed" and "too many open files" in res["reason"]


def test_report_is_still_written_when_no_probe_can_start(tmp_path, monkeypatch):
    from multiprocessing import util

    import gpudiag.probes

    monkeypatch.setattr(util, "spawnv_passfds", _eagain)
    monkeypatch.setattr(gpudiag.probes, "all_probes", lambda: list(fault_probes.SETS["quick"]))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli.main, ["report", "--json", "r.json", "-o", "r.html"])
    assert res.exit_code == cli.EXIT_PROBE_FAILED, res.output  # the report is written whole; a probe failed
    rep = json.loads((tmp_path / "r.json").read_text())
    assert {p["status"] for p in rep["probes"].values()} == {"failed"}
    assert "process limit" in rep["probes"]["first"]["reason"]
    assert (tmp_path / "r.html").exists()


def _unprivileged():
    """(argv prefix, env, preexec) to run gpudiag as an ordinary user, or None where that is not possible here."""
    if not hasattr(os, "geteuid"):
        return None
    if os.geteuid() != 0:
        return [sys.executable], {}, None
    # As root (a container): the limit does not apply to root, so drop to `nobody` with an interpreter it can run.
    nobody = 65534
    site = next((p for p in sys.path if p.endswith("site-packages")), None)
    for exe in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if not exe or not os.path.exists(exe):
            continue
        env = {"PYTHONPATH": os.pathsep.join(x for x in (ROOT, site) if x)}

        def drop():
            os.setgid(nobody)
            os.setuid(nobody)

        try:
            probe = subprocess.run([exe, "-c", "import sys, click, psutil, jinja2; assert sys.version_info[:2] == "
                                    f"{tuple(sys.version_info[:2])}"], env=dict(os.environ, **env), preexec_fn=drop,
                                   capture_output=True, timeout=60, cwd="/")
        except OSError:  # the interpreter lives where that user cannot go
            continue
        if probe.returncode == 0:
            return [exe], env, drop
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_NPROC counts processes per user on Linux")
def test_real_process_limit_fails_the_probe_and_writes_the_report():
    how = _unprivileged()
    if how is None:
        pytest.skip("no interpreter an unprivileged user can run here")
    argv, env, drop = how
    work = tempfile.mkdtemp(prefix="gpudiag-nproc-")
    os.chmod(work, 0o777)
    try:
        def limited():
            if drop:
                drop()
            resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))  # `prlimit --nproc=1`: no fork, no thread

        out = subprocess.run(argv + ["-m", "gpudiag", "report", "--only", "system", "--only", "driver",
                                     "--json", "r.json", "-o", "r.html"],
                             cwd=work, env=dict(os.environ, TMPDIR=work, **env), preexec_fn=limited,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1, out.stderr  # written whole, the system probe failed
        assert "Traceback" not in out.stderr + out.stdout
        with open(os.path.join(work, "r.json")) as fh:
            rep = json.load(fh)
        assert rep["probes"]["system"]["status"] == "failed"
        assert "process limit" in rep["probes"]["system"]["reason"]
        assert sorted(os.listdir(work)) == ["r.html", "r.json"]  # no log or staging file left
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "0.5", "1e400", "1e9", "abc", ""])
def test_absurd_timeouts_are_refused(value):
    res = CliRunner().invoke(cli.main, ["report", "--only", "driver", "--timeout", value])
    assert res.exit_code == 2 and "--timeout" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 0, 0.5, 10**9, "5", True])
def test_run_probes_refuses_absurd_timeouts(value):
    with pytest.raises(ValueError, match="timeout"):
        runner.run_probes([fixture_probes.OK_INLINE], timeout_s=value, caps=CAPS)


@pytest.mark.parametrize("args", [["--workers", str(10**20)], ["--workers", "9" * 5000], ["--workers", "0"],
                                  ["--device", str(10**20)], ["--ram-per-worker", "9" * 400],
                                  ["--vram-per-worker", "99999999999999999999999T"], ["--ram-per-worker", "inf"]])
def test_preflight_refuses_numbers_no_machine_has(args):
    res = CliRunner().invoke(cli.main, ["preflight"] + args)
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output


def test_preflight_api_refuses_numbers_no_machine_has():
    import gpudiag

    for kwargs in ({"workers": 10**30}, {"workers": 4, "ram_per_worker": 10**30}, {"device": 10**30},
                   {"workers": 4, "vram_per_worker": "1e400"}):
        with pytest.raises(ValueError):
            gpudiag.preflight(**kwargs)
    with pytest.raises(ValueError):
        parse_size("9" * 400)


def test_huge_worker_count_from_the_shell_is_one_line(tmp_path):
    from tests.faults._helpers import gpudiag

    out = gpudiag(["preflight", "--workers", str(10**20)], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "OverflowError" not in out.stderr
    assert "--workers" in out.stderr
