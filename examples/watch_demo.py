"""A job to try `gpudiag watch` on: the user's story in miniature, without a GPU.

    gpudiag watch -- python examples/watch_demo.py --seconds 8

Three threads "preprocess" text in pure Python (they share the GIL and take turns), while two
spawned workers each keep a growing cache (16 and 24 MiB/s by default), the way a DataLoader
worker that holds on to its samples grows until the OOM killer takes it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time


def preprocess(seconds: float, out: list, i: int) -> None:
    """Tokenise and count words in pure Python: holds the GIL the whole time."""
    text = "the quick brown fox jumps over the lazy dog " * 50
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        counts: dict = {}
        for word in text.split():
            counts[word] = counts.get(word, 0) + 1
        n += 1
    out[i] = n


def caching_worker(mib_per_s: float, seconds: float) -> None:
    """Keeps every 'sample' it loads: memory grows at mib_per_s, by the wall clock."""
    cache, t0, total = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        while total < mib_per_s * (time.perf_counter() - t0):
            cache.append(b"\x01" * (1 << 20))
            total += 1
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rates", type=float, nargs=2, default=(16.0, 24.0), metavar="MIB_PER_S")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=caching_worker, args=(r, args.seconds), name=f"loader{i}")
               for i, r in enumerate(args.rates)]
    for w in workers:
        w.start()
    out = [0, 0, 0]
    threads = [threading.Thread(target=preprocess, args=(args.seconds, out, i), name=f"preprocess-{i}")
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.join()
    print(f"preprocessed {sum(out)} batches in {args.seconds:g} s")


if __name__ == "__main__":
    main()
