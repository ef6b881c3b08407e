"""The one seam to NVML. Every call is guarded: NotSupported (and friends) become NA, not failures.

GeForce cards and WSL answer NotSupported a lot; that is data. Tests pass a fake module with the
same names as `pynvml` (see tests/fakes.py), never patching pynvml inside individual tests.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

NA = "n/a"  # a value NVML does not give on this GPU/driver/OS


class NvmlUnavailable(Exception):
    """NVML could not be loaded or initialised; the message says why in words."""


# NVML errors that mean "this value is not available here", not "something broke".
_NA_ERRORS = ("NotSupported", "FunctionNotFound", "NoPermission", "NotFound", "NoData",
              "InsufficientSize", "LibraryMismatch", "GpuIsLost", "Unknown", "ArgumentVersionMismatch")


class Nvml:
    def __init__(self, lib: Any):
        self.lib = lib

    def call(self, fn: str, *args: Any, default: Any = NA) -> Any:
        """lib.<fn>(*args), or `default` when the function is missing or NVML says it cannot answer."""
        f: Optional[Callable] = getattr(self.lib, fn, None)
        if f is None:
            return default
        try:
            value = f(*args)
        except Exception as exc:  # pynvml raises dynamically created NVMLError_* subclasses
            name = type(exc).__name__
            if name.startswith("NVMLError") or any(n in name for n in _NA_ERRORS):
                return default
            raise
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value

    def first(self, fns, *args: Any, default: Any = NA) -> Any:
        """The first of several API spellings that answers (new name, then deprecated name)."""
        for fn in fns:
            value = self.call(fn, *args, default=NA)
            if value is not NA:
                return value
        return default

    def device_count(self) -> int:
        n = self.call("nvmlDeviceGetCount", default=0)
        return n if isinstance(n, int) else 0

    def handle(self, index: int) -> Any:
        return self.lib.nvmlDeviceGetHandleByIndex(index)


@contextlib.contextmanager
def session(lib: Any = None) -> Iterator[Nvml]:
    """Init NVML, yield the guarded wrapper, always shut down. Raises NvmlUnavailable with a reason."""
    if lib is None:
        try:
            import pynvml as lib  # the nvidia-ml-py distribution
        except ImportError:
            raise NvmlUnavailable("the pynvml module is missing: `pip install nvidia-ml-py`") from None
    try:
        lib.nvmlInit()
    except Exception as exc:
        name = type(exc).__name__
        if "LibraryNotFound" in name:
            raise NvmlUnavailable("NVML library (libnvidia-ml.so.1 / nvml.dll) not found: "
                                  "no NVIDIA driver is installed") from None
        if "DriverNotLoaded" in name:
            raise NvmlUnavailable("the NVIDIA kernel driver is not loaded (is the GPU visible to this OS?)") from None
        raise NvmlUnavailable(f"NVML failed to initialise: {name}: {exc}") from None
    try:
        yield Nvml(lib)
    finally:
        with contextlib.suppress(Exception):
            lib.nvmlShutdown()
