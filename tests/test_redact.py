"""Privacy: planted secrets never reach any output; identity is hashed stably unless --no-redact."""

import json

from gpudiag import redact

IDENTITY = {"hostname": "alices-laptop", "user": "alice", "home": "/home/alice"}
SECRETS = [
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "AKIAIOSFODNN7EXAMPLE",
    "password=hunter2",
    "https://bob:s3cr3tpass@example.com/repo.git",
    "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]
UUID = "GPU-5b1c3a8e-8f0e-4a5b-9c2d-1e2f3a4b5c6d"


def planted():
    return {
        "host": {"hostname": "alices-laptop", "note": "ran on alices-laptop by alice"},
        "paths": ["/home/alice/proj/train.py", "/home/alice"],
        "secrets": list(SECRETS),
        "env": {"HF_TOKEN": "whatever-value", "MY_PASSWORD": "plain"},
        "gpus": [{"name": "RTX", "uuid": UUID, "serial": "1324020012345", "text": f"device {UUID} busy"}],
    }


def dump(obj):
    return json.dumps(obj)


def test_secrets_uuids_and_identity_never_appear():
    out = dump(redact.redact(planted(), identity=IDENTITY))
    for s in SECRETS + [UUID, "1324020012345", "alices-laptop", "/home/alice", "hunter2", "s3cr3tpass",
                        "whatever-value"]:
        assert s not in out, s
    assert '"alice"' not in out and " alice" not in out
    assert "~/proj/train.py" in out
    assert "host-" + redact.short_hash("alices-laptop") in out
    assert "user-" + redact.short_hash("alice") in out


def test_hashes_are_stable_so_reports_of_one_machine_compare():
    a = redact.redact(planted(), identity=IDENTITY)
    b = redact.redact(planted(), identity=IDENTITY)
    assert a == b


def test_no_redact_keeps_identity_but_still_removes_secrets_and_uuids():
    out = dump(redact.redact(planted(), identify=False, identity=IDENTITY))
    assert "alices-laptop" in out and "/home/alice/proj" in out
    for s in SECRETS + [UUID, "1324020012345"]:
        assert s not in out, s


def test_allowlisted_env_masks_opaque_values_and_secret_names():
    env = {"CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "INFO", "NCCL_TOKEN": "x",
           "OMP_NUM_THREADS": "aZ9" * 12, "HOME": "/home/alice", "GITHUB_TOKEN": "ghp_x"}
    got = redact.allowlisted_env(env, ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"], ["NCCL_"])
    assert set(got) == {"CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "NCCL_TOKEN", "OMP_NUM_THREADS"}
    assert got["NCCL_TOKEN"] == redact.SECRET_MARK and got["OMP_NUM_THREADS"] == redact.SECRET_MARK
    assert got["NCCL_DEBUG"] == "INFO"


def test_ordinary_values_survive():
    data = {"kernel": "6.5.0-kali1-amd64", "gpu": "NVIDIA GeForce GTX 1650", "git": "a" * 40}
    assert redact.redact(data, identity=IDENTITY) == data
