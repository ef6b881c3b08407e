"""The cycle workload: a model of the user's loop, and the loader for the user's own step.

One cycle = a forward pass (optionally forward + backward + an SGD step) of a small MLP on a
batch, three scalar metrics brought to the host with `.item()` and appended to a Python list,
then a fixed slice of pure-Python host work (it holds the GIL, like the user's bookkeeping).
The model is sized from free memory and seeded, so every strategy and every worker runs the same
work. torch is imported inside functions: importing this module stays cheap.

`--cycle MODULE:FACTORY` protocol (see docs/cycle.md): `FACTORY(device)` (or `FACTORY()` when it
takes no argument) returns either a callable `step()` running one cycle, or an object with a
`.step()` method and optionally `.close()`. It is called once per worker (thread or process), so
each worker gets its own state. The module is imported with the current folder on `sys.path`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, List, Optional, Tuple

SEED = 1234
# (in_features, hidden, batch): smallest first; the probe takes the largest that fits its budget
# and its mode's cap. Three Linear layers, 10 classes.
SIZE_LADDER: Tuple[Tuple[int, int, int], ...] = ((256, 512, 64), (512, 1024, 128), (1024, 2048, 512))
CLASSES = 10
POOL_BATCHES = 8  # distinct input batches per worker, reused round-robin (a multiple of every fuse factor)
HOST_WORK_MS = {"quick": 1.5, "full": 2.0}
MEMORY_FRACTION = 0.05  # of free memory the whole tournament's model copies may take


class CustomLoopError(Exception):
    """The user's `--cycle MODULE:FACTORY` could not be loaded or run; the message says why."""


@dataclass
class WorkloadSpec:
    """Everything a worker needs to rebuild the same workload (plain, picklable)."""

    device: str
    in_features: int
    hidden: int
    batch: int
    train: bool = False
    host_work_iters: int = 0
    host_work_ms: float = 0.0
    seed: int = SEED
    classes: int = CLASSES

    @property
    def params(self) -> int:
        """Parameter count of the MLP (three Linear layers with biases): reported with the workload and used for its
        memory estimate."""
        i, h, c = self.in_features, self.hidden, self.classes
        return i * h + h + h * h + h + h * c + c

    def estimated_bytes(self, fuse: int = 1) -> int:
        """Rough device/host bytes of one worker's copy: weights (+grads), input pool, activations."""
        weights = self.params * 4 * (2 if self.train else 1)
        pool = POOL_BATCHES * self.batch * (self.in_features * 4 + 8)
        acts = fuse * self.batch * (self.in_features + 2 * self.hidden + self.classes) * 4 * (2 if self.train else 1)
        return weights + pool + acts

    def describe(self) -> dict:
        """The report's workload block: model shape, batch, parameter count, device, host work and seed, so a reader
        can tell what was measured and rerun it."""
        d = asdict(self)
        return {
            "model": f"mlp {self.in_features}-{self.hidden}-{self.hidden}-{self.classes}",
            "batch": self.batch,
            "params": self.params,
            "device": self.device,
            "host_work_ms": self.host_work_ms,
            "host_work_iters": self.host_work_iters,
            "seed": self.seed,
            "train": self.train,
            "metrics_per_cycle": 3,
            "in_features": d["in_features"],
            "hidden": d["hidden"],
        }


def choose_size(device: str, mode: str, free_bytes: Optional[int], copies: int) -> Tuple[int, int, int]:
    """The largest ladder step whose `copies` copies fit in MEMORY_FRACTION of free memory.

    Quick mode on the CPU stops at the middle step to keep the run short; the GPU may take the
    largest in full mode. With free memory unknown, the smallest step.
    """
    cap = {("cpu", "quick"): 1, ("cpu", "full"): 1, ("cuda", "quick"): 1, ("cuda", "full"): 2}.get((device, mode), 0)
    chosen = SIZE_LADDER[0]
    if not free_bytes:
        return chosen
    for i, (inf, hid, bat) in enumerate(SIZE_LADDER[: cap + 1]):
        spec = WorkloadSpec(device, inf, hid, bat)
        if spec.estimated_bytes(fuse=8) * copies <= free_bytes * MEMORY_FRACTION:
            chosen = SIZE_LADDER[i]
    return chosen


# ---------------------------------------------------------------- host work

def host_work(iters: int) -> int:
    """Pure-Python work that holds the GIL (the user's per-cycle bookkeeping)."""
    s = 0
    for k in range(iters):
        s += (k * k) % 7
    return s


def calibrate_host_work(target_ms: float, probe_iters: int = 20000) -> int:
    """Iterations of host_work taking about target_ms here (best of three, so noise shortens it less)."""
    if target_ms <= 0:
        return 0
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        host_work(probe_iters)
        best = min(best, time.perf_counter() - t0)
    per_iter_ms = best * 1000.0 / probe_iters
    return max(1, int(round(target_ms / per_iter_ms)))


# ---------------------------------------------------------------- the built-in workload

class Workload:
    """One worker's copy of the model, its optimiser, its input pool and its metrics list."""

    def __init__(self, spec: WorkloadSpec):
        import torch

        self.spec = spec
        self.torch = torch
        self.device = torch.device(spec.device)
        gen = torch.Generator().manual_seed(spec.seed)
        torch.manual_seed(spec.seed)
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Linear(spec.in_features, spec.hidden), nn.ReLU(),
            nn.Linear(spec.hidden, spec.hidden), nn.ReLU(),
            nn.Linear(spec.hidden, spec.classes),
        ).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01) if spec.train else None
        # Inputs are made once, on the device: a cycle reads a slice, nothing is copied per cycle.
        n = POOL_BATCHES * spec.batch
        self.x = torch.randn(n, spec.in_features, generator=gen).to(self.device)
        self.y = torch.randint(0, spec.classes, (n,), generator=gen).to(self.device)
        self.metrics: List[Tuple[float, float, float]] = []

    def batch(self, i: int, fuse: int = 1):
        """Rows of cycles i .. i+fuse-1 (contiguous in the pool when i is a multiple of fuse)."""
        b = self.spec.batch
        j = i % POOL_BATCHES
        if j + fuse > POOL_BATCHES:
            j = 0
        return self.x[j * b:(j + fuse) * b], self.y[j * b:(j + fuse) * b]

    def forward_metrics(self, x, y):
        """One step on (x, y): the three metrics as 0-dim device tensors (loss, accuracy, output norm)."""
        torch = self.torch
        F = torch.nn.functional
        if self.spec.train:
            self.optimizer.zero_grad(set_to_none=True)
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            self.optimizer.step()
            out, loss = out.detach(), loss.detach()
        else:
            with torch.no_grad():
                out = self.model(x)
                loss = F.cross_entropy(out, y)
        with torch.no_grad():
            acc = (out.argmax(1) == y).float().mean()
            norm = out.norm()
        return loss, acc, norm

    def fused_metrics(self, x, y, fuse: int):
        """One step on `fuse` cycles' rows: per-cycle metrics as a (fuse, 3) device tensor.

        In training mode this is one optimiser step per `fuse` cycles (the loss is the mean over
        all rows), which is what batching cycles means for training.
        """
        torch = self.torch
        F = torch.nn.functional
        b = self.spec.batch
        if self.spec.train:
            self.optimizer.zero_grad(set_to_none=True)
            out = self.model(x)
            F.cross_entropy(out, y).backward()
            self.optimizer.step()
            out = out.detach()
        else:
            with torch.no_grad():
                out = self.model(x)
        with torch.no_grad():
            k = out.shape[0] // b
            losses = F.cross_entropy(out, y, reduction="none").view(k, b).mean(1)
            accs = (out.argmax(1) == y).float().view(k, b).mean(1)
            norms = out.view(k, -1).norm(dim=1)
            return torch.stack([losses, accs, norms], dim=1)

    def cycle(self, i: int) -> None:
        """The user's cycle: step, three `.item()` round trips into a list, host work."""
        loss, acc, norm = self.forward_metrics(*self.batch(i))
        self.metrics.append((loss.item(), acc.item(), norm.item()))
        host_work(self.spec.host_work_iters)

    def run_cycles(self, n: int, start: int = 0) -> None:
        """Run n cycles numbered from `start` (a worker's share picks distinct input batches)."""
        for i in range(start, start + n):
            self.cycle(i)

    def sync(self) -> None:
        """Wait for the device to finish queued work (no-op on the CPU): timings include the GPU work they caused."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Nothing to free (the copy is garbage-collected); present so every workload closes the same way."""
        pass


# ---------------------------------------------------------------- the user's own step

def parse_ref(ref: str) -> Tuple[str, str]:
    """'pkg.module:factory' -> ('pkg.module', 'factory'); CustomLoopError for anything else."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise CustomLoopError(f"--cycle {ref!r}: expected MODULE:FACTORY, e.g. my_loop:make_step")
    mod, attr = (p.strip() for p in ref.split(":"))
    if not mod or not attr or not all(part.isidentifier() for part in mod.split(".")) or not attr.isidentifier():
        raise CustomLoopError(f"--cycle {ref!r}: expected MODULE:FACTORY with Python names, e.g. my_loop:make_step")
    return mod, attr


def load_factory(ref: str, cwd: Optional[str] = None) -> Callable:
    """Import MODULE (the current folder first on sys.path) and return FACTORY."""
    mod_name, attr = parse_ref(ref)
    folder = cwd or os.getcwd()
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise CustomLoopError(f"--cycle {ref}: cannot import module {mod_name!r} ({exc}); run gpudiag "
                              f"from the folder that holds it, or make it importable") from None
    except Exception as exc:  # the user's module runs arbitrary code at import: say what it raised, in one line
        raise CustomLoopError(f"--cycle {ref}: importing {mod_name!r} raised {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise CustomLoopError(f"--cycle {ref}: module {mod_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise CustomLoopError(f"--cycle {ref}: {attr!r} is not callable")
    return factory


def _takes_device(factory: Callable) -> bool:
    """Whether the user's FACTORY takes a positional argument (the device): the protocol allows FACTORY(device)
    and FACTORY(); an uninspectable callable (some builtins) is assumed to take it."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return bool(positional)


class CustomWorkload:
    """One worker's instance of the user's step, run through the same strategies."""

    def __init__(self, ref: str, device: str, cwd: Optional[str] = None):
        self.ref, self.device = ref, device
        factory = load_factory(ref, cwd)
        try:
            made = factory(device) if _takes_device(factory) else factory()
        except Exception as exc:  # the user's factory can raise anything: one line naming it, no traceback
            raise CustomLoopError(f"--cycle {ref}: the factory raised {type(exc).__name__}: {exc}") from None
        if callable(getattr(made, "step", None)):
            self._step, self._close = made.step, getattr(made, "close", None)
        elif callable(made):
            self._step, self._close = made, None
        else:
            raise CustomLoopError(f"--cycle {ref}: the factory returned {type(made).__name__}; "
                                  "return a step() callable or an object with .step()")

    def step(self) -> Any:
        """One call of the user's step, errors unwrapped: cuda_graph capture needs to see the original exception."""
        return self._step()

    def run_cycles(self, n: int, start: int = 0) -> None:
        """Run n of the user's steps (`start` is unused: the step keeps its own state); a step that raises becomes a
        CustomLoopError naming it, which fails the whole probe rather than one strategy."""
        for _ in range(n):
            try:
                self._step()
            except Exception as exc:  # the user's step can raise anything: one line naming it, no traceback
                raise CustomLoopError(f"--cycle {self.ref}: step() raised {type(exc).__name__}: {exc}") from None

    def sync(self) -> None:
        """Wait for all CUDA work the user's step queued (no-op on the CPU), so its timed runs include it."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def close(self) -> None:
        """Call the user's close(), when the factory's object has one."""
        if callable(self._close):
            self._close()


@dataclass
class CustomSpec:
    """What a worker needs to rebuild the user's step: the reference and the folder to import from."""

    ref: str
    device: str
    cwd: str

    def describe(self) -> dict:
        """The report's workload block for a user's step: the reference and device; built-in-only fields are None."""
        return {"model": f"custom step {self.ref}", "batch": None, "params": None, "device": self.device,
                "host_work_ms": None, "host_work_iters": None, "seed": None, "train": None,
                "metrics_per_cycle": None}


def build(spec) -> Any:
    """A worker's workload from its spec (built-in or custom)."""
    if isinstance(spec, CustomSpec):
        return CustomWorkload(spec.ref, spec.device, spec.cwd)
    return Workload(spec)


# ---------------------------------------------------------------- checking --cycle before any probe runs

def _check_factory_run(ctx) -> Any:
    """Child side of FACTORY_CHECK: import the user's module and look the factory up, nothing more.

    A CustomLoopError becomes a ProbeSkip so its one-line message comes back as it is (a failure
    would carry an internal file name); the factory is not called here.
    """
    from gpudiag.probes.base import ProbeOutput, ProbeSkip

    try:
        load_factory(ctx.options["cycle"], ctx.options.get("cwd"))
    except CustomLoopError as exc:
        raise ProbeSkip(str(exc)) from None
    return ProbeOutput({})


def factory_check_probe():
    """The cycle_check Probe: run in a spawned child before any probe, so a wrong --cycle fails in seconds with
    one line instead of after the other probes."""
    from gpudiag.probes.base import Probe

    # Run in a spawned child like the probes: the user's module usually imports torch, which the
    # parent never does.
    return Probe(name="cycle_check", title="--cycle check", summary="imports MODULE and finds FACTORY",
                 run=_check_factory_run, isolate=True, timeout_s=120.0)
