"""A fleet of a thousand ranks and more, as a person reads it, and `compare` of fleet and watch reports (issue 28).

The page leads with the verdict, then pages the rank table (collapsed), lists the ranks to look at, draws
a heat map of nodes by metric and leaves the megabytes of raw data to the JSON; Markdown stays under
GitHub's limit. Fleet reports of that size load under their own size limit (a report's head says it is a
fleet's), and long lists are written one item per line. Sizes are asserted; nothing is timed here
(benchmarks/fleet_scale.py times it).
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading

import pytest
from click.testing import CliRunner

import tests
from gpudiag.cli import main
from gpudiag.report import contract
from gpudiag.views import compare, fleet_view, render
from tests.fleet.test_fleet import build_report, fleet

HERE = os.path.join(tests.TESTS, "recorded_views")
STRAGGLER, SLOW_NODE, MISSING = 7, 3, 1000


def large_fleet(n_nodes: int = 150, per_node: int = 8, changes=None) -> dict:
    """n_nodes x per_node canned GPU ranks: rank 7 a straggler (matmul 0.8x), node 3 slow (H2D 0.5x), rank 1000
    missing."""
    if changes is None:
        changes = {STRAGGLER: {"matmul": 560_000.0}, **{r: {"h2d": 25.0} for r in range(24, 32)}}
    ranks = [e for e in fleet(changes, n_nodes=n_nodes, per_node=per_node) if e["rank"] != MISSING]
    gone = [{"rank": MISSING, "host": f"host-node{MISSING // per_node}", "local_rank": MISSING % per_node,
             "reason": "did not reach the barrier within the deadline"}]
    return build_report(ranks, gone if n_nodes * per_node > MISSING else ())


@pytest.fixture(scope="module")
def big():
    return large_fleet()


def test_a_large_fleets_page_leads_with_the_verdict_and_pages_its_ranks(big):
    html = render.render_html(big)
    data = big["probes"]["fleet"]["data"]
    # First the verdict, then (further down) the rank pages, each collapsed: 1,200 rows in 3 pages of 500.
    assert html.index('id="fleet-verdict"') < html.index('<details class="page">')
    pages = re.findall(r'<details class="page"><summary>([^<]*)</summary>', html)
    assert pages == ["ranks 0 - 499 (500)", "ranks 500 - 999 (500)", "ranks 1000 - 1199 (200)"]
    assert " open" not in html[html.index('<details class="page">'):html.index('<details class="page">') + 40]
    # The ranks to look at come before the pages: the straggler, the slow node's ranks and the missing rank.
    look = html[html.index("Ranks to look at"):html.index('<details class="page">')]
    for r in [STRAGGLER, MISSING] + list(range(24, 32)):
        assert f"<td class=\"n\" data-label=\"rank\">{r}</td>" in look, r
    assert "<td class=\"n\" data-label=\"rank\">8</td>" not in look  # a healthy rank is only in the pages
    # Megabytes of raw data stay in the JSON; the page says so.
    assert '<details class="raw">' not in html and "is in the JSON report, not on this page" in html
    # The size a person's browser loads: well under a kilobyte a rank.
    assert len(html.encode()) / (data["world_size"]) < 700, len(html)


def test_the_heat_map_marks_the_slow_node_and_the_node_of_a_straggler(big):
    chart = fleet_view.heat_map(big["probes"]["fleet"]["data"])
    svg = str(chart["svg"])
    assert chart["id"] == "chart-fleet-heatmap" and svg.count("<rect class=\"hm") == 150 * 3 + 6  # 3 panels + legend
    slow = re.search(r'<rect class="(hm\d) hm-flag"[^>]*><title>host-node3: H2D 25', svg)
    assert slow and slow.group(1) == "hm4"  # 0.5x the other nodes: the darkest bucket, outlined
    assert re.search(r'<rect class="hm\d hm-rank"[^>]*><title>host-node0: matmul [^<]*straggler rank 7', svg)
    assert [r[0] for r in chart["table"]["rows"]] == ["host-node3"]  # flagged nodes, for readers without SVG


def test_a_small_fleet_keeps_one_table_and_no_heat_map():
    rep = large_fleet(n_nodes=2, per_node=4, changes={})
    v = fleet_view.view(rep["probes"]["fleet"]["data"])
    assert [t["title"] for t in v["tables"]] == ["Ranks", "Nodes", "Outliers", "Collectives"]
    assert "pages" not in v["tables"][0] and v["tables"][0]["stack"] is True
    assert fleet_view.heat_map(rep["probes"]["fleet"]["data"]) is None


def test_markdown_of_a_large_fleet_fits_an_issue_and_keeps_the_flagged_ranks(big):
    md = render.render_markdown(big)
    assert len(md) <= render.MARKDOWN_LIMIT
    assert f"| {STRAGGLER} | host-node0 |" in md and f"| {MISSING} |" in md
    assert "rows left out here to stay under GitHub's size limit" in md


def test_long_lists_are_written_one_item_per_line_and_read_back(big, tmp_path):
    text = contract.dumps(big)
    ranks_block = text[text.index('"ranks": [\n'):]
    first = ranks_block.splitlines()[1]
    assert first.lstrip().startswith('{"rank": 0,') and first.rstrip().endswith("},")
    assert json.loads(text) == json.loads(json.dumps(big))
    path = tmp_path / "big.json"
    path.write_text(text)
    assert contract.load_report(str(path)) == json.loads(text)


# ----------------------------------------------------------------------------- the size limit by kind

def test_a_fleet_report_may_be_larger_than_other_reports(big, tmp_path, monkeypatch):
    text = contract.dumps(big)
    plain = contract.dumps(json.load(open(os.path.join(HERE, "cpu-linux.json"))))
    monkeypatch.setattr(contract, "MAX_REPORT_BYTES", len(plain) // 2)
    monkeypatch.setattr(contract, "MAX_FLEET_REPORT_BYTES", len(text) + 10)
    (tmp_path / "fleet.json").write_text(text)
    (tmp_path / "plain.json").write_text(plain)
    assert contract.load_report(str(tmp_path / "fleet.json"))["probes"]["fleet"]["data"]["answered"] == 1199
    with pytest.raises(contract.ReportError, match=r"^plain\.json: .* is too large to be a gpudiag report \(at most"):
        contract.load_report(str(tmp_path / "plain.json"))
    monkeypatch.setattr(contract, "MAX_FLEET_REPORT_BYTES", len(text) // 2)
    with pytest.raises(contract.ReportError, match=r"^fleet\.json: .* too large to be a gpudiag fleet report \(at most"):
        contract.load_report(str(tmp_path / "fleet.json"))


def test_a_fleet_report_from_a_pipe_is_read_to_its_own_limit(big, tmp_path, monkeypatch):
    text = contract.dumps(big).encode()
    monkeypatch.setattr(contract, "MAX_REPORT_BYTES", len(text) // 4)
    fifo = tmp_path / "fleet.json"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as fh:
            fh.write(text)
    writer = threading.Thread(target=feed)
    writer.start()
    try:
        rep = contract.load_report(str(fifo))
    finally:
        writer.join()
    assert rep["probes"]["fleet"]["data"]["world_size"] == 1200


def test_an_absurd_file_is_refused_from_its_size_in_one_line(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:
        fh.write(b'{"schema_version": 1, "probes": {"fleet": {')
        fh.truncate(contract.MAX_FLEET_REPORT_BYTES + 2**29)  # sparse: nothing more is written
    res = CliRunner().invoke(main, ["render", str(path), "-o", str(tmp_path / "out.html")])
    assert res.exit_code == 2 and res.output.strip() == \
        "gpudiag: error: huge.json: 1.5 GiB is too large to be a gpudiag fleet report (at most 1 GiB)"


# ----------------------------------------------------------------------------- compare

def test_compare_of_two_fleet_runs_names_the_nodes_that_got_slower_or_were_excluded():
    before = large_fleet(n_nodes=4, per_node=4, changes={})
    after = large_fleet(n_nodes=4, per_node=4, changes={**{r: {"h2d": 25.0} for r in range(4, 8)},
                                                         13: {"matmul": 600_000.0}})
    ctx = compare.compare([before, after], ["monday", "tuesday"])
    assert ctx["kind"] == "fleet"
    assert ctx["explanations"][0] == "node host-node1 in tuesday: H2D GB/s 25 against 50 in monday (0.50x as fast)"
    excluded = next(e for e in ctx["explanations"] if e.startswith("excluded in tuesday"))
    assert "host-node1 (" in excluded and "host-node3 (rank 13 matmul_gflops 0.86x peers)" in excluded
    assert [r[1] for r in ctx["tables"][0]["rows"]] == ["host-node1"]
    rows = {r["key"]: r for r in ctx["rows"]}
    assert rows["exclude"]["cells"][1]["text"] == "host-node1, host-node3"
    html = compare.render_compare([before, after], ["monday", "tuesday"], "html")
    assert "Nodes slower than in the first run" in html and 'id="chart-compare"' in html


def test_compare_of_two_watched_jobs_names_gil_share_memory_growth_and_input_wait():
    calm = json.load(open(os.path.join(HERE, "watch-real.json")))
    busy = copy.deepcopy(calm)
    w = busy["probes"]["watch"]["data"]
    w["gil"]["held_fraction"] = calm["probes"]["watch"]["data"]["gil"]["held_fraction"] + 0.1  # below the limit
    w["input_wait"]["fraction"] = 0.4
    w["memory"]["projection"]["job_growth_bytes_per_s"] *= 2
    ctx = compare.compare([calm, busy], ["calm", "busy"])
    flagged = {r["key"] for r in ctx["rows"] if any(c["flag"] for c in r["cells"])}
    assert flagged == {"input_wait", "mem_growth"}
    assert any(e.startswith("Main thread waiting for input: busy 40 % against 0 % in calm") for e in ctx["explanations"])
    md = compare.render_compare([calm, busy], ["calm", "busy"], "md")
    assert "| GIL held (share of samples) |" in md and "**⚠ explains**" in md


def test_compare_of_reports_of_different_kinds_is_one_line(tmp_path, big):
    (tmp_path / "f.json").write_text(contract.dumps(big))
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "f.json"), os.path.join(HERE, "watch-real.json"),
                                    "-o", str(tmp_path / "c.md")])
    assert res.exit_code == 2 and res.output.strip() == (
        "gpudiag: error: compare needs reports of one kind: f is a fleet report (gpudiag fleet), watch-real is a "
        "watch report (gpudiag watch)")
    assert not (tmp_path / "c.md").exists()


# ----------------------------------------------------------------------------- the live line

class _Terminal:
    """stderr as a terminal would receive it."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_the_live_line_redraws_in_place_and_clears_itself(monkeypatch):
    from gpudiag.views.progress import LiveLine

    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    shown = threading.Event()

    def text():
        shown.set()
        return "gpudiag fleet: waiting at the barrier, 3 s; 6 of 8 rank(s) have reported (waiting for 3, 7)\x1b[31m"

    line = LiveLine(True, interval=0.01)
    line.start(text)
    assert shown.wait(10)
    line.stop()
    assert term.text.startswith("\r\x1b[Kgpudiag fleet: waiting at the barrier, 3 s; 6 of 8")
    assert term.text.endswith("\r\x1b[K") and "\x1b[31m" not in term.text  # the report's text is made safe
    term.text = ""
    quiet = LiveLine(False)
    quiet.start(text)
    quiet.stop()
    assert term.text == ""  # on a pipe (the CLI passes enabled=False there): nothing
