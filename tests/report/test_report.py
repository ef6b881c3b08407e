import json
import os

import jsonschema
import pytest

from gpudiag.probes.base import finding
from gpudiag.report import atomic
from gpudiag.report import contract as report_mod
from gpudiag.runner import result

SCHEMA_PATH = os.path.join(os.path.dirname(report_mod.__file__), "schema", "report.schema.json")


def sample_report(**over):
    probes = {
        "system": result("ok", duration_s=0.5, data={"os": {"name": "Linux", "pretty": "Ubuntu 22.04.3 LTS",
                                                             "kernel": "6.5.0", "wsl": None},
                                                      "python": {"implementation": "CPython", "version": "3.11.7",
                                                                 "gil_enabled": True},
                                                      "cpu": {"brand": "AMD EPYC", "logical_cores": 2, "physical_cores": 1},
                                                      "memory": {"total_bytes": 24 * 2**30}},
                         findings=[finding("NO_SWAP", "info", "no swap", {"swap_total_bytes": 0}, None)]),
        "driver": result("skipped", "NVML library libnvidia-ml.so.1 not found"),
    }
    rep = report_mod.build_report(probes, "quick", created_at="2026-11-28T15:00:00Z")
    rep.update(over)
    return rep


def test_built_report_matches_the_shipped_json_schema():
    with open(SCHEMA_PATH) as fh:
        schema = json.load(fh)
    jsonschema.validate(sample_report(), schema)
    report_mod.validate(sample_report())


def test_host_summary_reads_system_and_driver_data():
    host = sample_report()["host"]
    assert host["os"] == "Ubuntu 22.04.3 LTS"
    assert host["python"] == "CPython 3.11.7"
    assert host["logical_cores"] == 2
    assert host["gpus"] == []


def test_round_trip_through_file(tmp_path):
    path = tmp_path / "r.json"
    atomic.write_text_atomic(str(path), report_mod.dumps(sample_report()))
    assert report_mod.load_report(str(path)) == json.loads(report_mod.dumps(sample_report()))
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


@pytest.mark.parametrize("content,words", [
    ("", "file is empty"),
    ("   \n", "file is empty"),
    ('{"schema_version": 1, "gpudiag', "not valid JSON (line 1"),
    ("hello", "not valid JSON"),
    ("[1, 2]", "top level is list"),
    ('{"a": 1}', "no schema_version"),
    ('{"schema_version": 99}', "written by a newer gpudiag (schema 99"),
    ('{"schema_version": "1"}', "is not a positive integer"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(report_mod.ReportError) as exc:
        report_mod.load_report(str(path))
    msg = str(exc.value)
    assert words in msg and msg.startswith("bad.json: ") and "\n" not in msg


def test_binary_and_missing_files(tmp_path):
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(report_mod.ReportError, match="not a text file|not valid JSON"):
        report_mod.load_report(str(tmp_path / "bin.json"))
    with pytest.raises(report_mod.ReportError, match="no such file"):
        report_mod.load_report(str(tmp_path / "nope.json"))
    with pytest.raises(report_mod.ReportError, match="is a folder"):
        report_mod.load_report(str(tmp_path))


def test_malformed_probe_results_are_rejected():
    rep = sample_report()
    rep["probes"]["driver"]["status"] = "great"
    with pytest.raises(report_mod.ReportError, match="status 'great'"):
        report_mod.validate(rep)
    rep = sample_report()
    rep["probes"]["system"]["findings"] = [{"code": "X"}]
    with pytest.raises(report_mod.ReportError, match="malformed finding"):
        report_mod.validate(rep)


def test_findings_sorted_by_severity():
    rep = sample_report()
    rep["probes"]["driver"]["findings"] = [finding("BAD", "critical", "bad"), finding("MEH", "warning", "meh")]
    assert [f["code"] for f in report_mod.all_findings(rep)] == ["BAD", "MEH", "NO_SWAP"]


def test_finding_codes_are_checked():
    with pytest.raises(ValueError):
        finding("lower case", "info", "x")
    with pytest.raises(ValueError):
        finding("CODE", "fatal", "x")


def test_default_basename_has_date_and_short_id():
    name = report_mod.default_basename("2026-11-28T15:00:00Z")
    assert name.startswith("gpudiag-report-2026-11-28-") and len(name.rsplit("-", 1)[1]) == 6


def test_written_reports_get_the_usual_permissions(tmp_path):
    import os
    import stat

    path = tmp_path / "r.json"
    atomic.write_text_atomic(str(path), "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_the_timeout_rule_lives_in_one_place():
    """1 s to a week, finite; api.run_report (and, once switched, the CLI and the runner) ask contract.check_timeout."""
    assert report_mod.check_timeout(None) is None
    assert report_mod.check_timeout(1) == 1.0 and report_mod.check_timeout(report_mod.MAX_TIMEOUT_S) == 604800.0
    for bad in (0.999, -1, float("inf"), float("nan"), report_mod.MAX_TIMEOUT_S + 1, True, "5", [5]):
        with pytest.raises(ValueError, match="^timeout must be a"):
            report_mod.check_timeout(bad)
