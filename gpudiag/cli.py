"""Command line: parse, call, print, exit code. No measuring here; outputs are planned, checked and
written by gpudiag.report.outputs, stop signals are handled by gpudiag.platform.signals.

Exit codes (docs/cli.md):
  0    done (preflight: ready)
  1    a check said no: a probe failed (`report`, whose report is still written whole) or not ready (`preflight`)
  2    bad input: a usage error, an unreadable report, a --cycle that does not import, an output path
       refused (outputs are checked before any probe runs)
  74   an output could not be written (disk full, permission): no file is half-written, none destroyed
  129, 130, 143   stopped by SIGHUP, Ctrl-C (SIGINT), SIGTERM: the report of what finished is still written
  141  stdout was closed by its reader (`| head -1`): the command stops quietly
`fleet` uses the Nagios codes instead: 0 healthy, 1 warning, 2 critical, 3 unknown (nothing
measured, or a usage error); a stop signal ends rank 0 with its report's code (critical) once it has
written the report of what it had, the other ranks with 128 + the signal.
`gpudiag watch -- CMD` exits with the job's own code (128+N when a signal N ended it), 126/127 when
CMD cannot be run / is not found, 125 when the job succeeded but the report could not be written;
`watch --pid` exits 0 (docs/watch.md).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import click

from gpudiag import __version__
from gpudiag.diagnose.preflight.model import MAX_DEVICE, MAX_WORKERS
from gpudiag.report import outputs

EXIT_PROBE_FAILED = 1
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
        """The limit in seconds as a float, or a click usage error (exit 2): api's rule and words
        (report.contract.check_timeout), or "is not a number of seconds"."""
        from gpudiag.report.contract import check_timeout

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        try:
            return check_timeout(seconds)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line: its message and where to read the help."""
    msg = " ".join(exc.format_message().split())
    if msg[:1].isupper() and not msg[1:2].isupper():
        msg = msg[0].lower() + msg[1:]
    where = exc.ctx.command_path if exc.ctx is not None else "gpudiag"
    return f"{msg.rstrip('.')} (see '{where} -h')"


class OneLineErrors(click.Group):
    """The gpudiag group: every message one redacted line, stop signals ending it cleanly.

    click prints a usage block, a blank line and "Error: ..." (four lines, echoing what the user
    typed); here it is one `gpudiag: error: ...` line through `fail`, and exit 2. Ctrl-C, SIGTERM
    and SIGHUP exit 128 + the signal (the probe loop writes its report first).
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the CLI inside the stop-signal handlers; every click error, Ctrl-C or signal becomes one `gpudiag: ...` line and its documented exit code, never a traceback."""
        from gpudiag.platform import signals

        with signals.handlers():
            if not standalone_mode:
                return super().main(args, prog_name, complete_var, standalone_mode, **extra)
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.UsageError as exc:
                fail(_usage_line(exc), exc.exit_code)
            except click.Abort:
                fail("interrupted by Ctrl-C", EXIT_INTERRUPTED)
            except click.ClickException as exc:
                fail(" ".join(exc.format_message().split()), exc.exit_code)
            except signals.Interrupted as exc:  # outside the probe loop, which writes its report itself
                outputs.say(f"gpudiag: interrupted by {exc.label}")
                sys.exit(exc.exit_code)
            # Without standalone mode click returns ctx.exit()'s code (e.g. after --help) instead of exiting.
            sys.exit(rv if isinstance(rv, int) else 0)


def _write_view(out, text: str) -> None:
    """Write one rendered view (render, compare) to its planned output and say where, or fail in one line."""
    from gpudiag.report import outputs

    try:
        written = outputs.write([(out, text)])
    except outputs.OutputError as exc:
        fail(exc)
    for path in written.values():
        outputs.say(f"Wrote {path}")


def _complete_probe_names(ctx, param, incomplete: str):
    """Shell completion for --only/--skip: the probe names, each with its one-line summary."""
    from click.shell_completion import CompletionItem

    from gpudiag.probes import all_probes

    return [CompletionItem(p.name, help=p.summary) for p in all_probes() if p.name.startswith(incomplete)]


def _renderers(rep: dict) -> Dict[str, Callable[[], str]]:
    """How each output kind is made from a report (lazily: only the outputs asked for are rendered)."""
    from gpudiag.report.contract import dumps
    from gpudiag.views import render

    return {"html": lambda: render.render_html(rep), "json": lambda: dumps(rep),
            "markdown": lambda: render.render_markdown(rep)}


def _write_report(rep: dict, planned: Sequence[outputs.Output], code: Optional[int] = None,
                  kinds: Sequence[str] = ("html", "json", "markdown")) -> Dict[str, str]:
    """Write the planned outputs of `kinds`; an output that cannot be written is one line, exit 74 (or `code`)."""
    views = _renderers(rep)
    try:
        return outputs.write([(o, views[o.kind]) for o in planned if o.kind in kinds])
    except outputs.OutputError as exc:
        fail(exc, code if code is not None else exc.exit_code)
    return {}


def _plan(html: Optional[str], json_path: Optional[str], markdown: Optional[str], basename: str,
          code: Optional[int] = None, extra: Sequence[outputs.Output] = ()) -> List[outputs.Output]:
    """The report outputs, checked before anything runs; a refused path is one line, exit 2 (or `code`)."""
    try:
        planned = outputs.plan_report(html, json_path, markdown, basename) + list(extra)
        outputs.check(planned)
    except outputs.OutputError as exc:
        fail(exc, code)
    return planned


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
    torchrun ... -m gpudiag fleet   every rank measures itself; rank 0 names the slow GPU and node
    gpudiag watch -- python train.py   watch your real job while it runs (or --pid PID)
    """


@main.command()
@click.option("--quick", "mode", flag_value="quick", default=True, help="A first look in seconds (default).")
@click.option("--full", "mode", flag_value="full", help="More sizes, repeats and workers: about a minute or more.")
@click.option("-o", "--output", "html", metavar="PATH.html|-",
              help="HTML report (default: next to --json, else gpudiag-report-<date>-<id>.html here).")
@click.option("--json", "json_path", metavar="PATH.json|-", help="JSON report (default: next to the HTML).")
@click.option("--markdown", metavar="PATH.md|-", help="Also write Markdown.")
@click.option("--only", multiple=True, metavar="NAME", shell_complete=_complete_probe_names,
              help="Run only this probe (repeatable; `gpudiag probes` lists them).")
@click.option("--skip", multiple=True, metavar="NAME", shell_complete=_complete_probe_names,
              help="Do not run this probe (repeatable).")
@click.option("--timeout", type=Seconds(), metavar="SECONDS", help="Per-probe time limit (1 s to a week).")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths (secrets are always removed).")
@click.option("--cycle", "cycle_ref", metavar="MODULE:FACTORY",
              help="Measure your own loop: FACTORY(device) returns a step() (see docs/cycle.md).")
def report(mode: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
           only: List[str], skip: List[str], timeout: Optional[float], no_redact: bool,
           cycle_ref: Optional[str]) -> None:
    """Run the probes and write the report: HTML and JSON always, Markdown if asked.

    A path not given is derived from the other (r.html <-> r.json); '-' sends that output to stdout
    (the summary then goes to stderr). Every output path is checked before any probe runs.
    Exit code 0 when every probe ended ok or skipped, 1 when the report was written but at least
    one probe failed (its reason is in the report), 2 for bad input, 74 when an output could not be
    written, 128 + N when signal N stopped it (130: Ctrl-C).
    """
    from gpudiag import api
    from gpudiag.platform import signals
    from gpudiag.report import contract as report_mod
    from gpudiag.views import render
    from gpudiag.views.progress import Progress

    planned = _plan(html, json_path, markdown, report_mod.default_basename(report_mod.utc_now_iso()))
    try:
        # Names first, cheaply (nothing is imported from --cycle yet): the count feeds the progress line.
        probes = api.select_probes(only, skip)
    except ValueError as exc:
        fail(str(exc))
    progress = Progress(len(probes), enabled=sys.stderr is not None and sys.stderr.isatty(), identify=not no_redact)
    try:
        rep = api.run_report(only, skip, mode=mode, timeout=timeout, cycle=cycle_ref, redact=not no_redact,
                             progress=progress)
    except ValueError as exc:  # a --cycle that does not import or has no callable factory
        fail(str(exc))
    with signals.deferred():  # what finished is written whole even if a stop signal arrives now
        written = _write_report(rep, planned)
        outputs.say(render.render_terminal(rep, written), err=any(o.to_stdout for o in planned),
                    identify=not no_redact)
    if rep["interrupted"]:
        sys.exit(signals.exit_code(signals.stopping()))
    if any(r.get("status") == "failed" for r in rep["probes"].values()):
        sys.exit(EXIT_PROBE_FAILED)


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
    from gpudiag.probes import env_facts
    from gpudiag.views.env_summary import env_markdown

    try:
        outputs.write_stdout(env_markdown(env_facts.collect(), identify=not no_redact))
    except outputs.OutputError as exc:
        fail(exc)


class SizeParam(click.ParamType):
    """`1.5G`, `800M`, `512K` or bytes (gpudiag/sizes.py); a bad size is a usage error (exit 2)."""
    name = "SIZE"

    def convert(self, value, param, ctx):
        """The size in bytes (int), or a click usage error (exit 2) naming the bad size."""
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
    _write_view(out, text)


def _two_or_more(ctx, param, value):
    """Checked before -o (click handles parameters in command-line order): say what compare needs."""
    if len(value) < 2:
        raise click.UsageError(f"compare needs at least two report files (got {len(value)}), "
                               "e.g. gpudiag compare a.json b.json -o diff.html", ctx)
    return value


@main.command()
@click.argument("reports", nargs=-1, metavar="A.json B.json [C.json ...]", callback=_two_or_more)
@click.option("-o", "--output", required=True, metavar="OUT.html|OUT.md|-",
              help="Output path; the suffix picks the format ('-': Markdown on stdout).")
def compare(reports: List[str], output: str) -> None:
    """Compare saved reports side by side; ratios are against the first report."""
    from gpudiag.views import compare as compare_mod

    try:
        out = outputs.plan_view(output)
        outputs.check([out], inputs=list(reports))
    except outputs.OutputError as exc:
        fail(exc)
    loaded = [_load(p) for p in reports]
    from gpudiag.report.redact import default_redactor

    names = [default_redactor(True).text(n) for n in compare_mod.unique_names(reports)]  # file names are output too
    try:
        compare_mod.common_kind(loaded, names)
    except compare_mod.KindMismatch as exc:
        fail(str(exc))
    text = _view(", ".join(reports), lambda: compare_mod.render_compare(loaded, names,
                                                                       "html" if out.kind == "html" else "md"))
    _write_view(out, text)


EXIT_FLEET_UNKNOWN = 3


class _FleetGroup(click.Group):
    """Usage errors under `fleet` exit 3 (Nagios UNKNOWN): there, 2 means CRITICAL."""

    def make_context(self, *args, **kwargs):
        """click's context, with a usage error's exit code set to 3: under fleet, 2 means CRITICAL to a monitor."""
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = EXIT_FLEET_UNKNOWN
            raise

    def invoke(self, ctx):
        """The subcommand's result, with a usage error's exit code set to 3, as in make_context."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_FLEET_UNKNOWN
            raise


def _fleet_paths(created: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
                 exclude_file: Optional[str]) -> List[outputs.Output]:
    """The fleet report's outputs (default names gpudiag-fleet-<date>-<id>.html/.json), checked (exit 3)."""
    from gpudiag.report import contract

    base = contract.default_basename(created).replace("gpudiag-report-", "gpudiag-fleet-", 1)
    try:
        extra = [outputs.plan_text(exclude_file, "--exclude-file", "exclude list")] if exclude_file is not None else []
    except outputs.OutputError as exc:
        fail(exc, EXIT_FLEET_UNKNOWN)
    return _plan(html, json_path, markdown, base, EXIT_FLEET_UNKNOWN, extra)


def _fleet_summary(rep: dict, written: Dict[str, str], names: Dict[str, str], planned: Sequence[outputs.Output],
                   identify: bool) -> None:
    """Write the exclude list (real host names, for sbatch) and print the fleet summary."""
    from gpudiag.fleet import assemble
    from gpudiag.views import fleet_view

    exclude = [o for o in planned if o.kind == "text"]
    if exclude:
        hosts = assemble.real_exclude(rep, names)
        try:
            written.update(outputs.write([(exclude[0], ",".join(hosts) + ("\n" if hosts else ""))]))
        except outputs.OutputError as exc:
            fail(exc, EXIT_FLEET_UNKNOWN)
    outputs.say(fleet_view.render_terminal(rep, written), err=any(o.to_stdout for o in planned), identify=identify)


def _fleet_finish(rep: dict, written: Dict[str, str], names: Dict[str, str], planned: Sequence[outputs.Output],
                  identify: bool) -> None:
    """_fleet_summary, then exit with the report's health code (0 healthy .. 3 unknown); never returns."""
    from gpudiag.fleet import assemble

    _fleet_summary(rep, written, names, planned, identify)
    sys.exit(assemble.exit_code_of(rep))


_FLEET_OUTPUT = [
    click.option("-o", "--output", "html", metavar="PATH.html|-",
                 help="HTML report (default: next to --json, else gpudiag-fleet-<date>-<id>.html here)."),
    click.option("--json", "json_path", metavar="PATH.json|-", help="JSON report (default: next to the HTML)."),
    click.option("--markdown", metavar="PATH.md|-", help="Also write Markdown."),
    click.option("--exclude-file", metavar="PATH",
                 help="Write the nodes to avoid, comma-separated with their real names, for `sbatch --exclude` "
                      "(a scheduler input: not for sharing)."),
    click.option("--no-redact", is_flag=True, help="Keep host names in the report (secrets are always removed)."),
]


def _fleet_output_options(f):
    """The decorated command with the fleet output options added, shared by `fleet` and `fleet merge` so both write alike."""
    for opt in reversed(_FLEET_OUTPUT):
        f = opt(f)
    return f


@main.group("fleet", cls=_FleetGroup, invoke_without_command=True)
@click.option("--quick", "mode", flag_value="quick", default=True, help="A first look in seconds (default).")
@click.option("--full", "mode", flag_value="full", help="More repeats and collective sizes.")
@_fleet_output_options
@click.option("--deadline", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="How long rank 0 waits for each phase (results, collectives) before naming a rank missing.")
@click.option("--backend", type=click.Choice(["auto", "gloo", "nccl"]), default="auto", show_default=True,
              help="Collectives backend: auto is NCCL on GPU ranks, gloo on CPU ranks.")
@click.option("--no-collectives", is_flag=True, help="Skip the all_reduce/all_gather/reduce_scatter sweep.")
@click.pass_context
def fleet(ctx, mode: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
          exclude_file: Optional[str], no_redact: bool, deadline: float, backend: str, no_collectives: bool) -> None:
    """Run under torchrun or srun: every rank measures itself, rank 0 writes one fleet report.

    \b
    torchrun --nproc-per-node=8 [--nnodes=M ...] -m gpudiag fleet --json fleet.json
    srun --kill-on-bad-exit=1 python -m gpudiag fleet --json fleet.json
    gpudiag fleet merge A.json B.json ...   the same analysis over saved reports

    Exit code on rank 0: 0 healthy, 1 warning, 2 critical (a straggler or a missing rank: see the
    exclude list), 3 unknown (nothing measured, or a usage error). Other ranks exit 0 (docs/fleet.md).
    """
    if ctx.invoked_subcommand is not None:
        return
    from gpudiag.fleet import run as fleet_run
    from gpudiag.report.contract import utc_now_iso

    try:
        place = fleet_run.discover(os.environ)
    except fleet_run.LaunchError as exc:
        fail(str(exc), EXIT_FLEET_UNKNOWN)
    planned: List[outputs.Output] = []
    if place.rank == 0:
        planned = _fleet_paths(utc_now_iso(), html, json_path, markdown, exclude_file)
    written: Dict[str, str] = {}

    def write(rep: dict, final: bool) -> None:
        """Write the fleet report's files so far (HTML and JSON; Markdown too once final), so a crash mid-run still leaves a report."""
        kinds = ("html", "json", "markdown") if final else ("html", "json")
        written.update(_write_report(rep, planned, EXIT_FLEET_UNKNOWN, kinds))

    opts = fleet_run.Options(mode=mode, deadline_s=deadline, backend=backend, collectives=not no_collectives,
                             identify=not no_redact)
    from gpudiag.views.progress import LiveLine

    # Rank 0 on a terminal shows which ranks have reported while it waits; after a stop signal it writes
    # the report of what it has and prints its summary, and the run ends with the report's code.
    live = LiveLine(place.rank == 0 and sys.stderr is not None and sys.stderr.isatty())
    try:
        outcome = fleet_run.run(opts, write, on_stop=lambda rep, names: _fleet_summary(
            rep, written, names, planned, not no_redact), live=live)
    except (fleet_run.LaunchError, fleet_run.FleetError, fleet_run.TransportError) as exc:
        fail(str(exc), EXIT_FLEET_UNKNOWN)
    if not outcome.reporter:
        sys.exit(0)
    _fleet_finish(outcome.report, written, outcome.real_names, planned, not no_redact)


@fleet.command("merge")
@click.argument("reports", nargs=-1, required=True, metavar="A.json [B.json ...]")
@_fleet_output_options
def fleet_merge(reports: List[str], html: Optional[str], json_path: Optional[str], markdown: Optional[str],
                exclude_file: Optional[str], no_redact: bool) -> None:
    """The fleet analysis over saved reports: fleet reports, or `gpudiag report` files of each node
    (a plain report's node is named after its file: node17.json is node17)."""
    from gpudiag.fleet.merge import merge
    from gpudiag.report.contract import ReportError, utc_now_iso

    planned = _fleet_paths(utc_now_iso(), html, json_path, markdown, exclude_file)
    try:
        rep, names = merge(list(reports), identify=not no_redact)
    except ReportError as exc:
        fail(str(exc), EXIT_FLEET_UNKNOWN)
    _fleet_finish(rep, _write_report(rep, planned, EXIT_FLEET_UNKNOWN), names, planned, not no_redact)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
@click.option("--pid", type=click.IntRange(min=1), metavar="PID",
              help="Attach to this running process (and its children) instead of launching; it keeps running.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Stop watching after S seconds (the job keeps running; a launched job is still waited for).")
@click.option("--interval", type=click.FloatRange(min=0.02), default=0.5, show_default=True, metavar="S",
              help="Seconds between samples.")
@click.option("-o", "--output", "html", metavar="PATH.html|-",
              help="HTML report (default: next to --json, else gpudiag-watch-<date>-<id>.html here).")
@click.option("--json", "json_path", metavar="PATH.json|-", help="JSON report (default: next to the HTML).")
@click.option("--markdown", metavar="PATH.md|-", help="Also write Markdown.")
@click.option("--native-every", type=click.IntRange(min=0), default=4, show_default=True, metavar="N",
              help="Every Nth GIL sample reads native stacks to see threads waiting for the GIL (pauses the "
                   "job briefly); 0: never.")
@click.option("--no-gil", is_flag=True, help="Do not sample Python threads with py-spy.")
@click.option("--no-gpu", is_flag=True, help="Do not sample NVML.")
@click.option("--no-status", is_flag=True, help="No live status line on the terminal while the job runs.")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths (secrets are always removed).")
def watch(command: List[str], pid: Optional[int], duration: Optional[float], interval: float, html: Optional[str],
          json_path: Optional[str], markdown: Optional[str], native_every: int, no_gil: bool, no_gpu: bool,
          no_status: bool, no_redact: bool) -> None:
    """Watch your real job while it runs, then write a report.

    \b
    gpudiag watch [OPTIONS] -- python train.py --epochs 3   launch it, watch until it ends
    gpudiag watch --pid PID [--duration S]                  attach to a running job, leave it running

    The job keeps your terminal (stdin, stdout, stderr; Ctrl-C reaches it as usual) and gpudiag
    exits with its exit code (126/127: the command cannot be run / is not found; 125: the job
    succeeded but the report could not be written). With --pid the exit code is 0. On a terminal a
    status line on its bottom row shows the job's CPU, GIL share, memory and GPU every second (--no-status:
    none); on a pipe nothing is added.
    """
    from gpudiag.report.contract import default_basename, utc_now_iso
    from gpudiag.views import watch_view
    from gpudiag.watch import EXIT_WATCH_FAILED, LaunchError, WatchSession

    if command and command[0] == "--":
        command = command[1:]
    if bool(command) == bool(pid):
        fail("give a command after -- to launch it, or --pid PID to attach (not both)")
    planned = _plan(html, json_path, markdown,
                    default_basename(utc_now_iso()).replace("gpudiag-report-", "gpudiag-watch-", 1))
    try:
        session = WatchSession(command=list(command) or None, pid=pid, duration_s=duration, interval_s=interval,
                               identify=not no_redact, gil=not no_gil, nvml=not no_gpu, native_every=native_every)
    except ValueError as exc:
        fail(str(exc))
    with session:
        try:
            session.start()
        except LaunchError as exc:
            fail(str(exc), exc.code)
        except ValueError as exc:
            fail(str(exc))
        outputs.say(session.describe(), identify=not no_redact)
        from gpudiag.views.progress import LiveLine

        # The job writes to the same terminal: the line is pinned to the bottom row, its output scrolls
        # above it, and the line is gone before the summary prints.
        live = LiveLine(not no_status and sys.stderr is not None and sys.stderr.isatty(), pinned=True)
        live.start(lambda: watch_view.status_line(session.live_figures()))
        try:
            rep = session.watch()
        finally:
            live.stop()
        write_error = None
        views = _renderers(rep)
        try:
            written = outputs.write([(o, views[o.kind]) for o in planned])
        except outputs.OutputError as exc:
            written, write_error = {}, f"could not write the report: {exc}"
        outputs.say(watch_view.render_terminal(rep, written), identify=not no_redact)
        if session.job.launched and session.job.poll():
            outputs.say("gpudiag watch: report written; waiting for the job to end (its exit code is passed on)")
        code = session.finish()
    if write_error:
        outputs.say(f"gpudiag: error: {write_error}")
        sys.exit(code or EXIT_WATCH_FAILED)
    sys.exit(code)


if __name__ == "__main__":
    main()
