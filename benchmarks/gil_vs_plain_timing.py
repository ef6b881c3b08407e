"""Cross-check the `gil` probe against a plain, independent timing of the same work.

    PYTHONPATH=. python benchmarks/gil_vs_plain_timing.py [--mode quick|full] [--runs 3] [--repeats 5]

1. Runs the real probe `--runs` times through gpudiag.runner (isolated child, as `gpudiag report`
   does) and prints its wall time per run and the median: the `--quick` budget is about 10 s.
2. Takes the last run's calibrated sizes (items per task, matrix size) and times the same total
   work again with nothing from gpudiag but the work functions: N `threading.Thread`s and a
   `multiprocessing` spawn Pool, started together by a Barrier, timed with `time.perf_counter`.
3. Prints both throughputs and speedups side by side.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import statistics
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from gpudiag import runner  # noqa: E402
from gpudiag.probes.gil import probe as gil  # noqa: E402
from gpudiag.probes.base import ProbeContext  # noqa: E402

_BARRIERS = {}


def _init(barriers, use_torch):
    global _BARRIERS
    _BARRIERS = barriers
    if use_torch:
        import torch

        torch.set_num_threads(1)


def _task(n_workers, workload, args):
    _BARRIERS[n_workers].wait()  # forces one task per worker, all starting together
    return gil._WORK[workload](*args)


def _split(total, n):
    q, r = divmod(total, n)
    return [q + (1 if i < r else 0) for i in range(n)]


def plain_threads(workload, total, n, size):
    fn = gil._WORK[workload]
    args = [((share, size) if workload == "torch_op" else (share,)) for share in _split(total, n)]
    barrier = threading.Barrier(n + 1)

    def target(a):
        barrier.wait()
        fn(*a)

    ts = [threading.Thread(target=target, args=(a,)) for a in args]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def plain_processes(pool, workload, total, n, size):
    args = [(n, workload, ((share, size) if workload == "torch_op" else (share,))) for share in _split(total, n)]
    t0 = time.perf_counter()
    pool.starmap(_task, args, chunksize=1)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="quick", choices=("quick", "full"))
    ap.add_argument("--runs", type=int, default=3, help="probe runs (for its duration)")
    ap.add_argument("--repeats", type=int, default=5, help="plain timings per point")
    opts = ap.parse_args()

    durations, res = [], None
    for i in range(opts.runs):
        t0 = time.perf_counter()
        res = runner.run_probe(gil.PROBE, ProbeContext(mode=opts.mode, timeout_s=gil.PROBE.default_timeout(opts.mode)))
        durations.append(time.perf_counter() - t0)
        print(f"probe run {i + 1}: {res['status']} {res['reason']} in {durations[-1]:.2f} s")
    print(f"probe --{opts.mode} wall time: median {statistics.median(durations):.2f} s "
          f"(min {min(durations):.2f}, max {max(durations):.2f}, {len(durations)} runs)")
    if res["status"] != "ok":
        raise SystemExit(1)
    data = res["data"]
    points = data["cpu"]["worker_points"]
    proc_points = data["cpu"]["process_points"]
    top = points[-1]
    use_torch = "torch_op" in data["workloads"]

    ctx = multiprocessing.get_context("spawn")
    barriers = {n: ctx.Barrier(n) for n in proc_points}
    plain = {}
    with ctx.Pool(max(proc_points or [1]), initializer=_init, initargs=(barriers, use_torch)) as pool:
        if use_torch:
            import torch

            torch.set_num_threads(1)
        for w, meta in data["workloads"].items():
            total, size = meta["items_per_task"] * top, meta.get("matrix_size", 0)
            plain_threads(w, total, top, size)  # warm-up
            if proc_points:
                plain_processes(pool, w, total, proc_points[-1], size)
            for mode, pts in (("threads", points), ("processes", proc_points)):
                for n in pts:
                    walls = []
                    for _ in range(opts.repeats):
                        walls.append(plain_threads(w, total, n, size) if mode == "threads"
                                     else plain_processes(pool, w, total, n, size))
                    plain[(w, mode, n)] = total / statistics.median(walls)

    print()
    print(f"{'workload':15} {'mode':10} {'N':>2} {'probe /s':>14} {'plain /s':>14} {'ratio':>6} "
          f"{'probe speedup':>13} {'plain speedup':>13}")
    for r in data["scaling"]:
        key = (r["workload"], r["mode"], r["workers"])
        if key not in plain:
            continue
        p1 = plain[(r["workload"], r["mode"], 1)]
        print(f"{r['workload']:15} {r['mode']:10} {r['workers']:>2} {r['throughput_per_s']:>14,.0f} "
              f"{plain[key]:>14,.0f} {r['throughput_per_s'] / plain[key]:>6.2f} "
              f"{r['speedup']:>13.2f} {plain[key] / p1:>13.2f}")
    print()
    print("other processes' CPU while the probe measured (cores):", data.get("other_busy_cores"))
    for f in res["findings"]:
        print(f"[{f['severity']}] {f['code']}: {f['message']}")


if __name__ == "__main__":
    main()
