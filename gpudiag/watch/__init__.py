"""`gpudiag watch`: diagnose the user's real job, unmodified, while it runs.

Roles: job.py (launch/attach, signal pass-through, exit codes), procs.py (psutil process-tree
sampler), pyspy.py (py-spy GIL sampler), gpu.py (NVML sampler), sampler.py (the background
thread they share), access.py (ptrace rights and advice), analysis.py (samples -> report data),
growth.py (memory growth and the projection to the limit), diagnose.py (verdicts),
recommend.py (findings and the recommendation with its confidence), session.py (one watch from
start to report). Docs: docs/watch.md.
"""

from gpudiag.watch.job import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_WATCH_FAILED, LaunchError
from gpudiag.watch.session import DEFAULT_INTERVAL_S, DEFAULT_NATIVE_EVERY, WatchSession

__all__ = ["WatchSession", "LaunchError", "DEFAULT_INTERVAL_S", "DEFAULT_NATIVE_EVERY", "EXIT_USAGE", "EXIT_WATCH_FAILED",
           "EXIT_NOT_EXECUTABLE", "EXIT_NOT_FOUND"]
