"""CLI conventions users know from other tools: one-line usage errors, shell completion of probe
names, `compare` saying what it needs, and an exit code that says a probe failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import tests
from gpudiag.cli import main
from gpudiag import api
from tests.faults import _helpers as faults


def gpudiag(*args, cwd=None, env=None):
    e = dict(os.environ, PYTHONPATH=tests.ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpudiag", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, words", [
    (["report", "--foo"], "gpudiag: error: no such option '--foo' (see 'gpudiag report -h')"),
    (["nosuch"], "gpudiag: error: no such command 'nosuch' (see 'gpudiag -h')"),
    (["render"], "gpudiag: error: missing argument 'REPORT.json' (see 'gpudiag render -h')"),
    (["report", "--timeout", "0.5"], "gpudiag: error: invalid value for '--timeout': timeout must be a finite number of seconds "
     "from 1 to 604800 (a week), not 0.5"),
    (["report", "--timeout", "soon"], "gpudiag: error: invalid value for '--timeout': 'soon' is not a number of seconds"),
    (["preflight", "--min-free-disk", "1G"], "gpudiag: error: --min-free-disk needs --checkpoint-dir"),
    (["preflight", "--ram-per-worker", "lots"], "gpudiag: error: invalid value for '--ram-per-worker'"),
])
def test_click_usage_errors_are_one_line_exit_2(tmp_path, args, words):
    out = gpudiag(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(words), out.stderr
    assert "Usage:" not in out.stderr and "Traceback" not in out.stderr and out.stdout == ""


@pytest.mark.parametrize("args", [["compare", "one.json"], ["compare"], ["compare", "-o", "x.html", "one.json"]])
def test_compare_says_it_needs_two_reports(tmp_path, args):
    out = gpudiag(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("gpudiag: error: compare needs at least two report files (got ")
    assert out.stderr.count("\n") == 1 and "Missing option" not in out.stderr


def test_help_and_version_still_exit_0():
    out = gpudiag("report", "-h")
    assert out.returncode == 0 and out.stdout.startswith("Usage: gpudiag report")
    out = gpudiag("--version")
    assert out.returncode == 0 and out.stdout.startswith("gpudiag, version ")


def test_ctrl_c_outside_a_probe_run_is_one_line_exit_130(monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "select_probes", interrupted)
    res = CliRunner().invoke(main, ["report"])
    assert res.exit_code == 130 and res.output.strip() == "gpudiag: error: interrupted by Ctrl-C"


def _complete(words, shell="bash"):
    env = {"_GPUDIAG_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    out = gpudiag(env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("option", ["--only", "--skip"])
def test_probe_names_complete_for_only_and_skip(option):
    from gpudiag.probes import all_probes

    assert _complete(f"gpudiag report {option} c").split() == ["plain,contention", "plain,cycle"]
    every = [line.split(",", 1)[1] for line in _complete(f"gpudiag report {option} ").split()]
    assert every == [p.name for p in all_probes()]


def test_completion_script_is_generated_for_each_documented_shell():
    for shell in ("bash", "zsh", "fish"):
        out = gpudiag(env={"_GPUDIAG_COMPLETE": f"{shell}_source"})
        assert out.returncode == 0 and "_GPUDIAG_COMPLETE" in out.stdout, shell
    with open(os.path.join(tests.ROOT, "docs", "cli.md"), encoding="utf-8") as fh:
        doc = fh.read()
    for line in ('eval "$(_GPUDIAG_COMPLETE=bash_source gpudiag)"', 'eval "$(_GPUDIAG_COMPLETE=zsh_source gpudiag)"',
                 "_GPUDIAG_COMPLETE=fish_source gpudiag | source"):
        assert line in doc


def test_report_exit_code_is_1_when_a_probe_failed_and_the_report_is_still_written(tmp_path):
    """A real failure: a probe that never finishes times out after --timeout 1 (status failed)."""
    out = faults.gpudiag(["report", "--timeout", "1", "--json", "r.json", "-o", "r.html"], cwd=tmp_path,
                         tmpdir=tmp_path, fixtures="hangs")
    assert out.returncode == 1, out.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["probes"]["first"]["status"] == "ok"
    assert rep["probes"]["hang"]["status"] == "failed" and rep["probes"]["hang"]["reason"] == "timed out after 1 s"
    assert (tmp_path / "r.html").exists()
    assert "Traceback" not in out.stderr


def test_report_exit_code_is_0_when_probes_are_only_skipped(tmp_path):
    out = gpudiag("report", "--only", "launch", "--json", "r.json", "-o", "r.html", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r.json").read_text())["probes"]["launch"]["status"] in ("ok", "skipped")


def test_a_partial_markdown_report_says_not_measured(tmp_path):
    """`--only driver --markdown -`: the system probe did not run, so no OS, Python or torch is claimed."""
    out = gpudiag("report", "--only", "driver", "--markdown", "-", "--json", "r.json", "-o", "r.html",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "unknown OS" not in out.stdout and "not installed" not in out.stdout
    assert "Machine, OS, Python and torch not measured: the system probe did not run." in out.stdout
    assert "unknown OS" not in out.stderr and "OS not measured" in out.stderr
