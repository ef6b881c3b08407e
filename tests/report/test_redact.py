"""Privacy with planted secrets: nothing secret or identifying survives into the JSON dump."""

from __future__ import annotations

import getpass
import json
import os
import socket

import pytest

from gpudiag.report import redact as R

GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
HF = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNm123456"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
PASSWORD = "hunter2"
URL_PASS = "s3cr3tpass"
UUID = "GPU-5a8f1c2e-1234-4bcd-9ef0-0123456789ab"
SERIAL = "1323821045678"
IDENT = {"hostname": "alice-workstation.lab.example.org", "user": "alicew", "home": "/home/alicew"}
PLANTED_IDENTITY = ["alice-workstation", "alicew", "/home/alicew", "Bob-PC-Win", "bobwin"]
SECRETS = [GITHUB, HF, AWS, PASSWORD, URL_PASS, UUID, SERIAL]


def planted_report():
    """A report shaped like the real one, with secrets planted where they tend to leak."""
    return {
        "host": {"os": "Ubuntu 22.04.3 LTS", "hostname": "alice-workstation"},
        "probes": {
            "system": {"status": "ok", "reason": "", "data": {
                "python": {"executable": "/home/alicew/venvs/ml/bin/python"},
                "env": {"CUDA_VISIBLE_DEVICES": "0", "NCCL_SOCKET_IFNAME": "eth0",
                        "HF_TOKEN": HF, "NCCL_AUTH": "anything"},
                "notes": [f"cloned https://alicew:{URL_PASS}@github.com/org/repo.git",
                          f"export GITHUB_TOKEN={GITHUB}", f"db password={PASSWORD}",
                          f"aws {AWS} used", "running on alice-workstation.lab.example.org as alicew",
                          r"C:\Users\Bob-PC-Win\AppData\Local" , "/mnt/c/Users/bobwin/.wslconfig"]}},
            "driver": {"status": "ok", "reason": "", "data": {"gpus": [
                {"index": 0, "name": "NVIDIA GeForce GTX 1650", "uuid": UUID, "serial": SERIAL,
                 "note": f"device {UUID} busy"}]}},
            "failed_probe": {"status": "failed", "reason": f"RuntimeError: token={GITHUB} at x.py:3"},
        },
    }


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def test_no_planted_secret_or_identity_survives():
    out = dump(R.redact(planted_report(), identify=True, identity=IDENT))
    for s in SECRETS + PLANTED_IDENTITY:
        assert s not in out, s
    assert "NVIDIA GeForce GTX 1650" in out and "Ubuntu 22.04.3 LTS" in out  # facts survive
    assert "~/venvs/ml/bin/python" in out
    assert '"CUDA_VISIBLE_DEVICES": "0"' in out and '"NCCL_SOCKET_IFNAME": "eth0"' in out


def test_hashes_are_stable_and_short():
    a = dump(R.redact(planted_report(), identity=IDENT))
    b = dump(R.redact(planted_report(), identity=IDENT))
    assert a == b
    h = "host-" + R.short_hash("alice-workstation.lab.example.org")
    assert h in a and len(R.short_hash("x")) == 8
    assert "user-" + R.short_hash("alicew") in a


def test_identify_false_keeps_hostname_but_still_removes_secrets_and_uuids():
    out = dump(R.redact(planted_report(), identify=False, identity=IDENT))
    assert "alice-workstation" in out and "/home/alicew/venvs" in out
    for s in SECRETS:
        assert s not in out, s


def test_long_text_keeps_everything_but_the_secret():
    text = f"| **OS** | Ubuntu |\n| `HF_HOME` | /data |\nleaked {HF} here\n| **RAM** | 16 GiB |"
    out = R.redact(text, identity=IDENT)
    assert HF not in out and "| **RAM** | 16 GiB |" in out and "| **OS** | Ubuntu |" in out
    assert R.SECRET_MARK in out


def test_password_assignment_keeps_the_name():
    assert R.redact("password=hunter2", identity=IDENT) == f"password={R.SECRET_MARK}"
    assert R.redact("tokenizers==0.15.2", identity=IDENT) == "tokenizers==0.15.2"


def test_private_key_block_is_removed_whole():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\n-----END RSA PRIVATE KEY-----"
    out = R.redact(f"before\n{key}\nafter", identity=IDENT)
    assert "MIIEowIBAAKCAQEA1234" not in out and out.startswith("before") and out.endswith("after")


@pytest.mark.parametrize("host", ["kali", "ubuntu", "localhost", "vm"])
def test_generic_default_hostnames_do_not_rewrite_facts(host):
    out = R.redact({"os": "Kali GNU/Linux Rolling", "distro_id": "kali", "k": "ubuntu vm.overcommit_memory"},
                   identity={"hostname": host, "user": "ubuntu", "home": "/home/ubuntu"})
    assert out == {"os": "Kali GNU/Linux Rolling", "distro_id": "kali", "k": "ubuntu vm.overcommit_memory"}


def test_hostname_match_is_case_sensitive_word():
    out = R.redact("Nova runs nova-compute; host nova", identity={"hostname": "nova", "user": None, "home": None})
    assert out.startswith("Nova runs nova-compute; host host-")


def test_real_identity_of_this_machine_is_removed():
    host = socket.gethostname()
    try:
        user = getpass.getuser()
    except Exception:
        user = None
    home = os.path.expanduser("~")
    report = {"a": f"{host} {user} {home}/project", "b": [f"{home}/x"]}
    out = dump(R.redact(report))
    if home not in ("/", "~", ""):
        assert f"{home}/" not in out and "~/project" in out
    if host and len(host) >= 2 and host.lower() not in R._GENERIC_NAMES:
        assert host not in out
    if user and len(user) >= 2 and user.lower() not in R._GENERIC_NAMES:
        assert f" {user} " not in out


def test_allowlisted_env_only_named_and_prefixed():
    env = R.allowlisted_env({"CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "INFO", "HOME": "/home/x",
                             "NCCL_WEIRD": "a" * 20 + "1" * 20},
                            ["CUDA_VISIBLE_DEVICES"], ["NCCL_"])
    assert env == {"CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "INFO", "NCCL_WEIRD": R.SECRET_MARK}


def test_a_virtual_environment_and_the_working_folder_are_not_written():
    from gpudiag.report.redact import Redactor

    ident = {"hostname": None, "user": None, "home": "/home/alice", "homes": [],
             "venv": "/data/vision-team/secret-model/.venv", "cwd": "/data/vision-team/secret-model"}
    r = Redactor(identity=ident)
    assert r.text("/data/vision-team/secret-model/.venv/bin/python") == "<venv>/bin/python"
    assert r.text("python /data/vision-team/secret-model/train.py") == "python <cwd>/train.py"
    assert r.text("/usr/bin/gcc and /usr/local/cuda/bin/nvcc") == "/usr/bin/gcc and /usr/local/cuda/bin/nvcc"
    # a base install, or a working folder that names nobody, stays as it is
    plain = Redactor(identity=dict(ident, venv=None, cwd="/tmp"))
    assert plain.text("/tmp/x.json in /opt/conda/bin/python") == "/tmp/x.json in /opt/conda/bin/python"
    assert Redactor(identity=dict(ident, venv=None, cwd="C:\\\\")).text("C:\\\\Python\\\\python.exe").endswith("python.exe")
