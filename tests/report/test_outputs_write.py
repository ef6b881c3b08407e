"""report.outputs.write: every file through report.atomic (staged, renamed together, folder synced), `-` last."""

from __future__ import annotations

import os

import pytest

from gpudiag.report import atomic, outputs


def test_files_are_staged_then_committed_with_their_folder_synced(tmp_path, monkeypatch, capsys):
    (tmp_path / "r.html").write_text("old")
    os.chmod(tmp_path / "r.html", 0o640)
    folders = []
    monkeypatch.setattr(atomic, "fsync_folder", folders.append)
    html = outputs.Output("html", str(tmp_path / "r.html"), "--output")
    js = outputs.Output("json", str(tmp_path / "r.json"), "--json")
    md = outputs.Output("markdown", None, "--markdown")
    written = outputs.write([(html, "<html>"), (js, lambda: "{}"), (md, "# md")])
    assert written == {"HTML": str(tmp_path / "r.html"), "JSON": str(tmp_path / "r.json")}
    assert (tmp_path / "r.html").read_text() == "<html>" and (tmp_path / "r.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["r.html", "r.json"]  # no temp file left
    assert folders == [str(tmp_path), str(tmp_path)]
    if os.name == "posix":
        assert os.stat(tmp_path / "r.html").st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    assert capsys.readouterr().out == "# md\n"


def test_a_failed_rename_keeps_every_old_file(tmp_path, monkeypatch):
    for name in ("r.html", "r.json"):
        (tmp_path / name).write_text("old")

    def refuse(tmp, path):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(atomic, "commit", refuse)
    outs = [(outputs.Output("html", str(tmp_path / "r.html"), "--output"), "new"),
            (outputs.Output("json", str(tmp_path / "r.json"), "--json"), "new")]
    with pytest.raises(outputs.OutputError, match="no output file was changed") as info:
        outputs.write(outs)
    assert info.value.exit_code == outputs.EXIT_WRITE
    assert sorted(os.listdir(tmp_path)) == ["r.html", "r.json"]
    assert all((tmp_path / n).read_text() == "old" for n in ("r.html", "r.json"))
