"""Command line: parse, call, print, exit code. No measuring here; outputs are planned, checked and
written by gpudiag.report.outputs, stop signals are handled by gpudiag.platform.signals.

Exit codes:
  0    done (preflight: ready)
  1    preflight: not ready
  2    bad input: a usage error, an unreadable report, an output path refused (checked before any probe runs)
  74   an output could not be written (disk full, permission); no file is half-written, none destroyed
  129, 130, 143   stopped by SIGHUP, Ctrl-C (SIGINT), SIGTERM: the report of what finished is still written
  141  stdout was closed by its reader (`| head -1`): the command stops quietly
"""

from __future__ import annotations

import sys
from typing import List, Optional

import click

from gpudiag import __version__
from gpudiag.diagnose.preflight.model import MAX_DEVICE, MAX_WORKERS
from gpudiag.report import outputs

EXIT_USAGE = outputs.EXIT_USAGE
EXIT_WRITE = outputs.EXIT_WRITE
EXIT_INTERRUPTED = 130
_MESSAGE_CHARS = 400  # one line: a hostile value must not flood the terminal


def fail(message: object, code: Optional[int] = None) -> None:
    """One redacted line on stderr, a non-zero exit (the error's own code, else 2), no traceback."""
    code = code if code is not None else getattr(message, "exit_code", EXIT_USAGE)
    text = " ".join(str(message).split())
    if len(text) > _MESSAGE_CHARS:
        text = text[:_MESSAGE_CHARS] + "..."
    outputs.say(f"gpudiag: error: {text}")
    sys.exit(code)


class Seconds(click.ParamType):
    """A per-probe time limit: a finite number of seconds from 1 to a week (nan, inf, -1 are refused)."""
    name = "SECONDS"

    def convert(self, value, param, ctx):
        from gpudiag.runner import check_timeout

        try:
            seconds = float(value)
            if seconds < 1:
                raise ValueError(f"the limit must be at least 1 s, not {value!r}")
            return check_timeout(seconds)
        except (TypeError, ValueError) as exc:
            self.fail(str(exc) if "limit" in str(exc) or "timeout" in str(exc) else f"{value!r} is not a number "
                      "of seconds", param, ctx)


class _Main(click.Group):
    """The command group, run so that every message is one redacted line and stop signals end it cleanly.

    Click's own errors (a bad option value, a missing file) echo what the user typed: they go through
    `fail` like every other message. Ctrl-C, SIGTERM and SIGHUP exit 128 + the signal.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from gpudiag.platform import signals

        with signals.handlers():
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.UsageError as exc:
                where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
                fail(exc.format_message() + where, exc.exit_code)
            except click.ClickException as exc:
                fail(exc.format_message(), exc.exit_code)
            except click.exceptions.Abort:
                fail("aborted", 1)
            except signals.Interrupted as exc:  # outside the probe loop, which writes its report itself
                outputs.say(f"gpudiag: interrupted by {exc.label}")
                sys.exit(exc.exit_code)
            if not standalone_mode:
                return rv
            sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="gpudiag")
def main() -> None:
    """Measure why your GPU sits half idle, and which parallelism strategy is fastest here.

    \b
    gpudiag report             run every probe that can run here; write HTML + JSON
    gpudiag probes             list the probes and whether they can run on this machine
    gpudiag env                environment summary as Markdown, for pasting into an issue
    gpudiag preflight --workers 4   go / no-go before a long run (exit code says it)
    gpudiag render R.json -o R.html|R.md   re-render a saved report
    gpudiag compare A.json B.json -o C.html|C.md   the same metrics side by side
    """


@main.command()
@click.option("--quick", "mode", flag_value="quick", default=True, help="A first look in seconds (default).")
@click.option("--full", "mode", flag_value="full", help="More sizes, repeats and workers: about a minute or more.")
@click.option("-o", "--output", "html", metavar="PATH.html|-",
              help="HTML report (default: next to --json, else gpudiag-report-<date>-<id>.html here).")
@click.option("--json", "json_path", metavar="PATH.json|-",
              help="JSON report (default: next to the HTML, same name).")
@click.option("--markdown", metavar="PATH.md|-", help="Also write Markdown.")
@click.option("--only", multiple=True, metavar="NAME", help="Run only this probe (repeatable).")
@click.option("--skip", multiple=True, metavar="NAME", help="Do not run this probe (repeatable).")
@click.option("--timeout", type=Seconds(), metavar="SECONDS", help="Per-probe time limit (1 s to a week).")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths (secrets are always removed).")
@click.option("--cycle", "cycle_ref", metavar="MODULE:FACTORY",
              help="Measure your own loop: FACTORY(device) returns a step() (see docs/cycle.md).")
def report(mode: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
           only: List[str], skip: List[str], timeout: Optional[float], no_redact: bool,
           cycle_ref: Optional[str]) -> None:
    """Run the probes and write the report: HTML and JSON always, Markdown if asked.

    A path not given is derived from the other (r.html <-> r.json). '-' sends that output to stdout
    (the summary then goes to stderr). Every output path is checked before any probe runs.
    """
    from gpudiag.report import contract as report_mod
    from gpudiag import runner
    from gpudiag.probes import all_probes
    from gpudiag.report.redact import redact
    from gpudiag.views.progress import Progress

    try:
        probes = runner.selected(all_probes(), only, skip)
    except ValueError as exc:
        fail(str(exc))
    if not probes:
        fail("--only/--skip left no probe to run")
    if cycle_ref is not None:
        from gpudiag.probes.cycle.workload import CustomLoopError, parse_ref

        try:
            parse_ref(cycle_ref)
        except CustomLoopError as exc:
            fail(str(exc))
        if "cycle" not in {p.name for p in probes}:
            fail("--cycle needs the cycle probe, which --only/--skip left out")

    created = report_mod.utc_now_iso()
    try:
        planned = outputs.plan_report(html, json_path, markdown, report_mod.default_basename(created))
        outputs.check(planned)
    except outputs.OutputError as exc:
        fail(exc)
    to_stdout = any(o.to_stdout for o in planned)

    progress = Progress(len(probes), enabled=sys.stderr is not None and sys.stderr.isatty(), identify=not no_redact)
    outcome = runner.run_probes(probes, mode=mode, timeout_s=timeout, on_event=progress,
                                options={"cycle": cycle_ref} if cycle_ref else None)
    from gpudiag.diagnose.recommend import recommend
    from gpudiag.platform import signals
    from gpudiag.views import render

    with signals.deferred():  # what finished is written even if a stop signal arrives now
        rep = report_mod.build_report(outcome["results"], mode, created_at=created,
                                      interrupted=outcome["interrupted"], redacted=not no_redact)
        rep["recommendation"] = recommend(rep)
        rep = redact(rep, identify=not no_redact)
        views = {"html": lambda: render.render_html(rep), "json": lambda: report_mod.dumps(rep),
                 "markdown": lambda: render.render_markdown(rep)}
        try:
            written = outputs.write([(o, views[o.kind]) for o in planned])
        except outputs.OutputError as exc:
            fail(exc)
        outputs.say(render.render_terminal(rep, written), err=to_stdout, identify=not no_redact)
    if outcome["interrupted"]:
        sys.exit(signals.exit_code(outcome["signal"]))


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
    lines = [f"{'probe':<{w[0]}}  {'needs':<{w[1]}}  {'runs':<{w[2]}}  what / why not"]
    lines += [f"{name:<{w[0]}}  {needs:<{w[1]}}  {ok:<{w[2]}}  {text}" for name, needs, ok, text in rows]
    outputs.say("\n".join(lines), err=False)


@main.command()
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths.")
def env(no_redact: bool) -> None:
    """Print the environment summary as GitHub-ready Markdown (fast: no torch import)."""
    from gpudiag.views.env_summary import env_markdown

    try:
        outputs.write_stdout(env_markdown(identify=not no_redact))
    except outputs.OutputError as exc:
        fail(exc)


class SizeParam(click.ParamType):
    """`1.5G`, `800M`, `512K` or bytes (gpudiag/sizes.py); a bad size is a usage error (exit 2)."""
    name = "SIZE"

    def convert(self, value, param, ctx):
        from gpudiag.measure.sizes import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command()
@click.option("--workers", type=click.IntRange(min=1, max=MAX_WORKERS), default=1, show_default=True,
              help=f"Planned workers (1 to {MAX_WORKERS:,}).")
@click.option("--strategy", type=click.Choice(["threads", "processes"]), default="processes", show_default=True,
              help="processes: each worker its own process and CUDA context; threads: one process shared.")
@click.option("--vram-per-worker", type=SizeParam(), metavar="SIZE", help="Device memory per worker (e.g. 800M).")
@click.option("--ram-per-worker", type=SizeParam(), metavar="SIZE", help="Host memory per worker (e.g. 1.5G).")
@click.option("--checkpoint-dir", type=click.Path(exists=True, file_okay=False), metavar="PATH",
              help="Folder the run writes checkpoints to: its free space is checked.")
@click.option("--min-free-disk", type=SizeParam(), metavar="SIZE", help="Free space needed at --checkpoint-dir.")
@click.option("--device", type=click.IntRange(min=0, max=MAX_DEVICE), default=0, show_default=True,
              help="CUDA device index.")
@click.option("--report", "reports", multiple=True, type=click.Path(exists=True, dir_okay=False), metavar="PATH",
              help="Saved gpudiag report to take per-worker memory from (default: newest in this folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--strict", is_flag=True, help="Warnings also make it NOT READY (exit 1).")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths in what is printed.")
def preflight(workers: int, strategy: str, vram_per_worker: Optional[int], ram_per_worker: Optional[int],
              checkpoint_dir: Optional[str], min_free_disk: Optional[int], device: int, reports: List[str],
              as_json: bool, strict: bool, no_redact: bool) -> None:
    """Go / no-go in about a second before a long run (exit 0 ready, 1 not ready, 2 usage error)."""
    import json

    from gpudiag.diagnose.preflight import preflight as run_preflight
    from gpudiag.report.redact import redact

    if min_free_disk is not None and not checkpoint_dir:
        raise click.UsageError("--min-free-disk needs --checkpoint-dir")
    try:
        result = run_preflight(workers, strategy, vram_per_worker=vram_per_worker, ram_per_worker=ram_per_worker,
                               checkpoint_dir=checkpoint_dir, min_free_disk=min_free_disk, device=device,
                               strict=strict, report=list(reports))
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        text = json.dumps(redact(result.to_dict(), identify=not no_redact), indent=2, default=str)
    else:
        text = redact(result.format_text(), identify=not no_redact)
    try:
        outputs.write_stdout(text)
    except outputs.OutputError as exc:
        fail(exc)
    sys.exit(0 if result.ready else 1)


def _load(path: str) -> dict:
    """A saved report, checked and redacted again (it may come from anywhere); a bad one ends with exit 2."""
    from gpudiag.report.contract import ReportError, load_report
    from gpudiag.report.redact import redact

    try:
        rep = load_report(path)
    except ReportError as exc:
        fail(str(exc))
    return redact(rep, identify=rep.get("redacted") is not False)


def _view(path_or_names: str, make) -> str:
    """Render a loaded report; a shape no view expected is a one-line error naming the file, not a traceback."""
    from gpudiag.views.render import RENDER_ERRORS

    try:
        return make()
    except RENDER_ERRORS as exc:
        fail(f"{path_or_names}: a field has a shape this gpudiag cannot show ({type(exc).__name__}: {exc})")
    return ""


@main.command()
@click.argument("report_json", metavar="REPORT.json")
@click.option("-o", "--output", required=True, metavar="OUT.html|OUT.md|-",
              help="Output path; the suffix picks the format ('-': Markdown on stdout).")
def render(report_json: str, output: str) -> None:
    """Re-render a saved JSON report as HTML or Markdown."""
    from gpudiag.views import render as render_mod

    try:
        out = outputs.plan_view(output)
        outputs.check([out], inputs=[report_json])
    except outputs.OutputError as exc:
        fail(exc)
    rep = _load(report_json)
    text = _view(report_json, lambda: render_mod.render_html(rep) if out.kind == "html" else render_mod.render_markdown(rep))
    try:
        written = outputs.write([(out, text)])
    except outputs.OutputError as exc:
        fail(exc)
    for path in written.values():
        outputs.say(f"Wrote {path}")


@main.command()
@click.argument("reports", nargs=-1, metavar="A.json B.json [C.json ...]")
@click.option("-o", "--output", required=True, metavar="OUT.html|OUT.md|-",
              help="Output path; the suffix picks the format ('-': Markdown on stdout).")
def compare(reports: List[str], output: str) -> None:
    """Compare saved reports side by side; ratios are against the first report."""
    from gpudiag.views import compare as compare_mod

    if len(reports) < 2:
        fail("compare needs at least two report files")
    try:
        out = outputs.plan_view(output)
        outputs.check([out], inputs=list(reports))
    except outputs.OutputError as exc:
        fail(exc)
    loaded = [_load(p) for p in reports]
    names = compare_mod.unique_names(reports)
    text = _view(", ".join(reports), lambda: compare_mod.render_compare(loaded, names,
                                                                       "html" if out.kind == "html" else "md"))
    try:
        written = outputs.write([(out, text)])
    except outputs.OutputError as exc:
        fail(exc)
    for path in written.values():
        outputs.say(f"Wrote {path}")


if __name__ == "__main__":
    main()
