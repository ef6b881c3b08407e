"""diagnose/thresholds.py is complete: every constant in it is read by some rule, and the rules of diagnose/
keep no threshold of their own.

The users are found in the code's syntax tree (a name imported from gpudiag.diagnose.thresholds and then
read, or `thresholds.NAME`), so a docstring that mentions a constant does not count as using it.
Run with `-s` to see the table of constants and their users.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Set

import gpudiag
from gpudiag.diagnose import thresholds

PACKAGE = pathlib.Path(gpudiag.__file__).parent
MODULE = "gpudiag.diagnose.thresholds"
THRESHOLDS_FILE = PACKAGE / "diagnose" / "thresholds.py"


def constants() -> List[str]:
    """The module-level UPPER_CASE names thresholds.py assigns, in file order."""
    tree = ast.parse(THRESHOLDS_FILE.read_text(encoding="utf-8"))
    return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name) and t.id.isupper()]


def _reads(tree: ast.AST) -> Set[str]:
    """Names of thresholds a module reads: imported from it by name and used, or read as an attribute of it."""
    direct: Dict[str, str] = {}   # local name -> constant
    modules: Set[str] = set()     # local names bound to the thresholds module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.module == MODULE:
                direct.update({a.asname or a.name: a.name for a in node.names})
            elif node.module == "gpudiag.diagnose":
                modules.update(a.asname or a.name for a in node.names if a.name == "thresholds")
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.name == MODULE and a.asname)
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in direct:
            used.add(direct[node.id])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            used.add(node.attr)
    return used


def users() -> Dict[str, List[str]]:
    """{constant: [modules of gpudiag that read it]} for every constant of thresholds.py."""
    out: Dict[str, List[str]] = {name: [] for name in constants()}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == THRESHOLDS_FILE:
            continue
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for name in _reads(ast.parse(path.read_text(encoding="utf-8"))) & set(out):
            out[name].append(rel)
    return out


def test_every_threshold_is_read_by_a_rule():
    table = users()
    print("\n" + "\n".join(f"{name:34} {', '.join(mods) or '-'}" for name, mods in table.items()))
    unused = [name for name, mods in table.items() if not mods]
    assert not unused, f"constants in diagnose/thresholds.py that nothing reads (use or delete them): {unused}"


def test_the_listing_sees_every_constant_and_both_kinds_of_use():
    names = constants()
    assert names and all(hasattr(thresholds, n) for n in names)
    table = users()
    assert "gpudiag/diagnose/confidence.py" in table["NOISE_MARGIN_FRACTION"]  # `from ... import NAME`
    assert "gpudiag/diagnose/recommend.py" in table["CAUSES"]
    tree = ast.parse("from gpudiag.diagnose import thresholds as t\nx = t.SIMPLICITY\n"
                     "from gpudiag.diagnose.thresholds import CAUSES\n'''CUDA_PROBES in a docstring'''\n")
    assert _reads(tree) == {"SIMPLICITY"}  # imported but never read, or only named in text: not a use


def test_the_rules_of_diagnose_keep_no_number_of_their_own():
    """A module-level number in a diagnose/ rule module is a threshold outside thresholds.py. (preflight/ has its
    own model of defaults, and verdicts/ is checked once the GIL rules move in.)"""
    found = []
    for path in sorted((PACKAGE / "diagnose").glob("*.py")):
        if path == THRESHOLDS_FILE:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, (int, float)) and not isinstance(node.value.value, bool):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"thresholds outside diagnose/thresholds.py: {found}"
