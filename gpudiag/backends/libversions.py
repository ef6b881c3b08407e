"""Versions of native libraries read from their files, without loading them.

    pe_file_version(path)          -> "9.1.0.70"   a Windows DLL's VS_FIXEDFILEINFO (its .rsrc section only)
    version_from_filename(path)    -> "8.9.7"      libcudnn.so.8.9.7 / cudnn64_8.dll (after symlinks)
    header_version(text, kind)     -> "9.1.0"      cudnn_version.h / cuda_runtime_api.h macros

Loading a library to ask it (cudnnGetVersion, cudaRuntimeGetVersion) costs hundreds of
milliseconds and can fail on a machine without a driver; a file name, a header or a DLL's version
resource answers the same question in microseconds. ELF libraries carry no version resource, and
the CUDA ones no version string either (checked on libcudart.so.13), so on Linux the name after
resolving symlinks, the package that installed it and the headers next to it are what is read.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Optional

_VS_FIXEDFILEINFO_SIGNATURE = struct.pack("<I", 0xFEEF04BD)
_MAX_RSRC_BYTES = 64 * 2 ** 20  # a resource section beyond this is not a plain library's


def _rsrc_section(fh) -> Optional[bytes]:
    """The raw bytes of a PE file's .rsrc section, or None when the file is not PE."""
    head = fh.read(64)
    if len(head) < 64 or head[:2] != b"MZ":
        return None
    (e_lfanew,) = struct.unpack_from("<I", head, 0x3C)
    fh.seek(e_lfanew)
    coff = fh.read(24)
    if len(coff) < 24 or coff[:4] != b"PE\0\0":
        return None
    n_sections, = struct.unpack_from("<H", coff, 6)
    opt_size, = struct.unpack_from("<H", coff, 20)
    fh.seek(e_lfanew + 24 + opt_size)
    table = fh.read(40 * n_sections)
    for i in range(n_sections):
        sec = table[40 * i: 40 * i + 40]
        if len(sec) < 40:
            break
        if sec[:8].rstrip(b"\0") == b".rsrc":
            raw_size, raw_ptr = struct.unpack_from("<II", sec, 16)
            if raw_size > _MAX_RSRC_BYTES:
                return None
            fh.seek(raw_ptr)
            return fh.read(raw_size)
    return None


def pe_file_version(path: str) -> Optional[str]:
    """A DLL/EXE's file version "a.b.c.d" from its VS_FIXEDFILEINFO, or None (not PE, no resource).

    Only the .rsrc section is read: cuDNN 9's engine DLLs are hundreds of megabytes.
    """
    try:
        with open(path, "rb") as fh:
            rsrc = _rsrc_section(fh)
    except OSError:
        return None
    if not rsrc:
        return None
    at = rsrc.find(_VS_FIXEDFILEINFO_SIGNATURE)
    if at < 0 or len(rsrc) < at + 16:
        return None
    _sig, _struc, ms, ls = struct.unpack_from("<IIII", rsrc, at)
    return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"


# libcudnn.so.8.9.7, libcudart.so.12.4.127, libnccl.so.2.21.5, libcudnn.9.dylib, cudnn64_8.dll, cudart64_12.dll
_SO = re.compile(r"\.so\.(\d+(?:\.\d+)*)$")
_DYLIB = re.compile(r"\.(\d+(?:\.\d+)*)\.dylib$")
_DLL = re.compile(r"(?:64|32)?_(\d+)(?:_\d+)?\.dll$", re.I)


def version_from_filename(path: str) -> Optional[str]:
    """The version a library's file name carries after following symlinks ("8.9.7", or "8" when
    that is all the name says), or None."""
    try:
        real = os.path.realpath(path)
    except OSError:
        real = path
    for candidate in (os.path.basename(real), os.path.basename(path)):
        for pattern in (_SO, _DYLIB, _DLL):
            m = pattern.search(candidate)
            if m:
                return m.group(1)
    return None


_CUDNN_MACROS = ("CUDNN_MAJOR", "CUDNN_MINOR", "CUDNN_PATCHLEVEL")


def header_version(text: str, kind: str) -> Optional[str]:
    """The version a header declares: kind "cudnn" (cudnn_version.h / cudnn.h before v8) -> "9.1.0";
    kind "cudart" (cuda_runtime_api.h `#define CUDART_VERSION 12040`) -> "12.4"."""
    if kind == "cudnn":
        parts = []
        for macro in _CUDNN_MACROS:
            m = re.search(rf"^\s*#\s*define\s+{macro}\s+(\d+)", text, re.MULTILINE)
            if not m:
                return None
            parts.append(m.group(1))
        return ".".join(parts)
    if kind == "cudart":
        m = re.search(r"^\s*#\s*define\s+CUDART_VERSION\s+(\d+)", text, re.MULTILINE)
        if not m:
            return None
        n = int(m.group(1))
        return f"{n // 1000}.{(n % 1000) // 10}"
    raise ValueError(f"unknown header kind {kind!r}")


def read_header_version(path: str, kind: str) -> Optional[str]:
    """header_version() of a file, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return header_version(fh.read(), kind)
    except OSError:
        return None
