"""HTML and Markdown views: summary first, charts with captions and numbers, escaping, no external
resources, compact Markdown, and robustness against reports of other shapes."""

import copy
import json
import os
import re
from html.parser import HTMLParser

import pytest

import tests
from gpudiag.views import render

HERE = tests.TESTS
FIXTURES = ("gpu-ubuntu.json", "gpu-windows-wddm.json", "cpu-linux.json", "foundation-only.json")
EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def fixture(name):
    with open(os.path.join(HERE, "recorded_views", name), encoding="utf-8") as fh:
        return json.load(fh)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.ids = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self.ids.extend(v for k, v in attrs if k == "id")


def collect(html):
    c = _Collect()
    c.feed(html)
    return c


@pytest.mark.parametrize("name", FIXTURES)
def test_html_is_self_contained(name):
    html = render.render_html(fixture(name))
    c = collect(html)
    assert "script" not in c.tags and "link" not in c.tags and "iframe" not in c.tags
    for k, v in c.attrs:
        if k in ("src", "href", "action", "srcset", "poster", "data"):
            assert v is None or v.startswith("#"), (k, v)  # in-page anchors only
    # no URL of any kind except the SVG namespace identifier
    assert re.findall(r"https?://", html.replace('xmlns="http://www.w3.org/2000/svg"', "")) == []
    assert "@import" not in html and "url(" not in html
    assert len(c.ids) == len(set(c.ids)), "duplicate element ids"


def test_summary_card_comes_first_with_machine_gpu_driver_strategy_and_top_findings():
    html = render.render_html(fixture("gpu-ubuntu.json"))
    body = html[html.index("<body>"):]
    assert body.index('id="summary"') < body.index('id="findings"') < body.index('id="probes"')
    card = body[body.index('id="summary"'):body.index("</section>")]
    for text in ("Ubuntu 22.04.4 LTS", "NVIDIA GeForce GTX 1650", "proprietary kernel module",
                 "cuda_graph", "1.96x", "Top findings", "idle 54 %"):
        assert text in card, text
    assert card.count("<li>") == render.TOP_FINDINGS  # three, most severe first
    assert card.index("critical") < card.index("warning")


def test_every_chart_has_svg_caption_and_numbers():
    html = render.render_html(fixture("gpu-ubuntu.json"))
    for cid in ("chart-gil", "chart-pcie", "chart-tournament", "chart-idle", "chart-gaps", "chart-util"):
        fig = html[html.index(f'id="{cid}"'):]
        fig = fig[:fig.index("</figure>")]
        assert "<svg" in fig and "<figcaption>" in fig and "the numbers" in fig, cid


def test_tables_show_key_numbers():
    html = render.render_html(fixture("gpu-ubuntu.json"))
    assert "17.8" in html and "9.1" in html  # tournament cycles/s
    assert "Gen3 x16" in html                 # PCIe link
    assert "switch cost" in html              # contention table
    for verdict in ("supported", "refuted"):
        assert f'class="badge v-{verdict}"' in html


def test_cpu_only_report_says_gpu_questions_not_answered_and_shows_skip_reasons():
    rep = fixture("cpu-linux.json")
    html = render.render_html(rep)
    assert "GPU questions" in html and "not answered" in html
    assert "NVML library not found" in html
    assert html.count('class="badge s-skipped"') >= 4
    assert "not measured" in html  # verdict badges for GPU causes
    md = render.render_markdown(rep)
    assert "not answered" in md and "NVML library not found" in md


def test_report_without_recommendation_or_probe_views_renders():
    html = render.render_html(fixture("foundation-only.json"))
    assert "No recommendation" in html
    md = render.render_markdown(fixture("foundation-only.json"))
    assert "No recommendation" in md


def _plant(rep):
    rep = copy.deepcopy(rep)
    rep["host"]["os"] = EVIL
    rep["probes"]["cycle"]["findings"].append({"code": "EVIL", "severity": "critical", "message": EVIL,
                                               "evidence": {"x": EVIL}, "fix": EVIL})
    rep["probes"]["cycle"]["data"]["strategies"][0]["reason"] = EVIL
    rep["probes"]["cycle"]["data"]["strategies"][1]["name"] = EVIL
    rep["recommendation"]["headline"] = EVIL
    rep["recommendation"]["verdicts"][0]["summary"] = EVIL
    return rep


def test_all_text_is_escaped_in_html():
    html = render.render_html(_plant(fixture("gpu-ubuntu.json")))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_markdown_escapes_html_and_pipes():
    rep = _plant(fixture("gpu-ubuntu.json"))
    rep["probes"]["cycle"]["data"]["strategies"][2]["reason"] = "a | b\nc"
    md = render.render_markdown(rep)
    assert "<script>" not in md and "<img" not in md
    for line in md.splitlines():
        if line.startswith("|") and "a \\| b" in line:
            break
    else:
        raise AssertionError("pipe in a cell was not escaped")


@pytest.mark.parametrize("name", FIXTURES)
def test_markdown_is_compact_with_tables_and_details(name):
    md = render.render_markdown(fixture(name))
    assert len(md) < 20_000, len(md)  # far under GitHub's 65,536 limit
    assert md.count("<details>") == md.count("</details>")
    assert "| | |" in md  # the summary table


def test_markdown_of_a_huge_report_stays_under_the_limit():
    rep = fixture("gpu-ubuntu.json")
    pts = rep["probes"]["pcie"]["data"]["points"]
    rep["probes"]["pcie"]["data"]["points"] = pts * 60  # thousands of rows
    rep["probes"]["mystery"] = {"status": "ok", "reason": "", "duration_s": 1.0, "data": {"blob": "x" * 200_000},
                                "findings": []}
    md = render.render_markdown(rep)
    assert len(md) <= render.MARKDOWN_LIMIT
    assert "x" * 5000 not in md  # unknown big data is referred to the JSON, not pasted


def test_markdown_tables_are_well_formed():
    md = render.render_markdown(fixture("gpu-ubuntu.json"))
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\|(-{3}:?\|)+$|^\|(---:?\|)+$", line.replace("---:", "---")):
            head = lines[i - 1]
            ncols = head.count("|") - head.count("\\|") - 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") - lines[j].count("\\|") - 1 == ncols, lines[j]
                j += 1


@pytest.mark.parametrize("mutate", [
    lambda r: r["probes"]["pcie"]["data"].update(points="not a list"),
    lambda r: r["probes"]["gil"]["data"].update(scaling=[{"workload": None, "speedup": "fast"}]),
    lambda r: r["probes"]["cycle"]["data"].update(strategies=[None, 3, {"name": "serial"}]),
    lambda r: r["probes"]["driver"]["data"].update(gpus=[{"pcie": "n/a", "processes": None}]),
    lambda r: r["probes"]["system"].update(data={"os": "Linux", "memory": [1, 2]}),
    lambda r: r.update(recommendation={"verdicts": "none", "evidence": None}),
    lambda r: r["probes"]["cycle"]["data"].update(idle={"serial": {"busy_fraction": "n/a", "gaps": []}}),
])
def test_odd_shapes_from_other_versions_do_not_break_the_views(mutate):
    rep = fixture("gpu-ubuntu.json")
    mutate(rep)
    html = render.render_html(rep)
    assert "</html>" in html
    assert render.render_markdown(rep)


def test_terminal_summary_still_works():
    text = render.render_terminal(fixture("cpu-linux.json"), {"HTML": "r.html"})
    assert "Recommendation:" in text and "Wrote HTML: r.html" in text


def test_cli_render_markdown_to_stdout(tmp_path):
    from click.testing import CliRunner

    from gpudiag.cli import main

    src = os.path.join(HERE, "recorded_views", "cpu-linux.json")
    res = CliRunner().invoke(main, ["render", src, "-o", "-"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("## gpudiag report")
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["render", src, "-o", str(out)])
    assert res.exit_code == 0 and "<svg" in out.read_text(encoding="utf-8")
