import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def _ci_leg(name):
    """The command lines of one leg of .ci/run: the body of its `name() ( ... )` function."""
    body = re.search(rf"^{name}\(\) \($(.*?)^\)$", _read(".ci", "run"), re.S | re.M)
    assert body, f".ci/run has no {name} leg"
    return [line.strip() for line in body.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim_without_torch_then_the_suite_with_torch():
    tests_cmd = [b for b in re.findall(r"```\n(.*?)\n```", _read("README.md"), re.S) if "pytest" in b]
    assert len(tests_cmd) == 1, tests_cmd
    without = _ci_leg("leg_without_torch")
    assert tests_cmd[0] in without
    assert not [line for line in without if "torch=" in line or "[torch]" in line]
    with_torch = _ci_leg("leg_with_torch")
    assert "python -m pip install -q torch==2.13.0" in with_torch  # the CPU build: pinned, from the local wheel
    assert "python -m pytest" in with_torch and with_torch[-1] == "mypy gpudiag"  # the suite, then the types
    calls = [line.strip() for line in _read(".ci", "run").splitlines()]
    assert calls.index("leg_without_torch") < calls.index("leg_with_torch")  # both run, the README's first
    assert calls[-1] == '[ "$without_torch" -eq 0 ] && [ "$with_torch" -eq 0 ]'  # and either failing fails CI


def test_readme_first_command_installs_and_runs_report():
    blocks = re.findall(r"```\n(.*?)\n```", _read("README.md"), re.S)
    assert blocks[0].endswith("pip install . && gpudiag report")
