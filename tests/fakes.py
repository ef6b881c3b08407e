"""Fake hardware at gpudiag's seams, built from real captures in tests/data/ (never invented).

FakeNvml: a pynvml-like object (the same function names, the same NVMLError_* class names).
Pass it where gpudiag takes an NVML library:

    from gpudiag.backends import nvml
    from tests.fakes import FakeNvml
    with nvml.session(FakeNvml.gtx1650_desktop()) as n:
        data = driver.collect(n, host="linux", root=str(tmp_path), procs={})

Constructors (each parses the `nvidia-smi -q` capture named in its docstring):
    FakeNvml.gtx1650_desktop(**kw)  Linux laptop, GTX 1650 Mobile, driver 575.57.08 (the kernel module
                                    flavour comes from a fake /proc tree, not from NVML); Xorg,
                                    gnome-shell, VS Code (code) and Firefox as graphics processes;
                                    PCIe Gen1 of 3, x8 of x16 at idle; persistence off
    FakeNvml.h100(**kw)             Linux HPC node, H100 80GB HBM3 SXM, driver 545.23.08, persistence on,
                                    MIG disabled, ECC on with zero errors, Gen5 x16, no processes
    FakeNvml.windows_wddm(**kw)     Windows, GTX 1660 SUPER, driver 462.31 (pre-R535: only the deprecated
                                    *ClocksThrottleReasons, no *_v2 driver model), WDDM, display active,
                                    C+G desktop processes (explorer.exe, SearchHost.exe, one NVML cannot
                                    name, Chrome, VS Code), memory per process None (WDDM)
    FakeNvml.wsl2(**kw)             WSL2, RTX 4070 Laptop, Windows driver 566.36, WDDM, no processes
    FakeNvml.no_driver(error="LibraryNotFound")  nvmlInit raises NVMLError_<error>
                                    (also "DriverNotLoaded", "LibRmVersionMismatch", "NoPermission")
    FakeNvml.from_smi_q(text, processes=None, **kw)  any other capture

Keyword overrides (GPU 0; any FakeGpu field), e.g.:
    throttle_reasons=["sw_thermal_slowdown"] (names) or an int mask; pcie_gen_current=3;
    pcie_width_current=16; temperature_c=93; persistence_mode=0; display_active=1; compute_mode=3;
    mig_mode=(1, 1); memory_free_bytes=...; utilization_gpu=97;
    processes=[FakeProcess(pid, name, kind="C"|"G"|"C+G", used_memory_bytes)] or dicts/tuples of the same;
    ecc_errors={"volatile_uncorrected": 2}; remapped_rows=(0, 1, 1, 0)
  Library-level: driver_version="...", cuda_version=12040, missing={"nvmlDeviceGetMigMode", ...}
  (missing functions raise NVMLError_FunctionNotFound, as an older driver does).
A value of NOT_SUPPORTED makes that call raise NVMLError_NotSupported. The NVML version string is
derived ("<CUDA major>.<driver>"), as nvidia-smi -q does not print it; everything else is recorded. More GPUs: FakeNvml(gpus=[...])
or `fake.gpus.append(FakeGpu(...))`. `fake.calls` lists every function called, in order.

Process names: collect() asks NVML first, then the {pid: name} snapshot it is given; pass
procs={} (or your own mapping) with a fake so the real process list of the test machine is never used.

FakeWinreg: a winreg-like object (HKEY_LOCAL_MACHINE, OpenKey, QueryValueEx, CloseKey):
    FakeWinreg({"HwSchMode": 2, "TdrDelay": 60}, denied=("TdrLevel",), key_missing=False)
    FakeWinreg.from_reg_query(text)   from `reg query ...GraphicsDrivers [/v Name]` output
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pynvml

from gpudiag.backends.nvml import CLOCK_EVENT_REASONS



def encode_clock_event_reasons(names: Iterable[str]) -> int:
    """The NVML mask for clock event reason names (the inverse of backends.nvml.decode_clock_event_reasons), so a
    fake GPU is written with readable names; a misspelt name is refused."""
    by_name = {name: bit for bit, name in CLOCK_EVENT_REASONS}
    raw = 0
    for name in names:
        if name not in by_name:
            raise ValueError(f"unknown clock event reason {name!r}; known: {', '.join(by_name)}")
        raw |= by_name[name]
    return raw


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
MiB = 2 ** 20


def data_path(name: str) -> str:
    return os.path.join(DATA, name)


def read_data(name: str) -> str:
    with open(data_path(name), encoding="utf-8") as fh:
        return fh.read()


def capture_sections(text: str) -> Dict[str, str]:
    """A capture split at its `## (A) ...` headers: {"A": body, "B": body, ...}."""
    out: Dict[str, str] = {}
    current = None
    for line in text.splitlines(keepends=True):
        m = re.match(r"^## \(([A-Z])'?\)", line)
        if m:
            current = m.group(1) if m.group(1) not in out else m.group(1) + "'"
            out[current] = ""
            continue
        if current is not None:
            out[current] += line
    return out


# ------------------------------------------------------------------ pynvml's errors, the real classes

# pynvml.NVMLError(code) builds the subclass pynvml itself raises for that return code, so a fake fails
# exactly as the binding does (the classes are generated at import; nvidia-ml-py imports without a driver).
NVMLError = pynvml.NVMLError
NVMLError_Uninitialized = type(pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED))
NVMLError_InvalidArgument = type(pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT))
NVMLError_NotSupported = type(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED))
NVMLError_NoPermission = type(pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION))
NVMLError_NotFound = type(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND))
NVMLError_DriverNotLoaded = type(pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
NVMLError_LibraryNotFound = type(pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
NVMLError_FunctionNotFound = type(pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND))
NVMLError_LibRmVersionMismatch = type(pynvml.NVMLError(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH))
NVMLError_GpuIsLost = type(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST))
_ERRORS = {c.__name__[len("NVMLError_"):]: c for c in (
    NVMLError_Uninitialized, NVMLError_InvalidArgument, NVMLError_NotSupported, NVMLError_NoPermission,
    NVMLError_NotFound, NVMLError_DriverNotLoaded, NVMLError_LibraryNotFound, NVMLError_FunctionNotFound,
    NVMLError_LibRmVersionMismatch, NVMLError_GpuIsLost)}


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NOT_SUPPORTED = _Marker("NOT_SUPPORTED")  # the call raises NVMLError_NotSupported


# ------------------------------------------------------------------ recorded values

@dataclass
class FakeProcess:
    pid: int
    name: Optional[str]  # what nvmlSystemGetProcessName returns; None: it raises NoPermission
    kind: str = "G"  # "C", "G" or "C+G" as nvidia-smi's Type column
    used_memory_bytes: Optional[int] = None  # None under WDDM


@dataclass
class FakeGpu:
    name: Any
    uuid: Any = NOT_SUPPORTED
    serial: Any = NOT_SUPPORTED
    memory_total_bytes: Any = NOT_SUPPORTED
    memory_used_bytes: Any = NOT_SUPPORTED  # nvidia-smi's "Used" (the v2 meaning: without reserved)
    memory_free_bytes: Any = NOT_SUPPORTED
    memory_reserved_bytes: Any = 0
    persistence_mode: Any = NOT_SUPPORTED  # 1/0
    display_mode: Any = NOT_SUPPORTED
    display_active: Any = NOT_SUPPORTED
    mig_mode: Any = NOT_SUPPORTED  # (current, pending)
    driver_model: Any = NOT_SUPPORTED  # (current, pending): 0 WDDM, 1 TCC, 2 MCDM
    compute_mode: Any = 0
    pcie_gen_current: Any = NOT_SUPPORTED
    pcie_gen_max: Any = NOT_SUPPORTED  # device and system
    pcie_gen_max_card: Any = NOT_SUPPORTED  # device alone
    pcie_width_current: Any = NOT_SUPPORTED
    pcie_width_max: Any = NOT_SUPPORTED
    throttle_reasons: Any = NOT_SUPPORTED  # mask, or a list of reason names
    temperature_c: Any = NOT_SUPPORTED
    power_draw_w: Any = NOT_SUPPORTED
    power_limit_w: Any = NOT_SUPPORTED
    utilization_gpu: Any = NOT_SUPPORTED
    utilization_memory: Any = NOT_SUPPORTED
    ecc_mode: Any = NOT_SUPPORTED  # (current, pending)
    ecc_errors: Any = NOT_SUPPORTED  # {"volatile_corrected": n, "volatile_uncorrected": n, "aggregate_...": n}
    retired_pages_pending: Any = NOT_SUPPORTED  # 0/1
    remapped_rows: Any = NOT_SUPPORTED  # (correctable, uncorrectable, pending, failure)
    pci_bus_id: Any = NOT_SUPPORTED  # "00000000:19:00.0", as nvidia-smi -q and NVML spell it
    clocks_mhz: Any = NOT_SUPPORTED  # {0: graphics, 1: SM, 2: memory} now (nvmlClockType_t)
    max_clocks_mhz: Any = NOT_SUPPORTED  # the same, at most
    utilization_samples: Any = NOT_SUPPORTED  # [(timestamp_us, percent)] of the driver's ring buffer
    pcie_throughput_kbps: Any = NOT_SUPPORTED  # (tx, rx) KB/s
    processes: List[FakeProcess] = field(default_factory=list)


class _Handle:
    def __init__(self, index: int):
        self.index = index

    def __repr__(self) -> str:
        return f"<FakeHandle {self.index}>"


class _Struct:
    def __init__(self, **kw: Any):
        self.__dict__.update(kw)


# ------------------------------------------------------------------ nvidia-smi -q parsing

_KV = re.compile(r"^(\s*)(\S.*?)\s+:\s?(.*?)\s*$")


def parse_smi_q(text: str) -> Dict[str, Any]:
    """`nvidia-smi -q` text -> nested dicts (sections by indentation; the first GPU under "GPU")."""
    root: Dict[str, Any] = {}
    stack: List[Tuple[int, Dict[str, Any]]] = [(-1, root)]
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", "=", "user@")) or line.strip().startswith("=="):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0 and line.startswith("GPU ") and " : " not in line:
            if "GPU" in root:
                break  # one GPU per capture is all the fakes use
            sect: Dict[str, Any] = {}
            root["GPU"] = sect
            stack = [(-1, root), (0, sect)]
            continue
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        m = _KV.match(line)
        if m:
            stack[-1][1][m.group(2)] = m.group(3)
        else:
            sect = {}
            stack[-1][1][line.strip()] = sect
            stack.append((indent, sect))
    return root


def parse_smi_q_processes(text: str) -> List[FakeProcess]:
    """The "Processes" block of `nvidia-smi -q` (one GPU) as FakeProcess rows."""
    out: List[FakeProcess] = []
    inside = False
    cur: Dict[str, str] = {}
    for line in text.splitlines():
        if re.match(r"^ {4}Processes\s*$", line):
            inside = True
            continue
        if not inside:
            continue
        if line.strip() and len(line) - len(line.lstrip(" ")) <= 4:
            break
        m = _KV.match(line)
        if not m:
            continue
        key, value = m.group(2), m.group(3)
        if key == "Process ID":
            if cur:
                out.append(_proc(cur))
            cur = {"pid": value}
        elif cur:
            cur[key] = value
    if cur:
        out.append(_proc(cur))
    return out


def _mib(value: str) -> Optional[int]:
    m = re.match(r"^(\d+)\s*MiB$", value.strip())
    return int(m.group(1)) * MiB if m else None


def _proc(row: Dict[str, str]) -> FakeProcess:
    name = row.get("Name")
    return FakeProcess(pid=int(row["pid"]), name=None if name == "Insufficient Permissions" else name,
                       kind=row.get("Type", "G"), used_memory_bytes=_mib(row.get("Used GPU Memory", "")))


def parse_smi_table_processes(text: str) -> List[FakeProcess]:
    """Process rows of a plain `nvidia-smi` table: | GPU GI CI PID Type Name Memory |."""
    rx = re.compile(r"^\|\s+\d+\s+\S+\s+\S+\s+(\d+)\s+(C\+G|M\+C|C|G|M)\s+(.+?)\s+(\d+MiB|N/A)\s*\|$")
    out = []
    for line in text.splitlines():
        m = rx.match(line.rstrip())
        if m:
            out.append(FakeProcess(int(m.group(1)), m.group(3), m.group(2), _mib(m.group(4))))
    return out


_ON_OFF = {"Enabled": 1, "Disabled": 0}
_DRIVER_MODELS = {"WDDM": 0, "TCC": 1, "MCDM": 2}
_COMPUTE_MODES = {"Default": 0, "Exclusive_Thread": 1, "Prohibited": 2, "Exclusive_Process": 3}
_REASON_KEYS = {"Idle": 0x1, "Applications Clocks Setting": 0x2, "SW Power Cap": 0x4, "HW Slowdown": 0x8,
                "Sync Boost": 0x10, "SW Thermal Slowdown": 0x20, "HW Thermal Slowdown": 0x40,
                "HW Power Brake Slowdown": 0x80, "Display Clock Setting": 0x100}


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _first(d: Dict[str, Any], *paths: Sequence[str]) -> Any:
    for path in paths:
        v = _get(d, *path)
        if v is not None:
            return v
    return None


def _map(value: Any, table: Dict[str, int]) -> Any:
    return table.get(value.strip(), NOT_SUPPORTED) if isinstance(value, str) else NOT_SUPPORTED


def _int(value: Any, suffix: str = "") -> Any:
    if not isinstance(value, str):
        return NOT_SUPPORTED
    m = re.match(r"^(-?\d+(?:\.\d+)?)\s*" + re.escape(suffix) + r"$", value.strip())
    if not m:
        return NOT_SUPPORTED
    return float(m.group(1)) if "." in m.group(1) else int(m.group(1))


def _pair(section: Any, table: Dict[str, int]) -> Any:
    if not isinstance(section, dict):
        return NOT_SUPPORTED
    cur, pend = _map(section.get("Current"), table), _map(section.get("Pending"), table)
    return NOT_SUPPORTED if cur is NOT_SUPPORTED else (cur, pend)


def _ecc_errors(q: Dict[str, Any]) -> Any:
    errs = q.get("ECC Errors")
    if not isinstance(errs, dict):
        return NOT_SUPPORTED
    out = {}
    for counter in ("Volatile", "Aggregate"):
        sect = errs.get(counter) or {}
        for kind in ("corrected", "uncorrected"):
            vals = [v for k, v in sect.items() if isinstance(v, str) and re.match(r"^\d+$", v)
                    and (k.split()[1].lower().startswith("uncorrectable") == (kind == "uncorrected"))]
            if vals:
                out[f"{counter.lower()}_{kind}"] = sum(int(v) for v in vals)
    return out or NOT_SUPPORTED


def _remapped(q: Dict[str, Any]) -> Any:
    rows = q.get("Remapped Rows")
    if not isinstance(rows, dict):
        return NOT_SUPPORTED
    yes = {"Yes": 1, "No": 0}
    return (int(rows.get("Correctable Error", 0)), int(rows.get("Uncorrectable Error", 0)),
            yes.get(rows.get("Pending"), 0), yes.get(rows.get("Remapping Failure Occurred"), 0))


def _clocks(section: Any) -> Any:
    """{0: graphics, 1: SM, 2: memory} MHz from a Clocks / Max Clocks section (nvmlClockType_t order)."""
    if not isinstance(section, dict):
        return NOT_SUPPORTED
    out = {kind: _int(section.get(key), "MHz") for kind, key in ((0, "Graphics"), (1, "SM"), (2, "Memory"))}
    return {k: v for k, v in out.items() if v is not NOT_SUPPORTED} or NOT_SUPPORTED


def parse_pci_bus_id(text: Any) -> Optional[Tuple[int, int, int, int]]:
    """(domain, bus, device, function) of "00000000:19:00.0" or "0000:19:00.0" (hex), None otherwise: NVML
    accepts either spelling, so the fake compares the numbers."""
    m = re.match(r"^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$", str(text).strip())
    return tuple(int(g, 16) for g in m.groups()) if m else None  # type: ignore[return-value]


def gpu_from_smi_q(text: str, processes: Optional[List[FakeProcess]] = None) -> Tuple[FakeGpu, Dict[str, Any]]:
    """(FakeGpu, library facts) from one capture; anything the capture lacks is NOT_SUPPORTED."""
    top = parse_smi_q(text)
    q = top.get("GPU") or {}
    link = _get(q, "PCI", "GPU Link Info") or {}
    gen, width = link.get("PCIe Generation") or {}, link.get("Link Width") or {}
    reasons_sect = q.get("Clocks Event Reasons") or q.get("Clocks Throttle Reasons")
    reasons: Any = NOT_SUPPORTED
    if isinstance(reasons_sect, dict):
        reasons = sum(bit for key, bit in _REASON_KEYS.items() if reasons_sect.get(key) == "Active")
    power = q.get("GPU Power Readings") or q.get("Power Readings") or {}
    fb = q.get("FB Memory Usage") or {}
    util = q.get("Utilization") or {}
    pending = _get(q, "Retired Pages", "Pending Page Blacklist")
    bus_id = _get(q, "PCI", "Bus Id")
    gpu = FakeGpu(
        name=q.get("Product Name", NOT_SUPPORTED),
        uuid=q.get("GPU UUID", NOT_SUPPORTED),
        serial=q.get("Serial Number") if q.get("Serial Number") not in (None, "N/A") else NOT_SUPPORTED,
        memory_total_bytes=_mib(fb.get("Total", "")) or NOT_SUPPORTED,
        memory_used_bytes=_mib(fb.get("Used", "")) if _mib(fb.get("Used", "")) is not None else NOT_SUPPORTED,
        memory_free_bytes=_mib(fb.get("Free", "")) if _mib(fb.get("Free", "")) is not None else NOT_SUPPORTED,
        memory_reserved_bytes=_mib(fb.get("Reserved", "")) or 0,
        persistence_mode=_map(q.get("Persistence Mode"), _ON_OFF),
        display_mode=_map(q.get("Display Mode"), _ON_OFF),
        display_active=_map(q.get("Display Active"), _ON_OFF),
        mig_mode=_pair(q.get("MIG Mode"), _ON_OFF),
        driver_model=_pair(q.get("Driver Model"), _DRIVER_MODELS),
        compute_mode=_map(q.get("Compute Mode"), _COMPUTE_MODES),
        pcie_gen_current=_int(gen.get("Current")),
        pcie_gen_max=_int(gen.get("Max")),
        pcie_gen_max_card=_int(gen.get("Device Max")),
        pcie_width_current=_int(width.get("Current"), "x"),
        pcie_width_max=_int(width.get("Max"), "x"),
        throttle_reasons=reasons,
        temperature_c=_int(_get(q, "Temperature", "GPU Current Temp"), "C"),
        power_draw_w=_int(_first(power, ("Power Draw",), ("Instantaneous Power Draw",)), "W"),
        power_limit_w=_int(_first(power, ("Current Power Limit",), ("Enforced Power Limit",), ("Power Limit",)), "W"),
        utilization_gpu=_int(util.get("GPU", util.get("Gpu")), "%"),
        utilization_memory=_int(util.get("Memory"), "%"),
        ecc_mode=_pair(q.get("ECC Mode") or q.get("Ecc Mode"), _ON_OFF),
        ecc_errors=_ecc_errors(q),
        retired_pages_pending={"Yes": 1, "No": 0}.get(pending, NOT_SUPPORTED) if isinstance(pending, str)
        else NOT_SUPPORTED,
        remapped_rows=_remapped(q),
        pci_bus_id=bus_id if isinstance(bus_id, str) else NOT_SUPPORTED,
        clocks_mhz=_clocks(q.get("Clocks")),
        max_clocks_mhz=_clocks(q.get("Max Clocks")),
        processes=list(processes) if processes is not None else parse_smi_q_processes(text),
    )
    cuda = top.get("CUDA Version", "")
    m = re.match(r"^(\d+)\.(\d+)$", cuda.strip())
    driver = top.get("Driver Version", NOT_SUPPORTED)
    lib = {
        "driver_version": driver,
        "cuda_version": int(m.group(1)) * 1000 + int(m.group(2)) * 10 if m else NOT_SUPPORTED,
        # nvidia-smi -q does not print the NVML version; NVML spells it "<CUDA major>.<driver version>".
        "nvml_version": f"{m.group(1)}.{driver}" if m and isinstance(driver, str) else NOT_SUPPORTED,
        "missing": set(),
    }
    # What an older driver lacks, judged from the capture's layout.
    if "Clocks Event Reasons" not in q:
        lib["missing"].add("nvmlDeviceGetCurrentClocksEventReasons")  # renamed around R535
    if "Device Max" not in gen:
        lib["missing"].add("nvmlDeviceGetGpuMaxPcieLinkGeneration")
    return gpu, lib


# ------------------------------------------------------------------ the fake library

class FakeNvml:
    """A pynvml-like object serving recorded values; see the module docstring."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: Iterable[FakeGpu] = (), driver_version: Any = NOT_SUPPORTED,
                 cuda_version: Any = NOT_SUPPORTED, nvml_version: Any = NOT_SUPPORTED,
                 missing: Iterable[str] = (), init_error: Optional[str] = None):
        self.gpus: List[FakeGpu] = list(gpus)
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.nvml_version = nvml_version
        self.missing = set(missing)
        self.init_error = init_error
        self.initialised = False
        self.calls: List[str] = []
        self.blocked_s = 0.0  # time NVML calls that wait on the hardware kept the caller (PCIe counters)
        for cls in _ERRORS.values():  # pynvml exposes its error classes as module attributes
            setattr(self, cls.__name__, cls)

    # ---- constructors from captures

    @classmethod
    def from_smi_q(cls, text: str, processes: Optional[List[FakeProcess]] = None, **overrides: Any) -> "FakeNvml":
        gpu, lib = gpu_from_smi_q(text, processes)
        fake = cls([gpu], **lib)
        fake._override(overrides)
        return fake

    @classmethod
    def gtx1650_desktop(cls, **overrides: Any) -> "FakeNvml":
        """GTX 1650 Mobile on Arch (driver 575.57.08): device values from that capture; its one process
        (gnome-shell) plus Xorg, VS Code and Firefox from a Linux desktop's nvidia-smi table."""
        text = read_data("driver_smi_q_linux_gtx1650mobile_575.57.08.txt")
        table = capture_sections(read_data("driver_smi_table_linux_desktop.txt"))["A"]
        desktop = [p for p in parse_smi_table_processes(table) if p.pid in (2825, 4064, 1417650)]
        fake = cls.from_smi_q(text, processes=parse_smi_q_processes(text) + desktop)
        fake._override(overrides)
        return fake

    @classmethod
    def h100(cls, **overrides: Any) -> "FakeNvml":
        """H100 80GB HBM3 SXM on a Linux cluster node (driver 545.23.08), persistence on, idle."""
        return cls.from_smi_q(read_data("driver_smi_q_linux_h100sxm_545.23.08.txt"), **overrides)

    @classmethod
    def windows_wddm(cls, **overrides: Any) -> "FakeNvml":
        """GTX 1660 SUPER on Windows (driver 462.31, WDDM, display on) with its C+G processes, plus
        Chrome and VS Code as C+G from a Windows nvidia-smi table."""
        text = read_data("driver_smi_q_windows_wddm_gtx1660super_462.31.txt")
        table = capture_sections(read_data("driver_smi_table_windows_wddm.txt"))["B"]
        apps = [p for p in parse_smi_table_processes(table) if p.pid in (2812, 4312)]
        fake = cls.from_smi_q(text, processes=parse_smi_q_processes(text) + apps)
        # 462.31 predates nvmlDeviceGetDriverModel_v2 (R555); the unversioned symbol answers.
        fake.missing.add("nvmlDeviceGetDriverModel_v2")
        fake._override(overrides)
        return fake

    @classmethod
    def wsl2(cls, **overrides: Any) -> "FakeNvml":
        """RTX 4070 Laptop seen from WSL2 (Windows driver 566.36, WDDM), no processes listed."""
        return cls.from_smi_q(read_data("driver_smi_q_wsl2_rtx4070laptop_566.36.txt"), **overrides)

    @classmethod
    def no_driver(cls, error: str = "LibraryNotFound") -> "FakeNvml":
        """No usable driver: nvmlInit raises NVMLError_<error>."""
        if error not in _ERRORS:
            raise ValueError(f"unknown NVML error {error!r}; known: {', '.join(_ERRORS)}")
        return cls(init_error=error)

    def _override(self, overrides: Dict[str, Any]) -> None:
        gpu_fields = {f.name for f in dataclasses.fields(FakeGpu)}
        for key, value in overrides.items():
            if key in ("driver_version", "cuda_version", "nvml_version"):
                setattr(self, key, value)
            elif key == "missing":
                self.missing |= set(value)
            elif key in gpu_fields:
                if key == "throttle_reasons" and not isinstance(value, int) and value is not NOT_SUPPORTED:
                    value = encode_clock_event_reasons(value)
                if key == "processes":
                    value = [_as_process(p) for p in value]
                setattr(self.gpus[0], key, value)
            else:
                raise TypeError(f"unknown FakeNvml override {key!r}")

    # ---- plumbing

    def _enter(self, fn: str, need_init: bool = True) -> None:
        self.calls.append(fn)
        if fn in self.missing:
            raise NVMLError_FunctionNotFound()
        if need_init and not self.initialised:
            raise NVMLError_Uninitialized()

    def _gpu(self, fn: str, handle: Any) -> FakeGpu:
        self._enter(fn)
        if not isinstance(handle, _Handle) or handle.index >= len(self.gpus):
            raise NVMLError_InvalidArgument()
        return self.gpus[handle.index]

    @staticmethod
    def _value(v: Any) -> Any:
        if v is NOT_SUPPORTED:
            raise NVMLError_NotSupported()
        return v

    # ---- system

    def nvmlInit(self) -> None:
        self._enter("nvmlInit", need_init=False)
        if self.init_error:
            raise _ERRORS[self.init_error]()
        self.initialised = True

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self._value(self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self._value(self.cuda_version)

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion_v2")
        return self._value(self.cuda_version)

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion")
        return self._value(self.nvml_version)

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._enter("nvmlSystemGetProcessName")
        for g in self.gpus:
            for p in g.processes:
                if p.pid == pid:
                    if p.name is None:
                        raise NVMLError_NoPermission()
                    return p.name
        raise NVMLError_NotFound()  # as NVML answers for a pid it does not know

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return _Handle(index)

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId: Any) -> _Handle:
        self._enter("nvmlDeviceGetHandleByPciBusId")
        want = parse_pci_bus_id(pciBusId.decode() if isinstance(pciBusId, bytes) else pciBusId)
        if want is None:
            raise NVMLError_InvalidArgument()
        for i, g in enumerate(self.gpus):
            if parse_pci_bus_id(g.pci_bus_id) == want:
                return _Handle(i)
        raise NVMLError_NotFound()

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        self._gpu("nvmlDeviceGetIndex", handle)
        return handle.index

    # ---- device identity (gpudiag must never call the last two)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._value(self._gpu("nvmlDeviceGetName", handle).name)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._value(self._gpu("nvmlDeviceGetUUID", handle).uuid)

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        return self._value(self._gpu("nvmlDeviceGetSerial", handle).serial)

    # ---- memory, modes

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> _Struct:
        g = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        total, free = self._value(g.memory_total_bytes), self._value(g.memory_free_bytes)
        if not version:  # v1: "used" includes what the driver reserves
            return _Struct(total=total, free=free, used=total - free)
        return _Struct(version=version, total=total, reserved=g.memory_reserved_bytes, free=free,
                       used=self._value(g.memory_used_bytes))

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetPersistenceMode", handle).persistence_mode)

    def nvmlDeviceGetDisplayMode(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetDisplayMode", handle).display_mode)

    def nvmlDeviceGetDisplayActive(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetDisplayActive", handle).display_active)

    def nvmlDeviceGetMigMode(self, device: Any) -> List[int]:
        return list(self._value(self._gpu("nvmlDeviceGetMigMode", device).mig_mode))

    def _driver_model(self, fn: str, h: Any) -> List[int]:
        return list(self._value(self._gpu(fn, h).driver_model))

    def nvmlDeviceGetDriverModel_v2(self, handle: Any) -> List[int]:
        return self._driver_model("nvmlDeviceGetDriverModel_v2", handle)

    def nvmlDeviceGetDriverModel(self, handle: Any) -> List[int]:
        return self._driver_model("nvmlDeviceGetDriverModel", handle)

    def nvmlDeviceGetComputeMode(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetComputeMode", handle).compute_mode)

    # ---- PCIe, clocks, sensors

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetCurrPcieLinkGeneration", handle).pcie_gen_current)

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetMaxPcieLinkGeneration", handle).pcie_gen_max)

    def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetGpuMaxPcieLinkGeneration", handle).pcie_gen_max_card)

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetCurrPcieLinkWidth", handle).pcie_width_current)

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetMaxPcieLinkWidth", handle).pcie_width_max)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_reasons)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        g = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise NVMLError_InvalidArgument()
        return self._value(g.temperature_c)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return round(self._value(self._gpu("nvmlDeviceGetPowerUsage", handle).power_draw_w) * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return round(self._value(self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_w) * 1000)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return round(self._value(self._gpu("nvmlDeviceGetPowerManagementLimit", handle).power_limit_w) * 1000)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        clocks = self._value(self._gpu("nvmlDeviceGetClockInfo", handle).clocks_mhz)
        return self._value(clocks.get(type, NOT_SUPPORTED))

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:
        clocks = self._value(self._gpu("nvmlDeviceGetMaxClockInfo", handle).max_clocks_mhz)
        return self._value(clocks.get(type, NOT_SUPPORTED))

    PCIE_WINDOW_S = 0.02  # NVML counts PCIe bytes over 20 ms and returns after that window

    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        gpu = self._gpu("nvmlDeviceGetPcieThroughput", device)
        self.blocked_s += self.PCIE_WINDOW_S
        return int(self._value(gpu.pcie_throughput_kbps)[counter])

    def nvmlDeviceGetSamples(self, device: Any, sampling_type: int, timeStamp: int) -> Tuple[int, List[_Struct]]:
        """The ring buffer's samples newer than timeStamp, as pynvml returns them: (value type, samples); a buffer
        with nothing newer answers NotFound, as NVML does for an idle GPU."""
        ring = self._value(self._gpu("nvmlDeviceGetSamples", device).utilization_samples)
        new = [(ts, v) for ts, v in ring if ts > timeStamp]
        if not new:
            raise NVMLError_NotFound()
        return (1, [_Struct(timeStamp=ts, sampleValue=_Struct(uiVal=int(v))) for ts, v in new])

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> _Struct:
        g = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return _Struct(gpu=self._value(g.utilization_gpu), memory=self._value(g.utilization_memory))

    # ---- ECC

    def nvmlDeviceGetEccMode(self, handle: Any) -> List[int]:
        return list(self._value(self._gpu("nvmlDeviceGetEccMode", handle).ecc_mode))

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        errors = self._value(self._gpu("nvmlDeviceGetTotalEccErrors", handle).ecc_errors)
        key = f"{('volatile', 'aggregate')[counterType]}_{('corrected', 'uncorrected')[errorType]}"
        return self._value(errors.get(key, NOT_SUPPORTED))

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int:
        return self._value(self._gpu("nvmlDeviceGetRetiredPagesPendingStatus", device).retired_pages_pending)

    def nvmlDeviceGetRemappedRows(self, device: Any) -> Tuple[int, int, int, int]:
        return tuple(self._value(self._gpu("nvmlDeviceGetRemappedRows", device).remapped_rows))

    # ---- processes (pynvml's friendly objects: pid, usedGpuMemory, gpuInstanceId, computeInstanceId)

    def _procs(self, fn: str, h: Any, kinds: Tuple[str, ...]) -> List[_Struct]:
        g = self._gpu(fn, h)
        return [_Struct(pid=p.pid, usedGpuMemory=p.used_memory_bytes, gpuInstanceId=0xFFFFFFFF,
                        computeInstanceId=0xFFFFFFFF) for p in g.processes if p.kind in kinds]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> List[_Struct]:
        return self._procs("nvmlDeviceGetComputeRunningProcesses", handle, ("C", "C+G", "M+C"))

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> List[_Struct]:
        return self._procs("nvmlDeviceGetGraphicsRunningProcesses", handle, ("G", "C+G"))

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: Any) -> List[_Struct]:
        return self._procs("nvmlDeviceGetMPSComputeRunningProcesses", handle, ("M", "M+C"))


def trailing_utilization(busy: Sequence[Tuple[float, float]], period_s: float, t: float) -> int:
    """What NVML's utilisation reading says at time t (s): the percentage of the period_s before t during which
    the GPU ran a kernel (`busy`: the intervals it did), as the driver's duty-cycle sample does. NVML's period
    is 1/6 s to 1 s depending on the GPU."""
    lo = t - period_s
    covered = sum(max(0.0, min(b, t) - max(a, lo)) for a, b in busy)
    return int(round(100 * covered / period_s))


def _as_process(p: Any) -> FakeProcess:
    if isinstance(p, FakeProcess):
        return p
    if isinstance(p, dict):
        return FakeProcess(**p)
    return FakeProcess(*p)


# ------------------------------------------------------------------ fake winreg

class FakeWinreg:
    """winreg's HKLM read path over recorded values; absent values raise FileNotFoundError as winreg does."""

    HKEY_LOCAL_MACHINE = 0x80000002
    REG_DWORD = 4

    def __init__(self, values: Optional[Dict[str, int]] = None, denied: Iterable[str] = (),
                 key_missing: bool = False):
        self.values = dict(values or {})
        self.denied = set(denied)
        self.key_missing = key_missing
        self.opened: List[str] = []
        self.closed = 0

    @classmethod
    def from_reg_query(cls, text: str) -> "FakeWinreg":
        """From `reg query` output (CRLF or LF): value lines `Name    REG_DWORD    0x2`, or its errors."""
        values: Dict[str, int] = {}
        denied = False
        for line in text.replace("\r\n", "\n").split("\n"):
            m = re.match(r"^\s+(\w+)\s+REG_DWORD\s+(0x[0-9a-fA-F]+)", line)
            if m:
                values[m.group(1)] = int(m.group(2), 16)
            if "Access is denied" in line:
                denied = True
        return cls(values, key_missing=False, denied=("HwSchMode", "TdrLevel", "TdrDelay", "TdrDdiDelay")
                   if denied else ())

    def OpenKey(self, key: int, sub_key: str, reserved: int = 0, access: int = 0x20019) -> str:
        if key != self.HKEY_LOCAL_MACHINE:
            raise OSError("only HKLM is faked")
        if self.key_missing:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        self.opened.append(sub_key)
        return sub_key

    def QueryValueEx(self, key: str, name: str) -> Tuple[int, int]:
        if name in self.denied:
            raise PermissionError(5, "Access is denied")
        if name not in self.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self.values[name], self.REG_DWORD

    def CloseKey(self, key: str) -> None:
        self.closed += 1


def go_string_literals(text: str) -> Dict[str, str]:
    """`name = "..."` Go string literals in a capture, unescaped (\\r\\n -> CRLF)."""
    out = {}
    for m in re.finditer(r'^(\w+)\s*=\s*"(.*)"\s*$', text, re.MULTILINE):
        out[m.group(1)] = codecs.decode(m.group(2), "unicode_escape")
    return out
