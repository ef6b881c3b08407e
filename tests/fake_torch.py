"""A tiny stand-in for the parts of `torch` / `torch.cuda` the CUDA probes call.

It lets the in-process GPU code paths of `launch`, `contention` and `pcie` (and the `contention`
worker, run in a thread) execute end to end on a CPU-only machine, so a typo, a wrong call order or
a wrong data shape fails here and not first on a user's GPU. It implements exactly the calls those
modules make and checks how they are made (dtypes, devices, slices, events recorded before they are
read, no synchronize during graph capture, copies only between host and device).

Time is a fake device clock that kernels, copies and event records advance: every figure it yields
is made up, so tests assert shapes and consistency only, never values. The real check is the
`gpu`-marked tests on real hardware.

    torch = FakeTorch(free_bytes=..., pinned_ok=True, graph_ok=True)
    monkeypatch.setitem(sys.modules, "torch", torch)
"""

from __future__ import annotations

import contextlib
import threading
import types

_lock = threading.Lock()
MiB = 2 ** 20


class _Clock:
    def __init__(self):
        self.ms = 0.0

    def advance(self, ms):
        with _lock:
            self.ms += ms
            return self.ms


class FakeTorch(types.SimpleNamespace):
    """`torch`, with `.cuda`; build one per test."""

    def __init__(self, free_bytes=3_500 * MiB, total_bytes=4 * 2 ** 30, cuda_build="12.4", available=True,
                 devices=1, pinned_ok=True, graph_ok=True, context_bytes=300 * MiB, pci=(0, 1, 0)):
        super().__init__()
        self.__version__ = "2.99.0+fake"
        self.version = types.SimpleNamespace(cuda=cuda_build)
        self.uint8, self.float32 = "uint8", "float32"
        self.clock = _Clock()
        self.pinned_ok = pinned_ok
        self.graph_ok = graph_ok
        self.capturing = None  # a list while a CUDA graph is being captured
        self.calls = []  # names of torch.cuda calls, in order (coarse: for "was it called" checks)
        self.cuda = _FakeCuda(self, free_bytes, total_bytes, available, devices, context_bytes, pci)

    def _tensor(self, size, dtype, device, value=0):
        assert isinstance(size, int) and size > 0, size
        assert device in (None, "cuda"), device
        return FakeTensor(self, size, dtype or self.float32, on_gpu=device == "cuda", pinned=False, value=value)

    def zeros(self, size, dtype=None, device=None):
        return self._tensor(size, dtype, device)

    def empty(self, size, dtype=None, device=None):
        return self._tensor(size, dtype, device)

    def ones(self, size, dtype=None, device=None):
        return self._tensor(size, dtype, device, value=1)


class FakeTensor:
    def __init__(self, torch, size, dtype, on_gpu, pinned, value=0):
        self.torch, self.size, self.dtype = torch, size, dtype
        self.on_gpu, self.pinned, self.value = on_gpu, pinned, value

    def __getitem__(self, sl):
        assert isinstance(sl, slice) and sl.start is None and sl.step is None, sl
        assert 0 < sl.stop <= self.size, (sl, self.size)
        return FakeTensor(self.torch, sl.stop, self.dtype, self.on_gpu, self.pinned, self.value)

    def add_(self, n):
        assert self.on_gpu, "the probes launch kernels on device tensors"

        def op():
            self.value += n
            self.torch.clock.advance(0.003)
        if self.torch.capturing is not None:
            self.torch.capturing.append(op)
        else:
            op()
        return self

    def pin_memory(self):
        assert not self.on_gpu, "pin_memory() is for host tensors"
        if not self.torch.pinned_ok:
            raise RuntimeError("CUDA error: out of memory (pinned)")
        return FakeTensor(self.torch, self.size, self.dtype, False, True, self.value)

    def copy_(self, src, non_blocking=False):
        assert isinstance(src, FakeTensor) and src.size == self.size and src.dtype == self.dtype, (src, self)
        assert src.on_gpu != self.on_gpu, "the probes copy between host and device only"
        host = self if src.on_gpu else src
        assert self.torch.capturing is None, "no copies are captured in a graph"
        gbps = 12.0 if host.pinned else 6.0
        self.torch.clock.advance(self.size / (gbps * 1e9) * 1e3 + 0.005)
        self.value = src.value
        return self

    def __repr__(self):
        return f"FakeTensor({self.size}, {self.dtype}, gpu={self.on_gpu}, pinned={self.pinned})"


class FakeEvent:
    def __init__(self, torch, enable_timing=False):
        assert enable_timing is True, "the probes time with events: enable_timing=True"
        self.torch, self.t = torch, None

    def record(self, stream=None):
        assert stream is None or isinstance(stream, FakeStream), stream
        self.t = self.torch.clock.advance(0.0005)

    def synchronize(self):
        assert self.t is not None, "synchronize before record"

    def elapsed_time(self, other):
        assert isinstance(other, FakeEvent)
        assert self.t is not None and other.t is not None, "elapsed_time needs both events recorded"
        return other.t - self.t


class FakeStream:
    def __init__(self, device=None):
        self.device = device

    def wait_stream(self, other):
        assert isinstance(other, FakeStream), other

    def wait_event(self, event):
        assert isinstance(event, FakeEvent) and event.t is not None, "wait_event on an unrecorded event"

    def synchronize(self):
        pass


class FakeGraph:
    def __init__(self):
        self.ops = []
        self.captured = False

    def replay(self):
        assert self.captured, "replay() before capture"
        for op in self.ops:
            op()


class _FakeCuda:
    def __init__(self, torch, free, total, available, devices, context_bytes, pci):
        self._torch, self._free, self._total = torch, free, total
        self._available, self._devices, self._context_bytes, self._pci = available, devices, context_bytes, pci
        self._default = FakeStream()
        self._local = threading.local()
        self.CUDAGraph = FakeGraph

    def _note(self, name):
        self._torch.calls.append(name)

    def is_available(self):
        return self._available

    def device_count(self):
        return self._devices

    def init(self):
        self._note("init")
        with _lock:  # a new context takes device memory, as on a real GPU
            self._free -= self._context_bytes

    def mem_get_info(self, device=None):
        assert device in (None, 0), device
        return self._free, self._total

    def get_device_properties(self, i):
        assert i == 0, i
        domain, bus, dev = self._pci
        return types.SimpleNamespace(name="Fake GPU 4GB", major=8, minor=6, total_memory=self._total,
                                     pci_domain_id=domain, pci_bus_id=bus, pci_device_id=dev)

    def synchronize(self, device=None):
        assert self._torch.capturing is None, "synchronize() during graph capture is an error in CUDA"
        self._note("synchronize")

    def _sleep(self, cycles):
        assert isinstance(cycles, int) and not isinstance(cycles, bool) and cycles > 0, cycles
        self._torch.clock.advance(cycles / 1e6)  # a 1 GHz SM clock

    def Event(self, enable_timing=False):
        return FakeEvent(self._torch, enable_timing)

    def Stream(self, device=None):
        return FakeStream(device)

    def current_stream(self, device=None):
        return getattr(self._local, "stream", None) or self._default

    @contextlib.contextmanager
    def stream(self, s):
        assert isinstance(s, FakeStream), s
        before = getattr(self._local, "stream", None)
        self._local.stream = s
        try:
            yield
        finally:
            self._local.stream = before

    @contextlib.contextmanager
    def graph(self, g):
        assert isinstance(g, FakeGraph) and not g.captured
        if not self._torch.graph_ok:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        self._note("graph")
        self._torch.capturing = g.ops
        try:
            yield
        finally:
            self._torch.capturing = None
            g.captured = True
