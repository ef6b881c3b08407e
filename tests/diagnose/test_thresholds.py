"""diagnose/thresholds.py is complete: every constant in it is read by some rule, and the rules of diagnose/
(verdicts/, preflight/ and gil_scaling.py included) keep no threshold of their own, neither as a module-level
number nor as a number compared with inline.

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


# Module-level numbers in diagnose/ that are not a rule's threshold, each with why.
NOT_THRESHOLDS = {
    # input limits of `gpudiag preflight` / api.preflight (one place, read by the CLI's options too)
    "preflight/model.py:MAX_WORKERS", "preflight/model.py:MAX_DEVICE",
    # how many saved reports preflight reads for measured per-worker figures: a cost bound, not a judgement
    "preflight/model.py:MAX_REPORTS_READ",
    # the per-worker figures preflight assumes when neither a report nor a flag gives one (docs/preflight.md)
    "preflight/model.py:DEFAULT_PROCESS_HOST_BYTES", "preflight/model.py:DEFAULT_PROCESS_DEVICE_BYTES",
    "preflight/model.py:DEFAULT_THREAD_HOST_BYTES", "preflight/model.py:DEFAULT_THREAD_DEVICE_BYTES",
}
# Numbers compared against inside a rule that are facts or display precision, not thresholds.
NOT_THRESHOLD_LITERALS = {
    ("confidence.py", 0.1),       # load under 0.1 cores reads "0.0" at one decimal: not named in the text
    ("preflight/gpu_checks.py", 11),  # CUDA minor version compatibility exists from CUDA 11 on (NVIDIA's rule)
}
SMALL = (0, 1, 2, -1)  # counts and bounds every rule may compare with (none, one, a pair)


def _is_number(node: ast.AST) -> bool:
    """A numeric literal or an expression of them only (2 * 2**30, -1, 1 / 3)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_number(node.left) and _is_number(node.right)
    return False


def _rule_modules():
    """(name relative to diagnose/, syntax tree) of every module under diagnose/ but thresholds.py: the top-level
    rules, verdicts/, preflight/ and gil_scaling.py."""
    for path in sorted((PACKAGE / "diagnose").rglob("*.py")):
        if path != THRESHOLDS_FILE:
            yield path.relative_to(PACKAGE / "diagnose").as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def test_the_rules_of_diagnose_keep_no_number_of_their_own():
    """A module-level number in a diagnose/ module (verdicts/, preflight/ and gil_scaling.py included) is a
    threshold outside thresholds.py, unless NOT_THRESHOLDS says why it is not one."""
    found = []
    for rel, tree in _rule_modules():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) and node.value is not None else []
            for t in targets:
                if isinstance(t, ast.Name) and _is_number(node.value) and f"{rel}:{t.id}" not in NOT_THRESHOLDS:
                    found.append(f"{rel}:{t.id} (line {node.lineno})")
    assert not found, f"thresholds outside diagnose/thresholds.py: {found}"
    seen = {f"{rel}:{t.id}" for rel, tree in _rule_modules() for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}
    assert NOT_THRESHOLDS <= seen, f"stale NOT_THRESHOLDS entries: {sorted(NOT_THRESHOLDS - seen)}"


def test_no_rule_compares_with_a_number_of_its_own():
    """`util < 10` or `used > 0.5 * total` in a rule is a threshold without a name or a reason: it belongs in
    thresholds.py."""
    found = []
    for rel, tree in _rule_modules():
        digits = {id(a) for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                  and c.func.id == "round" for a in c.args[1:]}  # round(x, 4): display precision
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in (n for s in [node.left, *node.comparators] for n in ast.walk(s)):
                    if isinstance(side, ast.Constant) and _is_number(side) and side.value not in SMALL \
                            and id(side) not in digits and (rel, side.value) not in NOT_THRESHOLD_LITERALS:
                        found.append(f"{rel}:{node.lineno} ({side.value!r})")
    assert not found, f"numbers compared with in diagnose/ rules (name them in thresholds.py): {found}"
