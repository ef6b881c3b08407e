"""The one way gpudiag writes a file: whole or not at all.

A file is written to a temp file in its own folder, flushed and fsync'ed (a full disk or a quota may only
show there), then renamed over the target, and the folder is fsync'ed where the OS allows, so the new name
survives a crash. Any error, or Ctrl-C, removes the temp file: the target keeps its old content and no
`.gpudiag-*.tmp` is left behind. `gpudiag report`'s outputs stage every file first and rename them together
(report.outputs); `api.save_report` writes one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Optional

TEMP_PREFIX, TEMP_SUFFIX = ".gpudiag-", ".tmp"


def unlink_quietly(path: str) -> None:
    """Remove a temp file, ignoring one already gone: cleanup must not mask the error being reported."""
    try:
        os.unlink(path)
    except OSError:
        pass


def default_mode() -> int:
    """The mode a new file gets under the process umask (mkstemp's 0600 would keep a shareable report private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def stage(path: str, text: str, mode: Optional[int] = None) -> str:
    """Write `text` (UTF-8) to a temp file next to `path`, fsync'ed, with `mode` (None: default_mode());
    returns the temp file's path. OSError on failure, with no temp file left."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8", "backslashreplace"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode() if mode is None else mode)
    except BaseException:  # cleanup only, re-raised: no temp file is left behind, even on Ctrl-C
        unlink_quietly(tmp)
        raise
    return tmp


def fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable, where the OS lets a folder be opened and synced; else nothing."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a folder cannot be opened on Windows, where the rename is durable without it
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (network, FUSE) refuse; the rename itself is done
        pass
    finally:
        os.close(fd)


def commit(tmp: str, path: str) -> None:
    """Rename a staged temp file over `path` and sync the folder. OSError if the rename fails (the temp file
    is then the caller's to remove)."""
    os.replace(tmp, path)
    fsync_folder(os.path.dirname(path))


def existing_mode(path: str) -> Optional[int]:
    """The permission bits of the regular file at `path` (kept when it is replaced), or None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all (stage, then commit). A file replaced keeps its mode; a new
    one gets the umask's. OSError on failure, with `path` unchanged and no temp file left."""
    tmp = stage(path, text, existing_mode(path))
    try:
        commit(tmp, path)
    except BaseException:  # cleanup only, re-raised
        unlink_quietly(tmp)
        raise
