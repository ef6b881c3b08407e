"""gpudiag: measure why a GPU sits half idle and which parallelism strategy is fastest here.

The public API is re-exported lazily (PEP 562) so that `import gpudiag`, which every probe child
and the CLI do, stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "preflight"]

_LAZY = {"preflight": "gpudiag.diagnose.preflight"}


def __getattr__(name: str):
    """The real public function on first use: `gpudiag.preflight` is gpudiag.diagnose.preflight.preflight."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpudiag' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
