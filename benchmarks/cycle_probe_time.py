"""How long the cycle probe takes (--quick and --full), and whether its serial figure matches a plain timing.

Run from a checkout:  PYTHONPATH=. python benchmarks/cycle_probe_time.py [--runs 3] [--full]
Prints, per mode, the probe's wall time (median of runs, spawn of the probe child included),
each strategy's cycles/s, and a plain independent timing of the same serial loop (same workload
spec, same cycle count, timed with perf_counter in this process) next to the probe's serial figure.
Timing goals live here, not in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time


def plain_serial_rate(workload: dict, cycles: int, repeats: int = 3) -> float:
    """cycles/s of the serial loop, timed directly, with the probe's own workload spec."""
    import torch

    from gpudiag.probes.cycle import workload as cw

    torch.set_num_threads(workload["torch_threads_default"])
    spec = cw.WorkloadSpec(device=workload["device"], in_features=workload["in_features"],
                           hidden=workload["hidden"], batch=workload["batch"], train=workload["train"],
                           host_work_iters=workload["host_work_iters"], host_work_ms=workload["host_work_ms"])
    w = cw.Workload(spec)
    w.run_cycles(5)
    w.sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        w.run_cycles(cycles)
        w.sync()
        rates.append(cycles / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also time --full (one run)")
    args = ap.parse_args()

    from gpudiag import runner
    from gpudiag.probes.base import ProbeContext
    from gpudiag.probes.cycle.probe import PROBE

    modes = [("quick", args.runs)] + ([("full", 1)] if args.full else [])
    for mode, runs in modes:
        walls, last = [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            last = runner.run_probe(PROBE, ProbeContext(mode=mode, timeout_s=PROBE.default_timeout(mode)))
            walls.append(time.perf_counter() - t0)
            assert last["status"] == "ok", last["reason"]
        print(f"== cycle probe --{mode}: wall {statistics.median(walls):.2f} s median of {runs} "
              f"({', '.join(f'{w:.2f}' for w in walls)})")
        data = last["data"]
        wl = data["workload"]
        print(f"   workload: {wl['model']} batch {wl['batch']} on {wl['device']}, {wl['cycles']} cycles x "
              f"{wl['repeats']} repeats, host work {wl['host_work_ms']} ms/cycle")
        for r in data["strategies"]:
            if r["status"] == "ok":
                extra = f", start-up {r['startup_s']:.2f} s (excluded)" if r.get("startup_s") else ""
                print(f"   {r['name']:<14} workers {r['workers']:<2} {r['cycles_per_s']:9.1f} cycles/s "
                      f"x{r['speedup_vs_serial']:.2f}  spread {r['spread_fraction']}{extra}")
            else:
                print(f"   {r['name']:<14} {r['status']}: {r['reason']}")
        serial = next(r for r in data["strategies"] if r["name"] == "serial")
        plain = plain_serial_rate(wl, wl["cycles"])
        print(f"   serial: probe {serial['cycles_per_s']:.1f} cycles/s, plain timing {plain:.1f} cycles/s "
              f"(ratio {serial['cycles_per_s'] / plain:.2f})")


if __name__ == "__main__":
    main()
