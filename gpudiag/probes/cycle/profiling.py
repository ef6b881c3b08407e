"""Recording one contestant's GPU timeline: a torch.profiler trace, or CUDA events around each cycle
where the torch build has no CUDA profiler activity. timeline.py analyses what is recorded here.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Callable, List, Optional, Sequence, Tuple

from gpudiag.probes.cycle import timeline
from gpudiag.probes.cycle.workload import host_work


def trace_window(events: Sequence[dict], name: str = "gpudiag_window") -> Optional[Tuple[float, float]]:
    """(start, end) in µs of the host-side `record_function` range called `name`, if recorded."""
    for ev in events:
        if ev.get("name") == name and str(ev.get("cat", "")).lower() == "user_annotation":
            return float(ev["ts"]), float(ev["ts"]) + float(ev.get("dur", 0.0))
    return None


def profiled_events(run: Callable[[], None], sync: Callable[[], None]) -> List[dict]:
    """Chrome-trace events of one run under torch.profiler (CPU + CUDA where supported)."""
    from torch.profiler import ProfilerActivity, profile, record_function, supported_activities

    acts = [a for a in (ProfilerActivity.CPU, ProfilerActivity.CUDA) if a in supported_activities()]
    sync()
    with profile(activities=acts) as prof:
        with record_function("gpudiag_window"):
            run()
            sync()
    fd, path = tempfile.mkstemp(prefix="gpudiag-trace-", suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh).get("traceEvents", [])
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def profile_timeline(run: Callable[[], None], sync: Callable[[], None], cycles: int) -> dict:
    """The idle timeline of `run` (which runs `cycles` cycles) from torch.profiler kernel events."""
    events = profiled_events(run, sync)
    return timeline.analyze_trace(events, window_us=trace_window(events), cycles=cycles)


def events_timeline(w, cycles: int) -> dict:
    """Serial cycles timed with CUDA events around each cycle's device work (profiler fallback)."""
    import torch

    starts, ends = [], []
    w.sync()
    t0 = time.perf_counter()
    for i in range(cycles):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        loss, acc, norm = w.forward_metrics(*w.batch(i))
        e.record()
        w.metrics.append((loss.item(), acc.item(), norm.item()))
        host_work(w.spec.host_work_iters)
        starts.append(s)
        ends.append(e)
    w.sync()
    wall_ms = (time.perf_counter() - t0) * 1000.0
    steps = [(starts[0].elapsed_time(s), starts[0].elapsed_time(e)) for s, e in zip(starts, ends)]
    return timeline.analyze_step_events(steps, wall_ms, cycles=cycles)
