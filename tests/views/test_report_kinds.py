"""Each report kind leads with its own answer (a fleet with its verdict, a watch with the job), and the
Markdown reads at a glance on a GitHub issue and stays under GitHub's 65,536-character limit.

fleet-real.json is a real `gpudiag fleet` report (torchrun --standalone, 2 CPU ranks on gloo, one
flagged as a straggler), watch-real.json a real `gpudiag watch` of examples/watch_demo.py; the
10,000-rank fleet below is built from the real one.
"""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

import tests
from gpudiag.views import fleet_view, format as fmt, render
from gpudiag.views.text import first_sentence

HERE = os.path.join(tests.TESTS, "recorded_views")
GITHUB_LIMIT = 65_536
SINGLE_MACHINE_SCAFFOLDING = ("No parallelism recommendation", "? cores", "kernel not measured",
                              "Recommendation and verdicts", "not measured: the system probe did not run")


def fixture(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        return json.load(fh)


def card(html: str) -> str:
    """The first section of the page (the summary card)."""
    body = html[html.index("<body>"):]
    start = body.index("<section")
    return body[start:body.index("</section>", start)]


def visible(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def md_lines_before(md: str, marker: str):
    return md[:md.index(marker)]


# ---------------------------------------------------------------- which kind

def test_report_kind_is_read_from_the_probes():
    assert render.report_kind(fixture("fleet-real.json")) == "fleet"
    assert render.report_kind(fixture("watch-real.json")) == "watch"
    assert render.report_kind(fixture("cpu-only-real.json")) == "machine"
    assert render.report_kind({"mode": "watch", "probes": {}}) == "watch"


# ---------------------------------------------------------------- fleet

def test_fleet_html_opens_with_the_verdict_exit_code_exclude_list_slowest_ranks_and_collectives():
    rep = fixture("fleet-real.json")
    data = rep["probes"]["fleet"]["data"]
    html = render.render_html(rep)
    assert "<h1>gpudiag fleet report</h1>" in html
    first = card(html)
    text = visible(first)
    assert 'id="fleet-verdict"' in first and data["verdict"] in text
    assert first.index(data["verdict"]) < first.index("<caption>Slowest ranks") < first.index("<caption>Collectives")
    assert f"{data['exit_code']} ({data['exit_meaning']})" in text
    assert data["exclude"]["slurm"] in text
    assert '<span class="badge sev-critical">straggler</span>' in first
    assert "all_reduce" in text and "0.835" in text  # busbw at the largest size
    for words in SINGLE_MACHINE_SCAFFOLDING:
        assert words not in html, words
    assert 'id="recommendation"' not in html and 'href="#recommendation"' not in html
    # the full view still follows: every rank, the outliers, the collective curves
    assert 'id="probe-fleet"' in html and "chart-fleet-intra_node" in html


def test_fleet_markdown_opens_with_the_verdict_and_leaves_out_what_did_not_run():
    rep = fixture("fleet-real.json")
    data = rep["probes"]["fleet"]["data"]
    md = render.render_markdown(rep)
    assert md.startswith("## gpudiag fleet report\n")
    head = md_lines_before(md, "### Findings")
    assert head.index(f"**{data['verdict']}**") < head.index("| Exit code | 2 (critical) |")
    assert f"| Exclude (Slurm) | {data['exclude']['slurm']} |" in head
    assert "**Slowest ranks**" in head and "| 0 | host-" in head and "**straggler**" in head
    assert "**Collectives**" in head
    for words in SINGLE_MACHINE_SCAFFOLDING:
        assert words not in md, words
    assert "| probe | status |" not in md  # one probe: no status table, its section in <details>
    assert md.count("<details>") == md.count("</details>")


def test_slowest_ranks_put_missing_and_flagged_ranks_first():
    data = copy.deepcopy(fixture("fleet-real.json")["probes"]["fleet"]["data"])
    data["ranks"] = list(reversed(data["ranks"]))
    data["missing"] = [{"rank": 2, "host": "host-x", "local_rank": 0, "reason": "did not reach the barrier"}]
    rows = fleet_view.slowest_ranks(data)["rows"]
    assert [r[0] for r in rows] == ["2", "0", "1"]
    assert rows[0][-1] == {"badge": "sev-critical", "text": "missing: did not reach the barrier"}
    assert rows[1][-1]["text"] == "straggler" and rows[1][3].startswith("H2D")
    assert fleet_view.slowest_nodes(data) is None  # one node: nothing to compare


# ---------------------------------------------------------------- watch

def test_watch_html_opens_with_the_job_and_its_recommendation():
    rep = fixture("watch-real.json")
    job = rep["probes"]["watch"]["data"]["job"]
    html = render.render_html(rep)
    assert "<h1>gpudiag watch report</h1>" in html
    first = card(html)
    text = visible(first)
    command = " ".join(job["command"])
    assert f"<code>{command}</code>" in first
    assert text.index(command) < text.index("Exit code") < text.index("Duration") < text.index(
        rep["recommendation"]["headline"][:60]) < text.index("Machine:")
    assert f"{job['duration_s']:.1f} s" in text
    for words in ("Driver model", "Kernel", "Probes", "No parallelism recommendation"):
        assert f"<dt>{words}</dt>" not in first and words not in text, words
    assert 'id="recommendation"' in html  # the verdicts follow


def test_watch_markdown_opens_with_the_job_then_the_recommendation():
    rep = fixture("watch-real.json")
    md = render.render_markdown(rep)
    assert md.startswith("## gpudiag watch report\n")
    head = md_lines_before(md, "### Recommendation and verdicts")
    assert head.index("| Job | `python examples/watch_demo.py") < head.index("| Exit code | 0 |") < head.index(
        "| Duration |") < head.index("**" + rep["recommendation"]["headline"][:40])
    assert "| Recommended change | processes, 2 workers (confidence clear" in head
    assert "| GIL | held 88 % of 32 samples" in head
    for words in ("| OS |", "| Driver |", "| Probes |"):
        assert words not in head


def test_the_watch_command_is_shown_as_the_report_stores_it_with_secrets_redacted():
    from gpudiag.watch.job import redact_command

    rep = fixture("watch-real.json")
    rep["probes"]["watch"]["data"]["job"]["command"] = redact_command(
        ["python", "train.py", "--token", "hunter2hunter2", "--lr", "0.1"])
    for text in (render.render_markdown(rep), render.render_html(rep)):
        assert "hunter2" not in text
        assert "train.py --token [redacted" in text


# ---------------------------------------------------------------- Markdown at a glance

def test_each_verdict_is_one_sentence_and_its_figures_and_rule_are_collapsed():
    rep = fixture("cpu-only-real.json")
    md = render.render_markdown(rep)
    table = md[md.index("| verdict | cause | in one sentence |"):]
    table = table[:table.index("\n\n")].splitlines()[2:]
    assert len(table) == len(rep["recommendation"]["verdicts"])
    for row, v in zip(table, rep["recommendation"]["verdicts"]):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 3
        assert cells[2] == first_sentence(v["summary"] or v["reason"]).replace("|", "\\|")
        assert len(cells[2].split()) <= 40, cells[2]
    gil = next(v for v in rep["recommendation"]["verdicts"] if v["cause"] == "gil_contention")
    assert first_sentence(gil["summary"]) != gil["summary"]  # the whole summary is longer ...
    details = md[md.index("<details><summary>figures and rules behind each verdict</summary>"):]
    rest = gil["summary"][len(first_sentence(gil["summary"])):].strip()
    assert f"(supported): … {rest}" in details and f"  - {gil['reason']}" in details  # ... and is behind <details>
    figures = render._figures(gil["figures"])
    assert f"  - figures: {figures}" in details
    assert figures not in md[:md.index("<details><summary>figures and rules")]


def test_minor_findings_are_collapsed_and_severe_ones_stay_in_view():
    md = render.render_markdown(fixture("cpu-only-real.json"))
    findings = md[md.index("### Findings"):md.index("### Probes")]
    details = findings[findings.index("<details>"):]
    assert "**warning** `DISPATCH_BOUND_UNDER_GIL`" in findings[:findings.index("<details>")]
    assert "**info** `NO_SWAP`" in details


@pytest.mark.parametrize("name", ["fleet-real.json", "watch-real.json", "cpu-only-real.json", "gpu-ubuntu.json"])
def test_markdown_tables_are_well_formed_for_every_kind(name):
    md = render.render_markdown(fixture(name))
    assert len(md) < GITHUB_LIMIT and md.count("<details>") == md.count("</details>")
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\|(---:?\|)+$", line):
            ncols = lines[i - 1].count("|") - lines[i - 1].count("\\|") - 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") - lines[j].count("\\|") - 1 == ncols, lines[j]
                j += 1


# ---------------------------------------------------------------- GitHub's size limit

def big_fleet(n_ranks=10_000, per_node=8) -> dict:
    """A 10,000-rank fleet report from the real 2-rank one: each rank and collective row copied per
    node, three stragglers and two missing ranks, every figure within its copy's noise."""
    rep = fixture("fleet-real.json")
    data = rep["probes"]["fleet"]["data"]
    proto_rank, proto_node = data["ranks"][1], data["nodes"][0]
    proto_rows = [c for c in data["collectives"] if c["scope"] == "intra_node"]
    ranks, nodes, rows = [], [], []
    flagged = {17, 4242, 9999}
    for node in range(n_ranks // per_node):
        host = f"host-{node:08x}"
        for local in range(per_node):
            r = copy.deepcopy(proto_rank)
            r.update(rank=node * per_node + local, local_rank=local, node_rank=node, host=host)
            if r["rank"] in flagged:
                r["scores"]["matmul_gflops"].update(relative=0.8, score=6.0, flagged=True)
            ranks.append(r)
        nodes.append(dict(copy.deepcopy(proto_node), host=host,
                          ranks=list(range(node * per_node, (node + 1) * per_node))))
        rows += [dict(copy.deepcopy(c), host=host, n_ranks=per_node) for c in proto_rows]
    missing = [{"rank": n_ranks + i, "host": f"host-m{i}", "local_rank": 0, "reason": "did not reach the barrier"}
               for i in range(2)]
    outliers = [dict(data["outliers"][0], rank=r, host=ranks[r]["host"], metric="matmul_gflops") for r in flagged]
    data.update(ranks=ranks, nodes=nodes, collectives=rows, missing=missing, outliers=outliers,
                world_size=n_ranks + 2, answered=n_ranks)
    return rep


def test_a_10000_rank_fleet_markdown_stays_under_githubs_limit_and_says_what_it_left_out():
    rep = big_fleet()
    md = render.render_markdown(rep)
    assert len(md) <= render.MARKDOWN_LIMIT < GITHUB_LIMIT, len(md)
    assert md.count("<details>") == md.count("</details>")
    assert md.startswith("## gpudiag fleet report\n\n") and f"**{rep['probes']['fleet']['data']['verdict']}**" in md
    cut = re.findall(r"_(\d+) of (\d+) rows left out here", md)
    assert ("9962", "10002") in cut or any(int(t) == 10_002 for _, t in cut), cut  # the rank table, cut
    ranks = md[md.index("**Ranks**"):]
    ranks = ranks[:ranks.index("rows left out")]
    for r in (17, 4242, 9999, 10_000, 10_001):  # the flagged and the missing ranks are kept
        assert f"\n| {r} | " in ranks, r
    assert "the JSON report has them all" in md
    assert "cut here to stay under" not in md  # cutting tables was enough: nothing else went


def test_cut_rows_keeps_flagged_rows_first_and_counts_the_rest():
    rows = [[str(i), fmt.badge("outlier", "sev-critical") if i in (3, 97) else "ok"] for i in range(100)]
    t = fmt.cut_rows(fmt.table("t", ["n#", "state"], rows), 5)
    assert [r[0] for r in t["rows"]] == ["0", "1", "2", "3", "97"]
    assert (t["left_out"], t["total_rows"]) == (95, 100)
    small = fmt.table("t", ["n#"], [["1"]])
    assert fmt.cut_rows(small, 5) is small


def test_a_last_resort_cut_closes_its_details_and_says_so():
    text = "## x\n\n<details><summary>s</summary>\n\n" + "".join(f"line {i}\n" for i in range(20_000)) + "</details>\n"
    out = render.truncate_markdown(text)
    assert len(out) <= render.MARKDOWN_LIMIT
    assert out.count("<details>") == out.count("</details>") == 1
    assert re.search(r"the last \d+ lines were left out", out)


def test_first_sentence():
    assert first_sentence("GIL-bound: 2 threads ran 1.24x (1.03-1.33x). The gil micro-benchmark: x.") == \
        "GIL-bound: 2 threads ran 1.24x (1.03-1.33x)."
    assert first_sentence("one sentence only, 0.5 s. of work") == "one sentence only, 0.5 s. of work"
    assert first_sentence(None) == ""


@pytest.mark.parametrize("name, mutate", [
    ("fleet-real.json", lambda d: d.update(ranks=[None, 3, {"rank": "x", "scores": {"h2d_gbps": "fast"}}])),
    ("fleet-real.json", lambda d: d.update(nodes="none", collectives=[{"op": "all_reduce", "busbw_gbps": "n/a"}])),
    ("fleet-real.json", lambda d: d.update(exclude=None, launcher=[], missing=[None], exit_code="two")),
    ("watch-real.json", lambda d: d.update(job={"command": "not a list", "exit_code": True, "mode": None})),
    ("watch-real.json", lambda d: d.update(gil={"status": "ok", "threads": [None, 4]}, memory={"status": "ok",
                                            "processes": [None], "projection": []})),
])
def test_the_first_screen_survives_a_report_of_another_shape(name, mutate):
    rep = fixture(name)
    mutate(rep["probes"][render.report_kind(rep)]["data"])
    assert "</html>" in render.render_html(rep)
    md = render.render_markdown(rep)
    assert md.startswith("## gpudiag ") and md.count("<details>") == md.count("</details>")
