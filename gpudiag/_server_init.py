"""Imported first inside the probes' start server (gpudiag.startserver), and nowhere else.

The server and every probe process forked from it ignore Ctrl-C until the probe sets its own handling
(the runner handles it and stops them), its output goes nowhere (a probe process sends its own to its
log; torch's import warnings would otherwise reach the user's terminal), and torch is imported here, once,
with its cost measured for the probes (gpudiag.measure.torch_import).
"""

import os
import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    _null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(_null, 1)
    os.dup2(_null, 2)
    os.close(_null)
except OSError:  # no /dev/null (a bare chroot): the server's output then stays where it was
    pass

from gpudiag import platform  # noqa: E402  (after the output is redirected: torch warns at import)
from gpudiag.measure import torch_import  # noqa: E402

torch_import.measure(spawn_s=platform.process_age_s())
