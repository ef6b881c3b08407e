"""The one seam to NVML. Every call is guarded: NotSupported (and friends) become NA, not failures.

GeForce cards and WSL answer NotSupported a lot; that is data. A function name the pynvml binding does
not have is not data but a bug (or a binding older than pyproject.toml allows): it raises
NvmlMissingFunction, so a misspelt name cannot pass as "n/a" in every report. Tests pass a fake module with the
same names as `pynvml` (see tests/fakes.py), never patching pynvml inside individual tests.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

NA = "n/a"  # a value NVML does not give on this GPU/driver/OS

# nvmlDriverModel_t: WDM is the old name of TCC; MCDM appeared with the CUDA 12.5 header (R555).
DRIVER_MODELS = {0: "WDDM", 1: "TCC", 2: "MCDM"}

# nvmlComputeMode_t (EXCLUSIVE_THREAD support was removed from the driver, the value still exists).
COMPUTE_MODES = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}

# nvmlClocksEventReason* bits (the same bits as the deprecated nvmlClocksThrottleReason*).
CLOCK_EVENT_REASONS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
# Reasons that mean the GPU runs slower than it could because of heat or power, not by choice.
THROTTLING_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
                                "hw_thermal_slowdown", "hw_power_brake_slowdown"})

NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 0, 1


def decode_clock_event_reasons(raw: Any) -> List[str]:
    """Names of the bits set in a clock-event ("throttle") reason mask; unknown bits as hex."""
    if not isinstance(raw, int):
        return []
    names = [name for bit, name in CLOCK_EVENT_REASONS if raw & bit]
    known = 0
    for bit, _ in CLOCK_EVENT_REASONS:
        known |= bit
    rest = raw & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return names


def cuda_version_string(value: Any) -> Any:
    """NVML's CUDA driver version integer (12040) as "12.4"; NA stays NA."""
    if not isinstance(value, int) or value <= 0:
        return NA
    return f"{value // 1000}.{(value % 1000) // 10}"


class NvmlUnavailable(Exception):
    """NVML could not be loaded or initialised; the message says why in words."""


class NvmlError(Exception):
    """An NVML call answered with one of pynvml's errors (`.name` is its class name, str() is
    "NVMLError_GpuIsLost: GPU is lost"): the seam's own error, so callers catch this, not Exception."""

    def __init__(self, exc: BaseException):
        self.name = type(exc).__name__
        super().__init__(f"{self.name}: {exc}")


class NvmlMissingFunction(AttributeError):
    """The pynvml binding has no function of that name. Never an "n/a": the name is misspelt (a bug in
    gpudiag), or the installed nvidia-ml-py is older than pyproject.toml's floor. An old *driver* is another
    matter: the binding has the function, and calling it answers NVMLError_FunctionNotFound (an "n/a")."""


def _checked(f: Callable, *args: Any) -> Any:
    """f(*args), with pynvml's errors re-raised as NvmlError; any other exception (a bug) propagates.

    pynvml's errors are classes it generates at import time (NVMLError_<Name>, subclasses of the
    loaded module's NVMLError) plus NVMLLibraryMismatchError, which subclasses Exception only: no one
    class covers them all, so they are told apart by the "NVML" their class names start with.
    """
    try:
        return f(*args)
    except Exception as exc:  # the seam's one broad catch: pynvml's error classes are generated, see above
        if type(exc).__name__.startswith("NVML"):
            raise NvmlError(exc) from exc
        raise


def _binding_name(lib: Any) -> str:
    """"pynvml (nvidia-ml-py 13.615.71)" for the real module, the class name for a test's fake."""
    if getattr(lib, "__name__", None) == "pynvml":
        from importlib import metadata

        try:
            return f"pynvml (nvidia-ml-py {metadata.version('nvidia-ml-py')})"
        except metadata.PackageNotFoundError:  # a pynvml from elsewhere (e.g. the old `pynvml` package)
            return "pynvml"
    return type(lib).__name__


class Nvml:
    """The guarded NVML wrapper a session yields: calls answer "n/a" (or a default) instead of raising
    where the GPU, driver or binding cannot say, so one unsupported field never costs the rest.

    `errors` keeps, per function name, the NVML error of its last failed call ("NVMLError_NotSupported",
    "NVMLError_FunctionNotFound" for a driver older than the function...), so a caller or a test can
    tell why a value is "n/a".
    """

    def __init__(self, lib: Any):
        self.lib = lib
        self.errors: Dict[str, str] = {}

    def function(self, fn: str) -> Callable:
        """The binding's function `fn`; NvmlMissingFunction when the binding has none of that name."""
        f = getattr(self.lib, fn, None)
        if not callable(f):
            raise NvmlMissingFunction(f"{_binding_name(self.lib)} has no function {fn!r}: a misspelt name, or "
                                      "an nvidia-ml-py older than gpudiag requires")
        return f

    def call(self, fn: str, *args: Any, default: Any = NA) -> Any:
        """lib.<fn>(*args), or `default` when NVML says it cannot answer (NotSupported, NoPermission, GpuIsLost,
        FunctionNotFound from a driver older than the function...). A name the binding lacks raises
        NvmlMissingFunction: that is a bug, not a value NVML does not give."""
        f = self.function(fn)
        try:
            value = _checked(f, *args)
        except NvmlError as exc:  # the value is not available here; kept in `errors` for the reason
            self.errors[fn] = exc.name
            return default
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value

    def first(self, fns: Sequence[str], *args: Any, default: Any = NA) -> Any:
        """The first of several API spellings that answers (new name, then deprecated name). A spelling this
        binding lacks is skipped (it is newer or older than the binding); none of them in the binding raises
        NvmlMissingFunction."""
        known = [fn for fn in fns if callable(getattr(self.lib, fn, None))]
        if not known:
            self.function(fns[0])  # raises, naming the first spelling
        for fn in known:
            value = self.call(fn, *args, default=NA)
            if value is not NA:
                return value
        return default

    def device_count(self) -> int:
        """How many GPUs NVML sees (all of them, CUDA_VISIBLE_DEVICES does not apply); 0 if it cannot say."""
        n = self.call("nvmlDeviceGetCount", default=0)
        return n if isinstance(n, int) else 0

    def handle(self, index: int) -> Any:
        """The NVML handle of GPU `index` in NVML's (PCI) order; raises NvmlError (e.g. GpuIsLost),
        unlike call(), because without a handle none of that GPU's values can be read."""
        return _checked(self.function("nvmlDeviceGetHandleByIndex"), index)

    # ---- calls with several spellings across driver and binding versions, decoded once here

    def driver_model(self, h: Any) -> Any:
        """[current, pending] as names (WDDM/TCC/MCDM), or NA (Linux, macOS, old drivers).

        `_v2` knows MCDM (R555+); pynvml 12.x's unversioned wrapper calls the old C symbol, 13.x's
        calls `_v2`, and `_v1` is the old symbol under its explicit name in 13.x.
        """
        pair = self.first(["nvmlDeviceGetDriverModel_v2", "nvmlDeviceGetDriverModel",
                           "nvmlDeviceGetDriverModel_v1"], h)
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            return NA
        return [DRIVER_MODELS.get(v, f"unknown({v})") if isinstance(v, int) else NA for v in pair]

    def clock_event_reasons(self, h: Any) -> Any:
        """The raw reason mask: new API name first, then the deprecated Throttle name (< R535)."""
        return self.first(["nvmlDeviceGetCurrentClocksEventReasons",
                           "nvmlDeviceGetCurrentClocksThrottleReasons"], h)

    def processes(self, h: Any, kind: str) -> Any:
        """Running processes of `kind` ("compute", "graphics" or "mps") as [{pid, used_memory_bytes}].

        The unversioned pynvml wrappers call `_v3` and raise a library-mismatch error on drivers
        without it, so `_v2` (nvidia-ml-py 13.x only) is the fallback. usedGpuMemory is None under WDDM
        (Windows manages the memory, NVML cannot attribute it).
        """
        procs = self.first(_PROCESS_FUNCTIONS[kind], h)
        if procs is NA or procs is None:
            return NA
        out = []
        for p in procs:
            pid = getattr(p, "pid", None)
            used = getattr(p, "usedGpuMemory", None)
            out.append({"pid": pid if isinstance(pid, int) else None,
                        "used_memory_bytes": used if isinstance(used, int) and used >= 0 else None})
        return out

    def process_name(self, pid: int) -> Optional[str]:
        """NVML's name for a pid (often a full path), or None when NVML cannot say."""
        name = self.call("nvmlSystemGetProcessName", pid, default=None)
        return name if isinstance(name, str) and name.strip() else None


# The spellings of the process lists, newest first: written out (not built from a stem) so that the
# conformance tests (tests/conformance) find every name the code may call.
_PROCESS_FUNCTIONS = {
    "compute": ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v3",
                "nvmlDeviceGetComputeRunningProcesses_v2"),
    "graphics": ("nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v3",
                 "nvmlDeviceGetGraphicsRunningProcesses_v2"),
    "mps": ("nvmlDeviceGetMPSComputeRunningProcesses", "nvmlDeviceGetMPSComputeRunningProcesses_v3",
            "nvmlDeviceGetMPSComputeRunningProcesses_v2"),
}


# ----------------------------------------------------------------- CUDA device <-> NVML device
# CUDA numbers devices fastest-first and after CUDA_VISIBLE_DEVICES; NVML by PCI order. The PCI bus id is
# the one name both agree on.

def pci_bus_id(props: Any) -> Optional[str]:
    """"0000:01:00.0" from torch device properties (pci_domain_id/bus_id/device_id, torch >= 2.x)."""
    parts = [getattr(props, k, None) for k in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        return None
    domain, bus, device = parts
    return f"{domain:04x}:{bus:02x}:{device:02x}.0"


def cuda_device_handle(n: Nvml, bus_id: Optional[str], index: int,
                       env: Mapping[str, str]) -> Tuple[Any, str]:
    """(NVML handle or None, how it was matched or why not) for CUDA device `index` as torch numbers it.

    By PCI bus id when torch tells it: a bus id NVML does not know is not an NVIDIA GPU NVML can read
    (an AMD GPU under a ROCm build, a GPU hidden from NVML), and is never replaced by a guess by index.
    Without a bus id, by index, which is only the same GPU when CUDA and NVML count alike: no
    CUDA_VISIBLE_DEVICES remapping, and one GPU or PCI-bus ordering.
    """
    if bus_id:
        h = n.call("nvmlDeviceGetHandleByPciBusId", bus_id, default=None)
        if h is not None and h is not NA:
            return h, "pci_bus_id"
        why = n.errors.get("nvmlDeviceGetHandleByPciBusId", "no answer")
        if "FunctionNotFound" in why:
            return None, "this NVIDIA driver cannot look a GPU up by PCI bus id (NVMLError_FunctionNotFound)"
        return None, (f"NVML knows no GPU at the CUDA device's PCI bus id ({why}): not an NVIDIA GPU NVML can "
                      "read, so none of its facts are reported")
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        return None, ("cannot match the CUDA device to NVML: torch gives no PCI bus id and "
                      "CUDA_VISIBLE_DEVICES renumbers devices")
    if n.device_count() != 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return None, ("cannot match the CUDA device to NVML: torch gives no PCI bus id and with several "
                      "GPUs CUDA orders them fastest-first (set CUDA_DEVICE_ORDER=PCI_BUS_ID)")
    try:
        return n.handle(index), "index"
    except NvmlError as exc:
        return None, f"NVML has no GPU {index}: {exc.name}"


def nvml_index_of(n: Nvml, bus_id: Optional[str]) -> Optional[int]:
    """NVML's index of the GPU at PCI bus id `bus_id` (as pci_bus_id() spells it), or None when NVML does
    not know it: how a CUDA device is matched to NVML's list when CUDA orders GPUs fastest-first."""
    if not bus_id:
        return None
    h = n.call("nvmlDeviceGetHandleByPciBusId", bus_id, default=None)
    if h is None or h is NA:
        return None
    index = n.call("nvmlDeviceGetIndex", h, default=None)
    return index if isinstance(index, int) and not isinstance(index, bool) else None


@contextlib.contextmanager
def session(lib: Any = None) -> Iterator[Nvml]:
    """Init NVML, yield the guarded wrapper, always shut down. Raises NvmlUnavailable with a reason."""
    if lib is None:
        try:
            import pynvml  # the nvidia-ml-py distribution
        except ImportError:
            raise NvmlUnavailable("the pynvml module is missing: `pip install nvidia-ml-py`") from None
        lib = pynvml
    try:
        _checked(lib.nvmlInit)
    except NvmlError as exc:
        name = exc.name
        if "LibraryNotFound" in name:
            raise NvmlUnavailable("NVML library (libnvidia-ml.so.1 / nvml.dll) not found: "
                                  "no NVIDIA driver is installed") from None
        if "DriverNotLoaded" in name:
            raise NvmlUnavailable("the NVIDIA kernel driver is not loaded (is the GPU visible to this OS?)") from None
        if "LibRmVersionMismatch" in name:
            raise NvmlUnavailable("the NVML library and the loaded NVIDIA kernel module have different versions "
                                  "(driver updated without a reboot?): reboot, or reload the nvidia modules") from None
        if "NoPermission" in name:
            raise NvmlUnavailable("NVML was denied access to the GPU device files (/dev/nvidia*): "
                                  "check that your user may open them (e.g. the video group)") from None
        raise NvmlUnavailable(f"NVML failed to initialise: {exc}") from None
    try:
        yield Nvml(lib)
    finally:
        with contextlib.suppress(NvmlError):  # e.g. Uninitialized: a failed shutdown must not mask the result
            _checked(lib.nvmlShutdown)


# ---------------------------------------------------------------- sampling over time (gpudiag watch)
# Module functions over a session's Nvml, so that `gpudiag watch` reads NVML through this seam too.

NVML_GPU_UTILIZATION_SAMPLES = 1
NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES = 0, 1
# nvmlValueType_t -> the c_nvmlValue_t union member holding the value.
_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def utilization_samples(n: Nvml, h: Any, last_seen_us: int) -> Any:
    """The driver's ring buffer of GPU-utilisation samples newer than last_seen_us.

    Returns [(timestamp_us, percent)] oldest first; [] when the buffer has nothing new (NVML
    answers NOT_FOUND when an idle GPU's buffer runs dry); NA where the GPU keeps no buffer.
    The timestamps are the driver's CPU clock in microseconds: compare them with each other only.
    """
    f = n.function("nvmlDeviceGetSamples")
    try:
        vtype, samples = _checked(f, h, NVML_GPU_UTILIZATION_SAMPLES, int(last_seen_us))
    except NvmlError as exc:
        return [] if "NotFound" in exc.name else NA
    field = _VALUE_FIELDS.get(vtype, "uiVal")
    out = []
    for s in samples or []:
        ts = getattr(s, "timeStamp", None)
        value = getattr(getattr(s, "sampleValue", None), field, None)
        if isinstance(ts, int) and isinstance(value, (int, float)):
            out.append((ts, float(value)))
    out.sort()
    return out


def pcie_throughput_kbps(n: Nvml, h: Any) -> Any:
    """{tx, rx} in KB/s over NVML's 20 ms window (each call takes that long), or NA."""
    tx = n.call("nvmlDeviceGetPcieThroughput", h, NVML_PCIE_UTIL_TX_BYTES)
    rx = n.call("nvmlDeviceGetPcieThroughput", h, NVML_PCIE_UTIL_RX_BYTES)
    if not isinstance(tx, int) and not isinstance(rx, int):
        return NA
    return {"tx": tx if isinstance(tx, int) else None, "rx": rx if isinstance(rx, int) else None}


def utilization_rates(n: Nvml, h: Any) -> Any:
    """{gpu, memory} percent over the driver's last sample period (1/6 s to 1 s), or NA."""
    u = n.call("nvmlDeviceGetUtilizationRates", h)
    if u is NA or u is None:
        return NA
    gpu, mem = getattr(u, "gpu", None), getattr(u, "memory", None)
    return {"gpu": gpu if isinstance(gpu, (int, float)) else None,
            "memory": mem if isinstance(mem, (int, float)) else None}


def memory_used_bytes(n: Nvml, h: Any) -> Any:
    """(used, total) device memory in bytes, or NA."""
    m = n.call("nvmlDeviceGetMemoryInfo", h)
    used, total = getattr(m, "used", None), getattr(m, "total", None)
    if not isinstance(used, int) or not isinstance(total, int):
        return NA
    return (used, total)
