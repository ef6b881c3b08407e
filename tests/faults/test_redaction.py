"""Redaction of free text and of keys: every string that reaches an output passes the redactor, which
knows the common secret shapes, removes identity from paths (hyphen-joined names, other users' homes),
rewrites VALUES only (a machine named `status` or a user named `python` renames no field), and makes
any text writable (non-UTF-8 bytes, control characters).
"""

import json
import subprocess

import pytest

from gpudiag.report import contract
from gpudiag.report import redact as R
from gpudiag.views import render
from tests.faults._helpers import PY, env_for, gpudiag
from tests.report.test_report import sample_report

IDENT = {"hostname": "zorba-ws.lab.example.org", "user": "alicesmith", "home": "/home/alicesmith",
         "homes": ["/data/dave", "/srv/people/erin"]}

SHAPES = [
    ("Authorization: Bearer eyJhbGciOi1234567890abcdefXYZ", "eyJhbGciOi1234567890abcdefXYZ"),
    ("curl -H 'authorization: basic dXNlcjpwYXNzd29yZA1=='", "dXNlcjpwYXNzd29yZA1=="),
    ("Cookie: session=8f2b1c9d7e6a5b4c3d2e1f0a", "8f2b1c9d7e6a5b4c3d2e1f0a"),
    ("x-api-key: 5d41402abc4b2a76b9719d911017c592", "5d41402abc4b2a76b9719d911017c592"),
    ("AKIAIOSFODNN7EXAMPLE in the log", "AKIAIOSFODNN7EXAMPLE"),
    ("ASIAY34FZKBOKMUTVV7A was used", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("{'aws_secret_access_key': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}", "wJalrXUtnFEMI"),
    ("secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("key=0123abcdXYZ", "0123abcdXYZ"), ("api_key: sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("token=abc123def456", "abc123def456"), ("TOKEN: 'quoted secret value'", "quoted secret value"),
    ("password=hunter2", "hunter2"), ('"password": "correct horse"', "correct horse"), ("PASSWD=s3cr3t!", "s3cr3t!"),
    ("--password hunter2 --verbose", "hunter2"), ("mysql -u root --token=tok-999-xyz", "tok-999-xyz"),
    ("https://bob:hunter2@example.com/repo.git", "hunter2"), ("postgres://svc:pa55@db:5432/x", "pa55"),
    ("https://s3.amazonaws.com/b/k?X-Amz-Signature=abcdef0123456789&X-Amz-Credential=AKIDEXAMPLE", "abcdef0123456789"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF0gT2kBCAC\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBF0gT2kBCAC"),
    ("tail of a key: MIIEowIBAAKCAQEAx4UbaDzY5jGh8fK3mNpQrStUvWxYz0123", "MIIEowIBAAKCAQEAx4UbaDzY5jGh8fK3"),
    ("ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    ("hf_QwErTyUiOpAsDfGhJkLzXcVbNm123456", "QwErTyUiOpAsDfGhJkLzXcVbNm123456"),
    ("xoxb-123456789012-abcdefghij", "abcdefghij"), ("ya29.a0AfH6SMBx3abcdefghijklmnop", "a0AfH6SMBx3abcdefghijklmnop"),
]

FACTS = ["tokenizers==0.15.2", "torch 2.13.0+cu121", "NVIDIA GeForce RTX 4090 Laptop GPU",
         "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "CUDA_VISIBLE_DEVICES=0", "NCCL_DEBUG=INFO",
         "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "basic installation of x86_64",
         "gpudiag-report-2026-05-09-ab12cd.json", "max_workers: 4", "Bearer of bad news", "monkey=banana",
         "NVIDIA_GeForce_RTX_4090_Laptop_GPU_24GB", "C:\\Program Files\\NVIDIA Corporation\\NVSMI\\nvml.dll"]


@pytest.mark.parametrize("text,secret", SHAPES)
def test_secret_shapes_in_free_text_are_removed(text, secret):
    out = R.redact(f"before {text}\nafter", identity=IDENT)  # a header value runs to the end of its line
    assert secret not in out and out.startswith("before") and out.endswith("after")
    assert R.redact(out, identity=IDENT) == out  # redacting twice changes nothing (messages pass twice)


@pytest.mark.parametrize("fact", FACTS)
def test_facts_that_look_a_little_like_secrets_survive(fact):
    assert R.redact(fact, identity=IDENT) == fact


@pytest.mark.parametrize("text,gone", [
    ("/data/alicesmith-projects/run1", "alicesmith"), ("/scratch/alicesmith_env/bin", "alicesmith"),
    ("conda env alicesmith.ml", "alicesmith"), ("/home/bob/venv/bin/python", "bob"),
    ("CUDA_HOME=/home/carol/cuda", "carol"), ("| `NCCL_DEBUG_FILE` | `/home/frank/n.log` |", "frank"),
    ("C:\\Users\\Grace\\AppData", "Grace"), ("C:\\\\Users\\\\Heidi\\\\x", "Heidi"), ("/mnt/c/Users/ivan/.wslconfig", "ivan"),
    ("/Users/judy/Library", "judy"), ("/data/dave/checkpoints", "/data/dave"), ("/srv/people/erin/x", "/srv/people/erin"),
    ("running on zorba-ws.lab.example.org", "zorba-ws"), ("zorba-ws:~$ ls", "zorba-ws"),
])
def test_identity_in_paths_and_text_is_removed(text, gone):
    assert gone not in R.redact(text, identity=IDENT)


@pytest.mark.parametrize("name", ["status", "python", "data", "torch", "probes", "host", "mode", "findings"])
def test_a_machine_or_user_named_like_a_field_renames_nothing(name):
    rep = sample_report()
    rep["probes"]["system"]["data"].setdefault("python", {})["executable"] = f"/home/{name}/venv/bin/python"
    ident = {"hostname": name, "user": name, "home": f"/home/{name}", "homes": []}
    out = R.redact(rep, identity=ident)
    assert _keys(out) == _keys(rep)
    contract.validate(out)
    render.render_html(out)
    render.render_markdown(out)
    assert out["probes"]["system"]["data"]["python"]["executable"] == "~/venv/bin/python"


def _keys(obj, path=()):
    if isinstance(obj, dict):
        return {(path + (k,)) for k in obj} | set().union(*(_keys(v, path + (k,)) for k, v in obj.items()))
    if isinstance(obj, list):
        return set().union(set(), *(_keys(v, path + (i,)) for i, v in enumerate(obj)))
    return set()


def test_values_under_secret_keys_go_but_keys_stay():
    out = R.redact({"NCCL_AUTH": "plain", "api_key": "x", "token_count": "y", "status": "ok"}, identity=IDENT)
    assert out == {"NCCL_AUTH": R.SECRET_MARK, "api_key": R.SECRET_MARK, "token_count": R.SECRET_MARK, "status": "ok"}


def test_env_prints_no_other_users_home_and_survives_non_utf8(tmp_path):
    env = env_for(str(tmp_path), NCCL_DEBUG_FILE="/home/mallory/nccl.%h.log", USER="alicesmith",
                  NCCL_SOCKET_IFNAME="eth0")
    raw = subprocess.run([PY, "-m", "gpudiag", "env"], env={**env, "CUDA_VISIBLE_DEVICES": "0"},
                         capture_output=True, timeout=120)
    env_bytes = {k.encode(): v.encode() for k, v in env.items()}
    env_bytes[b"CUDA_VISIBLE_DEVICES"] = b"\xff\xfe"
    raw2 = subprocess.run([PY, "-m", "gpudiag", "env"], env=env_bytes, capture_output=True, timeout=120)
    for out in (raw, raw2):
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode("utf-8")  # valid UTF-8
        assert "mallory" not in text and "NCCL_DEBUG_FILE" in text
    assert "\\xff\\xfe" in raw2.stdout.decode()


def test_non_utf8_allowlisted_variable_reaches_json_html_and_render(tmp_path):
    env_bytes = {k.encode(): v.encode() for k, v in env_for(str(tmp_path)).items()}
    env_bytes[b"CUDA_VISIBLE_DEVICES"] = b"\xff\xfe"
    out = subprocess.run([PY, "-m", "gpudiag", "report", "--only", "system", "--json", "r.json", "-o", "r.html",
                          "--markdown", "r.md"], cwd=tmp_path, env=env_bytes, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rep = contract.load_report(str(tmp_path / "r.json"))
    assert rep["probes"]["system"]["data"]["env"]["CUDA_VISIBLE_DEVICES"] == "\\xff\\xfe"
    assert "\\xff\\xfe" in (tmp_path / "r.html").read_text(encoding="utf-8")
    again = gpudiag(["render", "r.json", "-o", "again.html"], cwd=tmp_path, tmpdir=tmp_path)
    assert again.returncode == 0, again.stderr


def test_a_lone_surrogate_in_a_saved_report_still_renders(tmp_path):
    rep = sample_report()
    rep["host"]["os"] = "\udcff\udcfe odd"
    (tmp_path / "r.json").write_text(json.dumps(rep))  # json escapes it as \udcff: a valid file, a bad string
    out = gpudiag(["render", "r.json", "-o", "r.md"], cwd=tmp_path, tmpdir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "\\xff\\xfe odd" in (tmp_path / "r.md").read_text(encoding="utf-8")


def test_preflight_text_and_json_paths_are_redacted(tmp_path):
    folder = tmp_path / "alicesmith-projects"
    folder.mkdir()
    saved = folder / "gpudiag-report-2026-01-01-abcdef.json"
    saved.write_text(contract.dumps(sample_report()))
    for extra in ([], ["--json"]):
        out = gpudiag(["preflight", "--report", str(saved), "--checkpoint-dir", str(folder)] + extra, cwd="/",
                      tmpdir=tmp_path, env={"USER": "alicesmith", "LOGNAME": "alicesmith"})
        assert out.returncode in (0, 1), out.stderr
        assert "alicesmith" not in out.stdout + out.stderr
        if extra:
            json.loads(out.stdout)


def test_terminal_summary_and_errors_are_redacted(tmp_path):
    folder = tmp_path / "alicesmith-projects"
    folder.mkdir()
    env = {"USER": "alicesmith", "LOGNAME": "alicesmith"}
    out = gpudiag(["report", "--only", "driver", "-o", str(folder / "r.html")], cwd=tmp_path, tmpdir=tmp_path, env=env)
    assert out.returncode == 0 and "Wrote HTML" in out.stdout and "alicesmith" not in out.stdout + out.stderr
    out = gpudiag(["report", "--only", "driver", "-o", str(folder / "missing" / "r.html")], cwd=tmp_path,
                  tmpdir=tmp_path, env=env)
    assert out.returncode == 2 and "does not exist" in out.stderr and "alicesmith" not in out.stderr
