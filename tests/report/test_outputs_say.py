"""report.outputs.say: what reaches the terminal carries no control character (redaction cleans it first)."""

from __future__ import annotations

from gpudiag.report import outputs


def test_say_shows_control_characters_as_escapes(capsys):
    outputs.say("bad \x1b]0;title\x07 \x1b[2J \r overwritten \x9b", err=True)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\r" not in err and "\x9b" not in err
    assert "\\x1b]0;title\\x07" in err and "overwritten" in err


def test_say_on_stdout_too(capsys):
    outputs.say("tab\tkept, bell \x07 shown", err=False)
    out = capsys.readouterr().out
    assert "tab\tkept" in out and "\\x07" in out and "\x07" not in out
