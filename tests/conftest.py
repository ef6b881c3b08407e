"""Suite-wide test set-up, decided without importing torch or initialising CUDA in the pytest process
(probes do that in their own children):

- `gpu`-marked tests are skipped unless a CUDA device is usable;
- `torch`-marked tests are skipped where torch is not installed (the README's test command installs
  no torch, and the suite must pass there as well as with it);
- Ctrl-C reaches the processes the tests start even when pytest itself was started with SIGINT ignored.
"""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: needs torch installed (skipped with the install hint where it is not)")
    # A shell starts a background job (`cmd &` in a script, CI runners) with SIGINT ignored, and an
    # ignored signal is inherited across exec: every gpudiag the tests start would then keep Ctrl-C
    # ignored (as it does on purpose for nohup), and the tests that send it would wait in vain.
    # Python's own handler is not inherited, so the children start with the default action.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    from gpudiag import capabilities

    caps = capabilities.detect()
    reasons = {"gpu": None if caps["cuda"].available else f"needs CUDA: {caps['cuda'].reason}",
               "torch": None if caps["torch"].available else caps["torch"].reason}  # "torch is not installed: ..."
    for marker, reason in reasons.items():
        if reason is None:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker) is not None:  # a marker, not any keyword (a parameter id)
                item.add_marker(skip)
