"""The redactor's identity lookup survives a machine where the username cannot be found."""
import getpass

import pytest

from gpudiag.report import redact


@pytest.mark.parametrize("exc", [KeyError("getpwuid(): uid not found: 1234"),
                                 ImportError("No module named 'pwd'"),
                                 OSError("No username set in the environment")])
def test_unknown_user_is_none_not_a_crash(monkeypatch, exc):
    def fail():
        raise exc

    monkeypatch.setattr(getpass, "getuser", fail)
    ident = redact._identity()
    assert ident["user"] is None
    assert "hostname" in ident and "homes" in ident


def test_a_bug_elsewhere_is_not_swallowed(monkeypatch):
    def fail():
        raise RuntimeError("not a lookup failure")

    monkeypatch.setattr(getpass, "getuser", fail)
    with pytest.raises(RuntimeError):
        redact._identity()
