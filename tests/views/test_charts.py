"""The SVG chart helpers: well-formed, escaped, drawn from the data, None when there is nothing to draw."""

import json
import math
import os
import xml.etree.ElementTree as ET

import pytest

import tests
from gpudiag.views import charts

HERE = tests.TESTS
NS = "{http://www.w3.org/2000/svg}"


def fixture(name):
    with open(os.path.join(HERE, "recorded_views", name), encoding="utf-8") as fh:
        return json.load(fh)


def parse(svg):
    assert svg is not None
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == NS + "svg"
    return root


def test_nice_ticks_cover_the_range_with_round_steps():
    ticks = charts.nice_ticks(0, 17.3)
    assert ticks[0] == 0 and ticks[-1] >= 17.3
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1 and steps.pop() in (2, 2.5, 5)


def test_log2_ticks_are_powers_of_two_within_limits():
    ticks = charts.log2_ticks(4096, 256 * 2**20)
    assert len(ticks) <= 7
    assert all(math.log2(t).is_integer() for t in ticks)
    assert ticks[0] == 4096 and ticks[-1] <= 256 * 2**20 and ticks[-1] >= 2**24  # spans the data


def test_line_chart_log_x_places_points_in_size_order():
    pts = [(2**12, 1.0), (2**20, 8.0), (2**28, 12.0)]
    root = parse(charts.line_chart([{"name": "a", "points": pts}], title="t", x_label="x", y_label="y", log_x=True))
    circles = root.findall(f".//{NS}circle")
    xs = [float(c.get("cx")) for c in circles]
    assert len(xs) == 3 and xs == sorted(xs)
    # equal steps in log2 size -> equal steps on screen
    assert abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 0.5


def test_pcie_chart_has_one_line_per_series_and_the_theoretical_line():
    data = fixture("gpu-ubuntu.json")["probes"]["pcie"]["data"]
    root = parse(charts.pcie_chart(data))
    assert len(root.findall(f".//{NS}polyline")) == 6  # h2d/d2h/bidir x pinned/pageable
    refs = [ln for ln in root.iter(f"{NS}line") if ln.get("class") == "ref"]
    assert len(refs) == 1
    assert "link maximum" in "".join(root.itertext())


def test_gil_chart_groups_threads_and_processes_per_workload():
    data = fixture("cpu-linux.json")["probes"]["gil"]["data"]
    root = parse(charts.gil_chart(data))
    bars = [r for r in root.iter(f"{NS}rect") if r.get("class") in ("c0", "c1") and r.find(f"{NS}title") is not None]
    assert len(bars) == 6  # 3 CPU workloads x threads/processes
    text = "".join(root.itertext())
    assert "python" in text and "torch_dispatch" in text and "ideal 2x" in text


def test_tournament_highlights_serial_and_the_recommended_and_names_skipped():
    data = fixture("cpu-linux.json")["probes"]["cycle"]["data"]
    root = parse(charts.tournament_chart(data, "processes"))
    classes = [r.get("class") for r in root.iter(f"{NS}rect")]
    assert classes.count("hl-win") == 1 and classes.count("hl-base") == 1
    text = "".join(root.itertext())
    assert "(1.71x) recommended, fastest" in text and "baseline" in text and "winner" not in text
    assert "skipped: needs a CUDA device" in text  # no bar, but the reason


def test_tournament_names_a_tie_as_a_tie_and_the_fastest_apart_from_the_recommended():
    data = {"strategies": [{"name": "serial", "status": "ok", "cycles_per_s": 10.0},
                           {"name": "threads", "status": "ok", "cycles_per_s": 10.3, "workers": 2},
                           {"name": "processes", "status": "ok", "cycles_per_s": 10.4, "workers": 2}]}
    root = parse(charts.tournament_chart(data, "serial", ["threads", "processes"]))
    text = "".join(root.itertext())
    assert "baseline, recommended: the simplest of a tie" in text
    assert text.count("tied") == 2 and "tied, fastest" in text and "winner" not in text
    win = [r for r in root.iter(f"{NS}rect") if r.get("class") == "hl-win"]
    assert len(win) == 1 and "serial" in win[0].find(f"{NS}title").text  # the recommendation, not the fastest


def test_tournament_marks_the_fastest_when_nothing_is_recommended():
    data = {"strategies": [{"name": "serial", "status": "ok", "cycles_per_s": 1.0},
                           {"name": "batched", "status": "ok", "cycles_per_s": 3.0}]}
    root = parse(charts.tournament_chart(data))
    win = [r for r in root.iter(f"{NS}rect") if r.get("class") == "hl-win"]
    assert len(win) == 1 and "batched" in win[0].find(f"{NS}title").text
    text = "".join(root.itertext())
    assert "fastest" in text and "recommended" not in text


def test_idle_charts_from_baseline_and_fastest():
    idle = fixture("gpu-ubuntu.json")["probes"]["cycle"]["data"]["idle"]
    parse(charts.idle_breakdown_chart(idle))
    root = parse(charts.gap_histogram_chart(idle))
    assert ">1000" in "".join(root.itertext())


def test_idle_fractions_split_idle_by_breakdown_and_sum_to_one():
    f = charts.idle_fractions({"busy_fraction": 0.4, "breakdown_ms": {"host_wait": 30, "sync_wait": 10, "launch_overhead": 20}})
    assert f["busy"] == 0.4
    assert abs(f["host_wait"] - 0.3) < 1e-9 and abs(f["sync_wait"] - 0.1) < 1e-9
    assert abs(sum(f.values()) - 1.0) < 1e-9
    assert charts.idle_fractions({"busy_fraction": None}) == {}


def test_nothing_to_draw_gives_none():
    assert charts.pcie_chart({}) is None
    assert charts.gil_chart({"scaling": []}) is None
    assert charts.tournament_chart({"strategies": [{"name": "serial", "status": "failed", "cycles_per_s": None}]}) is None
    assert charts.gap_histogram_chart({}) is None
    assert charts.line_chart([{"name": "a", "points": [(0, 1)]}], title="t", x_label="x", y_label="y", log_x=True) is None


def test_labels_are_escaped():
    evil = '<script>alert("x")</script>&'
    svg = charts.horizontal_bars([{"label": evil, "value": 1.0, "note": evil}], title=evil, x_label=evil)
    assert "<script>" not in svg
    root = parse(svg)
    assert evil in "".join(root.itertext())


def test_no_colour_literals_only_classes():
    data = fixture("gpu-ubuntu.json")["probes"]
    svgs = [charts.pcie_chart(data["pcie"]["data"]), charts.gil_chart(data["gil"]["data"]),
            charts.tournament_chart(data["cycle"]["data"], "cuda_graph")]
    for svg in svgs:
        assert "#" not in svg.replace("&#", "")  # no hex colours: the stylesheet decides
        assert "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "12", True])
def test_non_numbers_are_skipped_not_drawn(bad):
    svg = charts.grouped_bars(["a", "b"], [{"name": "s", "values": [1.0, bad]}], title="t", y_label="y")
    root = parse(svg)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 1
