"""A tiny stand-in for the parts of `torch` / `torch.cuda` gpudiag's GPU code calls, with CUDA's timing semantics.

It lets the in-process GPU code paths of `launch`, `contention`, `pcie` (and the `contention` worker, run
in a thread) and fleet's per-rank figures execute end to end on a CPU-only machine, so a typo, a wrong
call order or a wrong data shape fails here and not first on a user's GPU. It implements exactly the
calls that code makes and checks how they are made (dtypes, devices, slices, events recorded and
completed before they are read, no synchronize during graph capture, copies only between host and
device). Every name it provides exists in the real torch (tests/conformance checks it against the CPU
build, whose `torch.cuda` Python API exists without CUDA).

Time is a fake clock shared by the host and the device, in milliseconds, that behaves as CUDA does where
gpudiag's measurements depend on it:
- the host pays for every call (HOST_LAUNCH_MS per launch, copy or event record);
- each stream runs its work in order: a kernel or copy starts when the host has enqueued it and the
  stream's previous work has finished, so launching costs host time while the device may sit idle;
- an event records the time the device reaches it: on an idle stream that is at once (the host's time
  when recording), behind queued work it is when that work ends;
- a pinned copy with non_blocking=True is queued; a pageable or blocking copy waits for the stream and
  returns when it is done; synchronize() waits for the device; elapsed_time() of an event the device has
  not reached yet raises, as cudaEventElapsedTime's "not ready" does.
Every figure it yields is made up from the constants below: tests assert what follows from them, never
the speed of real hardware (the `gpu`-marked tests on real hardware are that check).

    torch = FakeTorch(free_bytes=..., pinned_ok=True, graph_ok=True)
    monkeypatch.setitem(sys.modules, "torch", torch)

Builds: FakeTorch(cuda_build=None) is a CPU build; FakeTorch(available=False) a CUDA build on a
machine without a driver; FakeTorch(cuda_build=None, hip="6.2.41133", name="AMD Instinct MI300X") a
ROCm build, whose torch.cuda drives the AMD GPU.
"""

from __future__ import annotations

import contextlib
import threading
import types
import weakref
from typing import Callable, List, Optional, Tuple

_lock = threading.RLock()
MiB = 2 ** 20

# The fake GPU's costs in milliseconds (host side, then device side). Launching a tiny kernel costs the
# host more than the kernel takes on the device, as on real systems (5-20 us vs 2-3 us).
HOST_LAUNCH_MS = 0.008  # the host's time to enqueue a kernel, a copy or a graph replay
HOST_RECORD_MS = 0.002  # to enqueue an event record
HOST_SYNC_MS = 0.004  # a synchronize() round trip
ADD_KERNEL_MS = 0.003  # device time of x.add_(1) on a few elements
COPY_LATENCY_MS = 0.005  # per copy, on top of size / rate
PINNED_GBPS, PAGEABLE_GBPS = 12.0, 6.0  # 1e9 bytes/s
SM_CLOCK_HZ = 1e9  # torch.cuda._sleep(cycles) spins cycles at this clock
MATMUL_TFLOPS = 50.0  # 2 n^3 flops of an n x n matmul

NO_DRIVER = ("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a "
             "driver from http://www.nvidia.com/Download/index.aspx")


class OutOfMemoryError(RuntimeError):
    """torch.cuda.OutOfMemoryError (torch.OutOfMemoryError): a RuntimeError subclass, as in torch >= 1.13."""


class _Dtype:
    def __init__(self, name: str, itemsize: int):
        self._name, self.itemsize = name, itemsize

    def __repr__(self) -> str:
        return f"torch.{self._name}"


class FakeTorch(types.SimpleNamespace):
    """`torch`, with `.cuda`; build one per test."""

    def __init__(self, free_bytes=3_500 * MiB, total_bytes=4 * 2 ** 30, cuda_build="12.4", available=True,
                 devices=1, pinned_ok=True, graph_ok=True, context_bytes=300 * MiB, pci=(0, 1, 0),
                 hip=None, name="Fake GPU 4GB", capability=(8, 6), oom_over_bytes=None):
        super().__init__()
        self.__version__ = "2.99.0+fake"
        self.version = types.SimpleNamespace(cuda=cuda_build, hip=hip)
        self.uint8, self.float32 = _Dtype("uint8", 1), _Dtype("float32", 4)
        self.float16, self.bfloat16 = _Dtype("float16", 2), _Dtype("bfloat16", 2)
        self.OutOfMemoryError = OutOfMemoryError
        self.clock = _Clock()
        self.pinned_ok = pinned_ok
        self.graph_ok = graph_ok
        self.oom_over_bytes = oom_over_bytes
        self.capturing: Optional[list] = None  # the graph's op list while a CUDA graph is being captured
        self.calls: List[str] = []  # names of torch.cuda calls, in order (coarse: for "was it called" checks)
        self.cuda = _FakeCuda(self, free_bytes, total_bytes, available and (cuda_build or hip) is not None,
                              devices, context_bytes, pci, name, capability)

    def _tensor(self, shape, dtype, device, value=0.0):
        shape = tuple(shape)
        assert shape and all(isinstance(n, int) and n > 0 for n in shape), shape
        assert device in (None, "cpu", "cuda"), device
        dtype = dtype or self.float32
        on_gpu = device == "cuda"
        if on_gpu:
            self.cuda._need_device()
            nbytes = dtype.itemsize
            for n in shape:
                nbytes *= n
            if self.oom_over_bytes is not None and nbytes > self.oom_over_bytes:
                raise OutOfMemoryError(f"CUDA out of memory. Tried to allocate {nbytes / MiB:.2f} MiB. GPU 0 has a "
                                       f"total capacity of {self.cuda._total / 2 ** 30:.2f} GiB")
        t = FakeTensor(self, shape, dtype, on_gpu=on_gpu, pinned=False, value=value)
        if on_gpu:  # device memory is taken while the tensor lives, as mem_get_info shows on a GPU
            self.cuda._take(t._nbytes)
            weakref.finalize(t, self.cuda._take, -t._nbytes)
        return t

    def zeros(self, *size, dtype=None, device=None):
        return self._tensor(size, dtype, device)

    def empty(self, *size, dtype=None, device=None):
        return self._tensor(size, dtype, device)

    def ones(self, *size, dtype=None, device=None):
        return self._tensor(size, dtype, device, value=1.0)

    def randn(self, *size, dtype=None, device=None):
        return self._tensor(size, dtype, device, value=0.5)

    def mm(self, input, mat2, *, out=None):
        return input._matmul(mat2, out)

    def get_num_threads(self):
        return 2


class _Clock:
    """The fake's one time axis (ms): the host's time, and each stream's end of queued work."""

    def __init__(self):
        self.host = 0.0

    def host_call(self, cost: float) -> float:
        with _lock:
            self.host += cost
            return self.host

    def wait_until(self, t: float) -> float:
        """The host blocks until time t (a synchronize)."""
        with _lock:
            self.host = max(self.host, t)
            return self.host


class FakeTensor:
    def __init__(self, torch, shape, dtype, on_gpu, pinned, value=0.0):
        self.torch, self.shape, self.dtype = torch, tuple(shape), dtype
        self.on_gpu, self.pinned, self.value = on_gpu, pinned, value

    @property
    def _nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n

    def __getitem__(self, sl):
        assert len(self.shape) == 1, "the probes slice 1-D buffers only"
        assert isinstance(sl, slice) and sl.start is None and sl.step is None, sl
        assert 0 < sl.stop <= self.shape[0], (sl, self.shape)
        return FakeTensor(self.torch, (sl.stop,), self.dtype, self.on_gpu, self.pinned, self.value)

    def _kernel(self, device_ms: float, effect: Callable[[], None]) -> None:
        """Launch (or, during capture, record) one kernel of `device_ms` on the current stream."""
        torch = self.torch
        if torch.capturing is not None:
            torch.capturing.append((device_ms, effect))
            return
        torch.cuda._launch(device_ms)
        effect()

    def add_(self, other):
        assert self.on_gpu, "the probes launch kernels on device tensors"

        def effect():
            self.value += other
        self._kernel(ADD_KERNEL_MS, effect)
        return self

    def _matmul(self, other, out=None):
        assert self.on_gpu and other.on_gpu and self.dtype is other.dtype, (self, other)
        assert len(self.shape) == 2 and len(other.shape) == 2 and self.shape[1] == other.shape[0], (self, other)
        n, k, m = self.shape[0], self.shape[1], other.shape[1]
        if out is None:
            out = self.torch._tensor((n, m), self.dtype, "cuda")
        assert out.shape == (n, m) and out.on_gpu, out
        self._kernel(2.0 * n * k * m / (MATMUL_TFLOPS * 1e12) * 1e3, lambda: None)
        return out

    def __matmul__(self, other):
        return self._matmul(other)

    def pin_memory(self):
        assert not self.on_gpu, "pin_memory() is for host tensors"
        if not self.torch.pinned_ok:
            raise RuntimeError("CUDA error: out of memory (pinned)")
        return FakeTensor(self.torch, self.shape, self.dtype, False, True, self.value)

    def copy_(self, src, non_blocking=False):
        assert isinstance(src, FakeTensor) and src.shape == self.shape and src.dtype is self.dtype, (src, self)
        assert src.on_gpu != self.on_gpu, "the probes copy between host and device only"
        torch = self.torch
        assert torch.capturing is None, "no copies are captured in a graph"
        host = self if src.on_gpu else src
        queued = non_blocking and host.pinned  # only a pinned non_blocking copy leaves the host free
        gbps = PINNED_GBPS if host.pinned else PAGEABLE_GBPS
        end = torch.cuda._launch(COPY_LATENCY_MS + self._nbytes / (gbps * 1e9) * 1e3)
        if not queued:
            torch.clock.wait_until(end)  # a pageable or blocking copy returns when it is done
        self.value = src.value
        return self

    def __repr__(self):
        return f"FakeTensor({self.shape}, {self.dtype}, gpu={self.on_gpu}, pinned={self.pinned})"


class FakeEvent:
    def __init__(self, torch, enable_timing=False):
        assert enable_timing is True, "the probes time with events: enable_timing=True"
        self.torch, self.t = torch, None

    def record(self, stream=None):
        cuda = self.torch.cuda
        stream = stream if stream is not None else cuda.current_stream()
        assert isinstance(stream, FakeStream), stream
        assert self.torch.capturing is None, "the probes record events outside graph capture"
        with _lock:
            host = self.torch.clock.host_call(HOST_RECORD_MS)
            self.t = max(host, stream.busy_until)  # an idle stream: at once; else when its queued work ends

    def synchronize(self):
        assert self.t is not None, "synchronize before record"
        self.torch.clock.wait_until(self.t)

    def elapsed_time(self, end_event):
        assert isinstance(end_event, FakeEvent)
        assert self.t is not None and end_event.t is not None, "elapsed_time needs both events recorded"
        if self.torch.clock.host < max(self.t, end_event.t):
            raise RuntimeError("CUDA error: device not ready")  # the device has not reached an event yet
        return end_event.t - self.t


class FakeStream:
    def __init__(self, device=None, priority=0):
        self._device = device
        self.busy_until = 0.0  # when the work queued on this stream ends
        self._clock: _Clock = _Clock()  # replaced by the FakeTorch's clock when torch.cuda makes the stream

    def wait_stream(self, stream):
        assert isinstance(stream, FakeStream), stream
        with _lock:
            self.busy_until = max(self.busy_until, stream.busy_until)

    def wait_event(self, event):
        assert isinstance(event, FakeEvent) and event.t is not None, "wait_event on an unrecorded event"
        with _lock:
            self.busy_until = max(self.busy_until, event.t)

    def synchronize(self):
        with _lock:
            end = self.busy_until
        self._clock.wait_until(end)


class FakeGraph:
    def __init__(self):
        self.ops: List[Tuple[float, Callable[[], None]]] = []
        self.captured = False
        self.torch = None

    def replay(self):
        assert self.captured, "replay() before capture"
        cuda = self.torch.cuda
        with _lock:
            host = self.torch.clock.host_call(HOST_LAUNCH_MS)  # one launch for the whole graph
            stream = cuda.current_stream()
            t = max(host, stream.busy_until)
            for device_ms, effect in self.ops:
                t += device_ms
                effect()
            stream.busy_until = t


class _FakeDeviceProperties:
    """torch.cuda.get_device_properties(i): the attributes of torch._C._CudaDeviceProperties gpudiag reads."""

    def __init__(self, name, major, minor, total_memory, pci, gcn_arch):
        self.name, self.major, self.minor, self.total_memory = name, major, minor, total_memory
        self.multi_processor_count = 40
        self.uuid = "01234567-89ab-cdef-0123-456789abcdef"
        if pci is not None:  # torch builds before the PCI ids were exposed have none
            self.pci_domain_id, self.pci_bus_id, self.pci_device_id = pci
        if gcn_arch is not None:
            self.gcnArchName = gcn_arch


class _FakeCuda:
    def __init__(self, torch, free, total, available, devices, context_bytes, pci, name, capability):
        self._torch, self._free, self._total = torch, free, total
        self._available, self._devices, self._context_bytes, self._pci = available, devices, context_bytes, pci
        self._name, self._capability = name, capability
        self._current = 0
        self._default = self._new_stream(None)
        self._local = threading.local()
        self.CUDAGraph = self._new_graph
        self.OutOfMemoryError = OutOfMemoryError

    def _note(self, name):
        self._torch.calls.append(name)

    def _need_device(self):
        """What torch raises when CUDA work is asked of a build or machine without a device."""
        if self._torch.version.cuda is None and self._torch.version.hip is None:
            raise AssertionError("Torch not compiled with CUDA enabled")
        if not self._available:
            raise RuntimeError(NO_DRIVER)

    def _new_stream(self, device, priority=0):
        s = FakeStream(device, priority)
        s._clock = self._torch.clock
        return s

    def _new_graph(self):
        g = FakeGraph()
        g.torch = self._torch
        return g

    def _take(self, nbytes: int) -> None:
        with _lock:
            self._free -= nbytes

    def _launch(self, device_ms: float) -> float:
        """Enqueue `device_ms` of device work on the current stream; returns when it will end."""
        with _lock:
            host = self._torch.clock.host_call(HOST_LAUNCH_MS)
            stream = self.current_stream()
            stream.busy_until = max(host, stream.busy_until) + device_ms
            return stream.busy_until

    def is_available(self):
        return self._available

    def device_count(self):
        return self._devices if self._available else 0

    def init(self):
        self._need_device()
        self._note("init")
        with _lock:  # a new context takes device memory, as on a real GPU
            self._free -= self._context_bytes

    def set_device(self, device):
        self._need_device()
        assert 0 <= device < self._devices, device
        self._current = device

    def current_device(self):
        self._need_device()
        return self._current

    def mem_get_info(self, device=None):
        self._need_device()
        assert device in (None, 0, self._current), device
        return self._free, self._total

    def get_device_properties(self, device=None):
        """Device `device` (CUDA's numbering): `pci` and `name` given as lists are per device; a single PCI
        (domain, bus, device) tuple puts device i on bus + i."""
        self._need_device()
        i = self._current if device is None else device
        assert 0 <= i < self._devices, device
        if isinstance(self._pci, list):
            pci = self._pci[i]
        else:
            pci = None if self._pci is None else (self._pci[0], self._pci[1] + i, self._pci[2])
        name = self._name[i] if isinstance(self._name, list) else self._name
        gcn = "gfx942:sramecc+:xnack-" if self._torch.version.hip else None
        return _FakeDeviceProperties(name, self._capability[0], self._capability[1], self._total, pci, gcn)

    def get_device_name(self, device=None):
        return self.get_device_properties(device).name

    def is_bf16_supported(self, including_emulation=True):
        """As torch >= 2.3: native on compute capability 8.0+ (and every ROCm GPU); emulated on older NVIDIA
        GPUs, which count only with including_emulation=True."""
        if not self._available:
            return False
        if self._torch.version.hip:
            return True
        return self._capability[0] >= 8 or including_emulation

    def synchronize(self, device=None):
        assert self._torch.capturing is None, "synchronize() during graph capture is an error in CUDA"
        self._need_device()
        self._note("synchronize")
        with _lock:
            host = self._torch.clock.host_call(HOST_SYNC_MS)
            streams = [self._default] + list(getattr(self, "_all_streams", []))
            self._torch.clock.wait_until(max([host] + [s.busy_until for s in streams]))

    def _sleep(self, cycles):
        assert isinstance(cycles, int) and not isinstance(cycles, bool) and cycles > 0, cycles
        assert self._torch.capturing is None, "the probes do not capture spin kernels"
        self._launch(cycles / SM_CLOCK_HZ * 1e3)

    def Event(self, enable_timing=False):
        return FakeEvent(self._torch, enable_timing)

    def Stream(self, device=None, priority=0):
        s = self._new_stream(device, priority)
        with _lock:
            self.__dict__.setdefault("_all_streams", []).append(s)
        return s

    def current_stream(self, device=None):
        return getattr(self._local, "stream", None) or self._default

    @contextlib.contextmanager
    def stream(self, stream):
        assert isinstance(stream, FakeStream), stream
        before = getattr(self._local, "stream", None)
        self._local.stream = stream
        try:
            yield
        finally:
            self._local.stream = before

    @contextlib.contextmanager
    def graph(self, cuda_graph):
        assert isinstance(cuda_graph, FakeGraph) and not cuda_graph.captured
        if not self._torch.graph_ok:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        self._note("graph")
        self._torch.capturing = cuda_graph.ops
        try:
            yield
        finally:
            self._torch.capturing = None
            cuda_graph.captured = True



def simulate_time_slicing(workers: int, kernels: int, kernel_ms: float, slice_ms: float, switch_ms: float,
                          resumes_work: bool) -> Tuple[float, List[float]]:
    """(wall ms, per-kernel event times in ms) of `workers` processes, each running `kernels` kernels of
    kernel_ms back to back, on a GPU that time-slices their contexts round-robin (slice_ms each, switch_ms
    per switch; a context with no work left is not scheduled).

    Events are stamped by the GPU in the context's stream: a kernel's start event fires when the previous
    kernel of its process ends, so its time includes any wait while switched out. resumes_work=True is a
    kernel of fixed work (a matmul), which resumes what it had left; False is torch.cuda._sleep, which spins
    until its clock (the SM's, running all the while) has advanced kernel_ms since it began, and so ends as
    soon as it is switched back in when the wait was long enough.
    """
    left = [[kernel_ms] * kernels for _ in range(workers)]
    began: List[List[Optional[float]]] = [[None] * kernels for _ in range(workers)]
    nxt = [0] * workers
    last_end: List[Optional[float]] = [None] * workers
    elapsed: List[float] = []
    t, p = 0.0, 0
    while True:
        if last_end[p] is None:  # the first start event fires when the context first runs
            last_end[p] = t
        slice_end = t + slice_ms
        while t < slice_end and nxt[p] < kernels:
            k = nxt[p]
            if began[p][k] is None:
                began[p][k] = t
            if resumes_work:
                run = min(left[p][k], slice_end - t)
                t += run
                left[p][k] -= run
                done = left[p][k] <= 1e-12
            else:
                deadline = began[p][k] + kernel_ms
                t = max(t, min(deadline, slice_end))
                done = t >= deadline - 1e-12
            if done:
                elapsed.append(t - last_end[p])
                last_end[p] = t
                nxt[p] += 1
        waiting = [q for q in range(1, workers + 1) if nxt[(p + q) % workers] < kernels and (p + q) % workers != p]
        if not waiting:
            if nxt[p] < kernels:
                continue  # alone on the GPU: no switch
            return t, elapsed
        t += switch_ms
        p = (p + waiting[0]) % workers
