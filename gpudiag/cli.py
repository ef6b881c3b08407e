"""Command line: parse, call, print, exit code. No measuring here.

Exit codes: 0 done; 1 a check said no (preflight); 2 bad input (usage, unreadable report);
130 interrupted by Ctrl-C (the report of what finished is still written).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Dict, List, Optional

import click

from gpudiag import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """One line on stderr, a non-zero exit, no traceback."""
    click.echo(f"gpudiag: error: {message}", err=True)
    sys.exit(code)


class Progress:
    """`[2/7] gil  12.3 s` on stderr while a probe runs; silent when stderr is not a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.index = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __call__(self, name: str, phase: str, payload) -> None:
        if not self.enabled:
            return
        if phase == "start":
            self.index += 1
            self._start_ticker(name, float(payload))
        else:
            self._stop_ticker()
            res = payload
            click.echo(f"\r\033[K[{self.index}/{self.total}] {name:<11} {res['status']:<8} "
                       f"{res['duration_s']:.1f} s{' - ' + res['reason'] if res['reason'] else ''}", err=True)

    def _start_ticker(self, name: str, timeout_s: float) -> None:
        self._stop.clear()
        t0 = time.monotonic()

        def tick():
            while not self._stop.wait(0.25):
                click.echo(f"\r\033[K[{self.index}/{self.total}] {name:<11} running  "
                           f"{time.monotonic() - t0:.1f} s (limit {timeout_s:g} s)", err=True, nl=False)

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()

    def _stop_ticker(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None


def _check_writable(path: str, what: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(f"{what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        fail(f"{what} {path}: folder {folder} is not writable")
    if os.path.isdir(path):
        fail(f"{what} {path} is a folder; give a file name")


def _write_views(report: dict, html: Optional[str], json_path: Optional[str], markdown: Optional[str]) -> Dict[str, str]:
    from gpudiag import render
    from gpudiag.report import dumps, write_text_atomic

    written = {}
    if json_path:
        write_text_atomic(json_path, dumps(report))
        written["JSON"] = json_path
    if html:
        write_text_atomic(html, render.render_html(report))
        written["HTML"] = html
    if markdown == "-":
        click.echo(render.render_markdown(report))
    elif markdown:
        write_text_atomic(markdown, render.render_markdown(report))
        written["Markdown"] = markdown
    return written


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="gpudiag")
def main() -> None:
    """Measure why your GPU sits half idle, and which parallelism strategy is fastest here.

    \b
    gpudiag report             run every probe that can run here; write HTML + JSON
    gpudiag probes             list the probes and whether they can run on this machine
    gpudiag env                environment summary as Markdown, for pasting into an issue
    gpudiag render R.json -o R.html|R.md   re-render a saved report
    """


@main.command()
@click.option("--quick", "mode", flag_value="quick", default=True, help="A first look in seconds (default).")
@click.option("--full", "mode", flag_value="full", help="More sizes, repeats and workers: about a minute or more.")
@click.option("-o", "--output", "html", metavar="PATH.html", help="HTML report path.")
@click.option("--json", "json_path", metavar="PATH", help="JSON report path (default: next to the HTML).")
@click.option("--markdown", metavar="PATH|-", help="Also write Markdown; '-' prints it to stdout.")
@click.option("--only", multiple=True, metavar="NAME", help="Run only this probe (repeatable).")
@click.option("--skip", multiple=True, metavar="NAME", help="Do not run this probe (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=1), metavar="SECONDS", help="Per-probe time limit.")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths (secrets are always removed).")
def report(mode: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
           only: List[str], skip: List[str], timeout: Optional[float], no_redact: bool) -> None:
    """Run the probes and write the report (HTML + JSON, optionally Markdown)."""
    from gpudiag import report as report_mod
    from gpudiag import runner
    from gpudiag.probes import all_probes
    from gpudiag.redact import redact

    try:
        probes = runner.selected(all_probes(), only, skip)
    except ValueError as exc:
        fail(str(exc))
    if not probes:
        fail("--only/--skip left no probe to run")

    created = report_mod.utc_now_iso()
    base = report_mod.default_basename(created)
    if html is None and json_path is None:
        html, json_path = base + ".html", base + ".json"
    elif json_path is None:
        json_path = os.path.splitext(html)[0] + ".json"
    for path, what in ((html, "--output"), (json_path, "--json"),
                       (markdown if markdown not in (None, "-") else None, "--markdown")):
        if path:
            _check_writable(path, what)

    progress = Progress(len(probes), enabled=sys.stderr.isatty())
    outcome = runner.run_probes(probes, mode=mode, timeout_s=timeout, on_event=progress)
    rep = report_mod.build_report(outcome["results"], mode, created_at=created,
                                  interrupted=outcome["interrupted"], redacted=not no_redact)
    from gpudiag.recommend import recommend

    rep["recommendation"] = recommend(rep)
    rep = redact(rep, identify=not no_redact)
    written = _write_views(rep, html, json_path, markdown)
    from gpudiag import render

    click.echo(render.render_terminal(rep, written), err=markdown == "-")
    if outcome["interrupted"]:
        sys.exit(EXIT_INTERRUPTED)


@main.command("probes")
def probes_cmd() -> None:
    """List every probe, what it needs, and whether it can run on this machine."""
    from gpudiag import capabilities
    from gpudiag.probes import all_probes

    caps = capabilities.detect()
    rows = []
    for p in all_probes():
        why = capabilities.missing(p.needs, caps)
        rows.append((p.name, ", ".join(p.needs) or "-", "yes" if not why else "no", why or p.summary))
    w = [max(len(r[i]) for r in rows + [("probe", "needs", "runs", "")]) for i in range(3)]
    click.echo(f"{'probe':<{w[0]}}  {'needs':<{w[1]}}  {'runs':<{w[2]}}  what / why not")
    for name, needs, ok, text in rows:
        click.echo(f"{name:<{w[0]}}  {needs:<{w[1]}}  {ok:<{w[2]}}  {text}")


@main.command()
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths.")
def env(no_redact: bool) -> None:
    """Print the environment summary as GitHub-ready Markdown (fast: no torch import)."""
    from gpudiag.env_summary import env_markdown

    click.echo(env_markdown(identify=not no_redact))


@main.command()
@click.argument("report_json", metavar="REPORT.json")
@click.option("-o", "--output", required=True, metavar="OUT.html|OUT.md", help="Output path; the suffix picks the format.")
def render(report_json: str, output: str) -> None:
    """Re-render a saved JSON report as HTML or Markdown."""
    from gpudiag.report import ReportError, load_report

    ext = os.path.splitext(output)[1].lower()
    if ext not in (".html", ".htm", ".md", ".markdown") and output != "-":
        fail(f"--output {output}: use a .html or .md file name (or - for Markdown on stdout)")
    if output != "-":
        _check_writable(output, "--output")
    try:
        rep = load_report(report_json)
    except ReportError as exc:
        fail(str(exc))
    if output == "-":
        _write_views(rep, None, None, "-")
    elif ext in (".md", ".markdown"):
        _write_views(rep, None, None, output)
    else:
        _write_views(rep, output, None, None)
    if output != "-":
        click.echo(f"Wrote {output}", err=True)


if __name__ == "__main__":
    main()
