"""`gpudiag env` is a superset of `python -m torch.utils.collect_env`: both run here, and every
field collect_env prints (its "Label: value" lines, its CPU block's keys, its package lines) must
have a line in `gpudiag env`. The field list is read from collect_env's output, not written down."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

import tests
from gpudiag.backends import packages, torch_meta

ROOT = tests.ROOT
pytestmark = pytest.mark.torch

# lscpu keys gpudiag deliberately does not reproduce: lscpu reads them from the SMBIOS tables
# (/sys/firmware/dmi/tables/DMI, root only); gpudiag never reads firmware tables.
NOT_REPRODUCED_CPU_KEYS = re.compile(r"^BIOS ")


def _run(args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m"] + args, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def outputs():
    return _run(["torch.utils.collect_env"]), _run(["gpudiag", "env"])


def parse_collect_env(text: str):
    """(top-level labels, CPU block keys, package lines) from collect_env's output."""
    labels, cpu, libs = [], [], []
    section, header = "top", ""
    for line in text.splitlines():
        if line.startswith("Collecting environment information"):
            continue
        if line.rstrip() == "CPU:":
            section = "cpu"
            labels.append("CPU")
            continue
        if line.startswith("Versions of relevant libraries:"):
            section = "libs"
            labels.append("Versions of relevant libraries")
            continue
        if section == "top":
            m = re.match(r"^([A-Za-z][^:]*?):(?: |$)", line)
            # continuation lines of multi-line values: "GPU 1: ...", "Probably one of the following:"
            if m and not re.match(r"^(GPU \d+|Probably one of)", m.group(1)):
                labels.append(m.group(1))
        elif section == "cpu":
            key, sep, value = line.partition(":")
            indent, key = len(key) - len(key.lstrip()), key.strip()
            if not sep or not key:
                continue
            if not value.strip():  # a header of lscpu's tree layout: "Caches (sum of all):"
                header = key if indent == 0 or header == "" else header
                continue
            if header.startswith("Vulnerabilities") and not key.startswith("Vulnerability "):
                key = "Vulnerability " + key
            if re.match(r"^L\d[di]?$", key):  # "L1d:" under "Caches (sum of all):"
                key += " cache"
            cpu.append(key)
        elif line.startswith("["):
            libs.append(line)
    return labels, cpu, libs


def field_table(env: str) -> str:
    """The "Field by field" table of `gpudiag env` (the main table also has OS and CPU rows)."""
    return env[env.index("#### Field by field"):].split("\n\n", 2)[1]


def test_every_collect_env_field_has_a_gpudiag_env_line(outputs):
    ce, env = outputs
    labels, _cpu, _libs = parse_collect_env(ce)
    assert len(labels) >= 24, labels  # sanity: the parser found collect_env's fields
    table = field_table(env)
    missing = [label for label in labels if f"| **{label}** |" not in table]
    assert not missing, f"collect_env fields without a line in `gpudiag env`: {missing}"


def test_no_field_is_silently_empty(outputs):
    _ce, env = outputs
    for line in field_table(env).splitlines()[2:]:
        value = line.split("|")[2].strip()
        assert value and value != "unknown", line


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lscpu's keys: collect_env's CPU block on Linux")
def test_every_lscpu_key_has_a_gpudiag_cpu_row(outputs):
    ce, env = outputs
    _labels, cpu, _libs = parse_collect_env(ce)
    if not cpu:
        pytest.skip("collect_env printed no CPU block (no lscpu here)")
    block = env[env.index("<summary>CPU (lscpu fields)</summary>"):]
    block = block[:block.index("</details>")]
    rows = {line.split("|")[1].strip() for line in block.splitlines() if line.startswith("| ")}
    missing = [k for k in cpu if k not in rows and not NOT_REPRODUCED_CPU_KEYS.match(k)]
    assert not missing, f"lscpu keys without a row in gpudiag's CPU block: {missing}"


def test_every_collect_env_package_is_listed(outputs):
    ce, env = outputs
    _labels, _cpu, libs = parse_collect_env(ce)
    block = env[env.index("<summary>Versions of relevant libraries</summary>"):]
    ours = {}
    for line in block.splitlines():
        m = re.match(r"^\[(pip\d?)\] (\S+)==(\S+)$", line)
        if m:
            ours[packages.normalise(m.group(2))] = m.group(3)
    conda_lines = [line for line in block.splitlines() if line.startswith("[conda] ")]
    for line in libs:
        m = re.match(r"^\[pip\d?\] (\S+)==(\S+)$", line)
        if m:
            assert ours.get(packages.normalise(m.group(1))) == m.group(2), line
        elif line.startswith("[conda] "):
            rest = line[len("[conda] "):].split()
            if rest and rest[0] not in ("Could", "No"):
                assert any(c.split()[1] == rest[0] for c in conda_lines), line
            else:
                assert conda_lines, "collect_env has a [conda] line, gpudiag none"


def test_package_patterns_cover_collect_env_lists():
    """collect_env's pattern lists, read from its source without importing torch."""
    path = os.path.join(torch_meta.torch_dir(), "utils", "collect_env.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.endswith("_PATTERNS") and isinstance(node.value, ast.List):
                found[name] = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    assert {"COMMON_PATTERNS", "NVIDIA_PATTERNS", "CONDA_PATTERNS", "PIP_PATTERNS"} <= set(found)
    ours = set(packages.PATTERNS)
    missing = [p for patterns in found.values() for p in patterns if p not in ours]
    assert not missing, f"collect_env patterns gpudiag's package list does not match: {missing}"
