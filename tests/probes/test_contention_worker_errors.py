"""What the `contention` worker reports to its parent: the failures torch and CUDA really raise, as words on
the result queue; a bug propagates (the parent then sees the worker exit non-zero)."""

import queue
import sys
import threading
import types

import pytest

from gpudiag.probes.cuda.device import contention_worker
from tests.fake_mp import ThreadContext


def _torch_whose_init_raises(exc):
    def init():
        raise exc

    return types.SimpleNamespace(cuda=types.SimpleNamespace(init=init))


def _run(monkeypatch, exc):
    monkeypatch.setitem(sys.modules, "torch", _torch_whose_init_raises(exc))
    ready_q, result_q = queue.Queue(), queue.Queue()
    contention_worker(0, 1000, 5, ready_q, threading.Event(), result_q, 1.0)
    assert ready_q.empty()
    return result_q.get_nowait()


@pytest.mark.parametrize("exc", [
    AssertionError("Torch not compiled with CUDA enabled"),  # a CPU-only torch build
    RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable"),
    OSError("libcudart.so.12: cannot open shared object file"),
    ImportError("cannot import name '_C' from partially initialized module 'torch'"),
])
def test_torch_and_cuda_failures_are_reported_to_the_parent(monkeypatch, exc):
    assert _run(monkeypatch, exc) == ("error", 0, f"{type(exc).__name__}: {exc}")


def test_a_bug_in_the_worker_is_not_turned_into_a_reason(monkeypatch):
    with pytest.raises(TypeError, match="a bug"):
        _run(monkeypatch, TypeError("a bug"))


def test_the_parent_names_a_worker_that_died_of_a_bug(monkeypatch):
    import multiprocessing
    import time

    from gpudiag.probes.cuda import contention

    monkeypatch.setattr(multiprocessing, "get_context", lambda method: ThreadContext)
    monkeypatch.setitem(sys.modules, "torch", _torch_whose_init_raises(TypeError("a bug")))
    parent_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(mem_get_info=lambda i: (8 * 2 ** 30, 16 * 2 ** 30),
                                                                    synchronize=lambda: None))
    with pytest.raises(RuntimeError, match=r"worker gpudiag-contention-\d exited with code 1"):
        contention._run_processes(parent_torch, 1000, 5, 2, time.monotonic() + 30)
