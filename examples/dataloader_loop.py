"""A training loop fed by PyTorch's DataLoader with Python-side augmentation (issue 22's workload).

    python examples/dataloader_loop.py [--workers N] [--steps S] [--seconds T]
    gpudiag watch -- python examples/dataloader_loop.py --steps 400

A map dataset whose __getitem__ runs 30 passes of list arithmetic over 256 floats (pure Python:
it holds the GIL), a two-layer MLP (256 -> 3072 -> 10: its step is about a fifth of a batch's loading, so the
main thread loads in about 83 % of the loop, as in the issue), batch 32, one torch thread. With --workers 0 (DataLoader's
default) the main thread loads every batch itself; `gpudiag watch` measures that share and says
how many workers to use (benchmarks/dataloader_advice.py checks its prediction). The last line is
machine-readable: `steps_per_s=<rate> steps=<n> seconds=<s> workers=<N>`, timed after warm-up.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from torch.utils.data import DataLoader, Dataset

FEATURES = 256
PASSES = 30


class Augmented(Dataset):
    """Samples made in Python: 30 passes of arithmetic over 256 floats, as a hand-written augmentation."""

    def __init__(self, size: int = 1 << 20):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        rng = random.Random(i)
        x = [rng.random() for _ in range(FEATURES)]
        for k in range(PASSES):
            x = [v * 0.99 + 0.01 * k for v in x]
        return torch.tensor(x, dtype=torch.float32), i % 10


class Loop:
    """The model, its optimizer and one step; `rate()` times steps drawn from a DataLoader over Augmented."""

    def __init__(self, hidden: int = 3072):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(hidden, 10))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def rate(self, workers: int, steps: int, warmup: int, seconds=None, persistent: bool = True):
        """(steps per second, steps timed, seconds) of `steps` steps (or `seconds` of them) after `warmup`
        untimed ones, drawn from a fresh DataLoader(num_workers=workers); its workers end with it."""
        kw = {"persistent_workers": persistent} if workers > 0 else {}
        it = iter(DataLoader(Augmented(), batch_size=32, shuffle=True, num_workers=workers, **kw))
        done, t0 = 0, None
        try:
            for n in range(warmup + steps):
                if n == warmup:
                    t0 = time.perf_counter()
                x, y = next(it)
                self.opt.zero_grad(set_to_none=True)
                self.loss_fn(self.model(x), y).backward()
                self.opt.step()
                if t0 is not None:
                    done += 1
                    if seconds is not None and time.perf_counter() - t0 >= seconds:
                        break
        finally:
            del it  # shuts the workers down
        secs = time.perf_counter() - t0 if t0 is not None else 0.0
        return (done / secs if secs > 0 else 0.0), done, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=0, help="DataLoader(num_workers=...) (default 0, torch's)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first (workers starting, first batches)")
    ap.add_argument("--hidden", type=int, default=3072, help="the MLP's hidden width (its step's cost)")
    ap.add_argument("--seconds", type=float, default=None, help="stop the timed part after this many seconds")
    args = ap.parse_args()
    rate, done, secs = Loop(args.hidden).rate(args.workers, args.steps, args.warmup, args.seconds)
    print(f"steps_per_s={rate:.3f} steps={done} seconds={secs:.3f} workers={args.workers}", flush=True)


if __name__ == "__main__":
    main()
