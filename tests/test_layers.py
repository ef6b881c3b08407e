"""The layer order (pyproject.toml [tool.importlinter], docs/architecture.md) checked by import-linter.

One test runs the real contracts over the package; the others add an upward import, and an import cycle, to a
copy of the package and check that the contracts then fail, naming the rule, so a contract that silently checks
nothing (a renamed root, a wrong container) cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (`pip install -e '.[test]'`)")


def _version(dist: str) -> tuple:
    from importlib.metadata import version

    return tuple(int(p) for p in version(dist).split(".")[:2] if p.isdigit())


if _version("import-linter") < (2, 6):  # the acyclic_siblings contract ([tool.importlinter] in pyproject.toml)
    pytest.skip("import-linter 2.6 or newer is needed (Python 3.10+)", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint(cwd: str, pythonpath: str) -> subprocess.CompletedProcess:
    """lint-imports over the package found first on `pythonpath`, with the pyproject.toml in `cwd`;
    no cache (it would be written into the checkout)."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_layers_contract_is_kept():
    result = _lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract_and_names_the_rule(tmp_path):
    shutil.copytree(os.path.join(ROOT, "gpudiag"), tmp_path / "gpudiag",
                    ignore=shutil.ignore_patterns("__pycache__", "templates", "schema"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    stats = tmp_path / "gpudiag" / "measure" / "stats.py"
    # measure is near the bottom; the views it must never reach sit far above it.
    stats.write_text(stats.read_text(encoding="utf-8") + "\nfrom gpudiag.views import format  # noqa\n",
                     encoding="utf-8")
    result = _lint(str(tmp_path), str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "gpudiag layers" in out and "BROKEN" in out
    assert "gpudiag.measure is not allowed to import gpudiag.views" in out
    assert "gpudiag.measure.stats -> gpudiag.views.format" in out


def test_an_import_cycle_inside_a_package_breaks_the_contract(tmp_path):
    shutil.copytree(os.path.join(ROOT, "gpudiag"), tmp_path / "gpudiag",
                    ignore=shutil.ignore_patterns("__pycache__", "templates", "schema"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    common = tmp_path / "gpudiag" / "platform" / "_cpu_common.py"
    # the leaf importing the dispatch back: the cycle the leaf exists to prevent
    common.write_text(common.read_text(encoding="utf-8") + "\nfrom gpudiag.platform import cpu_features  # noqa\n",
                      encoding="utf-8")
    result = _lint(str(tmp_path), str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "no import cycle between the modules of a package" in out and "No cycles are allowed in gpudiag.platform" in out
