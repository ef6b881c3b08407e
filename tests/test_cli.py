"""The CLI end to end: real subprocesses where exit codes and stdout/stderr separation matter."""

import json
import os
import subprocess
import sys

import pytest

from gpudiag import __version__
from gpudiag.report import contract as report_mod
from tests.report.test_report import sample_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpudiag(*args, cwd=None, env=None):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpudiag", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=300)


def test_version_and_help():
    out = gpudiag("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = gpudiag("--help")
    assert out.returncode == 0
    for cmd in ("report", "probes", "env", "render"):
        assert cmd in out.stdout
    assert gpudiag("report", "--help").returncode == 0


def _saved(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(report_mod.dumps(sample_report()))
    return path


def test_render_html_and_markdown(tmp_path):
    src = _saved(tmp_path)
    out = gpudiag("render", str(src), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Ubuntu 22.04.3 LTS" in html and "NO_SWAP" in html
    out = gpudiag("render", str(src), "-o", str(tmp_path / "r.md"))
    assert out.returncode == 0
    assert "Ubuntu 22.04.3 LTS" in (tmp_path / "r.md").read_text()
    out = gpudiag("render", str(src), "-o", "-")
    assert out.returncode == 0 and out.stdout.startswith("## gpudiag report")


@pytest.mark.parametrize("content", ["", '{"schema_version": 1, "gpud', "not json at all",
                                     json.dumps({"schema_version": 7})])
def test_render_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = gpudiag("render", str(bad), "-o", str(tmp_path / "out.html"))
    assert out.returncode == 2
    assert out.stderr.startswith("gpudiag: error: bad.json: ")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "out.html").exists()


def test_render_rejects_unknown_suffix_and_missing_folder(tmp_path):
    src = _saved(tmp_path)
    out = gpudiag("render", str(src), "-o", str(tmp_path / "r.pdf"))
    assert out.returncode == 2 and "use a .html or .md" in out.stderr
    out = gpudiag("render", str(src), "-o", str(tmp_path / "nope" / "r.html"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_report_rejects_unknown_probe_names():
    out = gpudiag("report", "--only", "nonsense")
    assert out.returncode == 2 and "unknown probe 'nonsense'" in out.stderr and "Traceback" not in out.stderr


def test_render_reproduces_the_html_of_report(tmp_path):
    """`gpudiag render r.json` and the report's own HTML come from the same path."""
    from gpudiag.views import render

    src = _saved(tmp_path)
    gpudiag("render", str(src), "-o", str(tmp_path / "again.html"))
    assert (tmp_path / "again.html").read_text() == render.render_html(report_mod.load_report(str(src)))


def test_report_end_to_end_on_this_machine(tmp_path):
    """The issue's done-when: system ok, driver skipped with an NVML reason, valid self-contained HTML,
    and `render` reproduces it."""
    out = gpudiag("report", "--only", "system", "--only", "driver", "--json", "r.json", "-o", "r.html",
                  "--markdown", "r.md", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rep = report_mod.load_report(str(tmp_path / "r.json"))
    assert rep["probes"]["system"]["status"] == "ok"
    assert rep["probes"]["driver"]["status"] == "skipped" and "NVML" in rep["probes"]["driver"]["reason"]
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    import re
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external resource in HTML"
    assert "<script" not in html
    gpudiag("render", "r.json", "-o", "again.html", cwd=tmp_path)
    assert (tmp_path / "again.html").read_text() == html
    gpudiag("render", "r.json", "-o", "again.md", cwd=tmp_path)
    assert (tmp_path / "again.md").read_text() == (tmp_path / "r.md").read_text()
    assert "system" in out.stdout and "Wrote HTML: r.html" in out.stdout


def test_report_default_names_in_current_folder(tmp_path):
    out = gpudiag("report", "--only", "driver", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].endswith(".html") and names[1].endswith(".json")
    assert names[0].startswith("gpudiag-report-") and names[0][:-5] == names[1][:-5]


def test_markdown_to_stdout_keeps_stdout_clean(tmp_path):
    out = gpudiag("report", "--only", "driver", "--markdown", "-", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("## gpudiag report") and "Wrote JSON" in out.stderr


def test_env_command_is_markdown():
    out = gpudiag("env")
    assert out.returncode == 0 and out.stdout.startswith("### Environment")


def test_probes_lists_every_probe_with_why_not():
    from gpudiag.probes import all_probes

    out = gpudiag("probes")
    assert out.returncode == 0
    for p in all_probes():
        assert p.name in out.stdout
    assert "NVML library" in out.stdout
