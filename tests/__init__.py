"""gpudiag's tests, laid out like the package (probes/, views/, diagnose/, ...); shared fakes live here."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))  # tests/: data/, recorded/, recorded_views/
ROOT = os.path.dirname(TESTS)  # the checkout
