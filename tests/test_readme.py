import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line.strip() for line in _read(".ci", "run").splitlines() if line.strip() and not line.startswith("#")]
    test_cmd = next(line for line in ci_lines if "python -m pytest" in line)  # checks may follow (mypy)
    readme_blocks = re.findall(r"```\n(.*?)\n```", _read("README.md"), re.S)
    assert test_cmd in readme_blocks


def test_readme_first_command_installs_and_runs_report():
    blocks = re.findall(r"```\n(.*?)\n```", _read("README.md"), re.S)
    assert blocks[0].endswith("pip install . && gpudiag report")
