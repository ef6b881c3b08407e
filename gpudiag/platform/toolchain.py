"""Compilers and build tools (GCC, Clang, CMake, nvcc) and the C library, as collect_env reports them.

The compilers only answer through `--version`, so those run as subprocesses, all at once, in a
background thread, with a short deadline: `start()` returns at once and `Pending.result()` collects
(killing anything past the deadline, so no child outlives the call). A tool not on PATH is never
spawned. nvcc is also looked for under CUDA_HOME / CUDA_PATH / /usr/local/cuda, where the toolkit's
version.json answers without running it. The values use collect_env's own regexes, so they read
the same: "(Debian 12.2.0-14+deb12u1) 12.2.0", "version 3.25.1", "13.0.88".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

DEADLINE_S = 3.0
# name -> (argv after the executable, collect_env's regex on its stdout; for gcc also "gcc.exe (",
# which MinGW prints and collect_env's r"gcc (.*)" misses)
TOOLS: Dict[str, Tuple[List[str], str]] = {
    "gcc": (["--version"], r"gcc(?:\.exe)? (.*)"),
    "clang": (["--version"], r"clang version (.*)"),
    "cmake": (["--version"], r"cmake (.*)"),
    "nvcc": (["--version"], r"release .+ V(.*)"),
}


def parse_version(name: str, text: str) -> Optional[str]:
    """The version collect_env would print for tool `name` from its `--version` output."""
    m = re.search(TOOLS[name][1], text or "")
    return m.group(1).strip() if m else None


def toolkit_roots(environ: Mapping[str, str], kind: str) -> List[str]:
    """Where a CUDA toolkit is looked for when nvcc is not on PATH (the order nvcc users set them)."""
    roots = [environ.get(k) for k in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT")]
    if kind == "linux":
        roots.append("/usr/local/cuda")
    return [r for r in roots if r]


def version_json(root: str) -> Optional[str]:
    """nvcc's version from a toolkit's version.json (CUDA >= 11.1 installers write it), or None."""
    try:
        with open(os.path.join(root, "version.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    for key in ("cuda_nvcc", "cuda"):
        v = data.get(key)
        if isinstance(v, dict) and isinstance(v.get("version"), str):
            return v["version"]
    return None


def _nvcc_location(which: Callable, environ: Mapping[str, str], kind: str) -> Tuple[Optional[str], bool, Optional[str]]:
    """(nvcc path or None, on_path, toolkit root): nvcc on PATH, else in a toolkit root (a root with only
    version.json still gives the version)."""
    exe = which("nvcc")
    if exe:
        return exe, True, None
    binary = "nvcc.exe" if kind == "windows" else "nvcc"
    for root in toolkit_roots(environ, kind):
        candidate = os.path.join(root, "bin", binary)
        if os.path.isfile(candidate):
            return candidate, False, root
        if version_json(root):
            return None, False, root
    return None, False, None


def libc_version(kind: str) -> dict:
    """{version: "glibc-2.36", source, reason}: collect_env's "-".join(platform.libc_ver()), read from
    os.confstr first (platform.libc_ver() would scan the Python binary for a version string)."""
    if kind != "linux":
        why = {"windows": "Windows has no libc with a version to report (the C runtime is the UCRT)",
               "macos": "macOS's C library is part of libSystem, versioned with the OS"}.get(kind, f"not Linux ({kind})")
        return {"version": None, "source": None, "reason": f"N/A: {why}"}
    try:
        raw = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        raw = None
    if raw and " " in raw:
        lib, ver = raw.split(" ", 1)
        return {"version": f"{lib}-{ver}", "source": "confstr(CS_GNU_LIBC_VERSION)", "reason": None}
    import platform as _platform

    lib, ver = _platform.libc_ver()
    if lib:
        return {"version": f"{lib}-{ver}", "source": "platform.libc_ver()", "reason": None}
    return {"version": None, "source": None, "reason": "not glibc (musl or another C library without a version query)"}


class Pending:
    """Tool subprocesses started by start(); result() gathers them (and kills any that hang)."""

    def __init__(self, plan: Dict[str, dict], env: Dict[str, str], deadline_s: float):
        self._plan = plan
        self._env = env
        self._deadline = time.monotonic() + deadline_s
        self._outputs: Dict[str, dict] = {}
        self._thread = threading.Thread(target=self._run, name="gpudiag-toolchain", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The background thread: starts every planned `--version` at once, then collects each until
        the deadline, killing and reaping any that hangs."""
        procs = {}
        for name, item in self._plan.items():
            if not item.get("path"):
                continue
            try:
                procs[name] = subprocess.Popen([item["path"]] + TOOLS[name][0], stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self._env)
            except OSError as exc:
                self._outputs[name] = {"error": f"could not run it: {type(exc).__name__}: {exc}"}
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(0.05, self._deadline - time.monotonic()))
                self._outputs[name] = {"rc": proc.returncode, "stdout": out.decode("utf-8", "replace")}
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                self._outputs[name] = {"error": f"`{name} --version` did not answer within {DEADLINE_S:g} s (killed)"}

    def result(self) -> Dict[str, dict]:
        """{tool: {version, path, source, reason}} for gcc, clang, cmake, nvcc."""
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 1.0)
        out: Dict[str, dict] = {}
        for name, item in self._plan.items():
            row = {"version": item.get("version"), "path": item.get("path"), "source": item.get("source"),
                   "reason": item.get("reason")}
            if "on_path" in item:
                row["on_path"] = item["on_path"]
            got = self._outputs.get(name)
            if item.get("path"):
                if got is None:
                    row["reason"] = f"`{name} --version` did not finish in time"
                elif "error" in got:
                    row["reason"] = got["error"]
                elif got["rc"] != 0:
                    row["reason"] = f"`{name} --version` exited with {got['rc']}"
                else:
                    row["version"] = parse_version(name, got["stdout"])
                    row["source"] = f"{name} --version"
                    if row["version"] is None:
                        row["reason"] = f"`{name} --version` printed no version line"
            out[name] = row
        return out


def start(environ: Optional[Mapping[str, str]] = None, kind: str = "linux",
          which: Callable[[str], Optional[str]] = shutil.which, deadline_s: float = DEADLINE_S) -> Pending:
    """Start `--version` for every tool found on PATH; returns at once."""
    environ = os.environ if environ is None else environ
    plan: Dict[str, dict] = {}
    for name in ("gcc", "clang", "cmake"):
        exe = which(name)
        plan[name] = {"path": exe} if exe else {"reason": f"not found: no `{name}` on PATH"}
    nvcc, on_path, root = _nvcc_location(which, environ, kind)
    if nvcc:
        plan["nvcc"] = {"path": nvcc, "on_path": on_path}
    elif root and version_json(root):
        plan["nvcc"] = {"version": version_json(root), "source": os.path.join(root, "version.json"),
                        "reason": None, "on_path": False}
    else:
        plan["nvcc"] = {"reason": "not found: no `nvcc` on PATH and no CUDA toolkit under "
                                  "CUDA_HOME / CUDA_PATH" + (" / /usr/local/cuda" if kind == "linux" else "")}
    env = dict(environ)
    env["LC_ALL"] = "C"  # English, parseable output
    return Pending(plan, env, deadline_s)


def facts(environ: Optional[Mapping[str, str]] = None, kind: str = "linux",
          which: Callable[[str], Optional[str]] = shutil.which) -> dict:
    """The `system.toolchain` data: {gcc, clang, cmake, nvcc, libc}, each {version, path, source, reason}."""
    out = start(environ, kind, which).result()
    out["libc"] = libc_version(kind)
    return out
