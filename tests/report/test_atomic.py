"""report.atomic: every file gpudiag writes is whole or not there, synced, and leaves no temp file."""

from __future__ import annotations

import os
import stat

import pytest

from gpudiag.report import atomic


def _names(folder) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_writes_whole_and_syncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = tmp_path / "r.json"
    atomic.write_text_atomic(str(path), "{\"a\": \"é\"}\n")
    assert path.read_bytes() == "{\"a\": \"é\"}\n".encode("utf-8")
    assert _names(tmp_path) == ["r.json"]
    assert len(synced) >= (2 if hasattr(os, "O_DIRECTORY") else 1)  # the file, then its folder where it opens


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_text("old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomic(str(path), "new")
    assert path.read_text() == "old" and _names(tmp_path) == ["r.json"]


def test_a_failed_rename_and_ctrl_c_leave_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    for exc in (OSError(13, "Permission denied"), KeyboardInterrupt()):
        def replace(src, dst, exc=exc):
            raise exc

        monkeypatch.setattr(atomic.os, "replace", replace)
        with pytest.raises(type(exc)):
            atomic.write_text_atomic(str(path), "new")
        assert _names(tmp_path) == []


def test_a_replaced_file_keeps_its_mode_a_new_one_gets_the_umask(tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_text("x")
    os.chmod(old, 0o640)
    atomic.write_text_atomic(str(new), "{}")
    atomic.write_text_atomic(str(old), "{}")
    assert stat.S_IMODE(new.stat().st_mode) == atomic.default_mode()
    if os.name == "posix":  # Windows has no group bits to keep
        assert stat.S_IMODE(old.stat().st_mode) == 0o640


def test_a_folder_that_cannot_be_synced_is_no_error(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, flags, *args):
        if os.path.isdir(path):
            raise PermissionError(13, "a folder cannot be opened here")
        return real_open(path, flags, *args)

    monkeypatch.setattr(atomic.os, "open", refuse)
    atomic.fsync_folder(str(tmp_path))  # Windows: nothing to do
    path = tmp_path / "r.json"
    atomic.write_text_atomic(str(path), "{}")
    assert path.read_text() == "{}"


def test_save_report_uses_it(tmp_path, monkeypatch):
    import gpudiag
    from tests.report.test_report import sample_report

    calls = []
    real = atomic.write_text_atomic
    monkeypatch.setattr(atomic, "write_text_atomic", lambda p, t: (calls.append(p), real(p, t))[1])
    out = gpudiag.save_report(sample_report(), tmp_path / "r.json")
    assert calls == [out] and gpudiag.load_report(out)["schema_version"] == 1
