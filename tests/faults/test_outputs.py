"""Output faults: every output path is checked before any probe runs, written whole or not at all.

Cases: a full disk, two outputs on one file (spelled alike, through ./, a symlink, a hard link, a
derived name), empty names, devices/FIFOs/folders, files the user may not replace, suffixes of
another format, `-` for stdout on every option, a closed or full stdout.
"""

import errno
import json
import os
import stat
import subprocess

import pytest
from click.testing import CliRunner

from gpudiag import cli
from gpudiag.report import contract, outputs
from tests.faults._helpers import PY, env_for, gpudiag, leftovers, one_line_error
from tests.report.test_report import sample_report

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def no_probe_may_run(monkeypatch):
    """The command must refuse its outputs before it runs anything."""
    from gpudiag import runner

    def boom(*a, **k):
        raise AssertionError("a probe ran before the outputs were checked")

    monkeypatch.setattr(runner, "run_probes", boom)


def invoke(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli.main, args)
    finally:
        os.chdir(old)


def refused(res) -> str:
    assert res.exit_code == 2, res.output
    assert res.output.startswith("gpudiag: error: ") and res.output.count("\n") == 1, res.output
    assert "Traceback" not in res.output
    return res.output


# ---------------------------------------------------------------- refused before anything runs

@pytest.mark.parametrize("args", [
    ["--json", "X.json", "-o", "X.json"],                      # the HTML would overwrite the JSON
    ["-o", "r.json"],                                          # the derived JSON name is r.json too
    ["--json", "r.html"],
    ["-o", "r.md"], ["--markdown", "r.html"], ["--json", "r.md"],
    ["-o", ""], ["--json", ""], ["--markdown", ""],
    ["-o", "report"], ["-o", "/dev/null"], ["--json", "/dev/stdout"],
    ["--json", "-", "--markdown", "-"], ["-o", "-", "--json", "-"],
    ["-o", "r.html", "--markdown", "x.md", "--json", "./r.html"],
    ["-o", "nosuchfolder/r.html"],
])
def test_bad_output_names_are_refused_before_any_probe(tmp_path, no_probe_may_run, args):
    msg = refused(invoke(["report", "--only", "driver"] + args, tmp_path))
    assert leftovers(tmp_path) == []
    if args[-1] in ("r.md", "r.html") and args[0] in ("-o", "--markdown"):
        assert "--markdown r.md" in msg or "--output r.html" in msg  # the hint names the right option


def test_same_file_through_dot_slash_symlink_and_hard_link(tmp_path, no_probe_may_run):
    (tmp_path / "r.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    os.symlink("r.json", tmp_path / "link.md")
    os.link(tmp_path / "r.json", tmp_path / "hard.md")
    cases = [
        ["--json", "r.json", "--markdown", "link.md"],          # a symlink to the JSON
        ["-o", "r.html", "--markdown", "link.md"],              # a symlink to the *derived* JSON name
        ["--json", "sub/../r.json", "--markdown", "link.md"],   # another spelling
        ["--json", "r.json", "--markdown", "hard.md"],          # a hard link
    ]
    for args in cases:
        assert "same file" in refused(invoke(["report", "--only", "driver"] + args, tmp_path))
    assert (tmp_path / "r.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["hard.md", "link.md", "r.json", "sub"]


def test_hard_link_of_the_derived_json_is_the_same_file(tmp_path, no_probe_may_run):
    (tmp_path / "r.json").write_text("{}")
    os.link(tmp_path / "r.json", tmp_path / "other.md")
    msg = refused(invoke(["report", "--only", "driver", "-o", "r.html", "--markdown", "other.md"], tmp_path))
    assert "derived from --output" in msg and "same file" in msg


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_devices_fifos_and_folders_are_never_replaced(tmp_path, no_probe_may_run):
    os.mkfifo(tmp_path / "pipe.html")
    os.symlink("/dev/null", tmp_path / "null.json")
    (tmp_path / "folder.html").mkdir()
    for args, word in ((["-o", "pipe.html"], "not a regular file"), (["--json", "null.json"], "not a regular file"),
                       (["-o", "folder.html"], "is a folder")):
        assert word in refused(invoke(["report", "--only", "driver"] + args, tmp_path))
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.html").st_mode)
    assert os.path.islink(tmp_path / "null.json")


@pytest.mark.skipif(ROOT_USER or not hasattr(os, "geteuid"), reason="root may replace any file")
def test_a_file_the_user_may_not_replace_is_refused_up_front(tmp_path, no_probe_may_run):
    ro = tmp_path / "ro.html"
    ro.write_text("keep")
    ro.chmod(0o444)
    assert "may not overwrite" in refused(invoke(["report", "--only", "driver", "-o", "ro.html"], tmp_path))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert "cannot create a file" in refused(invoke(["report", "--only", "driver", "-o", "locked/r.html"], tmp_path))
    finally:
        locked.chmod(0o755)
    assert ro.read_text() == "keep"


def test_render_and_compare_check_their_output_too(tmp_path):
    src = tmp_path / "r.json"
    src.write_text(contract.dumps(sample_report()))
    for args in (["render", "r.json", "-o", ""], ["render", "r.json", "-o", "r.pdf"],
                 ["compare", "r.json", "r.json", "-o", ""]):
        refused(invoke(args, tmp_path))
    os.symlink("r.json", tmp_path / "same.md")
    assert "same file" in refused(invoke(["render", "r.json", "-o", "same.md"], tmp_path))
    assert json.loads(src.read_text())["schema_version"] == 1


# ---------------------------------------------------------------- writing: whole or nothing

def test_full_disk_leaves_every_existing_file_and_no_temp_file(tmp_path, monkeypatch):
    (tmp_path / "r.html").write_text("old html")
    (tmp_path / "r.json").write_text("old json")
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the first output staged fine, the second finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(outputs.os, "fsync", fsync)
    res = invoke(["report", "--only", "driver", "-o", "r.html"], tmp_path)
    assert res.exit_code == outputs.EXIT_WRITE == 74, res.output
    assert "No space left on device" in res.output and "no output file was changed" in res.output
    assert (tmp_path / "r.html").read_text() == "old html" and (tmp_path / "r.json").read_text() == "old json"
    assert leftovers(tmp_path, keep=("r.html", "r.json")) == []


def test_json_alone_also_writes_the_html_next_to_it(tmp_path):
    res = invoke(["report", "--only", "driver", "--json", "only.json"], tmp_path)
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path)) == ["only.html", "only.json"]
    help_text = invoke(["report", "--help"], tmp_path).output
    assert "next to the HTML" in help_text and "next to --json" in help_text


def test_dash_is_stdout_for_json_and_the_summary_goes_to_stderr(tmp_path):
    out = gpudiag(["report", "--only", "driver", "--json", "-"], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["probes"]["driver"]["status"] == "skipped"
    assert "Wrote HTML: gpudiag-report-" in out.stderr and "driver" in out.stderr
    assert [p for p in os.listdir(tmp_path) if p.endswith(".json")] == []  # no file named '-' or .json
    out = gpudiag(["report", "--only", "driver", "-o", "-", "--json", "r.json"], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("<!DOCTYPE html>") and (tmp_path / "r.json").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["env"], ["report", "--only", "driver", "--markdown", "-"],
                                  ["render", "r.json", "-o", "-"]])
def test_full_stdout_is_one_line_exit_74(tmp_path, args):
    (tmp_path / "r.json").write_text(contract.dumps(sample_report()))
    with open("/dev/full", "w") as full:
        out = subprocess.run([PY, "-m", "gpudiag"] + args, cwd=tmp_path, env=env_for(str(tmp_path)),
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 74, out.stderr
    assert one_line_error(out.stderr) and "No space left on device" in out.stderr


@pytest.mark.parametrize("args", [["env"], ["report", "--only", "driver", "--markdown", "-"],
                                  ["render", "r.json", "-o", "-"], ["probes"]])
def test_stdout_closed_by_its_reader_ends_quietly(tmp_path, args):
    (tmp_path / "r.json").write_text(contract.dumps(sample_report()))
    proc = subprocess.Popen([PY, "-m", "gpudiag"] + args, cwd=tmp_path, env=env_for(str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the first write
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == outputs.EXIT_PIPE == 141
    assert "Traceback" not in err and "Broken pipe" not in err and "Exception ignored" not in err


def test_closed_stdout_for_a_dash_output_is_refused_up_front(tmp_path):
    out = subprocess.run([PY, "-m", "gpudiag", "report", "--only", "driver", "--markdown", "-"], cwd=tmp_path,
                         env=env_for(str(tmp_path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         timeout=120, preexec_fn=lambda: os.close(1))
    assert out.returncode == 2 and "stdout is closed" in out.stderr and one_line_error(out.stderr)
