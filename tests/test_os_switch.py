"""Only gpudiag/platform/ tests which OS this is (docs/architecture.md): everything else asks platform for a
behaviour or a fact (platform.KIND as a name, platform.NAMES_FOLD_CASE, platform.libraries...).

An OS test is this machine's OS compared or looked up: sys.platform, os.name, the standard library's
platform.system() / win32_ver() / mac_ver(), sys.getwindowsversion() in a comparison, a startswith(), a
subscript or a dict's .get(); or platform.KIND compared with an OS's name. Reading one into a report as a
fact is not a test. Rules over a report's data ("the measured machine ran Windows") are not either: they
judge another machine's facts, not this process's OS.
"""

from __future__ import annotations

import ast
import os
from typing import Iterator, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gpudiag")

_STDLIB_OS_CALLS = {"system", "win32_ver", "win32_edition", "mac_ver"}


def _is_os_probe(node: ast.AST) -> bool:
    """sys.platform, os.name, platform.system() and its kin, sys.getwindowsversion()."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return (node.value.id, node.attr) in {("sys", "platform"), ("os", "name")}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        owner, name = node.func.value.id, node.func.attr
        return (owner in ("platform", "_platform") and name in _STDLIB_OS_CALLS) or \
            (owner == "sys" and name == "getwindowsversion")
    return False


def _is_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "KIND") or (isinstance(node, ast.Name) and node.id == "KIND")


def _is_os_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and bool(node.elts) and all(map(_is_os_literal, node.elts))


def os_tests(source: str) -> Iterator[int]:
    """Line numbers of the OS tests in a module's source."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(_is_os_probe, sides)) or (any(map(_is_kind, sides)) and any(map(_is_os_literal, sides))):
                yield node.lineno
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("startswith", "endswith") and _is_os_probe(node.func.value):
                yield node.lineno
            elif node.func.attr == "get" and node.args and _is_os_probe(node.args[0]):
                yield node.lineno
        elif isinstance(node, ast.Subscript) and _is_os_probe(node.slice):
            yield node.lineno


def _found() -> List[Tuple[str, int]]:
    out = []
    for folder, _dirs, files in os.walk(PACKAGE):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
            if rel.startswith("gpudiag/platform/"):
                continue
            with open(path, encoding="utf-8") as fh:
                out += [(rel, line) for line in os_tests(fh.read())]
    return sorted(out)


def test_only_platform_tests_the_os():
    outside = [f"{rel}:{line}" for rel, line in _found()]
    assert outside == [], "OS tests outside gpudiag/platform/ (ask platform instead): " + ", ".join(outside)


def test_the_checker_finds_each_kind_of_os_test_and_spares_facts():
    flagged = '''
import os, sys, platform as _platform
from gpudiag import platform
a = sys.platform == "win32"
b = sys.platform.startswith("linux")
c = os.name != "posix"
d = _platform.system() in ("Darwin",)
e = {"win32": "windows"}.get(sys.platform)
f = platform.KIND == "windows"
g = "linux" != platform.KIND
h = {"nt": 1}[os.name]
'''
    assert list(sorted(os_tests(flagged))) == [4, 5, 6, 7, 8, 9, 10, 11]
    spared = '''
import os, sys
from gpudiag import platform
facts = {"platform": sys.platform, "os": platform.KIND}
ok = platform.KIND == need        # a declared need matched by name
win = host == "windows"           # a rule over a report's data
affinity = hasattr(os, "sched_getaffinity")
'''
    assert list(os_tests(spared)) == []
