"""Independent cross-check of gpudiag's GPU figures, written without any of gpudiag's code.

Run on a GPU machine by scripts/gpu-check.sh (issue 16): a plain CUDA-event-timed loop of pinned
host->device copies of 256 MiB, and a plain timing of torch.cuda.synchronize() on an idle stream.
Then, given gpudiag's report, the agreement of its pinned H2D peak (goal: within 5 %) and of its
synchronize latency.

    python scripts/gpu_crosscheck.py [REPORT.json] > crosscheck.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

SIZE = 256 * 2**20
REPEATS = 20


def h2d_pinned_gbps() -> dict:
    """GB/s (1e9 bytes/s) of pinned host->device copies of SIZE bytes, timed with CUDA events."""
    import torch

    host = torch.empty(SIZE, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
    for _ in range(3):  # warm-up: first copies pay for page registration and clocks ramping up
        dev.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    rates = []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dev.copy_(host, non_blocking=True)
        end.record()
        end.synchronize()
        rates.append(SIZE / (start.elapsed_time(end) / 1e3) / 1e9)
    return {"median_gbps": statistics.median(rates), "max_gbps": max(rates), "n": len(rates)}


def sync_latency_us() -> dict:
    """Microseconds one torch.cuda.synchronize() takes with nothing queued, by perf_counter."""
    import torch

    torch.cuda.synchronize()
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1e6)
    return {"median_us": statistics.median(samples), "n": len(samples)}


def main() -> int:
    out = {"h2d_pinned": h2d_pinned_gbps(), "synchronize": sync_latency_us()}
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as fh:
            report = json.load(fh)
        pcie = (((report.get("probes") or {}).get("pcie") or {}).get("data") or {})
        peak = ((pcie.get("peak") or {}).get("h2d_pinned_gbps"))  # data.peak, docs/report-contract.md
        launch = (((report.get("probes") or {}).get("launch") or {}).get("data") or {})
        sync = ((launch.get("sync_latency_us") or {}).get("median"))  # data.sync_latency_us: stats
        peak = peak if isinstance(peak, (int, float)) else None
        sync = sync if isinstance(sync, (int, float)) else None
        ours = out["h2d_pinned"]["median_gbps"]
        out["gpudiag"] = {"h2d_pinned_peak_gbps": peak, "synchronize_us": sync}
        out["agreement"] = {
            "h2d_ratio": (peak / ours) if peak else None,
            "h2d_within_5_percent": (abs(peak / ours - 1) <= 0.05) if peak else None,
            "sync_ratio": (sync / out["synchronize"]["median_us"]) if sync else None,
        }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
