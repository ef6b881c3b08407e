"""What the HTML and Markdown say, read as a user would: each hint once, one per-worker memory
figure under one name, "not measured" for what a partial report did not measure, and `compare`
naming only what can explain a slowdown.

cpu-only-real.json is a real CPU-only report (a copy of sample_reports/cpu-linux.json, 2026-11-28),
so it carries the skip reasons a CPU build of torch really produces.
"""

from __future__ import annotations

import copy
import html as html_mod
import json
import os
import re

import pytest

import tests
from gpudiag.probes.gil import analysis as gil_analysis
from gpudiag.views import compare, render
from gpudiag.views import sections
from gpudiag.views import format as fmt

HERE = os.path.join(tests.TESTS, "recorded_views")
CUDA_HINT = "install a CUDA build from pytorch.org"


def fixture(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        return json.load(fh)


def visible_html(page: str) -> str:
    """The text a reader sees, raw-data blocks left out (they show the JSON as it is)."""
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    page = re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)
    return html_mod.unescape(re.sub(r"<[^>]+>", " ", page))


def visible_md(text: str) -> str:
    return re.sub(r"```json.*?```", "", text, flags=re.S)


@pytest.fixture
def cpu_only():
    return fixture("cpu-only-real.json")


def _views(report):
    return {"html": visible_html(render.render_html(report)), "md": visible_md(render.render_markdown(report))}


# ---------------------------------------------------------------- said once, referred to after

def test_the_cuda_build_hint_is_said_once_in_the_summary_and_referred_to(cpu_only):
    raw = json.dumps(cpu_only)
    assert raw.count(CUDA_HINT) >= 5  # every skipped CUDA probe repeats it in the data
    for kind, text in _views(cpu_only).items():
        assert text.count(CUDA_HINT) == 1, kind
        assert "CPU-only build: " + CUDA_HINT in text  # in the summary's torch row
        assert text.count("(see the summary)") >= 3, kind


def test_gpu_questions_not_answered_is_said_once(cpu_only):
    for kind, text in _views(cpu_only).items():
        assert text.count("GPU questions were not answered") == 1, kind
    page = render.render_html(cpu_only)
    assert 'The GPU causes below were not measured (see the <a href="#summary">summary</a>)' in page


def test_the_report_data_keeps_every_reason_whole(cpu_only):
    """Only the views refer to the summary; the JSON (and the raw-data blocks) say it in full."""
    before = json.dumps(cpu_only, sort_keys=True)
    page = render.render_html(cpu_only)
    assert json.dumps(cpu_only, sort_keys=True) == before
    assert CUDA_HINT in re.search(r"<pre>.*</pre>", page, re.S).group(0)


def test_a_torch_hint_is_said_once_when_torch_is_missing(cpu_only):
    from gpudiag.capabilities import TORCH_HINT

    rep = copy.deepcopy(cpu_only)
    reason = f"torch is not installed: {TORCH_HINT}"
    rep["host"]["torch"] = None
    rep["probes"]["system"]["data"]["torch"] = {"version": None, "reason_missing": reason}
    for name in ("launch", "contention", "pcie", "cycle"):
        rep["probes"][name] = {"status": "skipped", "reason": reason, "duration_s": 0, "data": {}, "findings": []}
    for kind, text in _views(rep).items():
        assert text.count(TORCH_HINT) == 1, kind


# ---------------------------------------------------------------- per-worker memory: one figure, one name

def test_per_worker_memory_is_the_uss_figure_the_finding_quotes(cpu_only):
    mem = cpu_only["probes"]["gil"]["data"]["memory"]
    assert mem["per_worker_host_source"] == "USS after import torch"
    text = sections._worker_memory(mem)
    assert text.startswith(fmt.fmt_bytes(mem["per_worker_host_bytes"]) + ", USS after import torch (")
    assert fmt.fmt_bytes(mem["rss_after_torch_bytes"]) not in text  # no second, RSS figure
    (finding,) = [f for f in gil_analysis._memory_findings(mem, {}, 2) if f["code"] == "WORKER_MEMORY_LIMITS"]
    assert "costs 140 MiB of host memory (USS after import torch)" in finding["message"]
    kv = dict(sections._view_gil(cpu_only["probes"]["gil"]["data"])["kv"])
    assert kv["Host memory per process worker"] == text


def test_no_cuda_context_in_the_thread_cost_without_cuda(cpu_only):
    mem = cpu_only["probes"]["gil"]["data"]["memory"]
    (finding,) = gil_analysis._memory_findings(mem, {}, 2)
    assert "CUDA" not in finding["message"]
    assert "A thread adds about 1.1 MiB of RSS (it shares the process's torch)" in finding["message"]
    with_cuda = dict(mem, rss_after_cuda_bytes=mem["rss_after_torch_bytes"] + 2**29)
    (finding,) = gil_analysis._memory_findings(with_cuda, {}, 2)
    assert "it shares the process's torch and CUDA context" in finding["message"]


# ---------------------------------------------------------------- partial reports say "not measured"

def _only(report, *names):
    rep = copy.deepcopy(report)
    rep["probes"] = {k: v for k, v in rep["probes"].items() if k in names}
    rep["host"] = {k: None for k in rep["host"]}
    rep["host"]["gpus"] = []
    return rep


@pytest.mark.parametrize("kind", ["md", "html", "terminal"])
def test_a_partial_report_says_not_measured_never_a_false_fact(cpu_only, kind):
    rep = _only(cpu_only, "gil")
    text = {"md": render.render_markdown, "html": lambda r: visible_html(render.render_html(r)),
            "terminal": render.render_terminal}[kind](rep)
    for false_fact in ("unknown OS", "not installed", "no NVIDIA GPU seen", "no NVIDIA driver seen"):
        assert false_fact not in text, false_fact
    assert text.count("Machine, OS, Python and torch not measured: the system probe did not run.") == 1
    assert text.count("GPUs and driver not measured: the driver probe did not run.") == 1


def test_a_skipped_driver_probe_is_still_a_fact(cpu_only):
    """No NVML here: "no NVIDIA GPU seen" is what was found, not a guess."""
    text = render.render_markdown(cpu_only)
    assert "no NVIDIA GPU seen" in text and "not measured: the driver probe" not in text


def test_a_failed_system_probe_says_why(cpu_only):
    rep = _only(cpu_only, "gil", "driver")
    rep["probes"]["system"] = {"status": "failed", "reason": "timed out after 30 s", "duration_s": 30,
                               "data": {}, "findings": []}
    assert ("Machine, OS, Python and torch not measured: the system probe failed: timed out after 30 s."
            in render.render_markdown(rep))


def test_one_worker_is_singular_in_the_summary(cpu_only):
    rep = copy.deepcopy(cpu_only)
    rep["recommendation"] = dict(rep["recommendation"], strategy="serial", workers=1)
    md = render.render_markdown(rep)
    assert "1 worker:" in md and "worker(s)" not in md
    assert "1 worker<" in render.render_html(rep).replace("</span>", "<")


# ---------------------------------------------------------------- compare

def _with_launch_blocking(report):
    b = copy.deepcopy(report)
    b["probes"]["system"]["data"]["env"] = {"CUDA_LAUNCH_BLOCKING": "1"}
    b["probes"]["system"]["findings"].append({"code": "CUDA_LAUNCH_BLOCKING_ON", "severity": "critical",
                                              "message": "CUDA_LAUNCH_BLOCKING is set.", "evidence": None,
                                              "fix": None})
    return b


def test_a_gpu_finding_does_not_explain_two_cpu_only_runs(cpu_only):
    """CUDA_LAUNCH_BLOCKING cannot slow down what ran without a GPU: a setup difference, not an explanation."""
    ctx = compare.compare([cpu_only, _with_launch_blocking(cpu_only)], ["a", "b"])
    assert not [e for e in ctx["explanations"] if "CUDA_LAUNCH_BLOCKING" in e]
    note = [d for d in ctx["differences"] if d.startswith("CUDA_LAUNCH_BLOCKING_ON (critical) in b")]
    assert note and note[0].endswith("(nothing ran on a GPU in b, so it cannot explain these numbers)")


def test_a_gpu_finding_explains_a_run_that_used_the_gpu():
    a = fixture("gpu-ubuntu.json")
    ctx = compare.compare([a, _with_launch_blocking(a)], ["a", "b"])
    assert [e for e in ctx["explanations"] if e.startswith("CUDA_LAUNCH_BLOCKING_ON (critical) in b")]


def test_compare_writes_one_worker_in_the_singular(cpu_only):
    one = copy.deepcopy(cpu_only)
    for row in one["probes"]["gil"]["data"]["scaling"]:
        if row["workers"] == 2:
            row["workers"] = 1
    md = compare.render_compare([cpu_only, one], ["a", "b"], "md")
    assert "(1 worker)" in md and "(1 workers)" not in md and "(2 workers)" in md


def test_the_terminal_summary_prints_an_install_hint_once():
    from gpudiag import capabilities

    why = f"torch is not installed: {capabilities.TORCH_HINT}"
    rep = {"schema_version": 1, "gpudiag_version": "t", "mode": "quick", "host": {},
           "probes": {n: {"status": "skipped", "reason": why, "duration_s": 0.0, "data": {}, "findings": []}
                      for n in ("launch", "pcie", "cycle")},
           "recommendation": None}
    text = render.render_terminal(rep)
    assert text.count(capabilities.TORCH_HINT) == 1
    assert text.count("torch is not installed (see above)") == 2
