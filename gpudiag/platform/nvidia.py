"""NVIDIA-specific OS facts: kernel module flavour, MPS daemon, Windows GPU scheduling and TDR,
and what the processes holding a GPU are.

Pure functions work on text; the thin readers take a `root` (a fake tree in tests) or a `reg`
(a winreg-like object in tests) so every OS path runs on any machine. Nothing here imports torch
or initialises NVML, so `gpudiag env` and `gpudiag preflight` stay fast.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Set, Tuple, Union

from gpudiag.platform import KIND
from gpudiag.platform._files import parse_cpulist

PROC_DRIVER_VERSION = "proc/driver/nvidia/version"
SYS_MODULE = "sys/module/nvidia"

# ----------------------------------------------------------------- kernel module (Linux)

# "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  555.42.02  Release Build  (...)"
# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  515.76  Mon Sep 12 19:21:56 UTC 2022"
_NVRM_OPEN = re.compile(r"NVIDIA UNIX Open Kernel Module\b")
_NVRM_PROPRIETARY = re.compile(r"NVIDIA UNIX \S+ Kernel Module\b")
_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)*)\b")


def parse_nvrm_version(text: str) -> Dict[str, Optional[str]]:
    """{flavour: open|proprietary|None, version} from /proc/driver/nvidia/version text."""
    for line in (text or "").splitlines():
        if "NVRM version" not in line:
            continue
        rest = line.split(":", 1)[-1]
        if _NVRM_OPEN.search(rest):
            flavour: Optional[str] = "open"
        elif _NVRM_PROPRIETARY.search(rest):
            flavour = "proprietary"
        else:
            flavour = None
        after = re.split(r"Kernel Module(?: for \S+)?", rest, maxsplit=1)[-1]
        m = _VERSION.search(after)
        return {"flavour": flavour, "version": m.group(1) if m else None}
    return {"flavour": None, "version": None}


def flavour_from_taint(taint: str) -> Optional[str]:
    """Module taint letters (/sys/module/nvidia/taint): 'P' marks a proprietary licence.

    The open module is "Dual MIT/GPL", so it taints only as out-of-tree ('O') or unsigned ('E').
    """
    letters = (taint or "").strip()
    if "P" in letters:
        return "proprietary"
    if letters:
        return "open"
    return None  # no taint letters: an in-tree GPL module, which no NVIDIA driver ships as


def _read(root: str, rel: str) -> Optional[str]:
    """The text of `root`/`rel`, or None where it cannot be read (module not loaded, container, other OS)."""
    try:
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def kernel_module(root: str = "/") -> Dict[str, Optional[str]]:
    """{flavour: open|proprietary|None, version, source, reason?} of the loaded `nvidia` module.

    /proc/driver/nvidia/version names the flavour in its first line; where it cannot be read,
    /sys/module/nvidia/{version,taint} give the version and the licence class without modinfo.
    """
    text = _read(root, PROC_DRIVER_VERSION)
    if text is not None:
        parsed = parse_nvrm_version(text)
        out = dict(parsed, source="/" + PROC_DRIVER_VERSION)
        if parsed["flavour"] is None:
            out["reason"] = "unrecognised NVRM line in /" + PROC_DRIVER_VERSION
        return out
    version = _read(root, SYS_MODULE + "/version")
    taint = _read(root, SYS_MODULE + "/taint")
    if version is not None or taint is not None:
        m = _VERSION.search(version or "")
        flavour = flavour_from_taint(taint) if taint is not None else None
        out = {"flavour": flavour, "version": m.group(1) if m else None, "source": "/" + SYS_MODULE}
        if flavour is None:
            out["reason"] = "/sys/module/nvidia has no taint flags to tell open from proprietary"
        return out
    return {"flavour": None, "version": None, "source": None,
            "reason": "the nvidia kernel module is not loaded (no /proc/driver/nvidia/version, "
                      "no /sys/module/nvidia)"}


# ----------------------------------------------------------------- how the GPU is reached

def gpu_host(root: str = "/", reg: Any = None) -> str:
    """"linux", "wsl2", "wsl1", "windows", "macos" or another platform.KIND: which driver stack serves the GPU.

    WSL2 is Linux on top of the Windows driver (paravirtualised through /dev/dxg), so it has
    neither /proc/driver/nvidia nor the Windows registry. A `reg` given by a caller means Windows.
    """
    if reg is not None or KIND == "windows":
        return "windows"
    if KIND != "linux":
        return KIND  # "macos", or sys.platform's own name for an OS gpudiag does not know
    release = (_read(root, "proc/sys/kernel/osrelease") or _read(root, "proc/version") or "")
    if os.path.exists(os.path.join(root, "dev/dxg")):
        return "wsl2"
    if "microsoft" in release.lower():
        # WSL1 kernels end in "-Microsoft" (capital M, 4.4.0-<build>); WSL2 says "microsoft-standard".
        return "wsl1" if re.search(r"-Microsoft\b", release) else "wsl2"
    return "linux"


# ----------------------------------------------------------------- NUMA placement (Linux sysfs)

def gpu_numa(bus_id: Optional[str], root: str = "/", kind: Optional[str] = None) -> Dict[str, Any]:
    """{gpu_node, node_cpus: {node: {cpu}}, reason}: the NUMA node of the GPU at PCI `bus_id` and the CPUs of
    each node, from Linux sysfs (`root` is a fake tree in tests, read on any OS); `reason` says why not."""
    out: Dict[str, Any] = {"gpu_node": None, "node_cpus": {}, "reason": None}
    if (kind or KIND) != "linux" and root == "/":
        return dict(out, reason="NUMA placement is read from Linux sysfs; not available on this OS")
    if not bus_id:
        return dict(out, reason="torch gives no PCI bus id for the GPU")
    text = _read(root, os.path.join("sys/bus/pci/devices", bus_id, "numa_node"))
    if text is None:
        return dict(out, reason=f"/sys/bus/pci/devices/{bus_id}/numa_node not readable (container or VM?)")
    try:
        out["gpu_node"] = int(text.strip())
    except ValueError:
        pass
    node_cpus: Dict[int, Set[int]] = {}
    for path in glob.glob(os.path.join(root, "sys/devices/system/node/node[0-9]*/cpulist")):
        m = re.search(r"node(\d+)", os.path.basename(os.path.dirname(path)))
        body = _read(root, os.path.relpath(path, root))
        if m and body is not None:
            node_cpus[int(m.group(1))] = set(parse_cpulist(body))
    out["node_cpus"] = node_cpus
    return out


# ----------------------------------------------------------------- processes

MPS_PROCESS_NAMES = frozenset({"nvidia-cuda-mps-control", "nvidia-cuda-mps-server"})


def process_snapshot() -> Dict[int, str]:
    """{pid: name} of running processes, names only (no command lines, no users)."""
    import psutil

    out: Dict[int, str] = {}
    try:
        for p in psutil.process_iter(["name"]):
            name = p.info.get("name")
            if name:
                out[p.pid] = name
    except (psutil.Error, OSError):
        pass  # a sandbox that hides /proc: names NVML cannot give then stay None
    return out


def mps_daemon_running(procs: Union[Mapping[int, str], Iterable[str], None] = None) -> Optional[bool]:
    """True when an MPS control daemon or server runs; None where MPS does not exist (not Linux).

    `procs` is a {pid: name} snapshot or a list of names (tests); None reads the live process list.
    """
    if procs is None:
        if KIND != "linux":
            return None
        procs = process_snapshot()
    names = procs.values() if isinstance(procs, Mapping) else procs
    return any(clean_process_name(n) in MPS_PROCESS_NAMES for n in names if n)


_EXE = re.compile(r"^(.*?\.exe)\b", re.IGNORECASE)


def clean_process_name(raw: Optional[str]) -> Optional[str]:
    """The executable's base name from what NVML or psutil says (a path, sometimes with arguments).

    Paths and arguments are dropped: they can carry a user name or a secret. nvidia-smi's
    display truncation ("...irefox/7477/usr/lib/firefox/firefox") leaves the base name intact.
    """
    if not raw:
        return None
    s = str(raw).strip()
    if "\\" in s or re.match(r"^[A-Za-z]:", s):  # a Windows path: spaces are part of folder names
        s = s.rsplit("\\", 1)[-1]
        m = _EXE.match(s)
        s = m.group(1) if m else s.split(" ")[0]
    else:
        s = s.split()[0] if s.split() else s  # drop arguments (Chromium rewrites its cmdline)
        s = s.rsplit("/", 1)[-1]
    s = s.strip().lstrip(".") if s.startswith("...") else s.strip()
    return s or None


# base name (lower case) -> (category, label). "display": the display server, compositor or
# desktop shell, which draws the screen with the GPU; "app": a desktop program using the GPU.
_KNOWN: Dict[str, Tuple[str, str]] = {}


def _known(category: str, label: str, *names: str) -> None:
    """Register process base names (lower case) under a category and label for classify_process."""
    for n in names:
        _KNOWN[n] = (category, label)


_known("display", "the X server (Xorg)", "xorg", "x", "xorg.bin")
_known("display", "Xwayland", "xwayland")
_known("display", "GNOME Shell (compositor)", "gnome-shell")
_known("display", "KDE KWin (compositor)", "kwin", "kwin_x11", "kwin_wayland")
_known("display", "KDE Plasma shell", "plasmashell")
_known("display", "a Wayland compositor", "mutter", "weston", "sway", "hyprland", "wayfire", "labwc",
       "niri", "gamescope", "cosmic-comp")
_known("display", "a desktop compositor", "cinnamon", "muffin", "marco", "xfwm4", "compiz", "picom",
       "budgie-wm", "gala")
_known("display", "a desktop session service", "xdg-desktop-portal", "xdg-desktop-portal-gnome",
       "xdg-desktop-portal-kde", "xdg-desktop-portal-gtk", "xdg-desktop-portal-wlr", "xdg-desktop-portal-hyprland",
       "xdg-desktop-portal-cosmic", "snapd-desktop-integration", "gsd-xsettings", "kded5", "kded6", "ksmserver",
       "xfdesktop", "xfce4-panel", "mate-panel", "budgie-panel", "lxqt-panel", "waybar", "cosmic-panel")
_known("display", "Desktop Window Manager (dwm.exe)", "dwm.exe")
_known("display", "the Windows shell (explorer.exe)", "explorer.exe")
_known("display", "a Windows shell component", "shellhost.exe", "shellexperiencehost.exe",
       "startmenuexperiencehost.exe", "searchhost.exe", "searchapp.exe", "searchui.exe",
       "textinputhost.exe", "logonui.exe", "lockapp.exe", "phoneexperiencehost.exe",
       "widgets.exe", "csrss.exe", "winlogon.exe", "sihost.exe", "fontdrvhost.exe", "ctfmon.exe",
       "applicationframehost.exe")
_known("app", "VS Code", "code", "code.exe", "code-oss", "codium", "vscodium", "code-insiders",
       "code - insiders.exe", "cursor", "cursor.exe")
_known("app", "Chrome/Chromium", "chrome", "chrome.exe", "google-chrome", "chromium",
       "chromium-browser")
_known("app", "Firefox", "firefox", "firefox.exe", "firefox-bin", "firefox-esr")
_known("app", "Microsoft Edge", "msedge", "msedge.exe", "microsoft-edge", "msedgewebview2.exe")
_known("app", "Brave", "brave", "brave.exe", "brave-browser")
_known("app", "Opera", "opera", "opera.exe")
_known("app", "an Electron app", "electron", "electron.exe")
_known("app", "Slack", "slack", "slack.exe")
_known("app", "Discord", "discord", "discord.exe")
_known("app", "Microsoft Teams", "teams", "teams.exe", "ms-teams", "ms-teams.exe")
_known("app", "Zoom", "zoom", "zoom.exe")
_known("app", "OBS Studio", "obs", "obs64.exe")
_known("app", "Steam", "steam", "steam.exe", "steamwebhelper", "steamwebhelper.exe")
_known("app", "Spotify", "spotify", "spotify.exe")
_known("app", "JetBrains IDE", "pycharm", "pycharm64.exe", "idea", "idea64.exe", "clion", "clion64.exe")
_known("app", "a file manager", "nautilus", "dolphin", "thunar", "nemo")
_known("mps", "the CUDA MPS daemon", *MPS_PROCESS_NAMES)


def classify_process(name: Optional[str]) -> Tuple[str, str]:
    """(category, label) for a process name: display | app | mps | other."""
    clean = clean_process_name(name)
    if not clean:
        return "other", "an unnamed process"
    return _KNOWN.get(clean.lower(), ("other", clean))


# ----------------------------------------------------------------- Windows registry

GRAPHICS_DRIVERS_KEY = r"SYSTEM\CurrentControlSet\Control\GraphicsDrivers"
# Microsoft's documented defaults when the value is absent (TDR registry keys page).
TDR_DEFAULTS = {"TdrLevel": 3, "TdrDelay": 2, "TdrDdiDelay": 5}
TDR_LEVELS = {0: "off", 1: "bugcheck", 2: "recover_vga", 3: "recover"}
_TDR_FIELDS = (("TdrLevel", "level"), ("TdrDelay", "delay_s"), ("TdrDdiDelay", "ddi_delay_s"))


def hags_state(raw: Any) -> Dict[str, Any]:
    """HwSchMode -> {raw, enabled, reason?}: 2 on, 1 off, absent = the OS/driver default."""
    if raw is None:
        return {"raw": None, "enabled": None,
                "reason": "HwSchMode is not set: Windows applies its default for this GPU and driver, "
                          "which the registry does not record (see Settings > Display > Graphics)"}
    if raw == 2:
        return {"raw": 2, "enabled": True}
    if raw == 1:
        return {"raw": 1, "enabled": False}
    return {"raw": raw, "enabled": None, "reason": f"unrecognised HwSchMode value {raw!r} (2 = on, 1 = off)"}


def graphics_settings_from_values(values: Mapping[str, Any], errors: Optional[Mapping[str, str]] = None
                                  ) -> Dict[str, Any]:
    """The `windows` data from raw registry values {name: int}; absent values get Windows' defaults."""
    errors = dict(errors or {})
    if "HwSchMode" in errors:
        hags = {"raw": None, "enabled": None, "reason": f"could not read HwSchMode: {errors['HwSchMode']}"}
    else:
        hags = hags_state(values.get("HwSchMode"))
    tdr: Dict[str, Any] = {}
    defaults, reasons = [], []
    for reg_name, field in _TDR_FIELDS:
        if reg_name in errors:
            tdr[field] = None
            reasons.append(f"could not read {reg_name}: {errors[reg_name]}")
        elif values.get(reg_name) is None:
            tdr[field] = TDR_DEFAULTS[reg_name]
            defaults.append(field)
        else:
            tdr[field] = values[reg_name]
    tdr["level_name"] = TDR_LEVELS.get(tdr["level"]) if isinstance(tdr["level"], int) else None
    tdr["defaults"] = defaults  # fields not set in the registry: Windows' documented default shown
    if reasons:
        tdr["reason"] = "; ".join(reasons)
    return {"hags": hags, "tdr": tdr}


def windows_graphics_settings(reg: Any = None) -> Optional[Dict[str, Any]]:
    """HAGS and TDR settings from HKLM\\...\\GraphicsDrivers; None where there is no registry.

    `reg` is a winreg-like object (OpenKey, QueryValueEx, CloseKey, HKEY_LOCAL_MACHINE).
    """
    if reg is None:
        try:
            import winreg as reg  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return None
    try:
        key = reg.OpenKey(reg.HKEY_LOCAL_MACHINE, GRAPHICS_DRIVERS_KEY)
    except OSError as exc:
        why = f"{type(exc).__name__}: {exc}"
        return graphics_settings_from_values({}, {n: why for n in ("HwSchMode",) + tuple(TDR_DEFAULTS)})
    values: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    try:
        for name in ("HwSchMode",) + tuple(TDR_DEFAULTS):
            try:
                value, _kind = reg.QueryValueEx(key, name)
            except FileNotFoundError:
                continue  # absent: the default applies
            except OSError as exc:  # e.g. access denied
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            values[name] = value if isinstance(value, int) else None
    finally:
        close = getattr(reg, "CloseKey", None)
        if close is not None:
            try:
                close(key)
            except OSError:
                pass
    return graphics_settings_from_values(values, errors)
