"""Hostile values and report files: `render`, `compare` and `preflight --report` end with one line and
exit 2 on a file no gpudiag wrote (deep nesting, numbers no measurement has, NaN, huge files), and
every string a report holds is escaped wherever it lands (Markdown included), whatever its type.
"""

import copy
import json
import os
import random
import re

import pytest
from click.testing import CliRunner

from gpudiag import cli
from gpudiag.report import contract
from gpudiag.views import compare, render
from tests import TESTS
from tests.faults._helpers import gpudiag, one_line_error
from tests.report.test_report import sample_report

SCRIPT = "<script>alert(1)</script>"
# Markdown may hold only these tags of gpudiag's own; anything else means a report string opened HTML.
OWN_TAGS = re.compile(r"<(?!/?(?:details|summary|b|sub)>)[A-Za-z/!?]")


def _report_text(extra: str) -> str:
    text = contract.dumps(sample_report())
    return text.replace('"probes": {', '"probes": {' + extra, 1)


HOSTILE = {
    "deep_array": "[" * 100_000 + "]" * 100_000,
    "deep_in_report": _report_text('"deep": {"status": "ok", "reason": "", "duration_s": 1, "findings": [], "data": '
                                   + "[" * 100_000 + "]" * 100_000 + "},"),
    "moderately_deep": _report_text('"deep": {"status": "ok", "reason": "", "duration_s": 1, "findings": [], "data": '
                                    + "[" * 500 + "]" * 500 + "},"),
    "huge_int": _report_text('"big": {"status": "ok", "reason": "", "duration_s": ' + "1" + "0" * 400
                             + ', "findings": [], "data": {}},'),
    "very_huge_int": _report_text('"big": {"status": "ok", "reason": "", "duration_s": ' + "9" * 5000
                                  + ', "findings": [], "data": {}},'),
    "float_overflow": _report_text('"big": {"status": "ok", "reason": "", "duration_s": 1e400, "findings": [], "data": {}},'),
    "nan": _report_text('"nan": {"status": "ok", "reason": "", "duration_s": NaN, "findings": [], "data": {}},'),
    "infinity": _report_text('"inf": {"status": "ok", "reason": "", "duration_s": -Infinity, "findings": [], "data": {}},'),
    "not_utf8": b'{"schema_version": 1, "x": "\xff\xfe"}',
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_report_files_are_one_line_exit_2(tmp_path, monkeypatch, name):
    content = HOSTILE[name]
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "good.json").write_text(contract.dumps(sample_report()))
    monkeypatch.chdir(tmp_path)
    for args in (["render", "bad.json", "-o", "out.html"], ["compare", "good.json", "bad.json", "-o", "out.md"],
                 ["preflight", "--report", "bad.json"]):
        res = CliRunner().invoke(cli.main, args)
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (args, res.output[-500:])
        assert one_line_error(res.output) and "bad.json: " in res.output, res.output[-500:]
        assert not (tmp_path / "out.html").exists() and not (tmp_path / "out.md").exists()


def test_deep_nesting_from_the_shell(tmp_path):
    (tmp_path / "bad.json").write_text(HOSTILE["deep_in_report"])
    out = gpudiag(["render", "bad.json", "-o", "out.md"], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode == 2 and one_line_error(out.stderr) and "RecursionError" not in out.stderr
    assert out.stderr.startswith("gpudiag: error: bad.json: nested")


def test_a_file_too_large_to_be_a_report_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(contract.MAX_REPORT_BYTES + 10)  # sparse: nothing is written
    # 64 MiB and 10 bytes would round to "64 MiB", the limit itself
    with pytest.raises(contract.ReportError, match=r"^big\.json: a file over 64 MiB is too large to be a gpudiag "
                                                   r"report \(at most 64 MiB\)$"):
        contract.load_report(str(big))


def test_render_of_a_huge_file_names_its_real_size_in_one_line(tmp_path):
    with open(tmp_path / "huge.json", "wb") as fh:
        fh.truncate(191 * 2**20)  # sparse: nothing is written
    out = gpudiag(["render", "huge.json", "-o", "out.html"], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode == 2 and one_line_error(out.stderr), out.stderr
    assert out.stderr.strip() == "gpudiag: error: huge.json: 191 MiB is too large to be a gpudiag report (at most 64 MiB)"
    assert not (tmp_path / "out.html").exists()


def test_report_bytes_over_the_limit_name_their_size_or_say_over(monkeypatch):
    monkeypatch.setattr(contract, "MAX_REPORT_BYTES", 2 * 2**20)  # bytes from a pipe, read up to the limit + 1
    with pytest.raises(contract.ReportError, match=r"^r\.json: a file over 2 MiB is too large"):
        contract.parse_report(b" " * (2 * 2**20 + 1), "r.json")
    with pytest.raises(contract.ReportError, match=r"^r\.json: 3 MiB is too large to be a gpudiag report \(at most 2 MiB\)$"):
        contract.parse_report(b" " * (3 * 2**20), "r.json")


def _hostile_strings_report():
    rep = sample_report()
    rep["probes"][SCRIPT] = {"status": "failed", "reason": "<img src=x onerror=alert(1)>", "duration_s": 1.0,
                             "data": {"k": "</details><iframe src=//evil>"},
                             "findings": [{"code": "X<b>", "severity": "warning", "message": "<iframe>",
                                           "fix": "a & b <svg onload=x>", "evidence": {"<k>": "<v>"}}]}
    rep["probes"]["plain"] = {"status": "ok", "reason": "", "duration_s": 1.0, "findings": [],
                              "data": {"<style>": "</details><script>"}}
    rep["host"]["os"] = "<b>bold</b> | pipe `tick`"
    rep["host"]["gpus"] = [SCRIPT]
    rep["recommendation"] = {"headline": SCRIPT, "strategy": "<i>x</i>", "workers": 2, "verdicts": [
        {"cause": SCRIPT, "verdict": "supported", "summary": "<u>", "figures": {"<f>": "<g>"}, "reason": "<r>"}]}
    rep["probes"]["system"]["data"]["env"] = {"CUDA_VISIBLE_DEVICES": SCRIPT}
    return rep


def test_every_report_string_is_escaped_in_markdown_and_html():
    rep = _hostile_strings_report()
    md = render.render_markdown(rep)
    assert not OWN_TAGS.findall(md), OWN_TAGS.findall(md)[:5]
    assert "&lt;script&gt;" in md
    html = render.render_html(rep)
    assert "<script" not in html and "<iframe" not in html and "<img" not in html and "onerror=alert" not in html \
        or "&lt;img" in html
    for fmt in ("md", "html"):
        text = compare.render_compare([sample_report(), rep], ["a<b>", SCRIPT], fmt)
        assert "<script" not in text and "<iframe" not in text
        if fmt == "md":
            assert not OWN_TAGS.findall(text), OWN_TAGS.findall(text)[:5]


def test_env_markdown_escapes_values():
    from gpudiag.views import env_summary

    system = {"os": {"pretty": SCRIPT}, "env": {"CUDA_VISIBLE_DEVICES": "`<script>`"},
              "findings": [{"severity": "warning", "code": "<X>", "message": "<img src=x>"}]}
    md = env_summary.render(system, {"unavailable": "<b>no</b>"}, [("<pkg>", "1")], "0")
    assert not OWN_TAGS.findall(md), OWN_TAGS.findall(md)[:5]


def test_terminal_summary_prints_no_control_characters():
    rep = sample_report()
    rep["probes"]["system"]["reason"] = "bad \x1b]0;title\x07 \x1b[2J \r overwritten"
    text = render.render_terminal(rep, {"HTML": "r\x1b[31m.html"})
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text


def _fuzzed(base, rng):
    values = [None, "", SCRIPT, -1, 0, 1.5e308, True, [], {}, "n/a", 10**18, [1, "a"], {"a": None}, "\x1b[2J",
              [[[]]], {"median": "x"}, "9" * 60]
    paths = list(_paths(base))
    rep = copy.deepcopy(base)
    for _ in range(rng.randint(1, 6)):
        path = rng.choice(paths)
        cur = rep
        try:
            for k in path[:-1]:
                cur = cur[k]
            cur[path[-1]] = copy.deepcopy(rng.choice(values))
        except (KeyError, IndexError, TypeError):
            pass
    return rep


def _paths(obj, path=()):
    if path:
        yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, path + (i,))


@pytest.mark.parametrize("fixture", ["gpu-ubuntu.json", "cpu-linux.json", "gpu-windows-wddm.json"])
def test_views_never_crash_on_values_of_the_wrong_type(fixture):
    """Reports of other versions (or hand-edited ones) hold anything anywhere: the views show what they can."""
    with open(os.path.join(TESTS, "recorded_views", fixture), encoding="utf-8") as fh:
        base = json.load(fh)
    rng = random.Random(fixture)
    checked = 0
    for _ in range(50):
        rep = _fuzzed(base, rng)
        try:
            contract.validate(rep)
        except contract.ReportError:
            continue
        checked += 1
        render.render_html(rep)
        md = render.render_markdown(rep)
        assert not OWN_TAGS.findall(md)
        render.render_terminal(rep, {})
        compare.render_compare([base, rep], ["a", "b"], "md")
        compare.render_compare([rep, base], ["a", "b"], "html")
    assert checked > 20
