"""The user's hostile code: a probe or `--cycle` step that prints credentials, raises them in its message,
writes terminal escapes or bytes that are not UTF-8, crashes, or leaves processes behind.

Whatever it does, no secret reaches any output (JSON, HTML, Markdown, terminal), the terminal gets
no control character from it, and the report is written.
"""

import os

import pytest

from tests.faults._helpers import gpudiag, leftovers
from tests.faults.probes import SECRETS

HOSTILE_STEP = r'''
import os, signal, sys

TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def raising(device="cpu"):
    def step():
        print("Authorization: Bearer eyJhbGciOi1234567890abcdefXYZ", file=sys.stderr)
        raise RuntimeError(f"upload failed \x1b]0;pwned\x07\x1b[2J password=hunter2 token={TOKEN} "
                           f"aws_secret_access_key={AWS} -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4UbaDzY5jGh8fK3")
    return step


def crashing(device="cpu"):
    def step():
        os.write(2, b"\xff\xfe not utf-8 " + f"AKIAIOSFODNN7EXAMPLE {AWS}\n".encode())
        print("curl -H 'Authorization: Bearer eyJhbGciOi1234567890abcdefXYZ' https://bob:hunter2@example.com/x",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    return step


def factory_raising(device="cpu"):
    raise ValueError(f"cannot log in with password=hunter2 and {TOKEN}")
'''


def _no_secret_anywhere(folder, *texts):
    blobs = list(texts) + [p.read_text(errors="replace") for p in folder.iterdir() if p.suffix in (".json", ".html", ".md")]
    for blob in blobs:
        for secret in SECRETS:
            assert secret not in blob, (secret, blob[:300])
        assert "\x1b" not in blob


def test_crashing_and_raising_probes_keep_their_secrets(tmp_path):
    out = gpudiag(["report", "--json", "r.json", "-o", "r.html", "--markdown", "r.md"], cwd=tmp_path, tmpdir=tmp_path,
                  fixtures="secrets")
    assert out.returncode == 1, out.stderr  # written whole; 1: a probe failed
    _no_secret_anywhere(tmp_path, out.stdout, out.stderr)
    rep = (tmp_path / "r.json").read_text()
    assert "crashed with signal 11 (SIGSEGV)" in rep and "[redacted: looks like a secret]" in rep
    assert "password=[redacted" in rep  # the name stays, so the reader knows what was removed
    assert leftovers(tmp_path, keep=("r.json", "r.html", "r.md")) == []


@pytest.mark.torch  # the cycle probe needs torch
@pytest.mark.parametrize("factory", ["raising", "crashing", "factory_raising"])
def test_hostile_cycle_step_keeps_its_secrets(tmp_path, factory):
    (tmp_path / "hostile_step.py").write_text(HOSTILE_STEP)
    out = gpudiag(["report", "--only", "cycle", "--cycle", f"hostile_step:{factory}", "--json", "r.json",
                   "-o", "r.html", "--markdown", "r.md"], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode in (1, 2), out.stderr  # 1: the cycle probe failed; 2: the factory was refused up front
    assert "Traceback" not in out.stderr
    _no_secret_anywhere(tmp_path, out.stdout, out.stderr)
    rep = (tmp_path / "r.json").read_text()
    assert '"status": "failed"' in rep
    assert [n for n in os.listdir(tmp_path) if n.startswith(("gpudiag-", ".gpudiag-"))] == []
