"""Linux (and WSL) facts from /proc, /sys and /etc. Every reader takes `root` so tests use fake trees.

Parsers are pure functions on text; readers return None for a file that is absent or unreadable.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Optional


def read(root: str, rel: str) -> Optional[str]:
    try:
        with open(os.path.join(root, rel.lstrip("/")), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def exists(root: str, rel: str) -> bool:
    return os.path.exists(os.path.join(root, rel.lstrip("/")))


# ---------------------------------------------------------------- distro and kernel

def parse_os_release(text: str) -> Dict[str, str]:
    """KEY=value lines of os-release(5), quotes and escapes removed."""
    out: Dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = re.sub(r"\\(.)", r"\1", value)
    return out


def detect_wsl(proc_version: Optional[str], osrelease: Optional[str], environ: Dict[str, str],
               has_dxg: bool = False) -> Optional[int]:
    """1 or 2 for WSL, None otherwise.

    WSL kernels are the only common ones with "microsoft" in the release: WSL2 ones read
    "...-microsoft-standard[-WSL2]", WSL1 ones "4.4.0-19041-Microsoft" (capitalised, no "standard").
    """
    text = " ".join(t for t in (osrelease, proc_version) if t)
    if "microsoft" not in text.lower():
        return 2 if (has_dxg and environ.get("WSL_DISTRO_NAME")) else None
    if re.search(r"microsoft-standard|WSL2", text) or has_dxg:
        return 2
    if re.search(r"-Microsoft\b", text):
        return 1
    return 2


def container_hint(root: str, environ: Dict[str, str]) -> Optional[str]:
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if exists(root, "/.dockerenv"):
        return "docker"
    if exists(root, "/run/.containerenv"):
        return "podman"
    cg = read(root, "/proc/1/cgroup") or ""
    for name in ("docker", "kubepods", "containerd", "lxc", "podman"):
        if name in cg:
            return {"kubepods": "kubernetes", "containerd": "containerd"}.get(name, name)
    env1 = environ.get("container")
    return env1 or None


def virtualization_hint(root: str) -> Optional[str]:
    vendor = (read(root, "/sys/class/dmi/id/sys_vendor") or "").strip()
    product = (read(root, "/sys/class/dmi/id/product_name") or "").strip()
    for needle, name in (("QEMU", "kvm/qemu"), ("KVM", "kvm/qemu"), ("VMware", "vmware"), ("VirtualBox", "virtualbox"),
                         ("Microsoft Corporation", "hyper-v"), ("Xen", "xen"), ("Amazon EC2", "aws"),
                         ("Google", "gcp"), ("Firecracker", "firecracker")):
        if needle.lower() in f"{vendor} {product}".lower():
            return name
    cpuinfo = read(root, "/proc/cpuinfo") or ""
    if re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.MULTILINE):
        return "virtual machine (unknown hypervisor)"
    return None


def os_facts(root: str, environ: Dict[str, str], kernel: str) -> Dict[str, object]:
    rel = parse_os_release(read(root, "/etc/os-release") or read(root, "/usr/lib/os-release") or "")
    proc_version = read(root, "/proc/version")
    osrelease = (read(root, "/proc/sys/kernel/osrelease") or "").strip() or kernel
    wsl = detect_wsl(proc_version, osrelease, environ, exists(root, "/dev/dxg"))
    return {
        "name": "Linux",
        "pretty": rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux",
        "distro_id": rel.get("ID"),
        "distro_version": rel.get("VERSION_ID"),
        "distro_like": rel.get("ID_LIKE"),
        "kernel": osrelease,
        "wsl": wsl,
        "container": container_hint(root, environ),
        "virtualization": "wsl2 (hyper-v)" if wsl == 2 else virtualization_hint(root),
    }


# ---------------------------------------------------------------- memory

def parse_kv_counts(text: Optional[str]) -> Dict[str, int]:
    """'key value' lines (memory.events, /proc/vmstat) as ints."""
    out: Dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_meminfo(text: Optional[str]) -> Dict[str, int]:
    """/proc/meminfo in bytes."""
    out: Dict[str, int] = {}
    for line in (text or "").splitlines():
        m = re.match(r"^(\S+):\s+(\d+)(?:\s+kB)?", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * (1024 if line.rstrip().endswith("kB") else 1)
    return out


def _limit(text: Optional[str]) -> Optional[int]:
    """A cgroup limit value: 'max' (v2) or a huge number (v1 'unlimited') read as None."""
    if text is None:
        return None
    t = text.strip()
    if not t.isdigit():
        return None
    v = int(t)
    return None if v >= 2**60 else v


def cgroup_memory(root: str) -> Dict[str, Optional[int]]:
    """This process's cgroup memory limit, usage and OOM kills (v2, then v1)."""
    out: Dict[str, Optional[int]] = {"version": None, "limit_bytes": None, "usage_bytes": None, "oom_kills": None}
    cg = read(root, "/proc/self/cgroup") or ""
    v2 = next((l.split("::", 1)[1].strip() for l in cg.splitlines() if l.startswith("0::")), None)
    if v2 is not None:
        # Inside a container's cgroup namespace the path is "/" and files sit at the mount root.
        for base in (f"/sys/fs/cgroup{v2}".rstrip("/"), "/sys/fs/cgroup"):
            if exists(root, base + "/memory.max") or exists(root, base + "/memory.current"):
                out.update(version=2, limit_bytes=_limit(read(root, base + "/memory.max")),
                           usage_bytes=_limit(read(root, base + "/memory.current")),
                           oom_kills=parse_kv_counts(read(root, base + "/memory.events")).get("oom_kill"))
                return out
    v1 = next((l.split(":", 2)[2].strip() for l in cg.splitlines() if re.match(r"^\d+:[^:]*\bmemory\b", l)), None)
    if v1 is not None:
        for base in (f"/sys/fs/cgroup/memory{v1}".rstrip("/"), "/sys/fs/cgroup/memory"):
            if exists(root, base + "/memory.limit_in_bytes"):
                ctl = parse_kv_counts(read(root, base + "/memory.oom_control"))
                out.update(version=1, limit_bytes=_limit(read(root, base + "/memory.limit_in_bytes")),
                           usage_bytes=_limit(read(root, base + "/memory.usage_in_bytes")),
                           oom_kills=ctl.get("oom_kill"))
                return out
    return out


def memory_extras(root: str) -> Dict[str, Optional[int]]:
    over = (read(root, "/proc/sys/vm/overcommit_memory") or "").strip()
    vm = parse_kv_counts(read(root, "/proc/vmstat"))
    mi = parse_meminfo(read(root, "/proc/meminfo"))
    return {
        "overcommit_memory": int(over) if over.isdigit() else None,
        "oom_kills_since_boot": vm.get("oom_kill"),  # kernel >= 4.13
        "commit_limit_bytes": mi.get("CommitLimit"),
        "committed_as_bytes": mi.get("Committed_AS"),
    }


# ---------------------------------------------------------------- CPU

def cpu_brand(root: str) -> Optional[str]:
    text = read(root, "/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return None
