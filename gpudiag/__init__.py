"""gpudiag: measure why a GPU sits half idle and which parallelism strategy is fastest here."""

__version__ = "0.1.0"

__all__ = ["__version__", "preflight"]


def preflight(*args, **kwargs):
    """Go / no-go checks before a long run; see ``gpudiag.diagnose.preflight.checks.preflight``."""
    from gpudiag.diagnose.preflight.checks import preflight as _preflight

    return _preflight(*args, **kwargs)
