"""`gpudiag compare`: metrics per report, ratios to the first, slowdown explanations, missing values
with why, and the CLI's error handling."""

import copy
import json
import os

import pytest
from click.testing import CliRunner

import tests
from gpudiag.cli import main
from gpudiag.views import compare

HERE = os.path.join(tests.TESTS, "recorded_views")


def path(name):
    return os.path.join(HERE, name)


def fixture(name):
    with open(path(name), encoding="utf-8") as fh:
        return json.load(fh)


def row(ctx, key):
    return next(r for r in ctx["rows"] if r["key"] == key)


def test_same_metrics_per_report_with_ratio_to_the_first():
    ctx = compare.compare([fixture("gpu-ubuntu.json"), fixture("gpu-windows-wddm.json")], ["ubuntu", "windows"])
    launch = row(ctx, "launch_us")["cells"]
    assert launch[0]["text"] == "6.8 µs" and launch[0]["ratio"] == ""
    assert launch[1]["text"] == "14.5 µs" and launch[1]["ratio"] == "2.13x"
    assert row(ctx, "driver_model")["cells"][1]["text"] == "WDDM"
    assert row(ctx, "recommended")["cells"][0]["text"] == "cuda_graph x1"
    assert row(ctx, "python_threads")["cells"][0]["text"] == "1.14x (8 workers)"
    assert row(ctx, "idle")["cells"][0]["text"] == "54 %"
    assert row(ctx, "pcie_eff")["cells"][1]["text"] == "77 %"
    keys = {r["key"] for r in ctx["rows"]}
    assert {"os", "driver_model", "python_threads", "python_processes", "launch_us", "switch_us", "pcie_eff",
            "idle", "recommended", "recommended_cps"} <= keys


def test_large_differences_are_named_as_explanations_and_small_ones_are_not():
    ctx = compare.compare([fixture("gpu-ubuntu.json"), fixture("gpu-windows-wddm.json")], ["ubuntu", "windows"])
    text = "\n".join(ctx["explanations"])
    assert "Launch latency" in text and "windows 14.5 µs against 6.8 µs in ubuntu" in text
    assert "Context-switch" in text
    assert "PCIe efficiency" not in text  # 76 % vs 77 %: no
    assert row(ctx, "launch_us")["cells"][1]["flag"] is True
    assert row(ctx, "pcie_eff")["cells"][1]["flag"] is False
    assert any(d.startswith("Driver model differs") for d in ctx["differences"])


def test_thresholds_decide_exactly():
    a = fixture("gpu-ubuntu.json")
    b = copy.deepcopy(a)
    base = a["probes"]["launch"]["data"]["launch_overhead_us"]["median"]
    b["probes"]["launch"]["data"]["launch_overhead_us"]["median"] = base * (compare.LATENCY_RATIO_LIMIT - 0.01)
    assert not row(compare.compare([a, b], ["a", "b"]), "launch_us")["cells"][1]["flag"]
    b["probes"]["launch"]["data"]["launch_overhead_us"]["median"] = base * (compare.LATENCY_RATIO_LIMIT + 0.01)
    assert row(compare.compare([a, b], ["a", "b"]), "launch_us")["cells"][1]["flag"]
    b["probes"]["cycle"]["data"]["idle"]["serial"]["busy_fraction"] = 0.46 - compare.IDLE_FRACTION_RISE_LIMIT - 0.01
    assert row(compare.compare([a, b], ["a", "b"]), "idle")["cells"][1]["flag"]
    b["recommendation"]["cycles_per_s"] = 17.8 * compare.THROUGHPUT_RATIO_LIMIT
    assert row(compare.compare([a, b], ["a", "b"]), "recommended_cps")["cells"][1]["flag"]


def test_missing_values_say_why():
    ctx = compare.compare([fixture("gpu-ubuntu.json"), fixture("cpu-linux.json"), fixture("foundation-only.json")],
                          ["gpu", "cpu", "old"])
    cpu_launch = row(ctx, "launch_us")["cells"][1]
    assert cpu_launch["missing"] and cpu_launch["why"].startswith("launch skipped: needs a CUDA device")
    assert row(ctx, "driver_model")["cells"][1]["why"].startswith("driver skipped: NVML library not found")
    assert row(ctx, "idle")["cells"][1]["why"] == "CPU device: no GPU timeline"
    old = row(ctx, "python_threads")["cells"][2]
    assert old["missing"] and "probe gil not in this report" in old["why"] and "schema v1" in old["why"]
    assert "no recommendation in this report" in row(ctx, "recommended")["cells"][2]["why"]


def test_the_recommended_strategy_is_named_so_and_a_tie_as_a_tie():
    a, b = fixture("gpu-ubuntu.json"), fixture("gpu-ubuntu.json")
    b["recommendation"].update(strategy="serial", workers=1, confidence="tie", tied_with=["batched", "cuda_graph"])
    ctx = compare.compare([a, b], ["a", "b"])
    cells = row(ctx, "recommended")["cells"]
    assert row(ctx, "recommended")["label"] == "Recommended strategy"
    assert cells[0]["text"] == "cuda_graph x1"
    assert cells[1]["text"] == "serial x1 (a tie with batched, cuda_graph: the simplest)"
    labels = " ".join(r["label"] for r in ctx["rows"])
    assert "winner" not in labels.lower() and "winner" not in compare.render_compare([a, b], ["a", "b"], "md").lower()


def test_field_absent_from_an_ok_probe_is_reported_with_the_schema():
    rep = fixture("gpu-ubuntu.json")
    del rep["probes"]["pcie"]["data"]["efficiency"]
    v, why = compare.field(rep, "pcie", ("efficiency", "h2d_pinned"))
    assert v is None and why == "pcie.efficiency.h2d_pinned not in this report (schema v1, gpudiag fixture)"


def test_compare_needs_two_reports():
    with pytest.raises(ValueError):
        compare.compare([fixture("cpu-linux.json")], ["a"])


def test_unique_names_keep_columns_apart():
    assert compare.unique_names(["a/r.json", "b/r.json", "c.json"]) == ["r", "r #2", "c"]


def test_cli_compare_html_and_markdown(tmp_path):
    out = tmp_path / "c.html"
    res = CliRunner().invoke(main, ["compare", path("gpu-ubuntu.json"), path("gpu-windows-wddm.json"),
                                    path("cpu-linux.json"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    assert "<svg" in html and "gpu-windows-wddm" in html and "explains" in html and "<script" not in html
    md = tmp_path / "c.md"
    res = CliRunner().invoke(main, ["compare", path("gpu-ubuntu.json"), path("cpu-linux.json"), "-o", str(md)])
    assert res.exit_code == 0
    assert md.read_text(encoding="utf-8").startswith("## gpudiag comparison")
    res = CliRunner().invoke(main, ["compare", path("gpu-ubuntu.json"), path("cpu-linux.json"), "-o", "-"])
    assert res.exit_code == 0 and "| metric | gpu-ubuntu | cpu-linux |" in res.output


@pytest.mark.parametrize("content,expect", [
    ("", "bad.json: file is empty"),
    ('{"schema_version": 1, "gpudiag_', "bad.json: not valid JSON"),
    ("hello", "bad.json: not valid JSON"),
    ('{"schema_version": 99}', "bad.json: written by a newer gpudiag"),
])
def test_cli_compare_bad_file_is_one_line_exit_2(tmp_path, content, expect):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    out = tmp_path / "c.html"
    res = CliRunner().invoke(main, ["compare", path("gpu-ubuntu.json"), str(bad), "-o", str(out)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpudiag: error: ") and expect in lines[0]
    assert "Traceback" not in res.output
    assert not out.exists()


def test_cli_compare_usage_errors(tmp_path):
    res = CliRunner().invoke(main, ["compare", path("gpu-ubuntu.json"), "-o", str(tmp_path / "c.html")])
    assert res.exit_code == 2 and "at least two" in res.output
    res = CliRunner().invoke(main, ["compare", path("gpu-ubuntu.json"), path("cpu-linux.json"), "-o", str(tmp_path / "c.txt")])
    assert res.exit_code == 2 and ".html or .md" in res.output


def _with_launch_blocking(report):
    b = copy.deepcopy(report)
    b["probes"]["system"]["data"]["env"] = {"CUDA_LAUNCH_BLOCKING": "1"}
    b["probes"]["system"]["data"]["cpu"]["affinity_cores"] = 1
    b["probes"]["system"]["findings"].append({"code": "CUDA_LAUNCH_BLOCKING_ON", "severity": "critical",
                                              "message": "CUDA_LAUNCH_BLOCKING is set", "evidence": None, "fix": None})
    return b


def test_new_critical_finding_explains_and_env_and_affinity_differences_are_listed():
    a = fixture("gpu-ubuntu.json")
    ctx = compare.compare([a, _with_launch_blocking(a)], ["a", "b"])
    assert any(e.startswith("CUDA_LAUNCH_BLOCKING_ON (critical) in b, not in a") for e in ctx["explanations"])
    assert "environment CUDA_LAUNCH_BLOCKING differs: a: unset; b: 1" in ctx["differences"]
    assert row(ctx, "cpu")["cells"][1]["text"].endswith("(1 usable by gpudiag)")

