"""The dynamic linker's cache (/etc/ld.so.cache) read as a file: what `ldconfig -p` prints,
without running ldconfig (often not on a user's PATH: it lives in /sbin).

glibc's format (sysdeps/generic/dl-cache.h): the "glibc-ld.so.cache1.1" header (magic, version,
nlibs, len_strings, flags, padding, extension offset, 3 unused words = 48 bytes), then nlibs
entries of {int32 flags, uint32 key, uint32 value, uint32 osversion, uint64 hwcap} (24 bytes);
key and value are offsets, from the start of that header, of the library's name and path.
Caches written by glibc < 2.32 start with the old "ld.so-1.7.0" table (12-byte entries) and carry
the new one after it; only the new one is read.
"""

from __future__ import annotations

import os
import struct
from typing import List, Optional, Tuple

CACHE = "/etc/ld.so.cache"
MAGIC_NEW = b"glibc-ld.so.cache1.1"
MAGIC_OLD = b"ld.so-1.7.0"
_HEADER = 48
_ENTRY = 24
_MAX_BYTES = 32 * 2 ** 20


def _cstring(data: bytes, offset: int) -> Optional[str]:
    """The NUL-terminated name at `offset` in the cache, or None when the offset is outside it or no
    NUL follows: a corrupt cache must not raise."""
    if not 0 <= offset < len(data):
        return None
    end = data.find(b"\0", offset)
    if end < 0:
        return None
    return data[offset:end].decode("utf-8", "replace")


def parse(data: bytes) -> List[Tuple[str, str]]:
    """[(soname, path)] in cache order from the bytes of an ld.so.cache; [] when unrecognised."""
    start = data.find(MAGIC_NEW)
    if start < 0 or (start > 0 and not data.startswith(MAGIC_OLD)):
        return []
    new = data[start:]
    if len(new) < _HEADER:
        return []
    flags = new[28]
    order = ">" if flags == 3 else "<"  # 2 = little-endian, 3 = big-endian, 0 = unknown (native)
    nlibs, = struct.unpack_from(order + "I", new, 20)
    if _HEADER + nlibs * _ENTRY > len(new):
        return []
    out = []
    for i in range(nlibs):
        _flags, key, value = struct.unpack_from(order + "iII", new, _HEADER + i * _ENTRY)
        name, path = _cstring(new, key), _cstring(new, value)
        if name and path:
            out.append((name, path))
    return out


def read(root: str = "/") -> Optional[List[Tuple[str, str]]]:
    """The cache's entries, or None when there is no readable cache (musl, macOS, Windows)."""
    path = os.path.join(root, CACHE.lstrip("/"))
    try:
        if os.path.getsize(path) > _MAX_BYTES:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return parse(data)


def find(prefix: str, root: str = "/") -> Optional[List[str]]:
    """Paths of cached libraries whose name starts with `prefix` ("libcudnn"), de-duplicated in
    cache order; None when there is no cache to ask."""
    entries = read(root)
    if entries is None:
        return None
    out: List[str] = []
    for name, path in entries:
        if name.startswith(prefix) and path not in out:
            out.append(path)
    return out
