"""The public Python API: `gpudiag.__all__`, typed and documented, the docs/api.md example run as
a script, run_report writing nothing, and the CLI's `report` taking the same path."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

import gpudiag
import tests
from gpudiag import api
from gpudiag.report import contract

DOC = os.path.join(tests.ROOT, "docs", "api.md")


def _recorded(name="cpu-only-real.json"):
    with open(os.path.join(tests.TESTS, "recorded_views", name), encoding="utf-8") as fh:
        return json.load(fh)


def test_every_public_name_resolves_and_is_documented():
    with open(DOC, encoding="utf-8") as fh:
        doc = fh.read()
    for name in gpudiag.__all__:
        obj = getattr(gpudiag, name)
        if name == "__version__":
            continue
        assert f"`{name}" in doc, f"{name} is not in docs/api.md"
        if callable(obj) and not name[0].isupper():
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
    assert sorted(dir(gpudiag)) == sorted(set(dir(gpudiag)))
    with pytest.raises(AttributeError):
        gpudiag.no_such_name  # noqa: B018


def test_signatures_are_the_documented_ones_without_test_hooks():
    assert list(inspect.signature(gpudiag.run_report).parameters) == [
        "only", "skip", "mode", "timeout", "cycle", "redact", "progress"]
    params = inspect.signature(gpudiag.preflight).parameters
    for hook in ("nvml_session", "driver_collect", "memory_facts", "environ"):
        assert hook not in params
    assert "newest" in gpudiag.preflight.__doc__ and "search_dir" in gpudiag.preflight.__doc__
    assert list(inspect.signature(gpudiag.load_report).parameters) == ["path"]
    assert list(inspect.signature(gpudiag.recommend).parameters) == ["report"]


def test_import_gpudiag_is_cheap():
    """Probe children and the CLI import gpudiag: it must not pull in jinja2, torch, psutil or click."""
    code = ("import sys, gpudiag; heavy = [m for m in ('jinja2', 'torch', 'psutil', 'click', 'pynvml', "
            "'gpudiag.api') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests.ROOT,
                         env=dict(os.environ, PYTHONPATH=tests.ROOT), timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_docs_example_runs_as_a_script(tmp_path):
    with open(DOC, encoding="utf-8") as fh:
        doc = fh.read()
    example = re.search(r"## Example.*?```python\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "example.py").write_text(example)
    out = subprocess.run([sys.executable, "example.py"], capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=tests.ROOT), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("system: ok in ")
    assert "\nOS: " in out.stdout and "## gpudiag report" in out.stdout
    assert "refused: unknown probe 'no_such_probe'" in out.stdout
    contract.load_report(str(tmp_path / "system-report.json"))
    assert (tmp_path / "system-report.html").read_text().startswith("<!DOCTYPE html>")


def test_run_report_writes_nothing_and_returns_a_valid_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    events = []
    rep = gpudiag.run_report(only="driver", progress=lambda n, phase, p: events.append((n, phase)))
    assert list(tmp_path.iterdir()) == []
    contract.validate(rep)
    assert list(rep["probes"]) == ["driver"] and rep["recommendation"]["headline"]
    assert events == [("driver", "start"), ("driver", "end")]
    assert rep["redacted"] is True and rep["interrupted"] is False
    assert type(rep) is gpudiag.Report and isinstance(rep, dict)


@pytest.mark.parametrize("kwargs, words", [
    ({"only": ["nope"]}, "unknown probe 'nope'"),
    ({"only": ["system"], "skip": ["system"]}, "left no probe to run"),
    ({"mode": "slow"}, "mode must be one of quick, full"),
    ({"timeout": 0}, "timeout must be a finite number of seconds from 1 to 604800"),
    ({"timeout": 0.5}, "timeout must be a finite number of seconds from 1 to 604800"),
    ({"timeout": float("nan")}, "timeout must be a finite number of seconds from 1"),
    ({"timeout": 8 * 24 * 3600}, "(a week), not 691200"),
    ({"timeout": True}, "timeout must be a number of seconds, not True"),
    ({"timeout": "10"}, "timeout must be a number of seconds, not '10'"),
    ({"only": [3]}, "only takes probe names (str)"),
    ({"cycle": "no colon"}, "expected MODULE:FACTORY"),
    ({"only": ["system"], "cycle": "a:b"}, "--cycle needs the cycle probe"),
])
def test_run_report_refuses_bad_arguments_before_running_anything(kwargs, words, monkeypatch):
    from gpudiag import runner

    monkeypatch.setattr(runner, "run_probes", lambda *a, **k: pytest.fail("a probe ran"))
    with pytest.raises(ValueError, match=re.escape(words)):
        gpudiag.run_report(**kwargs)


def test_save_load_recommend_round_trip(tmp_path):
    rep = _recorded()
    path = gpudiag.save_report(rep, tmp_path / "r.json")
    assert path == str(tmp_path / "r.json")
    again = gpudiag.load_report(tmp_path / "r.json")
    assert again == rep
    rec = gpudiag.recommend(again)
    assert rec["strategy"] == rep["recommendation"]["strategy"] and again == rep  # input left unchanged
    with pytest.raises(gpudiag.ReportError, match="schema_version"):
        gpudiag.recommend({"probes": {}})
    with pytest.raises(gpudiag.ReportError, match="no such file"):
        gpudiag.load_report(tmp_path / "missing.json")


@pytest.mark.parametrize("name", ["cpu-only-real.json", "fleet-real.json", "watch-real.json"])
def test_a_loaded_report_is_a_dict_that_shows_itself_in_a_notebook(tmp_path, name):
    import copy
    import html
    import pickle

    path = gpudiag.save_report(_recorded(name), tmp_path / "r.json")
    rep = gpudiag.load_report(path)
    assert type(rep) is gpudiag.Report and isinstance(rep, dict)
    # code that treats it as a dict keeps working
    assert json.loads(json.dumps(rep)) == rep == _recorded(name)
    assert rep["probes"] and dict(rep) == rep
    for again in (pickle.loads(pickle.dumps(rep)), copy.copy(rep), copy.deepcopy(rep)):
        assert type(again) is gpudiag.Report and again == rep
    contract.validate(rep)
    # the notebook: the HTML report, isolated in a frame, after its answer in one visible line
    page = rep._repr_html_()
    headline = rep._headline()
    fleet = rep["probes"].get("fleet")
    assert headline == (fleet["data"]["verdict"] if fleet else rep["recommendation"]["headline"])
    assert html.escape(headline) in page.split("<iframe")[0]
    frame = html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))
    assert frame == gpudiag.render_html(rep) and headline in html.unescape(frame)
    assert 'sandbox=""' in page and "<script" not in page
    # print() is the terminal summary; repr is one short line, never the dict
    assert len(repr(rep)) < 300 and "\n" not in repr(rep) and "'probes'" not in repr(rep)
    assert repr(rep).startswith("<gpudiag ") and str(rep).startswith("gpudiag ")
    assert len(str(rep)) < 4000


def test_renderers_are_public_and_compare_checks_its_arguments():
    rep = _recorded()
    assert gpudiag.render_html(rep).startswith("<!DOCTYPE html>")
    assert gpudiag.render_markdown(rep).startswith("## gpudiag report")
    assert "report 2" in gpudiag.render_compare([rep, rep], fmt="md")
    with pytest.raises(ValueError, match="at least two reports, got 1"):
        gpudiag.render_compare([rep])
    with pytest.raises(ValueError, match="1 names for 2 reports"):
        gpudiag.render_compare([rep, rep], names=["a"])
    with pytest.raises(ValueError, match="fmt must be"):
        gpudiag.render_compare([rep, rep], fmt="pdf")
    with pytest.raises(gpudiag.ReportError, match="b: "):
        gpudiag.render_compare([rep, {"x": 1}], names=["a", "b"])


def test_the_cli_report_command_runs_through_run_report(tmp_path, monkeypatch):
    """One path: `gpudiag report` is run_report plus writing the files."""
    from gpudiag.cli import main

    calls = []

    def fake_run_report(only, skip, **kw):
        calls.append((list(only), list(skip), kw))
        return _recorded()

    monkeypatch.setattr(api, "run_report", fake_run_report)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["report", "--only", "gil", "--full", "--timeout", "5", "--no-redact",
                                    "--json", "r.json", "-o", "r.html"])
    assert res.exit_code == 0, res.output
    (only, skip, kw) = calls[0]
    assert only == ["gil"] and skip == [] and kw["mode"] == "full" and kw["timeout"] == 5
    assert kw["redact"] is False and kw["cycle"] is None and callable(kw["progress"])
    assert contract.load_report("r.json") == _recorded()
