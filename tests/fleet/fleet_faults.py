"""`gpudiag fleet` with a fault on one rank, for tests: `torchrun ... tests/fleet/fleet_faults.py fleet ARGS`.

Test code, not part of gpudiag: it wraps gpudiag.fleet.measure.measure_rank on one rank, then runs
the ordinary CLI. GPUDIAG_TEST_FAULT says what and where:
  hog:RANK:N   N busy-loop processes start on RANK's own core(s) just before it measures and stop
               right after (other programs starving it; started late so its start-up is not slowed)
  hang:RANK    RANK sleeps instead of measuring (a hung rank the deadline must name)
  die:RANK     RANK exits at once with code 17 instead of measuring (a crashed rank)
  die_late:RANK  RANK measures, then waits until every other rank waits at the barrier, and exits with code 17
               without sending its results (a rank dying while the others wait in native code)
GPUDIAG_TEST_MARKERS=DIR (optional): each rank creates DIR/barrier-<rank> as it enters the barrier, so a test
can stop the run while the ranks wait there (never a sleep race).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def _markers(folder: str) -> None:
    """Each rank marks its arrival at the barrier (just before it blocks there in gloo)."""
    from gpudiag.fleet import run

    barrier = run.monitored_barrier_missing

    def marked(groups, timeout_s):
        open(os.path.join(folder, f"barrier-{groups.rank}"), "w").close()
        return barrier(groups, timeout_s)
    run.monitored_barrier_missing = marked


def _wait_for_others_at_the_barrier(me: int) -> None:
    folder, world = os.environ["GPUDIAG_TEST_MARKERS"], int(os.environ.get("WORLD_SIZE", "1"))
    others = [os.path.join(folder, f"barrier-{r}") for r in range(world) if r != me]
    deadline = time.monotonic() + 300
    while not all(os.path.exists(p) for p in others) and time.monotonic() < deadline:
        time.sleep(0.05)


def _install(spec: str) -> None:
    from gpudiag.fleet import measure

    if os.environ.get("GPUDIAG_TEST_MARKERS"):
        _markers(os.environ["GPUDIAG_TEST_MARKERS"])
    kind, _, rest = spec.partition(":")
    parts = rest.split(":")
    if not parts[0] or int(parts[0]) != _rank():
        return
    original = measure.measure_rank
    if kind == "die":
        def die(*args, **kwargs):
            os._exit(17)
        measure.measure_rank = die
    elif kind == "die_late":
        def die_late(*args, **kwargs):
            original(*args, **kwargs)
            _wait_for_others_at_the_barrier(_rank())
            os._exit(17)
        measure.measure_rank = die_late
    elif kind == "hang":
        def hang(*args, **kwargs):
            time.sleep(600)
        measure.measure_rank = hang
    elif kind == "hog":
        count = int(parts[1]) if len(parts) > 1 else 2

        def hogged(*args, **kwargs):
            # Children inherit this rank's CPU affinity (taskset on its launcher): they share its core.
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
            try:
                time.sleep(0.3)  # let the scheduler give the hogs their share before the clock starts
                return original(*args, **kwargs)
            finally:
                for p in hogs:
                    p.kill()
                for p in hogs:
                    p.wait()
        measure.measure_rank = hogged
    else:
        raise SystemExit(f"unknown GPUDIAG_TEST_FAULT {spec!r}")


if __name__ == "__main__":
    _install(os.environ.get("GPUDIAG_TEST_FAULT", ""))
    from gpudiag.cli import main

    main(sys.argv[1:], prog_name="gpudiag")
