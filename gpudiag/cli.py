"""Command line: parse, call, print, exit code. No measuring here.

Exit codes (docs/cli.md): 0 done; 1 a check said no: a probe failed (`report`, whose report is still
written whole) or not ready (`preflight`); 2 bad input (usage, unreadable report, a --cycle that does
not import); 130 interrupted by Ctrl-C (the report of what finished is still written).
`fleet` uses the Nagios codes instead: 0 healthy, 1 warning, 2 critical, 3 unknown (nothing
measured, or a usage error).
`gpudiag watch -- CMD` exits with the job's own code (128+N when a signal N ended it), 126/127 when
CMD cannot be run / is not found, 125 when the job succeeded but the report could not be written;
`watch --pid` exits 0 (docs/watch.md).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Dict, List, Optional

import click

from gpudiag import __version__

EXIT_PROBE_FAILED = 1
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


def _check_writable(path: str, what: str, code: int = EXIT_USAGE) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(f"{what} {path}: folder {folder} does not exist", code)
    if not os.access(folder, os.W_OK):
        fail(f"{what} {path}: folder {folder} is not writable", code)
    if os.path.isdir(path):
        fail(f"{what} {path} is a folder; give a file name", code)


def _view_output(output: str) -> str:
    """Check an -o for render/compare: .html/.md (or '-' for Markdown on stdout); returns the suffix."""
    ext = os.path.splitext(output)[1].lower()
    if ext not in (".html", ".htm", ".md", ".markdown") and output != "-":
        fail(f"--output {output}: use a .html or .md file name (or - for Markdown on stdout)")
    if output != "-":
        _check_writable(output, "--output")
    return ext


def _write_views(report: dict, html: Optional[str], json_path: Optional[str], markdown: Optional[str]) -> Dict[str, str]:
    from gpudiag.views import render
    from gpudiag.report.contract import dumps, write_text_atomic

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


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line: its message and where to read the help."""
    msg = " ".join(exc.format_message().split())
    if msg[:1].isupper() and not msg[1:2].isupper():
        msg = msg[0].lower() + msg[1:]
    where = exc.ctx.command_path if exc.ctx is not None else "gpudiag"
    return f"{msg.rstrip('.')} (see '{where} -h')"


class OneLineErrors(click.Group):
    """The gpudiag group: click's own usage errors in the same one-line form as every other error.

    click prints a usage block, a blank line and "Error: ..." (four lines); here it is one
    `gpudiag: error: ...` line and exit 2. Ctrl-C outside a probe run is exit 130, not click's 1.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
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
        # Without standalone mode click returns ctx.exit()'s code (e.g. after --help) instead of exiting.
        sys.exit(rv if isinstance(rv, int) else 0)


def _complete_probe_names(ctx, param, incomplete: str):
    """Shell completion for --only/--skip: the probe names, each with its one-line summary."""
    from click.shell_completion import CompletionItem

    from gpudiag.probes import all_probes

    return [CompletionItem(p.name, help=p.summary) for p in all_probes() if p.name.startswith(incomplete)]


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
@click.option("-o", "--output", "html", metavar="PATH.html", help="HTML report path.")
@click.option("--json", "json_path", metavar="PATH", help="JSON report path (default: next to the HTML).")
@click.option("--markdown", metavar="PATH|-", help="Also write Markdown; '-' prints it to stdout.")
@click.option("--only", multiple=True, metavar="NAME", shell_complete=_complete_probe_names,
              help="Run only this probe (repeatable; `gpudiag probes` lists them).")
@click.option("--skip", multiple=True, metavar="NAME", shell_complete=_complete_probe_names,
              help="Do not run this probe (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=1), metavar="SECONDS", help="Per-probe time limit.")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths (secrets are always removed).")
@click.option("--cycle", "cycle_ref", metavar="MODULE:FACTORY",
              help="Measure your own loop: FACTORY(device) returns a step() (see docs/cycle.md).")
def report(mode: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
           only: List[str], skip: List[str], timeout: Optional[float], no_redact: bool,
           cycle_ref: Optional[str]) -> None:
    """Run the probes and write the report (HTML + JSON, optionally Markdown).

    Exit code 0 when every probe ended ok or skipped, 1 when the report was written but at least
    one probe failed (its reason is in the report), 2 for bad input, 130 when interrupted.
    """
    from gpudiag import api
    from gpudiag.report import contract as report_mod

    try:
        # Names first, cheaply (nothing is imported from --cycle yet): the count feeds the progress line.
        probes = api.select_probes(only, skip)
    except ValueError as exc:
        fail(str(exc))

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
    try:
        rep = api.run_report(only, skip, mode=mode, timeout=timeout, cycle=cycle_ref, redact=not no_redact,
                             progress=progress)
    except ValueError as exc:  # a --cycle that does not import or has no callable factory
        fail(str(exc))
    written = _write_views(rep, html, json_path, markdown)
    from gpudiag.views import render

    click.echo(render.render_terminal(rep, written), err=markdown == "-")
    if rep["interrupted"]:
        sys.exit(EXIT_INTERRUPTED)
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
    click.echo(f"{'probe':<{w[0]}}  {'needs':<{w[1]}}  {'runs':<{w[2]}}  what / why not")
    for name, needs, ok, text in rows:
        click.echo(f"{name:<{w[0]}}  {needs:<{w[1]}}  {ok:<{w[2]}}  {text}")


@main.command()
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths.")
def env(no_redact: bool) -> None:
    """Print the environment summary as GitHub-ready Markdown (fast: no torch import)."""
    from gpudiag.views.env_summary import env_markdown

    click.echo(env_markdown(identify=not no_redact))


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
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Planned workers.")
@click.option("--strategy", type=click.Choice(["threads", "processes"]), default="processes", show_default=True,
              help="processes: each worker its own process and CUDA context; threads: one process shared.")
@click.option("--vram-per-worker", type=SizeParam(), metavar="SIZE", help="Device memory per worker (e.g. 800M).")
@click.option("--ram-per-worker", type=SizeParam(), metavar="SIZE", help="Host memory per worker (e.g. 1.5G).")
@click.option("--checkpoint-dir", type=click.Path(exists=True, file_okay=False), metavar="PATH",
              help="Folder the run writes checkpoints to: its free space is checked.")
@click.option("--min-free-disk", type=SizeParam(), metavar="SIZE", help="Free space needed at --checkpoint-dir.")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=True, help="CUDA device index.")
@click.option("--report", "reports", multiple=True, type=click.Path(exists=True, dir_okay=False), metavar="PATH",
              help="Saved gpudiag report to take per-worker memory from (default: newest in this folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--strict", is_flag=True, help="Warnings also make it NOT READY (exit 1).")
def preflight(workers: int, strategy: str, vram_per_worker: Optional[int], ram_per_worker: Optional[int],
              checkpoint_dir: Optional[str], min_free_disk: Optional[int], device: int, reports: List[str],
              as_json: bool, strict: bool) -> None:
    """Go / no-go in about a second before a long run (exit 0 ready, 1 not ready, 2 usage error)."""
    from gpudiag.diagnose.preflight import preflight as run_preflight

    if min_free_disk is not None and not checkpoint_dir:
        raise click.UsageError("--min-free-disk needs --checkpoint-dir")
    try:
        result = run_preflight(workers, strategy, vram_per_worker=vram_per_worker, ram_per_worker=ram_per_worker,
                               checkpoint_dir=checkpoint_dir, min_free_disk=min_free_disk, device=device,
                               strict=strict, report=list(reports))
    except ValueError as exc:
        fail(str(exc))
    click.echo(result.to_json() if as_json else result.format_text())
    sys.exit(0 if result.ready else 1)


@main.command()
@click.argument("report_json", metavar="REPORT.json")
@click.option("-o", "--output", required=True, metavar="OUT.html|OUT.md", help="Output path; the suffix picks the format.")
def render(report_json: str, output: str) -> None:
    """Re-render a saved JSON report as HTML or Markdown."""
    from gpudiag.report.contract import ReportError, load_report

    ext = _view_output(output)
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
    from gpudiag.report.contract import ReportError, write_text_atomic

    ext = _view_output(output)
    try:
        loaded = compare_mod.load_all(reports)
    except ReportError as exc:
        fail(str(exc))
    names = compare_mod.unique_names(reports)
    text = compare_mod.render_compare(loaded, names, "html" if ext in (".html", ".htm") else "md")
    if output == "-":
        click.echo(text)
    else:
        write_text_atomic(output, text)
        click.echo(f"Wrote {output}", err=True)


EXIT_FLEET_UNKNOWN = 3


class _FleetGroup(click.Group):
    """Usage errors under `fleet` exit 3 (Nagios UNKNOWN): there, 2 means CRITICAL."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = EXIT_FLEET_UNKNOWN
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_FLEET_UNKNOWN
            raise


def _fleet_paths(created: str, html: Optional[str], json_path: Optional[str], markdown: Optional[str],
                 exclude_file: Optional[str]):
    """Default output names (gpudiag-fleet-<date>-<id>.html/.json) and a writability check (exit 3)."""
    from gpudiag.report import contract

    if html is None and json_path is None and markdown is None:
        base = contract.default_basename(created).replace("gpudiag-report-", "gpudiag-fleet-", 1)
        html, json_path = base + ".html", base + ".json"
    for path, what in ((html, "--output"), (json_path, "--json"),
                       (markdown if markdown not in (None, "-") else None, "--markdown"), (exclude_file, "--exclude-file")):
        if path:
            if what == "--output" and os.path.splitext(path)[1].lower() not in (".html", ".htm"):
                fail(f"--output {path}: use a .html file name", EXIT_FLEET_UNKNOWN)
            _check_writable(path, what, EXIT_FLEET_UNKNOWN)
    return html, json_path, markdown


def _fleet_finish(rep: dict, written: Dict[str, str], names: Dict[str, str], exclude_file: Optional[str],
                  markdown: Optional[str]) -> None:
    from gpudiag.fleet import assemble
    from gpudiag.report.contract import write_text_atomic
    from gpudiag.views import fleet_view

    if exclude_file:
        hosts = assemble.real_exclude(rep, names)
        write_text_atomic(exclude_file, ",".join(hosts) + ("\n" if hosts else ""))
        written["exclude list"] = exclude_file
    click.echo(fleet_view.render_terminal(rep, written), err=markdown == "-")
    sys.exit(assemble.exit_code_of(rep))


_FLEET_OUTPUT = [
    click.option("-o", "--output", "html", metavar="PATH.html", help="HTML report path."),
    click.option("--json", "json_path", metavar="PATH", help="JSON report path."),
    click.option("--markdown", metavar="PATH|-", help="Also write Markdown; '-' prints it to stdout."),
    click.option("--exclude-file", metavar="PATH",
                 help="Write the nodes to avoid, comma-separated with their real names, for `sbatch --exclude` "
                      "(a scheduler input: not for sharing)."),
    click.option("--no-redact", is_flag=True, help="Keep host names in the report (secrets are always removed)."),
]


def _fleet_output_options(f):
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
    if place.rank == 0:
        html, json_path, markdown = _fleet_paths(utc_now_iso(), html, json_path, markdown, exclude_file)
    written: Dict[str, str] = {}

    def write(rep: dict, final: bool) -> None:
        written.update(_write_views(rep, html, json_path, markdown if final else None))

    opts = fleet_run.Options(mode=mode, deadline_s=deadline, backend=backend, collectives=not no_collectives,
                             identify=not no_redact)
    try:
        outcome = fleet_run.run(opts, write)
    except (fleet_run.LaunchError, fleet_run.FleetError, fleet_run.TransportError) as exc:
        fail(str(exc), EXIT_FLEET_UNKNOWN)
    if not outcome.reporter:
        sys.exit(0)
    _fleet_finish(outcome.report, written, outcome.real_names, exclude_file, markdown)


@fleet.command("merge")
@click.argument("reports", nargs=-1, required=True, metavar="A.json [B.json ...]")
@_fleet_output_options
def fleet_merge(reports: List[str], html: Optional[str], json_path: Optional[str], markdown: Optional[str],
                exclude_file: Optional[str], no_redact: bool) -> None:
    """The fleet analysis over saved reports: fleet reports, or `gpudiag report` files of each node
    (a plain report's node is named after its file: node17.json is node17)."""
    from gpudiag.fleet.merge import merge
    from gpudiag.report.contract import ReportError, utc_now_iso

    html, json_path, markdown = _fleet_paths(utc_now_iso(), html, json_path, markdown, exclude_file)
    try:
        rep, names = merge(list(reports), identify=not no_redact)
    except ReportError as exc:
        fail(str(exc), EXIT_FLEET_UNKNOWN)
    _fleet_finish(rep, _write_views(rep, html, json_path, markdown), names, exclude_file, markdown)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
@click.option("--pid", type=click.IntRange(min=1), metavar="PID",
              help="Attach to this running process (and its children) instead of launching; it keeps running.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Stop watching after S seconds (the job keeps running; a launched job is still waited for).")
@click.option("--interval", type=click.FloatRange(min=0.02), default=0.5, show_default=True, metavar="S",
              help="Seconds between samples.")
@click.option("-o", "--output", "html", metavar="PATH.html", help="HTML report path.")
@click.option("--json", "json_path", metavar="PATH", help="JSON report path (default: next to the HTML).")
@click.option("--markdown", metavar="PATH|-", help="Also write Markdown; '-' prints it to stdout.")
@click.option("--native-every", type=click.IntRange(min=0), default=4, show_default=True, metavar="N",
              help="Every Nth GIL sample reads native stacks to see threads waiting for the GIL (pauses the "
                   "job briefly); 0: never.")
@click.option("--no-gil", is_flag=True, help="Do not sample Python threads with py-spy.")
@click.option("--no-gpu", is_flag=True, help="Do not sample NVML.")
@click.option("--no-redact", is_flag=True, help="Keep hostname, username and home paths (secrets are always removed).")
def watch(command: List[str], pid: Optional[int], duration: Optional[float], interval: float, html: Optional[str],
          json_path: Optional[str], markdown: Optional[str], native_every: int, no_gil: bool, no_gpu: bool,
          no_redact: bool) -> None:
    """Watch your real job while it runs, then write a report.

    \b
    gpudiag watch [OPTIONS] -- python train.py --epochs 3   launch it, watch until it ends
    gpudiag watch --pid PID [--duration S]                  attach to a running job, leave it running

    The job keeps your terminal (stdin, stdout, stderr; Ctrl-C reaches it as usual) and gpudiag
    exits with its exit code (126/127: the command cannot be run / is not found; 125: the job
    succeeded but the report could not be written). With --pid the exit code is 0.
    """
    from gpudiag.report.contract import default_basename, utc_now_iso
    from gpudiag.views import watch_view
    from gpudiag.watch import EXIT_WATCH_FAILED, LaunchError, WatchSession

    if command and command[0] == "--":
        command = command[1:]
    if bool(command) == bool(pid):
        fail("give a command after -- to launch it, or --pid PID to attach (not both)")
    if html and os.path.splitext(html)[1].lower() not in (".html", ".htm"):
        fail(f"--output {html}: use a .html file name")
    if markdown not in (None, "-") and os.path.splitext(markdown)[1].lower() not in (".md", ".markdown"):
        fail(f"--markdown {markdown}: use a .md file name (or - for stdout)")
    if html is None and json_path is None:
        base = default_basename(utc_now_iso()).replace("gpudiag-report-", "gpudiag-watch-", 1)
        html, json_path = base + ".html", base + ".json"
    elif json_path is None:
        json_path = os.path.splitext(html)[0] + ".json"
    for path, what in ((html, "--output"), (json_path, "--json"), (markdown if markdown != "-" else None, "--markdown")):
        if path:
            _check_writable(path, what)
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
        click.echo(session.describe(), err=True)
        rep = session.watch()
        write_error = None
        try:
            written = _write_views(rep, html, json_path, markdown)
        except OSError as exc:
            written, write_error = {}, f"could not write the report: {exc.strerror or exc}"
        click.echo(watch_view.render_terminal(rep, written), err=True)
        if session.job.launched and session.job.poll():
            click.echo("gpudiag watch: report written; waiting for the job to end (its exit code is passed on)",
                       err=True)
        code = session.finish()
    if write_error:
        click.echo(f"gpudiag: error: {write_error}", err=True)
        sys.exit(code or EXIT_WATCH_FAILED)
    sys.exit(code)


if __name__ == "__main__":
    main()
