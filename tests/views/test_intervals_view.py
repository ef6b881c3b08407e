"""The views show each speedup's interval (a column and chart whiskers), the confidence, the
`inconclusive` verdict, and the verdict figures with their units."""

import json
import os

import tests
from gpudiag.diagnose.recommend import recommend
from gpudiag.views import charts, render
from gpudiag.views import format as fmt


def _load(name):
    with open(os.path.join(tests.TESTS, "recorded", name + ".json"), encoding="utf-8") as fh:
        rep = json.load(fh)
    rep["recommendation"] = recommend(rep)
    return rep


def test_html_shows_intervals_confidence_and_units():
    rep = _load("tie_eight_core")
    html = render.render_html(rep)
    assert "95 % interval" in html and "1.33-1.46x" in html  # batched's interval in the choice table
    assert "a tie: the simplest is recommended" in html
    assert 'class="ci"' in html  # whiskers on the tournament chart
    assert "per worker host: 355 MiB" in html  # figures with units
    assert "_bytes:" not in html and "per_worker_host_bytes:" not in html


def test_busy_report_shows_inconclusive_and_no_strategy():
    rep = _load("busy_two_core")
    html = render.render_html(rep)
    assert "v-inconclusive" in html and "too busy to judge" in html
    md = render.render_markdown(rep)
    assert "inconclusive" in md and "too busy to judge" in md


def test_gil_chart_marks_a_bar_above_its_ideal_and_draws_intervals():
    data = {"scaling": [
        {"workload": "python", "mode": "threads", "workers": 2, "speedup": 0.98, "speedup_ci95": [0.95, 1.01]},
        {"workload": "python", "mode": "processes", "workers": 2, "speedup": 2.4, "speedup_ci95": [2.3, 2.5]}]}
    svg = charts.gil_chart(data)
    assert "above ideal!" in svg and svg.count('class="ci"') >= 6  # two whiskers with caps


def test_figures_are_formatted_from_their_names():
    assert fmt.fmt_figure("budget_device_bytes", 900 * 2**20) == "900 MiB"
    assert fmt.fmt_figure("serial_busy_fraction", 0.44) == "44 %"
    assert fmt.fmt_figure("launch_overhead_us_median", 20.3) == "20.3 µs"
    assert fmt.fmt_figure("cycle_processes_speedup_ci95", [1.77, 1.99]) == "1.77-1.99x"
    assert fmt.fmt_figure("nvml_median_percent", 45.0) == "45 %"
    assert fmt.fmt_figure("closable_processes", ["code", "chrome"]) == "code, chrome"
    assert fmt.figure_label("per_worker_host_bytes") == "per worker host"
    assert fmt.fmt_figure("job_growth_bytes_per_s", 42_106_858) == "40.2 MiB/s"  # a byte rate, not a raw count
    assert fmt.figure_label("job_growth_bytes_per_s") == "job growth"
    assert fmt.fmt_figure("cycles_per_s", 12.5) == "12.5" and fmt.figure_label("cycles_per_s") == "cycles/s"
