"""The fakes cannot drift from the libraries they stand for (issue 25).

Every attribute a fake provides - tests/fake_torch.py's torch, torch.cuda, Tensor, Event, Stream, CUDAGraph and
device properties, tests/fakes.py's FakeNvml and every other test class that serves `nvml*` functions -
must exist in the real library, except the fakes' own helpers listed below; and where the real signature
can be read, a fake method takes the same positional parameters under the same names (required ones
required), so a call that binds to the fake binds to the library. The code runs on the fakes in the tests,
so a name the code uses on a fake that the fake lacks fails there; one the fake has, the library has.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pynvml
import pytest

from tests.conformance import reference as ref
from tests.conformance.usage import ROOT

# The fakes' own helpers: state and constructors no library has. Anything else a fake offers must be real.
HELPERS: Dict[str, Set[str]] = {
    "FakeTorch": {"clock", "pinned_ok", "graph_ok", "oom_over_bytes", "capturing", "calls"},
    "FakeTensor": {"torch", "on_gpu", "pinned", "value"},
    "FakeEvent": {"torch", "t"},
    "FakeStream": {"busy_until"},
    "FakeGraph": {"ops", "captured", "torch"},
    "FakeNvml": {"gpus", "driver_version", "cuda_version", "nvml_version", "missing", "init_error", "initialised",
                 "calls", "blocked_s", "PCIE_WINDOW_S", "from_smi_q", "gtx1650_desktop", "h100", "windows_wddm",
                 "wsl2", "no_driver"},
    "ScriptedNvml": {"build", "advance", "ticks", "index", "ring_supported", "ring", "clock_us", "pcie",
                     "RING_PERIOD_US"},
}
# Underscored names the libraries really have.
REAL_PRIVATE = {"_sleep"}


def _public(names: Iterator[str]) -> Set[str]:
    return {n for n in names if (not n.startswith("_") or n in REAL_PRIVATE) and not n.startswith("__")}


def _own_names(cls: type) -> Set[str]:
    """What a fake class itself adds: its class attributes and methods (not those of the fake it extends)."""
    return _public(iter(vars(cls)))


def _params(sig: inspect.Signature, drop_self: bool) -> List[inspect.Parameter]:
    ps = list(sig.parameters.values())
    return ps[1:] if drop_self and ps else ps


COMPARED: Set[str] = set()  # the real callables a fake's signature was compared with (a floor below)


def signature_mismatch(fake: Any, real_path: str) -> Optional[str]:
    """None when `fake` (a function of a fake class) takes its arguments as the library's `real_path` does (or
    either signature cannot be read), else how they differ."""
    real_sig, real_bound = ref.signature(real_path)
    if real_sig is None:
        return None  # nothing to compare with
    try:
        fake_sig = inspect.signature(fake)
    except (TypeError, ValueError):
        return None
    COMPARED.add(real_path)
    P = inspect.Parameter
    fps = _params(fake_sig, drop_self=inspect.isfunction(fake))
    rps = _params(real_sig, drop_self=real_bound)
    if real_path in ("torch.cuda.Event", "torch.cuda.Stream") and rps and rps[0].name == "cls":
        rps = rps[1:]
    real_var_kw = any(p.kind == P.VAR_KEYWORD for p in rps)
    real_var_pos = any(p.kind == P.VAR_POSITIONAL for p in rps)
    f_pos = [p for p in fps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    r_pos = [p for p in rps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == P.VAR_POSITIONAL for p in fps) and not real_var_pos:
        return "the fake takes *args, the library does not"
    if not real_var_pos and len(f_pos) > len(r_pos):
        return f"the fake takes {len(f_pos)} positional parameters, the library {len(r_pos)}"
    for f, r in zip(f_pos, r_pos):
        if f.name != r.name and r.kind != P.POSITIONAL_ONLY:
            return f"parameter {f.name!r} is {r.name!r} in the library"
    f_required = sum(1 for p in f_pos if p.default is P.empty)
    r_required = sum(1 for p in r_pos if p.default is P.empty)
    if f_required < r_required:
        return f"the library requires {r_required} positional arguments, the fake {f_required}"
    names = {p.name for p in rps}
    for p in fps:
        if p.kind == P.KEYWORD_ONLY and p.name not in names and not real_var_kw:
            return f"keyword {p.name!r} does not exist in the library"
    return None


# ----------------------------------------------------------------------------- NVML fakes

def _nvml_fake_classes() -> Iterator[Tuple[str, str, ast.ClassDef]]:
    """(file, class name, class node) of every test class that serves nvml*/NVML* names."""
    tests_dir = os.path.join(ROOT, "tests")
    for dirpath, _, files in os.walk(tests_dir):
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(b, (ast.FunctionDef, ast.Assign)) and _defined(b).startswith(("nvml", "NVML"))
                        for b in node.body):
                    yield os.path.relpath(path, ROOT).replace(os.sep, "/"), node.name, node


def _defined(stmt: ast.AST) -> str:
    if isinstance(stmt, ast.FunctionDef):
        return stmt.name
    if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    return ""


def test_every_nvml_name_a_fake_serves_exists_in_pynvml():
    problems, seen = [], 0
    for file, cls, node in _nvml_fake_classes():
        for stmt in node.body:
            name = _defined(stmt)
            if not name.startswith(("nvml", "NVML")):
                continue
            seen += 1
            if not hasattr(pynvml, name):
                problems.append(f"{file}:{stmt.lineno}: {cls}.{name} does not exist in pynvml")
    assert seen >= 40, seen
    if problems:
        pytest.fail(f"fakes serve NVML names pynvml lacks ({ref.versions()}):\n" + "\n".join(problems), pytrace=False)


def test_fake_nvml_functions_take_pynvmls_parameters():
    from tests import fakes, fakes_watch

    problems = []
    for cls in (fakes.FakeNvml, fakes_watch.ScriptedNvml):
        for name, fn in vars(cls).items():
            if name.startswith("nvml") and callable(fn) and hasattr(pynvml, name):
                why = signature_mismatch(fn, f"pynvml.{name}")
                if why:
                    problems.append(f"{cls.__module__}.{cls.__name__}.{name}: {why}")
    assert not problems, "\n".join(problems)


def test_fake_nvml_offers_nothing_but_pynvml_names_and_its_helpers():
    from tests import fakes, fakes_watch

    problems = []
    for cls in (fakes.FakeNvml, fakes_watch.ScriptedNvml):
        helpers = HELPERS.get(cls.__name__, set())
        for name in _own_names(cls):
            if name not in helpers and not hasattr(pynvml, name):
                problems.append(f"{cls.__module__}.{cls.__name__}.{name}: neither in pynvml nor a listed helper")
    instance = fakes.FakeNvml.h100()
    for name in _public(iter(vars(instance))):
        if name not in HELPERS["FakeNvml"] and not hasattr(pynvml, name):
            problems.append(f"FakeNvml().{name}: neither in pynvml nor a listed helper")
    assert not problems, "\n".join(problems)


def test_fake_nvml_errors_are_pynvmls_classes():
    from tests import fakes

    for name, cls in fakes._ERRORS.items():
        assert cls is getattr(pynvml, f"NVMLError_{name}"), name
    assert fakes.FakeNvml.NVMLError is pynvml.NVMLError


# ----------------------------------------------------------------------------- torch fakes

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed: the torch fakes are checked where it is")


def _torch_fakes() -> List[Tuple[str, Any, Set[str]]]:
    """(real path, fake class or instance, names it offers) for each part of tests/fake_torch.py."""
    from tests import fake_torch as ft

    t = ft.FakeTorch()
    props = t.cuda.get_device_properties(0)
    tensor = t.zeros(4, device="cuda")
    return [
        ("torch", t, _public(iter(vars(t))) | _own_names(ft.FakeTorch)),
        ("torch.cuda", t.cuda, _public(iter(vars(t.cuda))) | _own_names(ft._FakeCuda)),
        ("torch.Tensor", tensor, _public(iter(vars(tensor))) | _own_names(ft.FakeTensor)),
        ("torch.cuda.Event", t.cuda.Event(enable_timing=True), _own_names(ft.FakeEvent)
         | _public(iter(vars(t.cuda.Event(enable_timing=True))))),
        ("torch.cuda.Stream", t.cuda.Stream(), _own_names(ft.FakeStream) | _public(iter(vars(t.cuda.Stream())))),
        ("torch.cuda.CUDAGraph", t.cuda.CUDAGraph(), _own_names(ft.FakeGraph) | _public(iter(vars(t.cuda.CUDAGraph())))),
        (ref.PROPS, props, _public(iter(vars(props))) | _own_names(ft._FakeDeviceProperties)),
        ("torch.dtype", t.uint8, _public(iter(vars(t.uint8))) | _own_names(ft._Dtype)),
    ]


_HELPER_OF = {"torch": "FakeTorch", "torch.Tensor": "FakeTensor", "torch.cuda.Event": "FakeEvent",
              "torch.cuda.Stream": "FakeStream", "torch.cuda.CUDAGraph": "FakeGraph"}


def test_every_name_the_torch_fake_offers_exists_in_torch(torch):
    problems, seen = [], 0
    for real, _, names in _torch_fakes():
        helpers = HELPERS.get(_HELPER_OF.get(real, ""), set())
        for name in sorted(names - helpers):
            seen += 1
            if not ref.exists(f"{real}.{name}"):
                problems.append(f"tests/fake_torch.py: the fake {real} offers {name!r}, which {real} does not have")
    assert seen >= 40, seen
    if problems:
        pytest.fail(f"the torch fake offers names torch lacks ({ref.versions()}):\n" + "\n".join(problems),
                    pytrace=False)


def test_torch_fake_methods_take_torchs_parameters(torch):
    problems = []
    for real, obj, names in _torch_fakes():
        for name in sorted(names):
            value = getattr(obj, name, None)
            if not callable(value) or not ref.exists(f"{real}.{name}"):
                continue
            fn = getattr(type(obj), name, value)
            fn = getattr(fn, "__wrapped__", fn)  # contextmanagers: the generator function's parameters
            why = signature_mismatch(fn, f"{real}.{name}")
            if why:
                problems.append(f"tests/fake_torch.py: {real}.{name}: {why}")
    assert not problems, "\n".join(problems)
    assert len({p for p in COMPARED if p.startswith("torch")}) >= 20, sorted(COMPARED)


def test_the_fakes_error_classes_are_torchs_kind(torch):
    from tests import fake_torch as ft

    assert issubclass(ft.OutOfMemoryError, RuntimeError) and issubclass(torch.cuda.OutOfMemoryError, RuntimeError)
    assert ft.FakeTorch().cuda.OutOfMemoryError.__name__ == torch.cuda.OutOfMemoryError.__name__
    assert re.match(r"^Found no NVIDIA driver", ft.NO_DRIVER)
