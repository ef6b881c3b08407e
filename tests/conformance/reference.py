"""The real libraries as the conformance tests read them: does a dotted name exist, and what is its signature.

torch: the installed build (the CPU build in CI: its `torch.cuda` Python API exists without CUDA). Names a
CPU build cannot show are read from torch's own type stub (torch/_C/__init__.pyi): the attributes of
`torch._C._CudaDeviceProperties`, plus the three PCI ids torch's own torch/numa/binding.py reads from
it (the stub lacks them). Signatures: inspect.signature where Python can read one; for builtins
(torch.zeros, Tensor.copy_) the first line of the docstring, `zeros(*size, *, out=None, ...) -> Tensor`.

pynvml: the installed nvidia-ml-py (importable without a driver); its wrappers are Python functions.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from typing import Any, Optional, Set, Tuple

_MISSING = object()
PROPS = "torch._C._CudaDeviceProperties"
# torch/numa/binding.py (torch 2.13) reads these from get_device_properties(); the .pyi stub omits them.
PROPS_PCI = ("pci_domain_id", "pci_bus_id", "pci_device_id")


def versions() -> str:
    """"torch 2.13.0+cpu, nvidia-ml-py 13.615.71" (torch absent: said so)."""
    from importlib import metadata

    try:
        import torch

        t = f"torch {torch.__version__}"
    except ImportError:
        t = "no torch"
    return f"{t}, nvidia-ml-py {metadata.version('nvidia-ml-py')}"


def props_attributes() -> Set[str]:
    """The attributes of torch._C._CudaDeviceProperties: the stub's annotated names and the PCI ids."""
    import torch

    stub = os.path.join(os.path.dirname(torch.__file__), "_C", "__init__.pyi")
    with open(stub, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    names: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "_CudaDeviceProperties":
            names |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    binding = os.path.join(os.path.dirname(torch.__file__), "numa", "binding.py")
    if os.path.exists(binding):
        with open(binding, encoding="utf-8") as fh:
            text = fh.read()
        names |= {n for n in PROPS_PCI if f"device_properties.{n}" in text}
    return names


def resolve(path: str) -> Any:
    """The object a dotted path names ("torch.cuda.Event.record", "pynvml.nvmlInit"), importing submodules on
    the way; _MISSING when it does not exist. Device-properties attributes resolve to True (see PROPS)."""
    if path.startswith(PROPS + "."):
        return True if path[len(PROPS) + 1:] in props_attributes() else _MISSING
    if path == PROPS:
        return True
    parts = path.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ImportError:
        return _MISSING
    for i, part in enumerate(parts[1:], start=1):
        nxt = getattr(obj, part, _MISSING)
        if nxt is _MISSING:
            try:
                nxt = importlib.import_module(".".join(parts[:i + 1]))
            except ImportError:
                return _MISSING
        obj = nxt
    return obj


def exists(path: str) -> bool:
    return resolve(path) is not _MISSING


_DOC_SIG = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\((.*)\)\s*(->.*)?$")


def _docstring_signature(obj: Any, name: str) -> Optional[inspect.Signature]:
    """A builtin's signature from its docstring's `name(args) -> T` line (torch documents every op so)."""
    doc = getattr(obj, "__doc__", None) or ""
    for line in doc.splitlines()[:6]:
        m = _DOC_SIG.match(line)
        if not m or m.group(1) != name:
            continue
        args = m.group(2)
        # `*size, *, out=None` is two star-markers to Python: the varargs already starts the keyword-only part.
        args = re.sub(r"(\*[A-Za-z_]\w*\s*,\s*)\*\s*,\s*", r"\1", args)
        args = re.sub(r"\bsize \(int\.\.\.\)", "*size", args)
        try:
            fn = ast.parse(f"def f({args}): pass").body[0]
        except SyntaxError:
            return None
        a = fn.args  # type: ignore[attr-defined]
        params = []
        P = inspect.Parameter
        pos = a.posonlyargs + a.args
        n_def = len(a.defaults)
        for i, arg in enumerate(pos):
            default = P.empty if i < len(pos) - n_def else None
            kind = P.POSITIONAL_ONLY if arg in a.posonlyargs else P.POSITIONAL_OR_KEYWORD
            params.append(P(arg.arg, kind, default=default))
        if a.vararg:
            params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
        for arg, d in zip(a.kwonlyargs, a.kw_defaults):
            params.append(P(arg.arg, P.KEYWORD_ONLY, default=P.empty if d is None else None))
        if a.kwarg:
            params.append(P(a.kwarg.arg, P.VAR_KEYWORD))
        try:
            return inspect.Signature(params)
        except ValueError:
            return None
    return None


def signature(path: str) -> Tuple[Optional[inspect.Signature], bool]:
    """(signature, bound_method) of the callable a path names, or (None, False) where none can be read.
    bound_method: a Python method read off its class, whose first parameter (self) the caller fills."""
    obj = resolve(path)
    if obj is _MISSING or obj is True:
        return None, False
    name = path.rsplit(".", 1)[-1]
    owner = resolve(path.rsplit(".", 1)[0]) if "." in path else None
    is_method = inspect.isclass(owner) and (inspect.isfunction(obj) or inspect.ismethoddescriptor(obj)) \
        and not isinstance(inspect.getattr_static(owner, name, None), (staticmethod, classmethod))
    try:
        sig = inspect.signature(obj)
        if inspect.isfunction(obj) and is_method:
            return sig, True
        return sig, False
    except (TypeError, ValueError):
        pass
    return _docstring_signature(obj, name), False


def binds(sig: inspect.Signature, positional: int, keywords: Tuple[str, ...], bound_method: bool) -> Optional[str]:
    """None when a call with `positional` arguments and these keywords binds to sig, else why not."""
    args = [object()] * (positional + (1 if bound_method else 0))
    try:
        sig.bind(*args, **{k: object() for k in keywords})
    except TypeError as exc:
        return str(exc)
    return None
