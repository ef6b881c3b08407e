"""The Python entry points on a report: run one, load and save it, recompute its recommendation,
compare several. `gpudiag report` calls `run_report` too, so the CLI and Python take one path.

Everything here is re-exported by `gpudiag` (see its `__all__`) and documented in docs/api.md.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from gpudiag.report.contract import MODES, ReportError

PathLike = Union[str, "os.PathLike[str]"]
# progress(probe_name, phase, payload): phase "start" (payload: the probe's time limit in seconds)
# or "end" (payload: its result dict, as stored in report["probes"][name]).
ProgressCallback = Callable[[str, str, object], None]

__all__ = ["ProgressCallback", "Report", "ReportError", "load_report", "recommend", "render_compare",
           "run_report", "save_report", "select_probes"]


class Report(Dict[str, Any]):
    """A report as `run_report` and `load_report` return it: a plain dict (json.dumps, pickle, copy,
    isinstance(r, dict) and r["probes"] work as on any dict) that shows itself: as the HTML report in
    a Jupyter notebook (`_repr_html_`), as its terminal summary when printed (`str`), and as one
    short line in a console (`repr`), never as the whole dict."""

    def _repr_html_(self) -> str:
        """The HTML report in an isolated frame (its stylesheet must not restyle the notebook), after
        one line that stays visible where a notebook strips frames (an untrusted one)."""
        import html

        from gpudiag.views import render

        lead = html.escape(self._headline())
        page = html.escape(render.render_html(self), quote=True)
        return (f'<div class="gpudiag-report"><p><strong>{html.escape(render.KIND_TITLES[render.report_kind(self)])}'
                f'</strong>: {lead}</p><iframe title="gpudiag report" srcdoc="{page}" '
                'style="width:100%;height:640px;border:1px solid #d0d7de;border-radius:6px" '
                'sandbox=""></iframe></div>')

    def __str__(self) -> str:
        """The few lines the command that made it prints (`gpudiag report`, `fleet` or `watch`)."""
        from gpudiag.views import render

        return render.terminal_summary(self)

    def __repr__(self) -> str:
        from gpudiag.views import render
        from gpudiag.report.values import as_dict

        probes = as_dict(self.get("probes"))
        counts = ", ".join(f"{sum(1 for p in probes.values() if as_dict(p).get('status') == s)} {s}"
                           for s in ("ok", "skipped", "failed"))
        head = self._headline()
        head = head if len(head) <= 160 else head[:157] + "..."
        return (f"<{render.KIND_TITLES[render.report_kind(self)]} {self.get('created_at')}: {len(probes)} probe(s) "
                f"({counts}); {head!r}>")

    def _headline(self) -> str:
        """The report's answer in one line: the recommendation's headline, or a fleet's verdict."""
        from gpudiag.report.values import as_dict

        fleet = as_dict(as_dict(as_dict(self.get("probes")).get("fleet")).get("data"))
        rec = as_dict(self.get("recommendation"))
        return str(fleet.get("verdict") or rec.get("headline") or "no recommendation in this report")


ReportLike = Dict[str, Any]  # what the functions below accept: a Report or any report dict


def _names(value: Union[str, Iterable[str], None], what: str) -> List[str]:
    """A probe-name list from a str (one name, not its letters) or an iterable of str."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"{what} takes probe names (str), not {type(bad[0]).__name__}")
    return names


def _check_cycle_factory(ref: str) -> None:
    """Import MODULE and find a callable FACTORY in a spawned child (the parent never imports torch).

    Raises ValueError with the loader's one-line message; the factory itself is not called.
    """
    from gpudiag import runner
    from gpudiag.probes.base import ProbeContext
    from gpudiag.probes.cycle import workload

    check = workload.factory_check_probe()
    res = runner.run_probe(check, ProbeContext(timeout_s=check.timeout_s,
                                               options={"cycle": ref, "cwd": os.getcwd()}))
    if res["status"] == runner.SKIPPED:
        raise ValueError(res["reason"])
    if res["status"] == runner.FAILED:
        raise ValueError(f"--cycle {ref}: importing it failed: {res['reason']}")


def select_probes(only: Union[str, Iterable[str], None] = (), skip: Union[str, Iterable[str], None] = (),
                  cycle: Optional[str] = None) -> list:
    """The probes a report would run, in order, after checking every argument; runs no probe.

    Raises ValueError with a one-line message for an unknown probe name, a selection that leaves
    nothing to run, or a `cycle` (MODULE:FACTORY) that is malformed, cannot be imported, has no
    callable FACTORY, or needs the cycle probe that `only`/`skip` left out. Importing MODULE
    happens in a spawned child, so it costs about one torch import.
    """
    from gpudiag import capabilities, runner
    from gpudiag.probes import all_probes

    probes = runner.selected(all_probes(), _names(only, "only"), _names(skip, "skip"))
    if not probes:
        raise ValueError("--only/--skip left no probe to run")
    if cycle is not None:
        from gpudiag.probes.cycle.workload import CustomLoopError, parse_ref

        try:
            parse_ref(cycle)
        except CustomLoopError as exc:
            raise ValueError(str(exc)) from None
        chosen = {p.name: p for p in probes}
        if "cycle" not in chosen:
            raise ValueError("--cycle needs the cycle probe, which --only/--skip left out")
        # Where the cycle probe cannot run at all (no torch) it is skipped with that reason instead.
        if not capabilities.missing(chosen["cycle"].needs):
            _check_cycle_factory(cycle)
    return probes


def run_report(only: Union[str, Iterable[str], None] = (), skip: Union[str, Iterable[str], None] = (),
               mode: str = "quick", timeout: Optional[float] = None, cycle: Optional[str] = None, *,
               redact: bool = True, progress: Optional[ProgressCallback] = None) -> Report:
    """Run the probes as `gpudiag report` does and return the report; writes no file.

    only / skip: probe names (see `gpudiag probes`); a single name may be given as a str.
    mode: "quick" (seconds) or "full" (a minute or more). timeout: per-probe limit in seconds
    (None: each probe's default). cycle: "MODULE:FACTORY" to run your own loop in the tournament
    (docs/cycle.md), checked before any probe runs. redact: replace hostname, username and home
    paths (secrets are always removed). progress: called as each probe starts and ends.

    Returns the report of docs/report-contract.md, recommendation included, as a `Report` (a dict
    that a notebook shows as the HTML report). Ctrl-C stops the
    probe in flight and returns what finished, with report["interrupted"] True. Raises ValueError
    (one line) for bad arguments. Probes run in spawned children: call it under
    `if __name__ == "__main__":` in a script.
    """
    from gpudiag import runner
    from gpudiag.diagnose.recommend import recommend as _recommend
    from gpudiag.report import contract
    from gpudiag.report.redact import redact as _redact

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    contract.check_timeout(timeout)
    probes = select_probes(only, skip, cycle)
    created = contract.utc_now_iso()
    outcome = runner.run_probes(probes, mode=mode, timeout_s=timeout, on_event=progress,
                                options={"cycle": cycle} if cycle else None)
    from gpudiag.platform import signals

    try:
        with signals.deferred():  # a stop signal now waits: every probe finished, the report is whole
            rep = contract.build_report(outcome["results"], mode, created_at=created,
                                        interrupted=outcome["interrupted"], redacted=redact)
            rep["recommendation"] = _recommend(rep)
            rep = _redact(rep, identify=redact)
    except signals.Interrupted:
        rep["interrupted"] = True
    return Report(rep)


def load_report(path: PathLike) -> Report:
    """Read and check a saved JSON report, as a `Report`; raises ReportError (one line naming the file) if unusable."""
    from gpudiag.report import contract

    return Report(contract.load_report(os.fspath(path)))


def save_report(report: ReportLike, path: PathLike) -> str:
    """Write `report` as JSON to `path` atomically (never half-written, synced to disk); returns the path written."""
    from gpudiag.report import contract
    from gpudiag.report.atomic import write_text_atomic

    path = os.fspath(path)
    write_text_atomic(path, contract.dumps(report))
    return path


def recommend(report: ReportLike) -> Dict[str, Any]:
    """The recommendation of a report, recomputed by this gpudiag's rules (e.g. for an older report).

    Checks the report first (ReportError if it is not one); returns the `recommendation` object of
    docs/report-contract.md and leaves `report` unchanged.
    """
    from gpudiag.diagnose.recommend import recommend as _recommend
    from gpudiag.report import contract

    contract.validate(report)
    return _recommend(report)


def render_compare(reports: Sequence[ReportLike], names: Optional[Sequence[str]] = None, fmt: str = "html") -> str:
    """Two or more reports side by side (ratios against the first) as "html" or "md" text.

    names label the columns (default: "report 1", "report 2", ...). Raises ValueError for fewer
    than two reports, a names list of another length, or an unknown fmt; ReportError for a dict
    that is not a report.
    """
    from gpudiag.report import contract
    from gpudiag.views import compare as compare_mod

    reports = list(reports)
    if len(reports) < 2:
        raise ValueError(f"comparing needs at least two reports, got {len(reports)}")
    names = list(names) if names is not None else [f"report {i + 1}" for i in range(len(reports))]
    if len(names) != len(reports):
        raise ValueError(f"{len(names)} names for {len(reports)} reports")
    if fmt not in ("html", "md"):
        raise ValueError(f"fmt must be 'html' or 'md', not {fmt!r}")
    for name, rep in zip(names, reports):
        try:
            contract.validate(rep)
        except ReportError as exc:
            raise ReportError(f"{name}: {exc}") from None
    return compare_mod.render_compare(reports, names, fmt)
