"""Linux (and WSL) facts read from /proc, /sys and /etc as text, relative to a root folder.

Every reader takes `root` so tests can point it at a fake tree (tests/data/fakeroot_*); nothing
here shells out. Missing or unreadable files give None, never an exception.
"""

from __future__ import annotations

import os
import platform as _platform
import re
from typing import Dict, List, Mapping, Optional, Tuple

from gpudiag.platform import _cgroup
from gpudiag.platform._files import exists, int_or_none, parse_kv_numbers, read_text


# ------------------------------------------------------------------ OS, distro, WSL, containers

def parse_os_release(text: str) -> Dict[str, str]:
    """KEY=value lines of os-release(5); values may be quoted; comments and blanks ignored."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value.replace('\\"', '"').replace("\\\\", "\\")
    return out


def os_release(root: str) -> Tuple[Dict[str, str], Optional[str]]:
    """(fields, source path) from /etc/os-release, falling back to /usr/lib/os-release."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = read_text(root, path)
        if text is not None:
            return parse_os_release(text), path
    return {}, None


def wsl_version(kernel_release: Optional[str], proc_version: Optional[str],
                environ: Mapping[str, str], has_dxg: bool) -> Tuple[Optional[int], List[str]]:
    """1, 2 or None, and the signals that decided it.

    WSL kernels are the only common ones with "microsoft" in the release: WSL2 ends in
    "-microsoft-standard[-WSL2]", WSL1 in "-Microsoft". /dev/dxg (GPU paravirtualisation) only
    exists in WSL2; WSL_DISTRO_NAME is set by both.
    """
    signals: List[str] = []
    kernel_text = " ".join(x for x in (kernel_release, proc_version) if x)
    low = kernel_text.lower()
    version: Optional[int] = None
    if "microsoft" in low:
        signals.append("kernel release contains 'microsoft'")
        version = 2 if ("microsoft-standard" in low or "wsl2" in low) else 1
    if has_dxg:
        signals.append("/dev/dxg present")
        version = 2
    if environ.get("WSL_DISTRO_NAME") or environ.get("WSL_INTEROP"):
        signals.append("WSL_DISTRO_NAME/WSL_INTEROP set")
        if version is None:
            version = 2  # a custom kernel without "microsoft" is only possible on WSL2
    return version, signals


def container_kind(root: str, environ: Mapping[str, str]) -> Tuple[Optional[str], List[str]]:
    """docker | podman | kubernetes | lxc | containerd | systemd-nspawn | None, with the signals."""
    signals: List[str] = []
    kind: Optional[str] = None
    if environ.get("KUBERNETES_SERVICE_HOST"):
        signals.append("KUBERNETES_SERVICE_HOST set")
        kind = "kubernetes"
    if exists(root, "/run/.containerenv"):
        signals.append("/run/.containerenv present")
        kind = kind or "podman"
    if exists(root, "/.dockerenv"):
        signals.append("/.dockerenv present")
        kind = kind or "docker"
    cgroup1 = read_text(root, "/proc/1/cgroup") or ""
    for marker, name in (("kubepods", "kubernetes"), ("docker", "docker"), ("libpod", "podman"),
                         ("containerd", "containerd"), ("lxc", "lxc")):
        if marker in cgroup1:
            signals.append(f"/proc/1/cgroup mentions {marker}")
            kind = kind or name
            break
    declared = environ.get("container")  # set by podman, lxc, systemd-nspawn
    if declared:
        signals.append(f"container={declared}")
        kind = kind or declared
    return kind, signals


_VENDORS = (  # (substring of DMI sys_vendor/product_name, lower-case) -> hypervisor name
    ("qemu", "qemu"), ("kvm", "kvm"), ("vmware", "vmware"), ("innotek", "virtualbox"),
    ("virtualbox", "virtualbox"), ("xen", "xen"), ("amazon ec2", "aws"), ("google compute", "gce"),
    ("parallels", "parallels"), ("bochs", "bochs"),
)


def virtualization_from_dmi(vendor: Optional[str], product: Optional[str]) -> Optional[str]:
    """Hypervisor name from the DMI/BIOS vendor strings (shared with Windows), or None."""
    text = " ".join(x for x in (vendor, product) if x).lower()
    if not text:
        return None
    if "microsoft" in text and "virtual" in text:
        return "hyper-v"
    for marker, name in _VENDORS:
        if marker in text:
            return name
    return None


def virtualization(root: str, wsl: Optional[int], cpuinfo: Optional[str]) -> Optional[str]:
    """The hypervisor: WSL2's Hyper-V, else from the DMI vendor strings, else "hypervisor
    (cpu flag)" from /proc/cpuinfo; None on bare metal."""
    if wsl == 2:
        return "wsl2 (hyper-v)"
    dmi = virtualization_from_dmi(read_text(root, "/sys/class/dmi/id/sys_vendor"),
                                  read_text(root, "/sys/class/dmi/id/product_name"))
    if dmi:
        return dmi
    if cpuinfo and re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.MULTILINE):
        return "hypervisor (cpu flag)"
    return None


def os_facts(root: str = "/", environ: Optional[Mapping[str, str]] = None) -> dict:
    """system.os on Linux: os-release, kernel release, WSL and container signals, virtualization,
    all read under `root`."""
    environ = os.environ if environ is None else environ
    rel, rel_source = os_release(root)
    kernel = (read_text(root, "/proc/sys/kernel/osrelease") or "").strip() or None
    if kernel is None and root == "/":
        kernel = _platform.release() or None
    proc_version = (read_text(root, "/proc/version") or "").strip() or None
    wsl, wsl_signals = wsl_version(kernel, proc_version, environ, exists(root, "/dev/dxg"))
    container, container_signals = container_kind(root, environ)
    return {
        "name": "Linux",
        "pretty": rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux",
        "distro_id": rel.get("ID"),
        "distro_version": rel.get("VERSION_ID") or rel.get("BUILD_ID"),
        "distro_like": rel.get("ID_LIKE"),
        "distro_codename": rel.get("VERSION_CODENAME"),
        "kernel": kernel,
        "wsl": wsl,
        "container": container,
        "virtualization": virtualization(root, wsl, read_text(root, "/proc/cpuinfo")),
        "signals": {"os_release": rel_source, "wsl": wsl_signals, "container": container_signals},
    }


# ------------------------------------------------------------------ memory


def _ram_from_meminfo(meminfo: Dict[str, int]) -> dict:
    """RAM and swap in bytes from parsed /proc/meminfo, for a fake root where psutil cannot
    be pointed; MemAvailable estimated as psutil does on kernels < 3.14."""
    total = meminfo.get("MemTotal")
    available = meminfo.get("MemAvailable")
    if available is None and total is not None:  # kernels < 3.14: the same estimate psutil uses
        available = sum(meminfo.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    swap_total = meminfo.get("SwapTotal")
    swap_free = meminfo.get("SwapFree")
    return {"total_bytes": total, "available_bytes": available, "swap_total_bytes": swap_total,
            "swap_used_bytes": (swap_total - swap_free) if swap_total is not None and swap_free is not None else None}


def memory_facts(root: str = "/", wsl: Optional[int] = None) -> dict:
    """system.memory on Linux: RAM, swap, cgroup limit/usage/OOM kills, WSL2 cap, overcommit,
    and budget_bytes, the tightest headroom new workers have."""
    meminfo = parse_kv_numbers(read_text(root, "/proc/meminfo") or "")
    if root == "/":
        import psutil  # the real machine: psutil's numbers (identical source, better tested)

        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        ram = {"total_bytes": vm.total, "available_bytes": vm.available,
               "swap_total_bytes": sw.total, "swap_used_bytes": sw.used}
    else:
        ram = _ram_from_meminfo(meminfo)
    cg = _cgroup.cgroup_memory(root)
    overcommit = int_or_none(read_text(root, "/proc/sys/vm/overcommit_memory"))
    vmstat = read_text(root, "/proc/vmstat")
    oom_since_boot = parse_kv_numbers(vmstat).get("oom_kill") if vmstat is not None else None
    commit_limit = meminfo.get("CommitLimit") if overcommit == 2 else None
    committed = meminfo.get("Committed_AS") if overcommit == 2 else None

    # budget_bytes: what new workers may still allocate before something kills or refuses them.
    # The tightest of: RAM the kernel says is available; the cgroup's limit minus its usage
    # (the cgroup OOM killer fires there, whatever the host has free); and, under strict
    # overcommit (mode 2), CommitLimit - Committed_AS (malloc/cuInit fail there first).
    candidates = []
    if ram["available_bytes"] is not None:
        candidates.append((ram["available_bytes"], "ram_available"))
    if cg["limit_bytes"] is not None and cg["usage_bytes"] is not None:
        candidates.append((max(0, cg["limit_bytes"] - cg["usage_bytes"]), "cgroup_limit_minus_usage"))
    if commit_limit is not None and committed is not None:
        candidates.append((max(0, commit_limit - committed), "commit_limit_minus_committed"))
    budget, budget_source = min(candidates) if candidates else (None, None)

    return dict(
        ram,
        cgroup_version=cg["version"],
        cgroup_limit_bytes=cg["limit_bytes"],
        cgroup_limit_source=cg["limit_source"],
        cgroup_usage_bytes=cg["usage_bytes"],
        cgroup_oom_kills=cg["oom_kills"],
        # In WSL2 Linux runs in a VM sized by .wslconfig ([wsl2] memory=, default 50 % of the
        # host's RAM): the VM's MemTotal *is* the cap; the host may have much more.
        wsl_memory_cap_bytes=ram["total_bytes"] if wsl == 2 else None,
        overcommit_memory=overcommit,
        commit_limit_bytes=commit_limit,
        committed_bytes=committed,
        oom_kills_since_boot=oom_since_boot,
        budget_bytes=budget,
        budget_source=budget_source,
    )


# ------------------------------------------------------------------ CPU

def cpu_brand_from_cpuinfo(text: str) -> Optional[str]:
    """x86 'model name'; ARM boards give 'Model' / 'Hardware' / 'Processor' instead."""
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model", "cpu"):
        m = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.MULTILINE)
        if m and m.group(1).strip():
            return re.sub(r"\s+", " ", m.group(1).strip())
    return None


def cpu_brand(root: str = "/") -> Optional[str]:
    """The CPU's name from /proc/cpuinfo, or None when it is unreadable."""
    text = read_text(root, "/proc/cpuinfo")
    return cpu_brand_from_cpuinfo(text) if text else None


# ------------------------------------------------------------------ fork safety

# Shared libraries whose state does not survive a fork: once one is loaded (torch.cuda.is_available() loads
# libcuda), a forked child's GPU calls fail or hang.
_GPU_DRIVER_LIBS = ("libcuda.so", "libamdhip64.so", "libhsa-runtime64.so")


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to this process; nothing where libc
    lacks the symbol."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # no libc symbol: orphans are then found only while their parent lives
        pass


def fork_is_safe(root: str = "/") -> bool:
    """One thread in this process and no GPU driver library mapped (see platform.fork_is_safe); False when
    /proc/self cannot be read."""
    try:
        if len(os.listdir(os.path.join(root, "proc/self/task"))) != 1:
            return False
    except OSError:
        return False
    maps = read_text(root, "/proc/self/maps")
    return maps is not None and not any(lib in maps for lib in _GPU_DRIVER_LIBS)


def process_age_s(root: str = "/") -> Optional[float]:
    """Seconds since this process started: /proc/self/stat's start time (clock ticks after boot) against the boot
    clock now; None when either is unreadable."""
    import time

    stat = read_text(root, "/proc/self/stat")
    try:
        fields = stat.rsplit(")", 1)[1].split() if stat else []
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime; fields[0] is field 3
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (IndexError, ValueError, OSError, AttributeError):
        return None


def descendant_pids(pid: int, root: str = "/") -> Optional[List[int]]:
    """Every process below `pid` from /proc/PID/task/TID/children (each thread lists the children it started),
    breadth first; None when the first process's lists cannot be read (no such file on this kernel). A process
    that ends during the walk is skipped."""
    out: List[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        task = os.path.join(root, f"proc/{p}/task")
        try:
            tids = os.listdir(task)
        except OSError:
            if p == pid:
                return None
            continue
        for tid in tids:
            text = read_text(root, f"/proc/{p}/task/{tid}/children")
            if text is None:
                if p == pid and tid == tids[0]:
                    return None
                continue
            kids = [int(x) for x in text.split() if x.isdigit()]
            out.extend(kids)
            todo.extend(kids)
    return out
