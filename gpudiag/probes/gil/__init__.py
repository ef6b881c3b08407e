"""The `gil` probe: threads vs processes on GIL-holding and GIL-releasing work (probe.py), and the
pure analysis that turns its rows into verdicts and findings (analysis.py)."""

from gpudiag.probes.gil.probe import PROBE

__all__ = ["PROBE"]
