"""gpudiag: measure why a GPU sits half idle and which parallelism strategy is fastest here.

The public API (docs/api.md) is everything in `__all__`:

    import gpudiag
    report = gpudiag.run_report(only=["system", "gil"])     # a dict; writes nothing
    gpudiag.save_report(report, "r.json")
    html = gpudiag.render_html(gpudiag.load_report("r.json"))
    gpudiag.preflight(workers=4).raise_if_failed()

Names are re-exported lazily (PEP 562) so that `import gpudiag`, which every probe child and the
CLI do, stays cheap: nothing below is imported until first used.
"""

from typing import TYPE_CHECKING

from gpudiag._version import __version__

__all__ = [
    "__version__",
    # run, load, save a report
    "run_report", "select_probes", "load_report", "save_report", "ReportError", "Report", "ProgressCallback",
    # what to do about it
    "recommend",
    # views
    "render_html", "render_markdown", "render_compare",
    # go / no-go before a long run
    "preflight", "PreflightResult", "PreflightFailed", "Check",
]

# public name -> module that defines it
_LAZY = {
    "run_report": "gpudiag.api",
    "select_probes": "gpudiag.api",
    "load_report": "gpudiag.api",
    "save_report": "gpudiag.api",
    "recommend": "gpudiag.api",
    "render_compare": "gpudiag.api",
    "Report": "gpudiag.api",
    "ProgressCallback": "gpudiag.api",
    "ReportError": "gpudiag.report.contract",
    "render_html": "gpudiag.views.render",
    "render_markdown": "gpudiag.views.render",
    "preflight": "gpudiag.diagnose.preflight",
    "PreflightResult": "gpudiag.diagnose.preflight",
    "PreflightFailed": "gpudiag.diagnose.preflight",
    "Check": "gpudiag.diagnose.preflight",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from gpudiag.diagnose.preflight import Check, PreflightFailed, PreflightResult, preflight
    from gpudiag.api import (ProgressCallback, Report, load_report, recommend, render_compare, run_report,
                                    save_report, select_probes)
    from gpudiag.report.contract import ReportError
    from gpudiag.views.render import render_html, render_markdown


def __getattr__(name: str):
    """The public object on first use, e.g. `gpudiag.run_report` is gpudiag.api.run_report."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpudiag' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
